"""Starting and stopping state machine executions by name, the way spothub makes them idempotent.

Execution names are unique per state machine (for 90 days), so a name derived from what the
execution is for (a replica and generation, a launch id) turns a repeated start into a no-op.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import DependencyUnavailable


def _call(what: str, call: Callable[..., Any], *, tolerated: str, **params: Any) -> bool:
    """`call(**params)`; False when Step Functions answers `tolerated`; DependencyUnavailable otherwise."""
    try:
        call(**params)
    except ClientError as exc:
        if exc.response["Error"].get("Code") == tolerated:
            return False
        raise DependencyUnavailable(f"could not {what}: {reason_of(exc)}") from exc
    except BotoCoreError as exc:
        raise DependencyUnavailable(f"could not {what}: {reason_of(exc)}") from exc
    return True


def start_named(sfn: Any, state_machine_arn: str, name: str, state: dict[str, Any]) -> bool:
    """Start `name`; False when an execution of that name already exists (started before)."""
    return _call(
        f"start {name}",
        sfn.start_execution,
        tolerated="ExecutionAlreadyExists",
        stateMachineArn=state_machine_arn,
        name=name,
        input=json.dumps(state),
    )


def exists(sfn: Any, state_machine_arn: str, name: str) -> bool:
    """Whether an execution named `name` was started (whatever its status now)."""
    arn = execution_arn(state_machine_arn, name)
    return _call(f"look {name} up", sfn.describe_execution, tolerated="ExecutionDoesNotExist", executionArn=arn)


def execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"


def stop_named(sfn: Any, state_machine_arn: str, name: str, cause: str) -> None:
    """Stop `name` if it runs; an execution that is gone or finished is left alone."""
    arn = execution_arn(state_machine_arn, name)
    _call(f"stop {name}", sfn.stop_execution, tolerated="ExecutionDoesNotExist", executionArn=arn, cause=cause)

"""Starting and stopping state machine executions by name, the way spothub makes them idempotent.

Execution names are unique per state machine (for 90 days), so a name derived from what the
execution is for (a replica and generation, a launch id) turns a repeated start into a no-op.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import DependencyUnavailable


def start_named(sfn: Any, state_machine_arn: str, name: str, state: dict[str, Any]) -> bool:
    """Start `name`; False when an execution of that name already exists (started before)."""
    try:
        sfn.start_execution(stateMachineArn=state_machine_arn, name=name, input=json.dumps(state))
    except ClientError as exc:
        if exc.response["Error"].get("Code") == "ExecutionAlreadyExists":
            return False
        raise DependencyUnavailable(f"could not start {name}: {reason_of(exc)}") from exc
    except BotoCoreError as exc:
        raise DependencyUnavailable(f"could not start {name}: {reason_of(exc)}") from exc
    return True


def exists(sfn: Any, state_machine_arn: str, name: str) -> bool:
    """Whether an execution named `name` was started (whatever its status now)."""
    try:
        sfn.describe_execution(executionArn=execution_arn(state_machine_arn, name))
    except ClientError as exc:
        if exc.response["Error"].get("Code") == "ExecutionDoesNotExist":
            return False
        raise DependencyUnavailable(f"could not look {name} up: {reason_of(exc)}") from exc
    except BotoCoreError as exc:
        raise DependencyUnavailable(f"could not look {name} up: {reason_of(exc)}") from exc
    return True


def execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"


def stop_named(sfn: Any, state_machine_arn: str, name: str, cause: str) -> None:
    """Stop `name` if it runs; an execution that is gone or finished is left alone."""
    try:
        sfn.stop_execution(executionArn=execution_arn(state_machine_arn, name), cause=cause)
    except ClientError as exc:
        if exc.response["Error"].get("Code") not in ("ExecutionDoesNotExist",):
            raise DependencyUnavailable(f"could not stop {name}: {reason_of(exc)}") from exc
    except BotoCoreError as exc:
        raise DependencyUnavailable(f"could not stop {name}: {reason_of(exc)}") from exc

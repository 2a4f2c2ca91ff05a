"""Answering a state machine task that waits for a token (waitForTaskToken): success, failure, heartbeat.

Each answer is False when the execution no longer waits (stopped, timed out, its token already used),
which the caller decides about (an instance nobody waits for is torn down); other refusals are errors.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import DependencyUnavailable

logger = logging.getLogger(__name__)

# Step Functions' answers for a token nobody waits on any more.
GONE = ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist", "ExecutionDoesNotExist")


def send_success(sfn: Any, token: str, output: str) -> bool:
    return _answer(sfn.send_task_success, taskToken=token, output=output)


def send_failure(sfn: Any, token: str, *, error: str, cause: str) -> bool:
    return _answer(sfn.send_task_failure, taskToken=token, error=error, cause=cause)


def send_heartbeat(sfn: Any, token: str) -> bool:
    return _answer(sfn.send_task_heartbeat, taskToken=token)


def _answer(method: Any, **arguments: Any) -> bool:
    try:
        method(**arguments)
    except ClientError as exc:
        code = exc.response["Error"].get("Code", "")
        if code in GONE:
            logger.info("task token no longer valid", extra={"code": code})
            return False
        raise DependencyUnavailable(f"Step Functions refused the answer: {reason_of(exc)}") from exc
    return True

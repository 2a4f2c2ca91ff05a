"""AWS calls made by a state machine's tasks: an AWS error becomes the class the state machines catch
(CapacityError, QuotaError, TransientError, FatalError; Lambda reports an exception's class name)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import CapacityError, FatalError, QuotaError, TransientError
from spothub_core.logic.launch_errors import LaunchFailure, classify_launch_error

_ERROR_OF_FAILURE: dict[LaunchFailure, type[Exception]] = {
    LaunchFailure.CAPACITY: CapacityError,
    LaunchFailure.QUOTA: QuotaError,
    LaunchFailure.FATAL: FatalError,
}


def aws_call(what: str, method: Any, **kwargs: Any) -> Any:
    """Call AWS; errors become the classes the state machines catch (capacity, quota, transient, fatal)."""
    try:
        return method(**kwargs)
    except ClientError as exc:
        raise classified(what, exc) from exc
    except BotoCoreError as exc:
        raise TransientError(f"{what}: {reason_of(exc)}") from exc


def classified(what: str, exc: ClientError) -> Exception:
    """The class the state machines catch for an AWS error (capacity, quota, transient, fatal)."""
    error = exc.response.get("Error", {})
    failure = classify_launch_error(error.get("Code"), error.get("Message", ""))
    return _ERROR_OF_FAILURE.get(failure, TransientError)(f"{what}: {reason_of(exc)}")

"""What a failed launch means for the next step: another region, a retry, or stop and alert.

Classified from the AWS error code and, for Auto Scaling's launch-unsuccessful events (which carry
no code), from the status message. Unknown errors are treated as transient: retried with backoff
and a cap, then cleaned up and reported, never retried forever.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from spothub_core.errors import CapacityError, FatalError, TransientError


class LaunchFailure(StrEnum):
    CAPACITY = "capacity"  # this region cannot give us the instance now: exclude it for a while, try the next
    TRANSIENT = "transient"  # the call failed, not the capacity: retry here with backoff and a cap
    FATAL = "fatal"  # retrying cannot help (bad AMI, missing permission): stop and alert


CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "MaxSpotInstanceCountExceeded",
        "SpotMaxPriceTooLow",
        "UnfulfillableCapacity",
        "capacity-not-available",
        "capacity-oversubscribed",
        "price-too-low",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Unavailable",
        "InternalError",
        "InternalFailure",
        "InternalServiceError",
        "RequestTimeout",
        "RequestTimeoutException",
        "ResourceContention",
    }
)
FATAL_CODES = frozenset(
    {
        "UnauthorizedOperation",
        "AccessDenied",
        "AccessDeniedException",
        "AuthFailure",
        "InvalidAMIID.Malformed",
        "InvalidAMIID.NotFound",
        "InvalidAMIID.Unavailable",
        "InvalidLaunchTemplateId.NotFound",
        "InvalidLaunchTemplateName.NotFoundException",
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "InvalidSubnetID.NotFound",
        "InvalidGroup.NotFound",
        "InvalidKeyPair.NotFound",
        "Unsupported",
        "UnsupportedOperation",
        "ValidationError",
    }
)
# Auto Scaling's StatusMessage for failed launches names the EC2 error in prose.
_CODE_IN_MESSAGE = re.compile(r"\b([A-Z][A-Za-z]+(?:\.[A-Za-z]+)?)\b")
_CAPACITY_PHRASES = ("no spot capacity available", "insufficient capacity", "capacity not available")


def classify_launch_error(code: str | None, message: str = "") -> LaunchFailure:
    for candidate in ([code] if code else []) + _CODE_IN_MESSAGE.findall(message or ""):
        if candidate in CAPACITY_CODES:
            return LaunchFailure.CAPACITY
        if candidate in FATAL_CODES:
            return LaunchFailure.FATAL
        if candidate in TRANSIENT_CODES:
            return LaunchFailure.TRANSIENT
    lowered = (message or "").lower()
    if any(phrase in lowered for phrase in _CAPACITY_PHRASES):
        return LaunchFailure.CAPACITY
    return LaunchFailure.TRANSIENT


# A task's exception reaches the state machine named by its class (Lambda's errorType).
_CLASS_OF_TASK_ERROR = {
    CapacityError.__name__: LaunchFailure.CAPACITY,
    TransientError.__name__: LaunchFailure.TRANSIENT,
    FatalError.__name__: LaunchFailure.FATAL,
}


def describe_error(error: dict[str, Any] | None) -> dict[str, Any]:
    """A state machine's caught error ({Error, Cause}) as the failure the hub acts on. The worker's own
    failure results use the class values as names; anything else (timeouts, Lambda errors) is transient."""
    if not error:
        return {"error_class": LaunchFailure.TRANSIENT.value, "code": "Unknown", "message": ""}
    name = str(error.get("Error", ""))
    failure = _CLASS_OF_TASK_ERROR.get(name) or next((f for f in LaunchFailure if f.value == name), None)
    return {
        "error_class": (failure or LaunchFailure.TRANSIENT).value,
        "code": name,
        "message": str(error.get("Cause", ""))[:1000],
    }

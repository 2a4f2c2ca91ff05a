"""What a failed launch means for the next step: another region (for a while, or for hours and an alert when an
account quota is reached), a retry, or stop and alert.

Classified from the AWS error code and, for Auto Scaling's launch-unsuccessful events (which carry
no code), from the status message. Unknown errors are treated as transient: retried with backoff
and a cap, then cleaned up and reported, never retried forever.
"""

from __future__ import annotations

import re
from enum import StrEnum

from spothub_core.errors import CapacityError, FatalError, QuotaError, TransientError
from spothub_core.models.worker_tasks import CaughtError, Failure


class LaunchFailure(StrEnum):
    CAPACITY = "capacity"  # this region cannot give us the instance now: exclude it for a while, try the next
    # an account quota (vCPU limit, spot request count) is reached in this region: only the operator can raise it,
    # so the region is excluded for hours and the operator is told which quota (spothub_core.logic.quotas)
    QUOTA = "quota"
    TRANSIENT = "transient"  # the call failed, not the capacity: retry here with backoff and a cap
    FATAL = "fatal"  # retrying cannot help (bad AMI, missing permission): stop and alert


CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "SpotMaxPriceTooLow",
        "UnfulfillableCapacity",
        "capacity-not-available",
        "capacity-oversubscribed",
        "price-too-low",
    }
)
QUOTA_CODES = frozenset({"VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "InstanceLimitExceeded"})
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
# Auto Scaling often gives only EC2's message: "... more vCPU capacity than your current vCPU limit of 0 allows ...",
# "Max spot instance count exceeded", "... more instances (2) than your current instance limit of 1 allows ...".
_QUOTA_PHRASES = ("vcpu limit", "max spot instance count exceeded", "your current instance limit")


# A code names its class first (the first one found wins), then the message's phrases do.
_CLASS_OF_CODES = (
    (QUOTA_CODES, LaunchFailure.QUOTA),
    (CAPACITY_CODES, LaunchFailure.CAPACITY),
    (FATAL_CODES, LaunchFailure.FATAL),
    (TRANSIENT_CODES, LaunchFailure.TRANSIENT),
)
_CLASS_OF_PHRASES = ((_QUOTA_PHRASES, LaunchFailure.QUOTA), (_CAPACITY_PHRASES, LaunchFailure.CAPACITY))


def classify_launch_error(code: str | None, message: str = "") -> LaunchFailure:
    for candidate in ([code] if code else []) + _CODE_IN_MESSAGE.findall(message or ""):
        for codes, failure in _CLASS_OF_CODES:
            if candidate in codes:
                return failure
    lowered = (message or "").lower()
    for phrases, failure in _CLASS_OF_PHRASES:
        if any(phrase in lowered for phrase in phrases):
            return failure
    return LaunchFailure.TRANSIENT


# A task's exception reaches the state machine named by its class (Lambda's errorType).
_CLASS_OF_TASK_ERROR = {
    CapacityError.__name__: LaunchFailure.CAPACITY,
    QuotaError.__name__: LaunchFailure.QUOTA,
    TransientError.__name__: LaunchFailure.TRANSIENT,
    FatalError.__name__: LaunchFailure.FATAL,
}


def describe_error(error: CaughtError | None) -> Failure:
    """A state machine's caught error ({Error, Cause}) as the failure the hub acts on. The worker's own
    failure results use the class values as names; anything else (timeouts, Lambda errors) is transient."""
    if error is None:
        return Failure(error_class=LaunchFailure.TRANSIENT.value, code="Unknown", message="")
    failure = _CLASS_OF_TASK_ERROR.get(error.error) or next((f for f in LaunchFailure if f.value == error.error), None)
    return Failure(
        error_class=(failure or LaunchFailure.TRANSIENT).value, code=error.error, message=(error.cause or "")[:1000]
    )

"""Domain errors. Domain code raises these; `spothub_core.http` alone turns them into answers."""

from __future__ import annotations


class SpothubError(Exception):
    """Base of every error the domain raises on purpose."""


class InvalidRequest(SpothubError):
    """The caller asked for something malformed or impossible; nothing was changed."""


class NotFound(SpothubError):
    """The thing asked for does not exist."""


class Forbidden(SpothubError):
    """The caller is authenticated but may not act on this resource."""


class Conflict(SpothubError):
    """The request races another change or contradicts the current state."""


class DependencyUnavailable(SpothubError):
    """An AWS service spothub depends on did not answer; retrying later may succeed."""


# Raised inside state machine tasks; the class names are the error names the ASL catches
# (spothub_core.contracts.TaskError), since Lambda reports an exception's class name as its errorType.
class CapacityError(SpothubError):
    """The region cannot give us the instance now: exclude it for a while and try the next."""


class QuotaError(SpothubError):
    """An account quota (vCPU limit, spot request count) is reached in the region: exclude it for hours, alert."""


class TransientError(SpothubError):
    """A call failed, not the capacity: retried with backoff and a cap."""


class FatalError(SpothubError):
    """Retrying cannot help (bad image, missing permission): stop and alert."""


class Superseded(SpothubError):
    """Provisioning changed (disabled, or enabled anew) since this work was started: stop quietly."""


class RegionTaken(SpothubError):
    """Another replica reserved the region first (both ranked it best at once): look again, elsewhere."""

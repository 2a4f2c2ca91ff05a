"""Domain errors. Domain code raises these; `spothub_core.http` alone turns them into answers."""

from __future__ import annotations


class SpothubError(Exception):
    """Base of every error the domain raises on purpose."""


class InvalidRequest(SpothubError):
    """The caller asked for something malformed or impossible; nothing was changed."""


class NotFound(SpothubError):
    """The thing asked for does not exist."""


class Conflict(SpothubError):
    """The request races another change or contradicts the current state."""


class DependencyUnavailable(SpothubError):
    """An AWS service spothub depends on did not answer; retrying later may succeed."""

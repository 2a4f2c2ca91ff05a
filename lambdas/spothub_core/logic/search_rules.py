"""The search instance's state rules, as pure functions of a launch record, the time and the deployment's limits:
when it is idle, past its maximum runtime, unhealthy, a launch gone stale, or gone from EC2. The monitor
(logic/search_monitor.py) acts on them; nothing here reads or writes anything.

Every limit is reached at its boundary: an instance idle for exactly `idle_timeout_s` is idle.
"""

from __future__ import annotations

from dataclasses import dataclass

from spothub_core.models.search_records import SearchInstance, SearchStatus
from spothub_core.timings import SEARCH_HEALTH_MISSES, SEARCH_STALE_LAUNCH_SECONDS

# EC2 states in which an instance no longer serves and never will again.
GONE_STATES = ("shutting-down", "terminated")
# describe_instances may not know an instance yet right after RunInstances answered (EC2 is eventually
# consistent): an instance EC2 does not know counts as gone only this long after its launch.
UNKNOWN_GRACE_SECONDS = 120


@dataclass(frozen=True)
class SearchLimits:
    idle_timeout_s: float  # searchIdleTimeout
    max_runtime_s: float  # searchMaxRuntime; 0: no limit
    health_misses: int = SEARCH_HEALTH_MISSES
    stale_launch_s: float = SEARCH_STALE_LAUNCH_SECONDS


def idle_since(record: SearchInstance) -> float:
    """When the instance last did something: the end of its last query, or its readiness when never queried."""
    for moment in (record.last_used, record.ready_at, record.started_at):
        if moment is not None:
            return moment
    return record.created_at


def is_idle(record: SearchInstance, now: float, limits: SearchLimits) -> bool:
    """Routable, no query in flight, and nothing done for `idle_timeout_s`."""
    if not record.status.routable or record.status == SearchStatus.BUSY or record.current_requests > 0:
        return False
    return now - idle_since(record) >= limits.idle_timeout_s


def over_max_runtime(record: SearchInstance, now: float, limits: SearchLimits) -> bool:
    """Routable and running (from RunInstances) for `max_runtime_s`; never with a limit of 0."""
    if limits.max_runtime_s <= 0 or not record.status.routable or record.started_at is None:
        return False
    return now - record.started_at >= limits.max_runtime_s


def unhealthy(record: SearchInstance, limits: SearchLimits) -> bool:
    """Routable and `health_misses` consecutive health checks missed: fail it and replace it."""
    return record.status.routable and record.health_failures >= limits.health_misses


def stale_launch(record: SearchInstance, now: float, limits: SearchLimits) -> bool:
    """Still launching or starting `stale_launch_s` after its creation: its execution is over (it has a timeout
    shorter than this) without its failure step, and the slot it holds would block every launch."""
    return record.status.launching and now - record.created_at >= limits.stale_launch_s


def instance_gone(record: SearchInstance, state: str | None, now: float) -> bool:
    """Whether EC2's `state` of the record's instance (None: EC2 does not know it) means it is gone. A record
    with no instance yet is never gone: its launch has not asked for one."""
    if record.instance_id is None:
        return False
    if state is not None:
        return state in GONE_STATES
    launched = record.started_at if record.started_at is not None else record.created_at
    return now - launched >= UNKNOWN_GRACE_SECONDS


def termination_done(record: SearchInstance, state: str | None, now: float, limits: SearchLimits) -> bool:
    """A terminating record's instance is terminated, or EC2 no longer knows it. One terminated before its launch
    asked for an instance is done once that launch is over (stale): until then its execution may still ask."""
    if record.instance_id is None:
        return now - record.created_at >= limits.stale_launch_s
    if state is None:
        launched = record.started_at if record.started_at is not None else record.created_at
        return now - launched >= UNKNOWN_GRACE_SECONDS
    return state == "terminated"

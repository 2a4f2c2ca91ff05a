"""A worker region's side of a batch job's capacity: apply the hub's BatchFleetRequested to the job's group and
say how the group is (BatchFleetReport).

Applying is safe twice and in any order: the group only grows (desired = max(current, asked)); a request older
than the one the group's tag says was applied changes nothing (a late duplicate cannot grow a group after
workers left it); members are released by name, with the group's capacity decremented; a release deletes the
group and is final (the hub asks for one only once the job has ended). A request that would create the group must
be fresh, so that one delivered after the job's release cannot bring the group back.
"""

from __future__ import annotations

from dataclasses import dataclass

from spothub_core.contracts import BatchFleetReport, BatchFleetRequested, InstanceTag, job_group_name
from spothub_core.dal.job_groups import JobGroup, JobGroups
from spothub_core.errors import CapacityError, FatalError, QuotaError
from spothub_core.logic.launch_errors import LaunchFailure, classify_launch_error
from spothub_core.timings import BATCH_FLEET_CREATE_MAX_AGE_SECONDS

# Refusals a redelivery cannot fix: reported to the hub (which asks elsewhere) instead of raised for a retry.
_REPORTED_ERRORS = {
    CapacityError: LaunchFailure.CAPACITY,
    QuotaError: LaunchFailure.QUOTA,
    FatalError: LaunchFailure.FATAL,
}


@dataclass(frozen=True)
class FleetRegion:
    """What the batch_fleet function works with in its region."""

    region: str
    prefix: str
    hub_region: str
    groups: JobGroups
    instance_types: tuple[str, ...]  # the region's batch instance types: a job naming none gets these


@dataclass(frozen=True)
class Applied:
    outcome: str
    report: BatchFleetReport | None  # None: nothing to say (the request was ignored)


def apply_request(fleet: FleetRegion, request: BatchFleetRequested, *, now: float) -> Applied:
    if request.region != fleet.region:
        return Applied(f"ignored: a request for {request.region}", None)
    name = job_group_name(fleet.prefix, request.job_id)
    group = fleet.groups.describe(name)
    if request.release:
        if group is not None:
            fleet.groups.delete(name)
        return Applied("released", _report(request, name, None, released=True))
    if group is not None and request.requested_at < group.applied_at:
        return Applied(f"ignored: older than the request applied at {group.applied_at}", None)
    try:
        if group is None:
            return _create(fleet, request, name, now=now)
        outcome = _grow(fleet, request, group)
    except (CapacityError, QuotaError, FatalError) as exc:
        return Applied(f"refused: {exc}", _refused(request, name, fleet.groups.describe(name), exc))
    fleet.groups.mark_applied(name, request.requested_at)
    return Applied(outcome, _described(fleet, request, name))


def _create(fleet: FleetRegion, request: BatchFleetRequested, name: str, *, now: float) -> Applied:
    if request.desired == 0:
        # A look (or a release of instances) at a group that is not there: nothing to create, nothing in it.
        return Applied("no group", _report(request, name, None))
    if now - request.requested_at > BATCH_FLEET_CREATE_MAX_AGE_SECONDS:
        return Applied(f"ignored: too old to create the group ({now - request.requested_at:.0f}s)", None)
    created = fleet.groups.create(
        name,
        desired=request.desired,
        capacity_type=request.capacity_type,
        instance_types=_instance_types(fleet, request),
        tags={
            InstanceTag.PREFIX.value: fleet.prefix,
            InstanceTag.HUB_REGION.value: fleet.hub_region,
            InstanceTag.JOB.value: request.job_id,
        },
    )
    if not created:
        # Created meanwhile by the same request delivered twice: size it as a grown group.
        group = fleet.groups.describe(name)
        if group is not None:
            fleet.groups.raise_desired(group, request.desired)
    fleet.groups.mark_applied(name, request.requested_at)
    return Applied(f"created with {request.desired} {request.capacity_type}", _described(fleet, request, name))


def _grow(fleet: FleetRegion, request: BatchFleetRequested, group: JobGroup) -> str:
    """Release the named members first (their decrement comes before the growth that replaces them), then grow."""
    released = [i for i in request.release_instances if i in group.instance_ids]
    for instance_id in released:
        fleet.groups.terminate(group.name, instance_id)
    if released:
        group = fleet.groups.describe(group.name) or group
    instance_types = _instance_types(fleet, request)
    # Any growth brings the launch settings it asks for: after a failed spot growth the group's desired may already
    # be what an on-demand request asks, and must switch to on-demand all the same.
    if request.desired > 0 and (
        request.capacity_type != group.capacity_type or tuple(instance_types) != group.instance_types
    ):
        fleet.groups.set_launch(group.name, capacity_type=request.capacity_type, instance_types=instance_types)
    desired = fleet.groups.raise_desired(group, request.desired)
    parts = [f"desired {group.desired} -> {desired}" if desired != group.desired else f"desired {desired}"]
    if released:
        parts.append(f"released {', '.join(released)}")
    return "; ".join(parts)


def _instance_types(fleet: FleetRegion, request: BatchFleetRequested) -> list[str]:
    return list(request.instance_types or fleet.instance_types)


def _described(fleet: FleetRegion, request: BatchFleetRequested, name: str) -> BatchFleetReport:
    group = fleet.groups.describe(name)
    failure = fleet.groups.last_failure(name) if group is not None else None
    report = _report(request, name, group)
    if failure is None:
        return report
    return report.model_copy(
        update={
            "error": failure.message,
            "error_class": classify_launch_error(None, failure.message).value,
            "error_at": failure.at,
        }
    )


def _refused(request: BatchFleetRequested, name: str, group: JobGroup | None, exc: Exception) -> BatchFleetReport:
    failure = next(f for kind, f in _REPORTED_ERRORS.items() if isinstance(exc, kind))
    return _report(request, name, group).model_copy(
        update={"error": str(exc)[:1000], "error_class": failure.value, "error_at": request.requested_at}
    )


def _report(
    request: BatchFleetRequested, name: str, group: JobGroup | None, *, released: bool = False
) -> BatchFleetReport:
    return BatchFleetReport(
        job_id=request.job_id,
        region=request.region,
        group_name=name,
        desired=group.desired if group else 0,
        in_service=group.in_service if group else 0,
        instance_ids=list(group.instance_ids) if group else [],
        released=released,
        requested_at=request.requested_at,
    )

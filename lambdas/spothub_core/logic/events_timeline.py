"""GET /events: a timeline of what the control plane did and saw, read from the records it keeps anyway (no event
log of its own to write or to pay for): each launch and teardown request when asked and when resolved, the last
notice of each instance, remediations, the regions excluded now, and each warm standby from its start (why) to its
end (promoted, released, failed: why)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.dal.provisioning import LAUNCH, TEARDOWN, ProvisioningStore
from spothub_core.dal.standby import StandbyStore
from spothub_core.models.api import EventKind, EventsView, EventView
from spothub_core.models.records import (
    Exclusion,
    InstanceRecord,
    InstanceStatus,
    LaunchRecord,
    Remediation,
    RequestStatus,
    TeardownRecord,
)
from spothub_core.models.standby_records import EndedStandby, StandbyOutcome, StandbyRecord

NOTICE_STATUSES = (InstanceStatus.AT_RISK, InstanceStatus.INTERRUPTED, InstanceStatus.UNHEALTHY)
# Events are ordered by their records' own times (to the millisecond where a record keeps them so); at one same
# moment, causes before effects: a notice before what it starts, a standby's readiness before its promotion (an
# adopted standby is promoted as its launch reports), a standby's end before the next one's start (the check after a
# promotion), a launch request before its outcome.
SAME_MOMENT_ORDER = {
    kind: n
    for n, kind in enumerate(
        (
            EventKind.NOTICE,
            EventKind.REMEDIATION,
            EventKind.EXCLUSION,
            EventKind.STANDBY_READY,
            EventKind.STANDBY_PROMOTED,
            EventKind.STANDBY_RELEASED,
            EventKind.STANDBY_FAILED,
            EventKind.STANDBY_STARTED,
            EventKind.LAUNCH_REQUESTED,
            EventKind.LAUNCH_FAILED,
            EventKind.LAUNCH_CANCELLED,
            EventKind.LAUNCHED,
            EventKind.TEARDOWN,
            EventKind.TEARDOWN_DONE,
        )
    )
}


class Timed(NamedTuple):
    at: float  # epoch seconds, as precise as the record keeps them (the view shows whole seconds)
    event: EventView


def _event(at: float, kind: EventKind, summary: str, **fields: Any) -> Timed:
    return Timed(at, EventView(at=at, kind=kind, summary=summary, **fields))


STANDBY_ENDS = {
    StandbyOutcome.PROMOTED: EventKind.STANDBY_PROMOTED,
    StandbyOutcome.RELEASED: EventKind.STANDBY_RELEASED,
    StandbyOutcome.FAILED: EventKind.STANDBY_FAILED,
}


def launch_events(launch: LaunchRecord) -> list[Timed]:
    where = f"{launch.replica_id or 'a replica'} in {launch.region} ({launch.capacity_type})"
    common = {"region": launch.region, "replica_id": launch.replica_id}
    out: list[Timed] = []
    if launch.created_at is not None:
        out.append(_event(launch.created_at, EventKind.LAUNCH_REQUESTED, f"launch of {where}", **common))
    if launch.resolved_at is not None and launch.status != RequestStatus.PENDING:
        if launch.status == RequestStatus.SUCCEEDED:
            kind, summary = EventKind.LAUNCHED, f"{where} serving on {launch.instance_id}"
        elif launch.status == RequestStatus.FAILED:
            kind, summary = EventKind.LAUNCH_FAILED, f"launch of {where} failed: {launch.error or 'no reason given'}"
        else:
            kind, summary = EventKind.LAUNCH_CANCELLED, f"launch of {where} {launch.status}"
        out.append(_event(launch.resolved_at, kind, summary, instance_id=launch.instance_id, **common))
    return out


def teardown_events(teardown: TeardownRecord) -> list[Timed]:
    target = teardown.instance_id or "a launch's instance"
    common = {"region": teardown.region or None, "instance_id": teardown.instance_id}
    out: list[Timed] = []
    if teardown.created_at is not None:
        reason = f": {teardown.reason}" if teardown.reason else ""
        out.append(_event(teardown.created_at, EventKind.TEARDOWN, f"teardown of {target}{reason}", **common))
    if teardown.resolved_at is not None and teardown.status != RequestStatus.PENDING:
        out.append(
            _event(teardown.resolved_at, EventKind.TEARDOWN_DONE, f"teardown of {target} {teardown.status}", **common)
        )
    return out


def instance_event(instance: InstanceRecord) -> Timed | None:
    """The instance's last notice (rebalance, interruption, unhealthy): while it is in a notice's status, or after,
    as long as its record keeps the notice (terminating and terminated ones too, stamped with their last change)."""
    if instance.updated_at is None or (instance.status not in NOTICE_STATUSES and not instance.notice):
        return None
    notice = f": {instance.notice}" if instance.notice else ""
    return _event(
        instance.updated_at,
        EventKind.NOTICE,
        f"{instance.instance_id} {instance.status}{notice}",
        region=instance.region,
        replica_id=instance.replica_id,
        instance_id=instance.instance_id,
    )


def remediation_event(remediation: Remediation) -> Timed:
    return _event(
        remediation.at,
        EventKind.REMEDIATION,
        f"{remediation.instance_id}: {remediation.alarm_name or 'alarm'} fired: {remediation.reason}",
        region=remediation.region or None,
        instance_id=remediation.instance_id,
    )


def exclusion_event(exclusion: Exclusion, *, now: float) -> Timed:
    kind = f" ({exclusion.kind})" if exclusion.kind else ""
    minutes = max(0, round((exclusion.until - now) / 60))
    return _event(
        now,
        EventKind.EXCLUSION,
        f"{exclusion.region} excluded{kind} for {minutes} more min: {exclusion.reason or 'no reason given'}",
        region=exclusion.region,
    )


def standby_events(standby: StandbyRecord) -> list[Timed]:
    """A standby held now (started, ready) or one that ended (and how)."""
    name, where = standby.replica_id, f"{standby.capacity_type} in {standby.zone or standby.region}"
    why = f": {'; '.join(standby.reasons)}" if standby.reasons else ""
    common = {"region": standby.region, "replica_id": name}
    out = [
        _event(standby.launched_at, EventKind.STANDBY_STARTED, f"standby of {name} started ({where}){why}", **common)
    ]
    if standby.ready_at is not None:
        ready = f"standby of {name} ready on {standby.instance_id} ({where})"
        out.append(_event(standby.ready_at, EventKind.STANDBY_READY, ready, instance_id=standby.instance_id, **common))
    if isinstance(standby, EndedStandby):
        ended = f"standby of {name} {standby.outcome}" + (f": {standby.why}" if standby.why else "")
        kind = STANDBY_ENDS[standby.outcome]
        out.append(_event(standby.ended_at, kind, ended, instance_id=standby.instance_id, **common))
    return out


def timeline(
    *,
    launches: list[LaunchRecord],
    teardowns: list[TeardownRecord],
    instances: list[InstanceRecord],
    remediations: list[Remediation],
    exclusions: list[Exclusion],
    standbys: Sequence[StandbyRecord] = (),
    now: float,
    since: float | None = None,
    limit: int = 100,
) -> EventsView:
    """Newest first, at most `limit`, only those after `since` (to the second, as shown). An exclusion in force is
    shown as of now (its record keeps when it ends, not when it began)."""
    timed: list[Timed] = []
    for launch in launches:
        timed.extend(launch_events(launch))
    for teardown in teardowns:
        timed.extend(teardown_events(teardown))
    timed.extend(e for e in map(instance_event, instances) if e is not None)
    timed.extend(map(remediation_event, remediations))
    timed.extend(exclusion_event(exclusion, now=now) for exclusion in exclusions)
    for standby in standbys:
        timed.extend(standby_events(standby))
    if since is not None:
        from spothub_core.models.api import iso_utc  # noqa: PLC0415

        cutoff = iso_utc(since)
        timed = [t for t in timed if t.event.at > cutoff]
    timed.sort(key=lambda t: (t.at, SAME_MOMENT_ORDER[t.event.kind]), reverse=True)
    return EventsView(events=[t.event for t in timed[:limit]])


def read_events(
    store: ProvisioningStore,
    health: InstanceHealthStore,
    exclusions: ExclusionStore,
    standbys: StandbyStore,
    *,
    now: float,
    since: float | None,
    limit: int,
) -> EventsView:
    return timeline(
        launches=store.requests(LAUNCH),
        teardowns=store.requests(TEARDOWN),
        instances=store.instances(),
        remediations=health.remediations(),
        exclusions=exclusions.active(now),
        standbys=[*standbys.standbys(), *standbys.ended()],
        now=now,
        since=since,
        limit=limit,
    )

"""GET /events: a timeline of what the control plane did and saw, read from the records it keeps anyway (no event
log of its own to write or to pay for): each launch and teardown request when asked and when resolved, the last
notice of each instance, remediations, the regions excluded now, and each warm standby from its start (why) to its
end (promoted, released, failed: why)."""

from __future__ import annotations

from collections.abc import Sequence

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
STANDBY_ENDS = {
    StandbyOutcome.PROMOTED: EventKind.STANDBY_PROMOTED,
    StandbyOutcome.RELEASED: EventKind.STANDBY_RELEASED,
    StandbyOutcome.FAILED: EventKind.STANDBY_FAILED,
}


def launch_events(launch: LaunchRecord) -> list[EventView]:
    where = f"{launch.replica_id or 'a replica'} in {launch.region} ({launch.capacity_type})"
    common = {"region": launch.region, "replica_id": launch.replica_id}
    out: list[EventView] = []
    if launch.created_at is not None:
        out.append(
            EventView(at=launch.created_at, kind=EventKind.LAUNCH_REQUESTED, summary=f"launch of {where}", **common)
        )
    if launch.resolved_at is not None and launch.status != RequestStatus.PENDING:
        if launch.status == RequestStatus.SUCCEEDED:
            kind, summary = EventKind.LAUNCHED, f"{where} serving on {launch.instance_id}"
        elif launch.status == RequestStatus.FAILED:
            kind, summary = EventKind.LAUNCH_FAILED, f"launch of {where} failed: {launch.error or 'no reason given'}"
        else:
            kind, summary = EventKind.LAUNCH_CANCELLED, f"launch of {where} {launch.status}"
        out.append(
            EventView(at=launch.resolved_at, kind=kind, instance_id=launch.instance_id, summary=summary, **common)
        )
    return out


def teardown_events(teardown: TeardownRecord) -> list[EventView]:
    target = teardown.instance_id or "a launch's instance"
    common = {"region": teardown.region or None, "instance_id": teardown.instance_id}
    out: list[EventView] = []
    if teardown.created_at is not None:
        reason = f": {teardown.reason}" if teardown.reason else ""
        out.append(
            EventView(
                at=teardown.created_at, kind=EventKind.TEARDOWN, summary=f"teardown of {target}{reason}", **common
            )
        )
    if teardown.resolved_at is not None and teardown.status != RequestStatus.PENDING:
        out.append(
            EventView(
                at=teardown.resolved_at,
                kind=EventKind.TEARDOWN_DONE,
                summary=f"teardown of {target} {teardown.status}",
                **common,
            )
        )
    return out


def instance_event(instance: InstanceRecord) -> EventView | None:
    """The instance's last notice (rebalance, interruption, unhealthy): while it is in a notice's status, or after,
    as long as its record keeps the notice (terminating and terminated ones too, stamped with their last change)."""
    if instance.updated_at is None or (instance.status not in NOTICE_STATUSES and not instance.notice):
        return None
    notice = f": {instance.notice}" if instance.notice else ""
    return EventView(
        at=instance.updated_at,
        kind=EventKind.NOTICE,
        region=instance.region,
        replica_id=instance.replica_id,
        instance_id=instance.instance_id,
        summary=f"{instance.instance_id} {instance.status}{notice}",
    )


def remediation_event(remediation: Remediation) -> EventView:
    return EventView(
        at=remediation.at,
        kind=EventKind.REMEDIATION,
        region=remediation.region or None,
        instance_id=remediation.instance_id,
        summary=f"{remediation.instance_id}: {remediation.alarm_name or 'alarm'} fired: {remediation.reason}",
    )


def exclusion_event(exclusion: Exclusion, *, now: float) -> EventView:
    kind = f" ({exclusion.kind})" if exclusion.kind else ""
    minutes = max(0, round((exclusion.until - now) / 60))
    return EventView(
        at=now,
        kind=EventKind.EXCLUSION,
        region=exclusion.region,
        summary=f"{exclusion.region} excluded{kind} for {minutes} more min: {exclusion.reason or 'no reason given'}",
    )


def standby_events(standby: StandbyRecord) -> list[EventView]:
    """A standby held now (started, ready) or one that ended (and how)."""
    where = f"{standby.capacity_type} in {standby.zone or standby.region}"
    why = f": {'; '.join(standby.reasons)}" if standby.reasons else ""
    common = {"region": standby.region, "replica_id": standby.replica_id}
    out = [
        EventView(
            at=standby.launched_at,
            kind=EventKind.STANDBY_STARTED,
            summary=f"standby of {standby.replica_id} started ({where}){why}",
            **common,
        )
    ]
    if standby.ready_at is not None:
        out.append(
            EventView(
                at=standby.ready_at,
                kind=EventKind.STANDBY_READY,
                instance_id=standby.instance_id,
                summary=f"standby of {standby.replica_id} ready on {standby.instance_id} ({where})",
                **common,
            )
        )
    if isinstance(standby, EndedStandby):
        reason = f": {standby.why}" if standby.why else ""
        out.append(
            EventView(
                at=standby.ended_at,
                kind=STANDBY_ENDS[standby.outcome],
                instance_id=standby.instance_id,
                summary=f"standby of {standby.replica_id} {standby.outcome}{reason}",
                **common,
            )
        )
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
    """Newest first, at most `limit`, only those after `since`. An exclusion in force is shown as of now (its
    record keeps when it ends, not when it began)."""
    events: list[EventView] = []
    for launch in launches:
        events.extend(launch_events(launch))
    for teardown in teardowns:
        events.extend(teardown_events(teardown))
    events.extend(e for e in map(instance_event, instances) if e is not None)
    events.extend(map(remediation_event, remediations))
    events.extend(exclusion_event(exclusion, now=now) for exclusion in exclusions)
    for standby in standbys:
        events.extend(standby_events(standby))
    if since is not None:
        from spothub_core.models.api import iso_utc  # noqa: PLC0415

        cutoff = iso_utc(since)
        events = [e for e in events if e.at > cutoff]
    events.sort(key=lambda e: (e.at, e.kind), reverse=True)
    return EventsView(events=events[:limit])


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

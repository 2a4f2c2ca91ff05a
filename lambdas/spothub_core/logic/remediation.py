"""A worker region's remediation: an instance alarm fired (silent agent, GPU errors) → ask the hub to
replace the instance, with the reason. The hub records every remediation and replaces make before break.

Alarm state changes arrive at least once and in any order; the report names the firing (alarm name and
the time of the state change), so the hub acts on each firing once.
"""

from __future__ import annotations

from typing import Any

from spothub_core.contracts import InstanceUnhealthy, Source, WorkerReport
from spothub_core.dal.event_bus import put_event
from spothub_core.logic import instance_alarms
from spothub_core.logic.worker_region import (
    LAUNCH_TAG,
    REPLICA_TAG,
    WorkerRegion,
    group_member,
    instances,
    tags_of,
    unwatch,
)

ALARM = "ALARM"
LIVE_STATES = ("pending", "running")


def on_alarm(worker: WorkerRegion, events: Any, bus_name: str, detail: dict[str, Any]) -> str:
    name = str(detail.get("alarmName", ""))
    parsed = instance_alarms.parse_alarm_name(worker.prefix, name)
    if parsed is None:
        return "ignored: not an instance alarm of this deployment"
    kind, instance_id = parsed
    state = detail.get("state") or {}
    if state.get("value") != ALARM:
        return f"ignored: {state.get('value')}"
    member = group_member(worker, instance_id)
    instance = instances(worker, [instance_id]).get(instance_id) if member else None
    if instance is None or instance.get("State", {}).get("Name") not in LIVE_STATES:
        # Its alarms outlived it (terminated outside a teardown): nothing to replace, stop watching.
        unwatch(worker, instance_id)
        return "ignored: the instance is gone; its alarms are deleted"
    tags = tags_of(instance)
    reason = f"{kind.reason}: {state.get('reason', '')}".strip().rstrip(":")
    report = InstanceUnhealthy(
        region=worker.region,
        instance_id=instance_id,
        notice_id=f"{name}@{state.get('timestamp', '')}",
        reason=reason[:1000],
        alarm_name=name,
        replica_id=tags.get(REPLICA_TAG),
        launch_id=tags.get(LAUNCH_TAG),
    )
    put_event(events, bus_name, Source.WORKER, WorkerReport.INSTANCE_UNHEALTHY, report.model_dump(mode="json"))
    return f"replacement asked: {reason}"

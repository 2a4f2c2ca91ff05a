"""A worker region's remediation: an instance alarm fired (silent agent, GPU errors) → ask the hub to
replace the instance, with the reason. The hub records every remediation and replaces make before break.

Alarm state changes arrive at least once and in any order; the report names the firing (alarm name and
the time of the state change), so the hub acts on each firing once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spothub_core.contracts import AlarmStateChangeDetail, InstanceTag, InstanceUnhealthy, Source, WorkerReport
from spothub_core.dal.auto_scaling_group import AutoScalingGroup
from spothub_core.dal.ec2_instances import Ec2Instances, tags_of
from spothub_core.dal.event_bus import put_event
from spothub_core.dal.instance_alarms import InstanceAlarms
from spothub_core.logic import instance_alarms

ALARM = "ALARM"
LIVE_STATES = ("pending", "running")


@dataclass(frozen=True)
class RemediationServices:
    """What the instance_remediation function works with in its region."""

    region: str
    prefix: str
    group: AutoScalingGroup
    instances: Ec2Instances
    alarms: InstanceAlarms
    events: Any
    bus_name: str


def on_alarm(services: RemediationServices, detail: AlarmStateChangeDetail) -> str:
    name = detail.alarm_name
    parsed = instance_alarms.parse_alarm_name(services.prefix, name)
    if parsed is None:
        return "ignored: not an instance alarm of this deployment"
    kind, instance_id = parsed
    if detail.state.value != ALARM:
        return f"ignored: {detail.state.value}"
    member = services.group.member(instance_id)
    instance = services.instances.describe([instance_id]).get(instance_id) if member else None
    if instance is None or instance.get("State", {}).get("Name") not in LIVE_STATES:
        # Its alarms outlived it (terminated outside a teardown): nothing to replace, stop watching.
        services.alarms.delete(instance_alarms.alarm_names(services.prefix, instance_id))
        return "ignored: the instance is gone; its alarms are deleted"
    tags = tags_of(instance)
    reason = f"{kind.reason}: {detail.state.reason}".strip().rstrip(":")
    report = InstanceUnhealthy(
        region=services.region,
        instance_id=instance_id,
        notice_id=f"{name}@{detail.state.timestamp}",
        reason=reason[:1000],
        alarm_name=name,
        replica_id=tags.get(InstanceTag.REPLICA),
        launch_id=tags.get(InstanceTag.LAUNCH),
    )
    put_event(
        services.events,
        services.bus_name,
        Source.WORKER,
        WorkerReport.INSTANCE_UNHEALTHY,
        report.model_dump(mode="json"),
    )
    return f"replacement asked: {reason}"

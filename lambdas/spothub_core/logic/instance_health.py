"""Instance health: what agents report (registration, heartbeats, drains) and remediation of unhealthy
instances. The agent keeps no authority: it reports; the hub decides to replace."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.errors import Forbidden, NotFound
from spothub_core.events import DrainCompleted, InstanceUnhealthy
from spothub_core.logic.capacity import HubServices, start_replacement

INSTANCE_ID_PATTERN = r"^i-[0-9a-f]{8,17}$"
# An EC2 instance profile's session: arn:aws:sts::<account>:assumed-role/<role>/<instance id>.
_INSTANCE_SESSION = re.compile(r"^arn:[^:]+:sts::\d+:assumed-role/[^/]+/(i-[0-9a-f]{8,17})$")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Registration(_Body):
    region: str = Field(min_length=1, max_length=30)
    availability_zone: str = Field("", max_length=40)
    instance_type: str = Field("", max_length=40)
    group: str = Field("", max_length=255)
    capacity_type: Literal["spot", "on-demand", ""] = ""
    agent_version: str = Field("", max_length=40)


class WorkloadHealth(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    state: str = Field("", max_length=40)
    exit_code: int | None = None
    last_lines: list[str] = Field(default_factory=list, max_length=50)


class Heartbeat(_Body):
    ready: bool
    workload: WorkloadHealth = WorkloadHealth()
    gpu: dict[str, Any] = Field(default_factory=dict)
    drained: bool = False


def check_caller(caller_arn: str | None, instance_id: str) -> None:
    """An instance speaks only for itself: a caller signed with an instance profile's credentials (its
    session is named by its instance id) may not register or beat for another instance. Other principals
    with the right to invoke the route (operators, tests) are let through."""
    session = _INSTANCE_SESSION.match(caller_arn or "")
    if session and session.group(1) != instance_id:
        raise Forbidden(f"instance {session.group(1)} may not speak for {instance_id}")


def register(store: InstanceHealthStore, instance_id: str, registration: Registration, *, now: float) -> dict[str, Any]:
    store.register(instance_id, {**registration.model_dump(), "status": "registered"}, now=now)
    return {"instance_id": instance_id, "registered": True}


def heartbeat(store: InstanceHealthStore, instance_id: str, beat: Heartbeat, *, now: float) -> dict[str, Any]:
    if not store.heartbeat(instance_id, beat.model_dump(), now=now):
        raise NotFound(f"instance {instance_id} is not registered: register first")
    return {"instance_id": instance_id, "last_seen": int(now)}


def on_drain_completed(health: InstanceHealthStore, report: DrainCompleted, *, now: float) -> str:
    health.record_drain(report.instance_id, report.model_dump(exclude={"version"}), now=now)
    return f"drain recorded: {report.outcome}"


def on_instance_unhealthy(
    hub: HubServices, health: InstanceHealthStore, report: InstanceUnhealthy, *, now: float
) -> str:
    if not health.record_remediation(
        report.instance_id,
        report.notice_id,
        {"region": report.region, "reason": report.reason, "alarm_name": report.alarm_name},
        now=now,
    ):
        return "ignored: this alarm firing was remediated already"
    instance = hub.store.instance(report.instance_id)
    if not instance or instance.get("status") == "terminated":
        return "recorded: not a serving instance spothub placed"
    hub.store.put_instance(
        report.instance_id, {"status": "unhealthy", "notice": report.reason[:300], "updated_at": int(now)}
    )
    return start_replacement(hub, instance, report.instance_id, report.region, "unhealthy", now=now)

"""What agents say of their instances: registration and heartbeats. The agent keeps no authority: it reports;
the hub decides to replace (its reports are consumed with the other worker reports)."""

from __future__ import annotations

import re

from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.errors import Forbidden, NotFound
from spothub_core.models.agent import AgentRegistered, Heartbeat, HeartbeatAccepted, Registration
from spothub_core.models.api import iso_utc

# An EC2 instance profile's session: arn:aws:sts::<account>:assumed-role/<role>/<instance id>.
_INSTANCE_SESSION = re.compile(r"^arn:[^:]+:sts::\d+:assumed-role/[^/]+/(i-[0-9a-f]{8,17})$")


def check_caller(caller_arn: str | None, instance_id: str) -> None:
    """An instance speaks only for itself: a caller signed with an instance profile's credentials (its
    session is named by its instance id) may not register or beat for another instance. Other principals
    with the right to invoke the route (operators, tests) are let through."""
    session = _INSTANCE_SESSION.match(caller_arn or "")
    if session and session.group(1) != instance_id:
        raise Forbidden(f"instance {session.group(1)} may not speak for {instance_id}")


def register(
    store: InstanceHealthStore, instance_id: str, registration: Registration, *, now: float
) -> AgentRegistered:
    store.register(instance_id, registration, now=now)
    return AgentRegistered(instance_id=instance_id, registered=True)


def heartbeat(store: InstanceHealthStore, instance_id: str, beat: Heartbeat, *, now: float) -> HeartbeatAccepted:
    if not store.heartbeat(instance_id, beat, now=now):
        raise NotFound(f"instance {instance_id} is not registered: register first")
    return HeartbeatAccepted(instance_id=instance_id, last_seen=iso_utc(now))

"""What the state table stores, one model per item kind, with status enums instead of string literals.

The dal modules read items into these and write them from them; the keys (pk/sk) and the DynamoDB
number types stay in the dal. Times are epoch seconds, as stored (TTL needs numbers); the API shows them
as ISO 8601. Unknown attributes are ignored, so an item written by a newer version still reads.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field

from spothub_core.contracts import CapacityType
from spothub_core.models.base import Model


class ProvisioningStatus(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class ReplicaStatus(StrEnum):
    PLACING = "placing"  # an orchestrator looks for a region and launches there
    SERVING = "serving"  # its instance is healthy and published
    REPLACING = "replacing"  # a replacement (make before break) is under way; the old instance still serves
    FAILED = "failed"  # the orchestrator gave up; the next enable retries it under a new generation
    STOPPED = "stopped"  # disabled, or no longer wanted (fewer replicas)


class RequestStatus(StrEnum):
    """A launch or teardown request: pending until the first report (or the orchestrator) resolves it."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABANDONED = "abandoned"
    COMPLETED = "completed"


class InstanceStatus(StrEnum):
    SERVING = "serving"
    AT_RISK = "at-risk"  # a rebalance recommendation: replaced, still serving meanwhile
    INTERRUPTED = "interrupted"  # a spot interruption warning: two minutes left
    UNHEALTHY = "unhealthy"  # an instance alarm fired: replaced
    TERMINATING = "terminating"  # a teardown was asked for
    TERMINATED = "terminated"


class ReservationStatus(StrEnum):
    HELD = "held"
    RELEASED = "released"


class AgentStatus(StrEnum):
    REGISTERED = "registered"


class _Record(Model):
    model_config = ConfigDict(extra="ignore", use_enum_values=False)


class ProvisioningConfig(_Record):
    """PROVISIONING / CONFIG: the switch and the operator's settings, one generation per change."""

    status: ProvisioningStatus = ProvisioningStatus.DISABLED
    generation: int = 0
    replicas: int | None = None
    instance_types: list[str] | None = None
    allowed_regions: list[str] | None = None
    denied_regions: list[str] = Field(default_factory=list)
    # Keep a warm spot standby in another zone while a replica's risk of preemption is high (logic/standby_watch.py).
    warm_standby: bool = False
    updated_at: float | None = None

    @property
    def enabled(self) -> bool:
        return self.status == ProvisioningStatus.ENABLED


class Replica(_Record):
    """REPLICA / <replica_id>: where one serving replica is and which execution drives it."""

    replica_id: str
    status: ReplicaStatus = ReplicaStatus.STOPPED
    generation: int = -1
    execution: str | None = None
    region: str | None = None
    instance_id: str | None = None
    capacity_type: CapacityType | None = None
    launch_id: str | None = None
    target_region: str | None = None  # where its current launch goes
    placed_at: float | None = None
    reason: str | None = None  # why it is where it is (the ranking's reason)
    error: str | None = None
    updated_at: float | None = None


class LaunchRecord(_Record):
    """LAUNCH / <launch_id>: one launch request to a worker region, holding the orchestrator's task token."""

    launch_id: str
    status: RequestStatus = RequestStatus.PENDING
    task_token: str | None = None
    replica_id: str | None = None
    region: str = ""
    capacity_type: CapacityType = "spot"
    generation: int = 0
    instance_id: str | None = None
    error: str | None = None
    created_at: float | None = None
    resolved_at: float | None = None


class TeardownRecord(_Record):
    """TEARDOWN / <teardown_id>: one teardown request and the task token that waits for it, if any."""

    teardown_id: str
    status: RequestStatus = RequestStatus.PENDING
    task_token: str | None = None
    region: str = ""
    instance_id: str | None = None
    launch_id: str | None = None
    reason: str = ""
    created_at: float | None = None
    resolved_at: float | None = None


class InstanceRecord(_Record):
    """INSTANCE / <instance_id>: an instance spothub placed, as GET /spot-instances shows it."""

    instance_id: str
    status: InstanceStatus = InstanceStatus.SERVING
    region: str | None = None
    replica_id: str | None = None
    launch_id: str | None = None
    instance_type: str = ""
    availability_zone: str = ""
    capacity_type: CapacityType = "spot"
    private_ip: str | None = None
    public_ip: str | None = None
    launched_at: str | None = None  # ISO 8601, as EC2 says it
    task_arn: str | None = None
    notice: str | None = None  # the last capacity notice or health reason
    updated_at: float | None = None


class Reservation(_Record):
    """RESERVATION / <region>: the replica that holds a region, from before its launch is dispatched there."""

    region: str
    status: ReservationStatus
    replica_id: str
    launch_id: str
    reserved_at: float | None = None
    released_at: float | None = None


class Exclusion(_Record):
    """EXCLUSION / <region>: a region left out of the ranking until `until` (epoch seconds)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    region: str
    until: float
    reason: str = ""
    kind: str = ""  # the failure's class ("" when not given): quota alerts go out once per exclusion of a kind


class AgentRecord(_Record):
    """AGENT / <instance_id>: the agent's registration and its latest heartbeat."""

    instance_id: str
    status: AgentStatus = AgentStatus.REGISTERED
    region: str = ""
    availability_zone: str = ""
    instance_type: str = ""
    group: str = ""
    capacity_type: str = ""
    agent_version: str = ""
    registered_at: float | None = None
    last_seen: float | None = None  # the registration's or the latest heartbeat's time
    # What the latest heartbeat said; None (ready, gpu) before the first one.
    ready: bool | None = None
    workload: dict[str, Any] = Field(default_factory=dict)
    gpu: dict[str, Any] | None = None
    drained: bool = False
    drain: dict[str, Any] | None = None  # the agent's drain report (Spothub Drain Completed), once it drained


class Remediation(_Record):
    """REMEDIATION / <instance_id>#<notice_id>: one alarm firing on an instance, and what it was about."""

    instance_id: str
    notice_id: str
    at: float
    region: str = ""
    reason: str = ""
    alarm_name: str = ""

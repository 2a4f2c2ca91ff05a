"""What the deployments table stores for model deployments, one model per item kind, with status enums.

Key layout (the dal owns keys and condition expressions; dal/deployment_store.py):
  pk=MODEL              sk=<deployment_id>          a deployment (ModelDeployment)
  pk=MODEL#<id>         sk=TASK#<task_id>           one ECS task of it, past or present (DeploymentTask)
  pk=NODE               sk=<instance_id>            a GPU node and its GPU accounting (GpuNode)
  pk=TENANT             sk=<tenant>                 the GPUs a tenant's deployments hold (TenantUsage)
  pk=NODEGROUP          sk=<region>#<node_class>    what the controller asked of a node group (NodeGroupAsk)
  pk=SCALING            sk=<ISO time>#<event_id>    a scaling decision (ScalingEvent)
  pk=CONTROLLER         sk=LEASE                    the controller run that holds the lease (ControllerLease)

A deployment is `replicas` slots (0..replicas-1); each slot has one current task, and for a moment two: a
replacement (restart, drain, interruption) starts while the task it replaces keeps serving, which stops once the
replacement is healthy (make before break). GPUs are allocated on a node when a task is placed there and given
back exactly once, when the task ends (one transaction with the task's move to `stopped`). Times are epoch seconds
as stored; the API shows ISO 8601.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from spothub_core.contracts import CapacityType
from spothub_core.models.base import Model


class DeploymentStatus(StrEnum):
    CREATING = "creating"  # not every replica has been healthy yet
    RUNNING = "running"  # every desired replica healthy
    DEGRADED = "degraded"  # some replicas healthy, some not (restarting, given up, waiting for capacity)
    FAILED = "failed"  # no replica healthy and none coming: gave up (last_error says why)
    DELETING = "deleting"  # DELETE asked: its tasks are stopping
    DELETED = "deleted"  # every task stopped, GPUs given back; the record expires

    @property
    def live(self) -> bool:
        """Holds (or will hold) GPUs and counts against its tenant's quota."""
        return self not in (DeploymentStatus.DELETED,)


class TaskStatus(StrEnum):
    """A task's lifecycle: PENDING -> STARTING -> RUNNING -> STOPPING -> STOPPED, or FAILED."""

    PENDING = "pending"  # no node yet: waiting for free GPUs (capacity coming) or for its restart backoff
    STARTING = "starting"  # placed: GPUs allocated on a node, StartTask accepted, container not healthy yet
    RUNNING = "running"  # its container health check passes
    UNHEALTHY = "unhealthy"  # it runs but its health check fails
    STOPPING = "stopping"  # StopTask asked (retired, deleted, node going); GPUs still allocated until it stopped
    STOPPED = "stopped"  # ended; its GPUs given back
    FAILED = "failed"  # its slot gave up on it (restarts exhausted); GPUs given back

    @property
    def placed(self) -> bool:
        """Holds GPUs on a node."""
        return self in (TaskStatus.STARTING, TaskStatus.RUNNING, TaskStatus.UNHEALTHY, TaskStatus.STOPPING)

    @property
    def ended(self) -> bool:
        return self in (TaskStatus.STOPPED, TaskStatus.FAILED)


class RetireReason(StrEnum):
    """Why a task is stopped on purpose (DeploymentTask.retire)."""

    RESTART = "restart"  # a rolling restart: its replacement is healthy
    DRAIN = "drain"  # its node is drained: its replacement elsewhere is healthy
    INTERRUPTED = "interrupted"  # its node has an interruption warning
    SCALE_DOWN = "scale-down"  # fewer replicas wanted
    DELETED = "deleted"  # the deployment is deleted
    UNHEALTHY = "unhealthy"  # never healthy in time, or unhealthy too long: its slot restarts


class NodeStatus(StrEnum):
    READY = "ready"  # registered in ECS, its agent beating: placements allowed
    CORDONED = "cordoned"  # no new placements; what runs stays
    DRAINING = "draining"  # no new placements; its tasks are replaced elsewhere, then stopped
    INTERRUPTED = "interrupted"  # a spot interruption warning: as draining, at once
    GONE = "gone"  # no longer an ECS container instance (terminated): its allocations were given back

    @property
    def schedulable(self) -> bool:
        return self == NodeStatus.READY


class ScalingTrigger(StrEnum):
    MANUAL = "manual"  # POST /deployments/{id}/scale, a create, a rolling restart
    AUTOSCALE = "autoscale"  # GPU utilization against the target
    RECOVERY = "recovery"  # a task that stopped unexpectedly restarted, or a slot given up
    DRAIN = "drain"  # a node drained or interrupted: its tasks moved


class ScalingResult(StrEnum):
    APPLIED = "applied"
    CAPPED = "capped"  # applied within min/max or the tenant's quota, short of what was asked
    REFUSED = "refused"  # nothing changed (the reason says why)
    GAVE_UP = "gave-up"  # a slot's restarts exhausted


class _Record(Model):
    model_config = ConfigDict(extra="ignore", use_enum_values=False)


class Autoscale(Model):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target_gpu_utilization: float = Field(70.0, gt=0, le=100, description="mean GPU utilization, percent")
    cooldown_s: int = Field(300, ge=60, le=86_400, description="seconds between two autoscaling decisions")


class ModelDeployment(_Record):
    """MODEL / <deployment_id>."""

    deployment_id: str
    model: str
    tenant: str
    image: str
    gpus: int  # per replica
    replicas: int  # desired
    min_replicas: int
    max_replicas: int
    autoscale: Autoscale | None = None
    max_model_len: int | None = None
    env: dict[str, str] = Field(default_factory=dict)
    node_class: str  # the node class its replicas run on (the smallest with `gpus` GPUs per node)
    status: DeploymentStatus = DeploymentStatus.CREATING
    created_at: float
    updated_at: float
    restart_generation: int = 0  # a rolling restart increments it: tasks of an older generation are replaced
    last_scaled_at: float | None = None  # the last autoscaling decision that changed replicas (the cooldown)
    last_error: str | None = None
    # task definition ARN per region, registered on first placement there
    task_definitions: dict[str, str] = Field(default_factory=dict)
    expires_at: int | None = None  # set once deleted


class DeploymentTask(_Record):
    """MODEL#<deployment_id> / TASK#<task_id>: one task of a replica slot."""

    deployment_id: str
    task_id: str  # sorts by creation time (logic: new ids are time-ordered)
    slot: int
    generation: int  # the deployment's restart_generation it was created for
    status: TaskStatus = TaskStatus.PENDING
    gpus: int
    created_at: float
    not_before: float | None = None  # restart backoff: not placed before this time
    failures: int = 0  # consecutive failures of its slot, carried from the task it replaces
    restarts: int = 0  # restarts of its slot so far (the API's `restarts`)
    replaces: str | None = None  # the task this one replaces; that one stops once this one is healthy
    retire: RetireReason | None = None  # set on a task to stop (once its replacement, if any, is healthy)
    # where it runs: set when placed
    instance_id: str | None = None
    region: str | None = None
    container_instance_arn: str | None = None
    ecs_task_arn: str | None = None
    gpu_ids: list[str] = Field(default_factory=list)
    endpoint: str | None = None  # http://<node private address>:<host port>
    placed_at: float | None = None
    healthy_at: float | None = None
    unhealthy_since: float | None = None  # when its health check started failing (status unhealthy)
    stopped_at: float | None = None
    last_error: str | None = None
    expires_at: int | None = None  # set once ended


class GpuUsage(Model):
    """One GPU of a node, from its agent's last heartbeat (NVML)."""

    model_config = ConfigDict(extra="ignore")

    uuid: str = ""
    index: int = 0
    utilization_pct: float | None = None
    memory_used_mib: int | None = None
    memory_total_mib: int | None = None


class GpuNode(_Record):
    """NODE / <instance_id>: a GPU node and its accounting. gpus_allocated <= gpus_total always (every allocation
    is a conditional update)."""

    instance_id: str
    region: str
    node_class: str
    instance_type: str
    capacity_type: CapacityType | None = None
    container_instance_arn: str
    gpus_total: int
    gpus_allocated: int = 0
    gpu_ids: list[str] = Field(default_factory=list)
    status: NodeStatus = NodeStatus.READY
    status_reason: str | None = None  # who cordoned/drained it, or the interruption notice
    private_ip: str | None = None
    first_seen: float
    last_heartbeat: float | None = None
    gpu_usage: list[GpuUsage] = Field(default_factory=list)
    idle_since: float | None = None  # nothing allocated since then (None while something is)
    expires_at: int | None = None  # set once gone

    @property
    def gpus_free(self) -> int:
        return self.gpus_total - self.gpus_allocated


class TenantUsage(_Record):
    """TENANT / <tenant>: GPUs its live deployments reserve (gpus x replicas), never above its quota."""

    tenant: str
    gpus_reserved: int = 0


class NodeGroupAsk(_Record):
    """NODEGROUP / <region>#<node_class>: what the controller last asked of a region's node group."""

    region: str
    node_class: str
    desired: int  # the group's desired capacity the controller set
    asked_at: float
    registered_at_ask: int  # nodes of the group registered when it asked: more must appear within NODE_BOOT_SECONDS
    on_demand: bool = False  # asked as on-demand (no spot region left and the fallback allows it)
    excluded_until: float | None = None  # the region gave no node in time: not asked again until then


class ScalingEvent(_Record):
    """SCALING / <ISO time>#<event_id>."""

    event_id: str
    deployment_id: str
    trigger: ScalingTrigger
    reason: str
    before: int
    after: int
    result: ScalingResult
    at: float
    expires_at: int | None = None


class ControllerLease(_Record):
    """CONTROLLER / LEASE: the controller run that holds it, until when; `again` set by a run that found it held."""

    holder: str | None = None
    until: float = 0
    again: bool = False

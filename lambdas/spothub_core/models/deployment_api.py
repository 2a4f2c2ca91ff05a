"""The deployments API's requests and answers (lambdas/deployments_api; logic/deployment_api.py).

POST   /deployments                         DeploymentRequest -> 202 DeploymentAccepted
GET    /deployments?tenant=&status=&model=&limit=&next_token=  -> DeploymentsPage
GET    /deployments/{id}/status             -> DeploymentView
DELETE /deployments/{id}                    -> DeploymentView (deleting)
POST   /deployments/{id}/restart            -> DeploymentView (a rolling restart asked)
POST   /deployments/{id}/scale              ScaleRequest -> DeploymentView
GET    /resources/available                 -> ResourcesView
GET    /nodes                               -> NodesView
GET    /nodes/{instance_id}                 -> NodeView
POST   /nodes/{instance_id}/cordon|uncordon|drain  NodeOperation (optional body) -> NodeView
GET    /gpu-utilization                     -> UtilizationView
GET    /scaling/events?deployment_id=&limit=  -> ScalingEventsPage
GET    /health                              -> InfrastructureHealth
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from spothub_core.models.base import Model
from spothub_core.models.deployment_records import (
    Autoscale,
    DeploymentStatus,
    NodeStatus,
    ScalingResult,
    ScalingTrigger,
    TaskStatus,
)

DEPLOYMENT_ID_PATTERN = r"^d-[0-9a-z]{6,32}$"
MAX_GPUS_PER_REPLICA = 8
MAX_REPLICAS = 64
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")]


class DeploymentRequest(Model):
    model_config = ConfigDict(extra="forbid")

    model: Name = Field(description="the model the server loads (a Hugging Face id, e.g. meta-llama/Llama-3.1-8B)")
    tenant: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")] = Field(
        description="who the deployment is for: quotas are per tenant"
    )
    image: Name | None = Field(None, description="the inference server image; default: the pinned vLLM OpenAI server")
    gpus: int = Field(1, ge=1, le=MAX_GPUS_PER_REPLICA, description="GPUs per replica")
    replicas: int = Field(1, ge=0, le=MAX_REPLICAS)
    min_replicas: int | None = Field(None, ge=0, le=MAX_REPLICAS, description="default: replicas")
    max_replicas: int | None = Field(None, ge=1, le=MAX_REPLICAS, description="default: replicas")
    autoscale: Autoscale | None = Field(None, description="scale on GPU utilization within min/max")
    max_model_len: int | None = Field(None, ge=16, le=1_048_576)
    env: dict[EnvName, Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=dict, max_length=50, description="extra environment of the server (no secrets: use SSM)"
    )

    @model_validator(mode="after")
    def _bounds(self) -> DeploymentRequest:
        low = self.replicas if self.min_replicas is None else self.min_replicas
        high = max(self.replicas, 1) if self.max_replicas is None else self.max_replicas
        if not low <= self.replicas <= high:
            raise ValueError(f"replicas must lie within min_replicas..max_replicas ({low}..{high})")
        return self


class ScaleRequest(Model):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=0, le=MAX_REPLICAS)


class NodeOperation(Model):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=200, description="why, kept on the node and shown by GET /nodes")


class DeploymentAccepted(Model):
    deployment_id: str
    status: DeploymentStatus


class ReplicaCounts(Model):
    desired: int
    running: int = Field(description="tasks placed and not ended")
    healthy: int = Field(description="tasks whose health check passes")


class TaskView(Model):
    task_id: str
    slot: int
    instance_id: str | None
    region: str | None
    gpus: int
    status: TaskStatus
    endpoint: str | None
    started_at: str | None = Field(description="when it was placed, ISO 8601 UTC")
    restarts: int
    last_error: str | None = None


class DeploymentView(Model):
    deployment_id: str
    model: str
    tenant: str
    image: str
    gpus: int
    status: DeploymentStatus
    replicas: ReplicaCounts
    min_replicas: int
    max_replicas: int
    autoscale: Autoscale | None
    tasks: list[TaskView]
    endpoints: list[str] = Field(description="the healthy tasks' endpoints (OpenAI-compatible /v1/...)")
    created_at: str
    last_error: str | None


class DeploymentSummary(Model):
    deployment_id: str
    model: str
    tenant: str
    gpus: int
    status: DeploymentStatus
    replicas: int
    created_at: str


class DeploymentsPage(Model):
    deployments: list[DeploymentSummary]
    next_token: str | None = Field(None, description="pass as next_token for the next page; absent on the last")


class GpuCount(Model):
    region: str
    instance_type: str
    nodes: int
    total: int
    allocated: int
    free: int = Field(description="on schedulable nodes only (not cordoned, draining or interrupted)")


class ResourcesView(Model):
    resources: list[GpuCount]
    total: int
    allocated: int
    free: int


class NodeTaskView(Model):
    deployment_id: str
    task_id: str
    gpus: int
    status: TaskStatus


class NodeView(Model):
    instance_id: str
    region: str
    instance_type: str
    node_class: str
    capacity_type: str | None
    status: NodeStatus
    status_reason: str | None
    gpus_total: int
    gpus_allocated: int
    gpus_free: int
    last_heartbeat: str | None
    gpu_utilization_pct: float | None = Field(description="mean over its GPUs, last heartbeat")
    tasks: list[NodeTaskView]


class NodesView(Model):
    nodes: list[NodeView]


class GpuView(Model):
    uuid: str
    index: int
    utilization_pct: float | None
    memory_used_mib: int | None
    memory_total_mib: int | None
    deployment_id: str | None = Field(description="the deployment whose task holds this GPU")


class NodeUtilization(Model):
    instance_id: str
    region: str
    last_heartbeat: str | None
    utilization_pct: float | None
    gpus: list[GpuView]


class DeploymentUtilization(Model):
    deployment_id: str
    utilization_pct: float | None = Field(description="mean over its running tasks' GPUs")
    gpus: int
    target_pct: float | None


class UtilizationView(Model):
    nodes: list[NodeUtilization]
    deployments: list[DeploymentUtilization]


class ScalingEventView(Model):
    event_id: str
    deployment_id: str
    trigger: ScalingTrigger
    reason: str
    before: int
    after: int
    result: ScalingResult
    at: str


class ScalingEventsPage(Model):
    events: list[ScalingEventView] = Field(description="newest first")


class HealthCheck(Model):
    name: str
    ok: bool
    detail: str


class InfrastructureHealth(Model):
    healthy: bool
    nodes_ready: int
    nodes_total: int
    stuck_deployments: list[str] = Field(description="creating past the limit, or failed")
    alarms_in_alarm: list[str]
    checks: list[HealthCheck]

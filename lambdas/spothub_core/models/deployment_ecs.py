"""What the deployment controller reads of a worker region: its GPU nodes as ECS container instances, the
deployments' ECS tasks, and its node groups (dal/worker_ecs.py and dal/node_groups.py build these from the ECS
and Auto Scaling answers)."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from spothub_core.contracts import CapacityType
from spothub_core.models.base import Model


class _View(Model):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContainerNode(_View):
    """An ACTIVE or DRAINING container instance of the region's GPU cluster that is a deployment node (its EC2
    instance is a member of a node group, `<prefix>-nodes-<class>`)."""

    instance_id: str
    container_instance_arn: str
    instance_type: str
    node_class: str
    gpus_registered: int
    gpu_ids: list[str] = Field(default_factory=list)  # the GPU ids ECS registered (NVIDIA UUIDs)
    status: str  # ECS: ACTIVE, DRAINING, ...
    agent_connected: bool
    private_ip: str | None = None
    capacity_type: CapacityType | None = None


class TaskState(_View):
    """One ECS task, as DescribeTasks answers."""

    task_arn: str
    last_status: str  # PROVISIONING, PENDING, ACTIVATING, RUNNING, ..., STOPPED
    desired_status: str
    health_status: str = "UNKNOWN"  # HEALTHY, UNHEALTHY, UNKNOWN (the container health check's verdict)
    stopped_reason: str = ""
    stop_code: str = ""
    exit_code: int | None = None
    host_port: int | None = None  # the inference server's port on the node (bridge network, dynamic host port)
    gpu_ids: list[str] = Field(default_factory=list)
    started_at: float | None = None
    stopped_at: float | None = None

    @property
    def stopped(self) -> bool:
        return self.last_status == "STOPPED"


class NodeGroupState(_View):
    """A node group (`<prefix>-nodes-<class>`) in one region."""

    name: str
    region: str
    node_class: str
    desired: int
    max_size: int
    instance_ids: list[str] = Field(default_factory=list)  # its members, in any lifecycle state
    on_demand: bool = False  # its on-demand base capacity covers the whole group
    last_failure: str | None = None  # the latest failed scaling activity's status message, if recent

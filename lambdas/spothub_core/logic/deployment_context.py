"""What the deployment controller's steps work with: the table, each worker region's ECS and node groups, the
spot finder, the settings and the time of the run. The steps (node_tracker, deployment_health, deployment_scaling,
deployment_placement, node_capacity) take a ControllerContext and say what they did in `ctx.log`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from spothub_core.dal.deployment_store import DeploymentStore
from spothub_core.models.deployment_ecs import ContainerNode, NodeGroupState, TaskState
from spothub_core.models.deployment_records import ModelDeployment
from spothub_core.models.orchestrator_tasks import FindAnswer, FindRequest
from spothub_core.settings import DeploymentSettings


class PlacementRefused(Exception):
    """StartTask placed nothing: ECS's failure reason (RESOURCE:GPU, MISSING, AGENT, ...)."""


class WorkerEcs(Protocol):
    """ECS in one worker region (dal/worker_ecs.py)."""

    def nodes(self) -> list[ContainerNode]: ...

    def ensure_task_definition(self, deployment: ModelDeployment) -> str:
        """The ARN of the deployment's task definition in this region, registered when missing or different."""
        ...

    def start_task(
        self, task_definition_arn: str, container_instance_arn: str, *, deployment_id: str, task_id: str
    ) -> str:
        """Start one task on exactly that container instance; its ARN. Raises PlacementRefused."""
        ...

    def describe_tasks(self, task_arns: list[str]) -> dict[str, TaskState]:
        """By ARN; an ARN ECS no longer knows is absent."""
        ...

    def stop_task(self, task_arn: str, reason: str) -> None:
        """Idempotent: stopping a stopped or unknown task is no error."""
        ...


class NodeGroups(Protocol):
    """The node groups of one worker region (dal/node_groups.py)."""

    def describe(self, node_class: str) -> NodeGroupState | None: ...

    def set_desired(self, node_class: str, desired: int) -> None: ...

    def set_on_demand(self, node_class: str, on_demand: bool) -> None: ...

    def release(self, node_class: str, instance_id: str) -> None:
        """Terminate that member, decrementing the group's desired capacity (idempotent)."""
        ...


@dataclass(frozen=True)
class RegionClients:
    ecs: WorkerEcs
    groups: NodeGroups


@dataclass
class ControllerContext:
    store: DeploymentStore
    settings: DeploymentSettings
    region: Callable[[str], RegionClients]  # a worker region's clients (created on first use)
    find: Callable[[FindRequest], FindAnswer]  # the spot finder's ranking
    now: float
    log: list[str] = field(default_factory=list)  # what this run did, one line each, for the function's log

    def say(self, line: str) -> None:
        self.log.append(line)

"""Placement (logic/deployment_placement.py): which pending tasks are due, which nodes can take one and in which
order (spread, then best fit), and the placing itself against the deployments table in moto with a stand-in ECS per
region: the GPUs allocated once, the ECS task started on that container instance, a refusal undone.

The stand-ins (FakeEcs, FakeGroups, regions_of) are shared with test_node_capacity.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from spothub_core.dal.deployment_store import DeploymentStore
from spothub_core.logic.deployment_context import ControllerContext, PlacementRefused, RegionClients
from spothub_core.logic.deployment_placement import candidates, deployment_spread, due, fresh, place
from spothub_core.models.deployment_ecs import ContainerNode, NodeGroupState, TaskState
from spothub_core.models.deployment_records import (
    DeploymentStatus,
    DeploymentTask,
    GpuNode,
    ModelDeployment,
    NodeStatus,
    TaskStatus,
)
from spothub_core.models.orchestrator_tasks import FindAnswer, FindRequest
from spothub_core.timings import NODE_HEARTBEAT_STALE_SECONDS
from tests.integration.deployment_fixtures import (  # noqa: F401
    ACCOUNT,
    NOW,
    deployment_settings,
    deployment_store_fixture,
    deployments_table_fixture,
    make_deployment,
    make_node,
    make_task,
    write_deployment,
    write_node,
    write_task,
)

REGION = "us-west-2"
OTHER_REGION = "eu-west-1"


# --- stand-ins for a worker region -----------------------------------------------------------------------------


@dataclass
class FakeEcs:
    region: str = REGION
    container_nodes: list[ContainerNode] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # container instance ARN -> ECS's failure reason
    definition_error: Exception | None = None
    started: list[tuple[str, str, str]] = field(default_factory=list)  # (definition, container instance, task id)
    definitions: list[str] = field(default_factory=list)  # deployment ids, one per ensure
    stopped: list[tuple[str, str]] = field(default_factory=list)
    states: dict[str, TaskState] = field(default_factory=dict)

    def nodes(self) -> list[ContainerNode]:
        return list(self.container_nodes)

    def ensure_task_definition(self, deployment: ModelDeployment) -> str:
        self.definitions.append(deployment.deployment_id)
        if self.definition_error is not None:
            raise self.definition_error
        return f"arn:aws:ecs:{self.region}:{ACCOUNT}:task-definition/spothub-model-{deployment.deployment_id}:1"

    def start_task(
        self, task_definition_arn: str, container_instance_arn: str, *, deployment_id: str, task_id: str
    ) -> str:
        if container_instance_arn in self.refuse:
            raise PlacementRefused(self.refuse[container_instance_arn])
        self.started.append((task_definition_arn, container_instance_arn, task_id))
        return f"arn:aws:ecs:{self.region}:{ACCOUNT}:task/spothub-gpu/{task_id}"

    def describe_tasks(self, task_arns: list[str]) -> dict[str, TaskState]:
        return {a: self.states[a] for a in task_arns if a in self.states}

    def stop_task(self, task_arn: str, reason: str) -> None:
        self.stopped.append((task_arn, reason))


@dataclass
class FakeGroup:
    desired: int = 0
    max_size: int = 4
    instance_ids: list[str] = field(default_factory=list)
    on_demand: bool = False
    last_failure: str | None = None


@dataclass
class FakeGroups:
    region: str = REGION
    groups: dict[str, FakeGroup] = field(default_factory=dict)  # by node class
    released: list[str] = field(default_factory=list)
    release_error: Exception | None = None
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def describe(self, node_class: str) -> NodeGroupState | None:
        group = self.groups.get(node_class)
        if group is None:
            return None
        return NodeGroupState(
            name=f"spothub-nodes-{node_class}",
            region=self.region,
            node_class=node_class,
            desired=group.desired,
            max_size=group.max_size,
            instance_ids=list(group.instance_ids),
            on_demand=group.on_demand,
            last_failure=group.last_failure,
        )

    def set_desired(self, node_class: str, desired: int) -> None:
        self.calls.append(("set_desired", node_class, str(desired)))
        group = self.groups[node_class]
        group.desired = max(0, min(desired, group.max_size))

    def set_on_demand(self, node_class: str, on_demand: bool) -> None:
        self.calls.append(("set_on_demand", node_class, str(on_demand)))
        self.groups[node_class].on_demand = on_demand

    def release(self, node_class: str, instance_id: str) -> None:
        if self.release_error is not None:
            raise self.release_error
        self.calls.append(("release", node_class, instance_id))
        group = self.groups[node_class]
        if instance_id in group.instance_ids:
            group.instance_ids.remove(instance_id)
            group.desired -= 1
        self.released.append(instance_id)


def regions_of(*regions: str) -> dict[str, RegionClients]:
    return {r: RegionClients(ecs=FakeEcs(region=r), groups=FakeGroups(region=r)) for r in regions}


def no_finder(request: FindRequest) -> FindAnswer:
    raise AssertionError(f"placement asks no ranking: {request}")


def context(
    store: DeploymentStore,
    clients: dict[str, RegionClients],
    *,
    find: Callable[[FindRequest], FindAnswer] = no_finder,
    now: float = NOW,
    **settings: str,
) -> ControllerContext:
    return ControllerContext(
        store=store, settings=deployment_settings(**settings), region=clients.__getitem__, find=find, now=now
    )


def ecs_of(clients: dict[str, RegionClients], region: str = REGION) -> FakeEcs:
    ecs = clients[region].ecs
    assert isinstance(ecs, FakeEcs)
    return ecs


# --- pure decisions --------------------------------------------------------------------------------------------


def test_due_tasks_are_pending_past_their_backoff_oldest_first() -> None:
    live = make_deployment("d-1")
    deleting = make_deployment("d-2", status=DeploymentStatus.DELETING)
    newer = make_task(live, "t-3", created_at=NOW - 10)
    older = make_task(live, "t-1", slot=1, created_at=NOW - 20)
    backoff = make_task(live, "t-2", slot=2, not_before=NOW + 30)
    past_backoff = make_task(live, "t-4", slot=3, created_at=NOW - 30, not_before=NOW - 1)
    starting = make_task(live, "t-5", slot=4, status=TaskStatus.STARTING)
    tasks = {"d-1": [newer, older, backoff, past_backoff, starting], "d-2": [make_task(deleting, "t-9")]}

    assert [t.task_id for _, t in due([live, deleting], tasks, NOW)] == ["t-4", "t-1", "t-3"]


def test_a_node_with_a_silent_agent_is_not_fresh() -> None:
    assert fresh(make_node(utilization=[10.0]), NOW)
    assert not fresh(make_node(), NOW)  # no heartbeat yet
    assert not fresh(make_node(last_heartbeat=NOW - NODE_HEARTBEAT_STALE_SECONDS - 1), NOW)


def _node(instance_id: str, node_class: str = "4gpu", allocated: int = 0, **fields: Any) -> GpuNode:
    node = make_node(instance_id, node_class=node_class, last_heartbeat=fields.pop("last_heartbeat", NOW), **fields)
    return node.model_copy(update={"gpus_allocated": allocated})


def test_candidates_fit_the_class_the_status_the_heartbeat_and_the_free_gpus() -> None:
    deployment = make_deployment(gpus=2, node_class="4gpu")
    task = make_task(deployment)
    nodes = [
        _node("i-00000000000000a1"),
        _node("i-00000000000000a2", node_class="1gpu"),  # another class
        _node("i-00000000000000a3", status=NodeStatus.CORDONED),
        _node("i-00000000000000a4", last_heartbeat=NOW - NODE_HEARTBEAT_STALE_SECONDS - 1),
        _node("i-00000000000000a5", allocated=3),  # 1 free
        _node("i-00000000000000a6", region=OTHER_REGION),
    ]
    free = {n.instance_id: n.gpus_free for n in nodes}
    found = candidates(task, deployment, nodes, free=free, spread={}, now=NOW, regions=[REGION])
    assert [n.instance_id for n in found] == ["i-00000000000000a1"]
    found = candidates(task, deployment, nodes, free=free, spread={}, now=NOW)
    assert {n.instance_id for n in found} == {"i-00000000000000a1", "i-00000000000000a6"}


def test_candidates_spread_a_deployment_first_then_fit_best() -> None:
    deployment = make_deployment(gpus=1, node_class="4gpu")
    task = make_task(deployment)
    roomy, snug, holding = (_node("i-00000000000000b1"), _node("i-00000000000000b2", allocated=3),
                            _node("i-00000000000000b3", allocated=2))  # fmt: skip
    nodes = [roomy, snug, holding]
    free = {n.instance_id: n.gpus_free for n in nodes}

    best_fit = candidates(task, deployment, nodes, free=free, spread={}, now=NOW)
    assert [n.instance_id for n in best_fit] == [snug.instance_id, holding.instance_id, roomy.instance_id]

    spread = {snug.instance_id: 1}  # the deployment's other replica is there
    found = candidates(task, deployment, nodes, free=free, spread=spread, now=NOW)
    assert [n.instance_id for n in found] == [holding.instance_id, roomy.instance_id, snug.instance_id]


def test_spread_counts_placed_tasks_only() -> None:
    deployment = make_deployment(replicas=3)
    tasks = [
        make_task(deployment, "t-1", status=TaskStatus.RUNNING, instance_id="i-1"),
        make_task(deployment, "t-2", slot=1, status=TaskStatus.STOPPING, instance_id="i-1"),
        make_task(deployment, "t-3", slot=2, status=TaskStatus.STOPPED, instance_id="i-2"),
    ]
    assert deployment_spread(tasks) == {"i-1": 2}


# --- placing against the table ---------------------------------------------------------------------------------


def _ready(store: DeploymentStore, *nodes: GpuNode) -> dict[str, GpuNode]:
    for node in nodes:
        write_node(store, node)
    return {n.instance_id: n for n in store.nodes()}


def _tasks(store: DeploymentStore, *deployments: ModelDeployment) -> dict[str, list[DeploymentTask]]:
    return {d.deployment_id: store.tasks(d.deployment_id) for d in deployments}


def test_a_pending_task_is_placed_started_and_recorded(deployment_store: DeploymentStore) -> None:
    clients = regions_of(REGION)
    deployment = make_deployment()
    write_deployment(deployment_store, deployment)
    write_task(deployment_store, make_task(deployment))
    node = make_node("i-0000000000000001", utilization=[0.0])
    nodes = _ready(deployment_store, node)
    ctx = context(deployment_store, clients)

    result = place(ctx, [deployment], _tasks(deployment_store, deployment), nodes)

    (placed,) = result.placed
    assert result.shortfall == {} and result.refused == 0
    stored = deployment_store.tasks(deployment.deployment_id)[0]
    assert stored.status == TaskStatus.STARTING
    assert (stored.instance_id, stored.region, stored.container_instance_arn) == (
        node.instance_id,
        REGION,
        node.container_instance_arn,
    )
    assert stored.ecs_task_arn == placed.ecs_task_arn and stored.placed_at == NOW
    definition = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/spothub-model-{deployment.deployment_id}:1"
    assert ecs_of(clients).started == [(definition, node.container_instance_arn, stored.task_id)]
    assert deployment_store.get_node(node.instance_id).gpus_allocated == 1  # type: ignore[union-attr]
    assert deployment_store.get_deployment(deployment.deployment_id).task_definitions == {  # type: ignore[union-attr]
        REGION: definition
    }


def test_replicas_spread_over_nodes_and_the_task_definition_is_registered_once(
    deployment_store: DeploymentStore,
) -> None:
    clients = regions_of(REGION)
    deployment = make_deployment(gpus=2, replicas=2, node_class="4gpu")
    write_deployment(deployment_store, deployment)
    for slot in range(2):
        write_task(deployment_store, make_task(deployment, f"t-{slot}", slot=slot))
    nodes = _ready(
        deployment_store,
        make_node("i-0000000000000001", node_class="4gpu", utilization=[0.0] * 4),
        make_node("i-0000000000000002", node_class="4gpu", utilization=[0.0] * 4),
    )

    result = place(context(deployment_store, clients), [deployment], _tasks(deployment_store, deployment), nodes)

    assert sorted(t.instance_id for t in result.placed) == ["i-0000000000000001", "i-0000000000000002"]  # type: ignore[type-var]
    assert ecs_of(clients).definitions == [deployment.deployment_id]


def test_the_oldest_task_takes_the_last_gpus_and_the_rest_is_the_shortfall(deployment_store: DeploymentStore) -> None:
    clients = regions_of(REGION)
    first, second = make_deployment("d-1", created_at=NOW - 60), make_deployment("d-2", tenant="other")
    for deployment in (first, second):
        write_deployment(deployment_store, deployment)
    write_task(deployment_store, make_task(second, "t-2", created_at=NOW - 10))
    write_task(deployment_store, make_task(first, "t-1", created_at=NOW - 20))
    nodes = _ready(deployment_store, make_node("i-0000000000000001", utilization=[0.0]))

    result = place(context(deployment_store, clients), [first, second], _tasks(deployment_store, first, second), nodes)

    assert [t.task_id for t in result.placed] == ["t-1"]
    assert [t.task_id for t in result.shortfall["1gpu"]] == ["t-2"]


def test_tasks_waiting_for_their_backoff_are_neither_placed_nor_short(deployment_store: DeploymentStore) -> None:
    clients = regions_of(REGION)
    deployment = make_deployment()
    write_deployment(deployment_store, deployment)
    write_task(deployment_store, make_task(deployment, not_before=NOW + 60))

    result = place(context(deployment_store, clients), [deployment], _tasks(deployment_store, deployment), {})

    assert result.placed == [] and result.shortfall == {}


def test_a_node_filled_meanwhile_sends_the_task_to_the_next(deployment_store: DeploymentStore) -> None:
    clients = regions_of(REGION)
    deployment = make_deployment(gpus=2, node_class="4gpu")
    other = make_deployment("d-other", gpus=2, tenant="other", node_class="4gpu")
    for d in (deployment, other):
        write_deployment(deployment_store, d)
    snug = make_node("i-0000000000000001", node_class="4gpu", utilization=[0.0] * 4)
    roomy = make_node("i-0000000000000002", node_class="4gpu", utilization=[0.0] * 4)
    nodes = _ready(deployment_store, snug, roomy)  # as the run read them: 4 free on each
    for slot in range(2):  # then another placement filled the first
        write_task(deployment_store, make_task(other, f"t-o{slot}", slot=slot, status=TaskStatus.RUNNING), node=snug)
    write_task(deployment_store, make_task(deployment))

    result = place(context(deployment_store, clients), [deployment], _tasks(deployment_store, deployment), nodes)

    assert [t.instance_id for t in result.placed] == [roomy.instance_id]
    assert deployment_store.get_node(snug.instance_id).gpus_allocated == 4  # type: ignore[union-attr]


def test_a_refusal_undoes_the_placement_and_tries_the_next_node(deployment_store: DeploymentStore) -> None:
    clients = regions_of(REGION)
    deployment = make_deployment(replicas=2)
    write_deployment(deployment_store, deployment)
    for slot in range(2):
        write_task(deployment_store, make_task(deployment, f"t-{slot}", slot=slot, created_at=NOW - 10 + slot))
    refusing = make_node("i-0000000000000001", utilization=[0.0])
    good = make_node("i-0000000000000002", utilization=[0.0])
    nodes = _ready(deployment_store, refusing, good)
    ecs_of(clients).refuse[refusing.container_instance_arn] = "RESOURCE:GPU"
    ctx = context(deployment_store, clients)

    result = place(ctx, [deployment], _tasks(deployment_store, deployment), nodes)

    assert result.refused == 1
    assert [(t.task_id, t.instance_id) for t in result.placed] == [("t-0", good.instance_id)]
    # t-1: the one node with room refuses this run (not asked again); that is no lack of nodes
    assert result.shortfall == {}
    waiting = next(t for t in deployment_store.tasks(deployment.deployment_id) if t.task_id == "t-1")
    assert waiting.status == TaskStatus.PENDING and waiting.instance_id is None
    assert [started[2] for started in ecs_of(clients).started] == ["t-0"]
    assert deployment_store.get_node(refusing.instance_id).gpus_allocated == 0  # type: ignore[union-attr]
    assert f"task t-0 of {deployment.deployment_id}: ECS refused the task on {refusing.instance_id}: RESOURCE:GPU" in (
        ctx.log
    )


def test_a_refused_task_waits_pending_with_the_reason(deployment_store: DeploymentStore) -> None:
    clients = regions_of(REGION)
    deployment = make_deployment()
    write_deployment(deployment_store, deployment)
    write_task(deployment_store, make_task(deployment))
    node = make_node("i-0000000000000001", utilization=[0.0])
    nodes = _ready(deployment_store, node)
    ecs_of(clients).refuse[node.container_instance_arn] = "AGENT"

    result = place(context(deployment_store, clients), [deployment], _tasks(deployment_store, deployment), nodes)

    assert (result.placed, result.refused, result.shortfall) == ([], 1, {})
    (task,) = deployment_store.tasks(deployment.deployment_id)
    assert task.status == TaskStatus.PENDING and task.instance_id is None and task.ecs_task_arn is None
    assert task.last_error == f"ECS refused the task on {node.instance_id}: AGENT"
    assert deployment_store.get_node(node.instance_id).gpus_allocated == 0  # type: ignore[union-attr]


def test_a_task_definition_that_cannot_be_registered_is_tried_once_a_run(deployment_store: DeploymentStore) -> None:
    clients = regions_of(REGION)
    ecs_of(clients).definition_error = RuntimeError("AccessDenied: iam:PassRole")
    deployment = make_deployment(replicas=2)
    write_deployment(deployment_store, deployment)
    for slot in range(2):
        write_task(deployment_store, make_task(deployment, f"t-{slot}", slot=slot))
    nodes = _ready(
        deployment_store,
        make_node("i-0000000000000001", utilization=[0.0]),
        make_node("i-0000000000000002", utilization=[0.0]),
    )

    result = place(context(deployment_store, clients), [deployment], _tasks(deployment_store, deployment), nodes)

    assert result.placed == [] and result.refused >= 2
    assert ecs_of(clients).definitions == [deployment.deployment_id]
    for task in deployment_store.tasks(deployment.deployment_id):
        assert task.status == TaskStatus.PENDING and "iam:PassRole" in (task.last_error or "")
    assert all(n.gpus_allocated == 0 for n in deployment_store.nodes())


@pytest.mark.parametrize(
    "node_fields",
    [
        {"status": NodeStatus.CORDONED},
        {"last_heartbeat": NOW - NODE_HEARTBEAT_STALE_SECONDS - 1},
        {"node_class": "4gpu"},
    ],
)
def test_no_node_that_can_take_it_is_a_shortfall_of_its_class(
    deployment_store: DeploymentStore, node_fields: dict[str, Any]
) -> None:
    clients = regions_of(REGION)
    deployment = make_deployment()
    write_deployment(deployment_store, deployment)
    write_task(deployment_store, make_task(deployment))
    nodes = {n.instance_id: n for n in [make_node("i-0000000000000001", **{"last_heartbeat": NOW, **node_fields})]}

    result = place(context(deployment_store, clients), [deployment], _tasks(deployment_store, deployment), nodes)

    assert list(result.shortfall) == ["1gpu"] and ecs_of(clients).started == []

"""The deployment controller's health step (spothub_core.logic.deployment_health.observe) against the deployments
table in moto's DynamoDB and a stand-in for a worker region's ECS: tasks becoming healthy (endpoint, GPU ids) and
unhealthy, unexpected stops restarted at once then with a backoff until the slot gives up, the reset of the count,
idempotence (the same stop seen twice), stopping tasks ending with their GPUs back, drain and interruption (make
before break), the rolling restart one slot at a time, and a task stuck starting.

`Controller.run` does what the controller run (logic/deployment_controller.py) does for one deployment, placement
aside: read the deployment, its tasks and the nodes, describe its tasks in ECS, observe, reconcile. `place` stands in
for placement: GPUs allocated on a node, an ECS task started (not healthy yet).
"""

from __future__ import annotations

from typing import Any

import pytest

from spothub_core.dal.deployment_store import DeploymentStore, PlaceOutcome
from spothub_core.logic.deployment_context import ControllerContext, RegionClients
from spothub_core.logic.deployment_health import observe
from spothub_core.logic.deployment_scaling import reconcile
from spothub_core.models.deployment_ecs import TaskState
from spothub_core.models.deployment_records import (
    DeploymentStatus,
    DeploymentTask,
    GpuNode,
    ModelDeployment,
    NodeStatus,
    RetireReason,
    ScalingEvent,
    ScalingResult,
    ScalingTrigger,
    TaskStatus,
)
from spothub_core.models.orchestrator_tasks import FindAnswer, FindRequest
from spothub_core.timings import (
    DEPLOYMENT_RESTART_RESET_SECONDS,
    DEPLOYMENT_TASK_HEALTHY_WITHIN_SECONDS,
    DEPLOYMENT_UNHEALTHY_REPLACE_SECONDS,
)
from tests.integration.conftest import ACCOUNT
from tests.integration.deployment_fixtures import (  # noqa: F401 (fixtures)
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

EXIT_137 = "Essential container in task exited"
PULL_ERROR = "CannotPullContainerError: pull image manifest has been retried 5 time(s): manifest unknown"


# --- stand-ins ---------------------------------------------------------------------------------------------------


class FakeEcs:
    """A worker region's ECS as the controller sees it (the WorkerEcs protocol): task states the test sets, and
    StopTask, which stops a known task with the caller's reason (as ECS's stoppedReason)."""

    def __init__(self) -> None:
        self.states: dict[str, TaskState] = {}
        self.stops: list[tuple[str, str]] = []

    def nodes(self) -> list[Any]:
        return []

    def ensure_task_definition(self, deployment: ModelDeployment) -> str:
        raise AssertionError("the health and scaling steps register no task definition")

    def start_task(self, *args: Any, **kwargs: Any) -> str:
        raise AssertionError("the health and scaling steps start no task")

    def describe_tasks(self, task_arns: list[str]) -> dict[str, TaskState]:
        return {arn: self.states[arn] for arn in task_arns if arn in self.states}

    def stop_task(self, task_arn: str, reason: str) -> None:
        self.stops.append((task_arn, reason))
        if task_arn in self.states and not self.states[task_arn].stopped:
            self.stop(task_arn, reason, stop_code="UserInitiated", exit_code=None)

    # what happens in ECS
    def set(self, arn: str, *, health: str = "UNKNOWN", last_status: str = "RUNNING", host_port: int = 32768) -> None:
        previous = self.states.get(arn)
        self.states[arn] = TaskState(
            task_arn=arn,
            last_status=last_status,
            desired_status="RUNNING",
            health_status=health,
            host_port=host_port,
            gpu_ids=previous.gpu_ids if previous else [],
            started_at=NOW,
        )

    def healthy(self, arn: str) -> None:
        self.set(arn, health="HEALTHY", host_port=self.states[arn].host_port or 32768)

    def stop(
        self,
        arn: str,
        reason: str = EXIT_137,
        *,
        stop_code: str = "EssentialContainerExited",
        exit_code: int | None = 137,
    ) -> None:
        before = self.states[arn]
        self.states[arn] = before.model_copy(
            update={
                "last_status": "STOPPED",
                "desired_status": "STOPPED",
                "stopped_reason": reason,
                "stop_code": stop_code,
                "exit_code": exit_code,
            }
        )

    def stopped_arns(self) -> list[str]:
        return [arn for arn, _ in self.stops]


class NoGroups:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the health and scaling steps do not touch node groups ({name})")


def no_find(request: FindRequest) -> FindAnswer:
    raise AssertionError("the health and scaling steps do not rank regions")


class Controller:
    """One deployment's part of a controller run, placement aside; `place` stands in for placement."""

    def __init__(self, store: DeploymentStore) -> None:
        self.store = store
        self.ecs = FakeEcs()
        self.settings = deployment_settings()
        self.log: list[str] = []
        self.ports = iter(range(32768, 40000))

    def context(self, now: float) -> ControllerContext:
        clients = RegionClients(ecs=self.ecs, groups=NoGroups())  # type: ignore[arg-type]
        return ControllerContext(
            store=self.store, settings=self.settings, region=lambda region: clients, find=no_find, now=now
        )

    def inputs(self, deployment_id: str) -> tuple[ModelDeployment, list[DeploymentTask], dict[str, GpuNode]]:
        deployment = self.store.get_deployment(deployment_id)
        assert deployment is not None
        return deployment, self.store.tasks(deployment_id), {n.instance_id: n for n in self.store.nodes()}

    def observe(self, deployment_id: str, now: float, **kwargs: Any) -> list[DeploymentTask]:
        deployment, tasks, nodes = self.inputs(deployment_id)
        ctx = self.context(now)
        found = observe(ctx, deployment, tasks, self.ecs.describe_tasks(arns(tasks)), nodes, **kwargs)
        self.log.extend(ctx.log)
        return found

    def run(self, deployment_id: str, now: float) -> tuple[ModelDeployment, list[DeploymentTask]]:
        deployment, tasks, nodes = self.inputs(deployment_id)
        ctx = self.context(now)
        tasks = observe(ctx, deployment, tasks, self.ecs.describe_tasks(arns(tasks)), nodes)
        deployment, tasks = reconcile(ctx, deployment, tasks, nodes)
        self.log.extend(ctx.log)
        assert tasks == self.store.tasks(deployment_id), "the tasks returned are the tasks as stored"
        return deployment, tasks

    def place(self, task: DeploymentTask, node: GpuNode, now: float) -> DeploymentTask:
        """Placement: the task's GPUs allocated on the node, its ECS task started there (not healthy yet). A task
        not written yet is written first."""
        self.store.put_task(task)
        current = self.store.get_node(node.instance_id)
        assert current is not None
        taken = {g for t in self.store.tasks(task.deployment_id) if t.status.placed for g in t.gpu_ids}
        gpu_ids = [g for g in current.gpu_ids if g not in taken][: task.gpus]
        fields = {
            "instance_id": node.instance_id,
            "region": node.region,
            "container_instance_arn": node.container_instance_arn,
            "placed_at": now,
            "gpu_ids": gpu_ids,
        }
        assert self.store.place_task(task, current, fields) is PlaceOutcome.PLACED
        arn = f"arn:aws:ecs:{node.region}:{ACCOUNT}:task/spothub-gpu/{task.task_id}"
        placed = task.model_copy(update={**fields, "status": TaskStatus.STARTING})
        started = self.store.update_task(placed, {"ecs_task_arn": arn}, expect=[TaskStatus.STARTING])
        assert started is not None
        self.ecs.set(arn, host_port=next(self.ports))
        self.ecs.states[arn] = self.ecs.states[arn].model_copy(update={"gpu_ids": gpu_ids})
        return started


def arns(tasks: list[DeploymentTask]) -> list[str]:
    return [t.ecs_task_arn for t in tasks if t.ecs_task_arn and not t.status.ended]


def live(tasks: list[DeploymentTask]) -> list[DeploymentTask]:
    return [t for t in tasks if not t.status.ended]


def only(tasks: list[DeploymentTask], **match: Any) -> DeploymentTask:
    found = [t for t in tasks if all(getattr(t, k) == v for k, v in match.items())]
    assert len(found) == 1, found
    return found[0]


def events(store: DeploymentStore, deployment_id: str) -> list[ScalingEvent]:
    """Oldest first."""
    return list(reversed(store.events(deployment_id=deployment_id)))


@pytest.fixture
def controller(deployment_store: DeploymentStore) -> Controller:
    return Controller(deployment_store)


def running_deployment(
    controller: Controller, *, replicas: int = 1, node_class: str = "1gpu", gpus: int = 1, nodes: int | None = None
) -> tuple[ModelDeployment, list[GpuNode], list[DeploymentTask]]:
    """A running deployment, one running task per slot, each on its own node (or `nodes` nodes shared)."""
    store = controller.store
    deployment = make_deployment(replicas=replicas, gpus=gpus, node_class=node_class, status=DeploymentStatus.RUNNING)
    write_deployment(store, deployment)
    count = nodes if nodes is not None else replicas
    made = [write_node(store, make_node(f"i-00000000000000{i + 1:02x}", node_class=node_class)) for i in range(count)]
    tasks = []
    for slot in range(replicas):
        task = make_task(deployment, f"t-00000000000{slot:04d}", slot=slot)
        placed = controller.place(task, made[slot % count], NOW - 3600)
        controller.ecs.healthy(placed.ecs_task_arn or "")
        tasks.append(placed)
    controller.run(deployment.deployment_id, NOW - 3000)  # starting -> running
    tasks = store.tasks(deployment.deployment_id)
    assert [t.status for t in tasks] == [TaskStatus.RUNNING] * replicas
    return deployment, made, tasks


# --- healthy, unhealthy --------------------------------------------------------------------------------------------


def test_a_starting_task_becomes_running_once_ecs_says_healthy(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment()
    write_deployment(store, deployment)
    node = write_node(store, make_node())
    task = controller.place(make_task(deployment), node, NOW)
    arn = task.ecs_task_arn or ""

    controller.ecs.set(arn, health="UNKNOWN", host_port=32801)
    assert only(controller.observe(deployment.deployment_id, NOW + 60)).status == TaskStatus.STARTING
    controller.ecs.set(arn, health="UNHEALTHY", host_port=32801)  # still loading the model: in its start period
    assert only(controller.observe(deployment.deployment_id, NOW + 120)).status == TaskStatus.STARTING

    controller.ecs.healthy(arn)
    found = only(controller.observe(deployment.deployment_id, NOW + 180))
    assert found.status == TaskStatus.RUNNING
    assert found.healthy_at == NOW + 180
    assert found.endpoint == f"http://{node.private_ip}:32801"
    assert found.gpu_ids == node.gpu_ids
    assert store.tasks(deployment.deployment_id) == [found]


def test_a_running_task_failing_its_health_check_is_unhealthy_and_back(controller: Controller) -> None:
    deployment, _, tasks = running_deployment(controller)
    arn = tasks[0].ecs_task_arn or ""
    controller.ecs.set(arn, health="UNHEALTHY")
    unhealthy = only(controller.observe(deployment.deployment_id, NOW))
    assert unhealthy.status == TaskStatus.UNHEALTHY
    controller.ecs.healthy(arn)
    back = only(controller.observe(deployment.deployment_id, NOW + 60))
    assert (back.status, back.healthy_at) == (TaskStatus.RUNNING, NOW + 60)
    assert controller.ecs.stops == []


def test_a_task_unhealthy_too_long_is_stopped_and_its_slot_restarted(controller: Controller) -> None:
    deployment, _, tasks = running_deployment(controller)
    arn = tasks[0].ecs_task_arn or ""
    controller.ecs.set(arn, health="UNHEALTHY")
    unhealthy = only(controller.observe(deployment.deployment_id, NOW))
    assert (unhealthy.status, unhealthy.unhealthy_since) == (TaskStatus.UNHEALTHY, NOW)
    limit = NOW + DEPLOYMENT_UNHEALTHY_REPLACE_SECONDS
    controller.observe(deployment.deployment_id, limit - 1)
    assert controller.ecs.stops == []
    stopping = only(controller.observe(deployment.deployment_id, limit))
    assert (stopping.status, stopping.retire) == (TaskStatus.STOPPING, RetireReason.UNHEALTHY)
    assert controller.ecs.stops == [(arn, "health check: failing for 5 min")]


# --- unexpected stops, restarts, the backoff, giving up -----------------------------------------------------------


def test_an_unexpected_stop_restarts_the_slot_at_once(controller: Controller) -> None:
    store = controller.store
    deployment, nodes, tasks = running_deployment(controller)
    controller.ecs.stop(tasks[0].ecs_task_arn or "")

    stored, found = controller.run(deployment.deployment_id, NOW)

    ended = only(found, task_id=tasks[0].task_id)
    assert ended.status == TaskStatus.STOPPED
    assert ended.last_error == f"{EXIT_137} (exit 137)"
    assert ended.stopped_at == NOW
    node = store.get_node(nodes[0].instance_id)
    assert node is not None and node.gpus_allocated == 0  # its GPUs back
    replacement = only(live(found))
    assert (replacement.slot, replacement.status, replacement.failures, replacement.restarts) == (
        0,
        TaskStatus.PENDING,
        1,
        1,
    )
    assert replacement.not_before == NOW  # at once
    assert replacement.replaces is None
    assert stored.status == DeploymentStatus.DEGRADED
    # its backoff is over (at once): it waits for placement
    assert stored.last_error == f"no capacity: 1 task waiting for 1gpu nodes; last stop: {EXIT_137} (exit 137)"
    [event] = events(store, deployment.deployment_id)
    assert (event.trigger, event.result, event.before, event.after) == (
        ScalingTrigger.RECOVERY,
        ScalingResult.APPLIED,
        1,
        1,
    )
    assert event.reason == f"slot 0: task {tasks[0].task_id} stopped ({EXIT_137} (exit 137)); restart 1 at once"
    assert controller.ecs.stops == []


def test_the_second_stop_in_a_row_waits_30_s_then_doubling_until_the_slot_gives_up(controller: Controller) -> None:
    store = controller.store
    deployment, nodes, tasks = running_deployment(controller)
    controller.ecs.stop(tasks[0].ecs_task_arn or "", PULL_ERROR, stop_code="TaskFailedToStart", exit_code=None)
    now = NOW
    delays = []
    for _ in range(5):
        _, found = controller.run(deployment.deployment_id, now)
        pending = only(live(found))
        delays.append((pending.failures, pending.restarts, (pending.not_before or 0) - now))
        now = pending.not_before or now
        placed = controller.place(pending, nodes[0], now)
        now += 10
        controller.ecs.stop(placed.ecs_task_arn or "", PULL_ERROR, stop_code="TaskFailedToStart", exit_code=None)
    assert delays == [(1, 1, 0), (2, 2, 30), (3, 3, 60), (4, 4, 120), (5, 5, 240)]

    stored, found = controller.run(deployment.deployment_id, now)

    assert live(found) == []
    failed = found[-1]
    assert failed.status == TaskStatus.FAILED
    assert failed.last_error == f"gave up after 5 restarts: {PULL_ERROR}"
    assert failed.failures == 6
    assert stored.status == DeploymentStatus.FAILED
    assert stored.last_error == f"slot 0 gave up after 5 restarts: {PULL_ERROR}"
    last = events(store, deployment.deployment_id)[-1]
    assert (last.trigger, last.result) == (ScalingTrigger.RECOVERY, ScalingResult.GAVE_UP)
    assert last.reason == f"slot 0: gave up after 5 restarts: {PULL_ERROR}"
    assert len(events(store, deployment.deployment_id)) == 6
    node = store.get_node(nodes[0].instance_id)
    assert node is not None and node.gpus_allocated == 0

    # a slot that gave up stays given up: nothing new starts there on later runs
    stored, again = controller.run(deployment.deployment_id, now + 3600)
    assert again == found
    assert stored.status == DeploymentStatus.FAILED


def test_the_same_stop_seen_twice_restarts_the_slot_once(controller: Controller) -> None:
    store = controller.store
    deployment, nodes, tasks = running_deployment(controller)
    controller.ecs.stop(tasks[0].ecs_task_arn or "")
    stale = store.tasks(deployment.deployment_id)
    states = controller.ecs.describe_tasks(arns(stale))
    node_map = {n.instance_id: n for n in store.nodes()}

    first = observe(controller.context(NOW), deployment, stale, states, node_map)
    # a late or redelivered event: the same facts, the same (stale) task list
    second = observe(controller.context(NOW + 5), deployment, stale, states, node_map)
    # and a run after it, with what is stored
    controller.run(deployment.deployment_id, NOW + 10)

    assert len(live(first)) == 1
    stored = store.tasks(deployment.deployment_id)
    assert second == stored  # it found the stop handled, did nothing more, and answers what is stored
    assert len(stored) == 2
    assert len(live(stored)) == 1
    assert len(events(store, deployment.deployment_id)) == 1
    node = store.get_node(nodes[0].instance_id)
    assert node is not None and node.gpus_allocated == 0  # given back once (never below zero)


def test_a_task_healthy_long_enough_starts_its_slots_count_over(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment(status=DeploymentStatus.RUNNING)
    write_deployment(store, deployment)
    node = write_node(store, make_node())
    task = controller.place(make_task(deployment, failures=4, restarts=9), node, NOW - 7200)
    controller.ecs.healthy(task.ecs_task_arn or "")
    controller.run(deployment.deployment_id, NOW - DEPLOYMENT_RESTART_RESET_SECONDS + 1)
    assert only(store.tasks(deployment.deployment_id)).failures == 4  # healthy, not long enough yet

    _, found = controller.run(deployment.deployment_id, NOW + 1)
    assert only(found).failures == 0
    assert only(found).restarts == 9  # the lifetime count stays

    controller.ecs.stop(task.ecs_task_arn or "")
    _, found = controller.run(deployment.deployment_id, NOW + 60)
    replacement = only(live(found))
    assert (replacement.failures, replacement.restarts, replacement.not_before) == (1, 10, NOW + 60)


def test_a_task_ecs_no_longer_knows_or_whose_node_is_gone_counts_as_stopped(controller: Controller) -> None:
    store = controller.store
    deployment, nodes, tasks = running_deployment(controller, replicas=2)
    del controller.ecs.states[tasks[0].ecs_task_arn or ""]
    store.update_node(nodes[1].instance_id, {"status": NodeStatus.GONE})

    _, found = controller.run(deployment.deployment_id, NOW)

    assert only(found, task_id=tasks[0].task_id).last_error == "ECS no longer knows the task"
    assert only(found, task_id=tasks[1].task_id).last_error == f"node {nodes[1].instance_id} is gone"
    assert sorted((t.slot, t.status, t.failures) for t in live(found)) == [
        (0, TaskStatus.PENDING, 1),
        (1, TaskStatus.PENDING, 1),
    ]
    assert [n.gpus_allocated for n in store.nodes()] == [0, 0]


def test_a_task_just_started_and_not_yet_known_to_ecs_is_left_alone(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment()
    write_deployment(store, deployment)
    node = write_node(store, make_node())
    task = controller.place(make_task(deployment), node, NOW)
    del controller.ecs.states[task.ecs_task_arn or ""]
    assert only(controller.observe(deployment.deployment_id, NOW + 30)).status == TaskStatus.STARTING


def test_tasks_of_a_region_ecs_did_not_answer_for_are_left_alone(controller: Controller) -> None:
    store = controller.store
    deployment, _, tasks = running_deployment(controller)
    found = controller.observe(deployment.deployment_id, NOW, unreachable_regions=[tasks[0].region or ""])
    del controller.ecs.states[tasks[0].ecs_task_arn or ""]
    found = observe(
        controller.context(NOW),
        deployment,
        store.tasks(deployment.deployment_id),
        {},
        {n.instance_id: n for n in store.nodes()},
        unreachable_regions={tasks[0].region or ""},
    )
    assert [t.status for t in found] == [TaskStatus.RUNNING]


def test_a_stopping_task_ends_with_its_gpus_back_once_ecs_stopped_it(controller: Controller) -> None:
    store = controller.store
    deployment, nodes, tasks = running_deployment(controller)
    stopping = store.update_task(tasks[0], {"status": TaskStatus.STOPPING}, expect=[TaskStatus.RUNNING])
    assert stopping is not None
    assert only(controller.observe(deployment.deployment_id, NOW)).status == TaskStatus.STOPPING  # still running

    controller.ecs.stop(tasks[0].ecs_task_arn or "", "Task stopped by user", stop_code="UserInitiated")
    found = controller.observe(deployment.deployment_id, NOW + 10)

    assert only(found).status == TaskStatus.STOPPED  # asked to stop: no restart
    node = store.get_node(nodes[0].instance_id)
    assert node is not None and node.gpus_allocated == 0
    assert events(store, deployment.deployment_id) == []


def test_an_unexpected_stop_of_a_deployment_being_deleted_is_not_restarted(controller: Controller) -> None:
    store = controller.store
    deployment, _, tasks = running_deployment(controller)
    store.update_deployment(deployment.deployment_id, {"status": DeploymentStatus.DELETING})
    controller.ecs.stop(tasks[0].ecs_task_arn or "")
    found = controller.observe(deployment.deployment_id, NOW)
    assert [t.status for t in found] == [TaskStatus.STOPPED]
    assert events(store, deployment.deployment_id) == []


# --- drain and interruption: make before break ---------------------------------------------------------------------


def test_a_drained_node_gets_its_tasks_replaced_elsewhere_before_they_stop(controller: Controller) -> None:
    store = controller.store
    deployment, nodes, tasks = running_deployment(controller, replicas=2, node_class="4gpu", nodes=1)
    other = write_node(store, make_node("i-00000000000000f1", node_class="4gpu"))
    store.update_node(nodes[0].instance_id, {"status": NodeStatus.DRAINING})

    stored, found = controller.run(deployment.deployment_id, NOW)

    replacements = sorted((t for t in found if t.replaces), key=lambda t: t.slot)
    assert sorted((t.slot, t.replaces, t.status) for t in replacements) == [
        (0, tasks[0].task_id, TaskStatus.PENDING),
        (1, tasks[1].task_id, TaskStatus.PENDING),
    ]
    for old in tasks:
        moved = only(found, task_id=old.task_id)
        assert (moved.status, moved.retire) == (TaskStatus.RUNNING, RetireReason.DRAIN)  # still serving
    assert controller.ecs.stops == []
    assert stored.status == DeploymentStatus.RUNNING
    [event] = events(store, deployment.deployment_id)
    assert (event.trigger, event.result) == (ScalingTrigger.DRAIN, ScalingResult.APPLIED)
    assert event.reason == f"node {nodes[0].instance_id} drained: 2 tasks moving"

    # a second run: nothing more
    _, again = controller.run(deployment.deployment_id, NOW + 30)
    assert again == found
    assert len(events(store, deployment.deployment_id)) == 1

    # the replacements start elsewhere; the old tasks serve until their replacement is healthy
    started = [controller.place(t, other, NOW + 60) for t in replacements]
    controller.run(deployment.deployment_id, NOW + 90)
    assert controller.ecs.stops == []
    controller.ecs.healthy(started[0].ecs_task_arn or "")
    _, found = controller.run(deployment.deployment_id, NOW + 120)
    assert controller.ecs.stopped_arns() == [tasks[0].ecs_task_arn]
    assert only(found, task_id=tasks[0].task_id).status == TaskStatus.STOPPING
    assert only(found, task_id=tasks[1].task_id).status == TaskStatus.RUNNING
    controller.ecs.healthy(started[1].ecs_task_arn or "")
    controller.run(deployment.deployment_id, NOW + 150)
    stored, found = controller.run(deployment.deployment_id, NOW + 180)

    assert [(t.status, t.instance_id) for t in live(found)] == [(TaskStatus.RUNNING, other.instance_id)] * 2
    assert {t.task_id: t.status for t in found if t.task_id in {x.task_id for x in tasks}} == {
        tasks[0].task_id: TaskStatus.STOPPED,
        tasks[1].task_id: TaskStatus.STOPPED,
    }
    drained = store.get_node(nodes[0].instance_id)
    assert drained is not None and drained.gpus_allocated == 0
    assert stored.status == DeploymentStatus.RUNNING
    assert all(e.trigger == ScalingTrigger.DRAIN for e in events(store, deployment.deployment_id))


def test_an_interrupted_nodes_tasks_are_replaced_and_stopped_at_once(controller: Controller) -> None:
    store = controller.store
    deployment, nodes, tasks = running_deployment(controller, replicas=2)
    store.update_node(nodes[0].instance_id, {"status": NodeStatus.INTERRUPTED})

    stored, found = controller.run(deployment.deployment_id, NOW)

    old = only(found, task_id=tasks[0].task_id)
    assert (old.status, old.retire) == (TaskStatus.STOPPING, RetireReason.INTERRUPTED)
    assert controller.ecs.stopped_arns() == [tasks[0].ecs_task_arn]
    replacement = only(found, replaces=tasks[0].task_id)
    assert (replacement.slot, replacement.status, replacement.failures) == (0, TaskStatus.PENDING, 0)
    assert stored.status == DeploymentStatus.DEGRADED
    [event] = events(store, deployment.deployment_id)
    assert event.reason == f"node {nodes[0].instance_id} interrupted: 1 task moving"

    _, found = controller.run(deployment.deployment_id, NOW + 10)  # ECS stopped it
    assert only(found, task_id=tasks[0].task_id).status == TaskStatus.STOPPED
    assert len(live(found)) == 2
    assert len(events(store, deployment.deployment_id)) == 1  # the stop asked for is no failure


def test_a_replacement_that_gives_up_leaves_the_old_task_serving(controller: Controller) -> None:
    store = controller.store
    deployment, nodes, tasks = running_deployment(controller, replicas=1)
    other = write_node(store, make_node("i-00000000000000f1"))
    store.update_node(nodes[0].instance_id, {"status": NodeStatus.DRAINING})
    now = NOW
    for _ in range(6):
        _, found = controller.run(deployment.deployment_id, now)
        pending = only(found, status=TaskStatus.PENDING)
        assert pending.replaces == tasks[0].task_id
        now = max(now, pending.not_before or now)
        placed = controller.place(pending, other, now)
        controller.ecs.stop(placed.ecs_task_arn or "", PULL_ERROR, exit_code=None)
        now += 10
    stored, found = controller.run(deployment.deployment_id, now)

    assert found[-1].status == TaskStatus.FAILED
    assert only(live(found)).task_id == tasks[0].task_id
    assert only(live(found)).status == TaskStatus.RUNNING
    assert stored.status == DeploymentStatus.DEGRADED
    assert events(store, deployment.deployment_id)[-1].reason.endswith(f"; task {tasks[0].task_id} keeps serving")
    _, again = controller.run(deployment.deployment_id, now + 600)
    assert again == found  # no new replacement: the slot gave up


# --- rolling restart ------------------------------------------------------------------------------------------------


def test_a_rolling_restart_replaces_one_slot_at_a_time(controller: Controller) -> None:
    store = controller.store
    deployment, _, tasks = running_deployment(controller, replicas=3)
    spare = [write_node(store, make_node(f"i-00000000000000e{i}")) for i in range(3)]
    store.update_deployment(deployment.deployment_id, {"restart_generation": 1})
    now = NOW
    order = []
    for round_ in range(3):
        _, found = controller.run(deployment.deployment_id, now)
        fresh = [t for t in live(found) if t.generation == 1 and t.status == TaskStatus.PENDING]
        assert len(fresh) == 1, f"round {round_}: one replacement at a time"
        replacement = fresh[0]
        old = only(found, task_id=replacement.replaces)
        assert old.retire == RetireReason.RESTART
        assert old.status == TaskStatus.RUNNING
        order.append(replacement.slot)
        # nothing more while it starts
        _, again = controller.run(deployment.deployment_id, now + 10)
        assert [t for t in live(again) if t.generation == 1 and t.status == TaskStatus.PENDING] == [replacement]
        started = controller.place(replacement, spare[round_], now + 20)
        controller.run(deployment.deployment_id, now + 30)
        assert old.ecs_task_arn not in controller.ecs.stopped_arns()
        controller.ecs.healthy(started.ecs_task_arn or "")
        now += 60
    controller.run(deployment.deployment_id, now)  # the last replacement healthy: the last old task stopping
    stored, found = controller.run(deployment.deployment_id, now + 10)

    assert order == [0, 1, 2]
    assert controller.ecs.stopped_arns() == [t.ecs_task_arn for t in tasks]
    assert [(t.slot, t.generation, t.status) for t in live(found)] == [
        (0, 1, TaskStatus.RUNNING),
        (1, 1, TaskStatus.RUNNING),
        (2, 1, TaskStatus.RUNNING),
    ]
    assert stored.status == DeploymentStatus.RUNNING
    assert all(t.restarts == 0 and t.failures == 0 for t in found)


def test_a_pending_task_of_an_older_generation_is_simply_renewed(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment(restart_generation=0)
    write_deployment(store, deployment)
    write_task(store, make_task(deployment))
    store.update_deployment(deployment.deployment_id, {"restart_generation": 2})
    found = controller.observe(deployment.deployment_id, NOW)
    assert [(t.generation, t.status, t.replaces) for t in found] == [(2, TaskStatus.PENDING, None)]


# --- stuck starting --------------------------------------------------------------------------------------------------


def test_a_task_not_healthy_in_time_is_stopped_and_its_slot_restarted(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment()
    write_deployment(store, deployment)
    node = write_node(store, make_node())
    task = controller.place(make_task(deployment), node, NOW)
    controller.ecs.set(task.ecs_task_arn or "", health="UNHEALTHY")
    limit = NOW + DEPLOYMENT_TASK_HEALTHY_WITHIN_SECONDS

    controller.run(deployment.deployment_id, limit - 1)
    assert controller.ecs.stops == []

    _, found = controller.run(deployment.deployment_id, limit)
    stuck = only(found)
    reason = "health check: not healthy within 25 min (ECS running, health unhealthy)"
    assert (stuck.status, stuck.retire, stuck.last_error) == (TaskStatus.STOPPING, RetireReason.UNHEALTHY, reason)
    assert controller.ecs.stops == [(task.ecs_task_arn, reason)]
    assert events(store, deployment.deployment_id) == []

    stored, found = controller.run(deployment.deployment_id, limit + 20)  # ECS stopped it
    assert only(found, task_id=task.task_id).status == TaskStatus.STOPPED
    replacement = only(live(found))
    assert (replacement.failures, replacement.restarts, replacement.not_before) == (1, 1, limit + 20)
    [event] = events(store, deployment.deployment_id)
    assert event.reason == f"slot 0: task {task.task_id} stopped ({reason}); restart 1 at once"
    node_now = store.get_node(node.instance_id)
    assert node_now is not None and node_now.gpus_allocated == 0
    assert stored.status == DeploymentStatus.CREATING


def test_a_replaced_task_stuck_starting_just_stops(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment(status=DeploymentStatus.RUNNING, restart_generation=1)
    write_deployment(store, deployment)
    node = write_node(store, make_node(node_class="4gpu"))
    old = controller.place(make_task(deployment, "t-000000000000001", generation=0), node, NOW)
    retired = store.update_task(old, {"retire": RetireReason.RESTART}, expect=[TaskStatus.STARTING])
    assert retired is not None
    write_task(store, make_task(deployment, "t-000000000000002", replaces=old.task_id))
    limit = NOW + DEPLOYMENT_TASK_HEALTHY_WITHIN_SECONDS

    controller.run(deployment.deployment_id, limit)
    _, found = controller.run(deployment.deployment_id, limit + 10)

    assert [(t.task_id, t.status) for t in found] == [
        (old.task_id, TaskStatus.STOPPED),
        ("t-000000000000002", TaskStatus.PENDING),
    ]
    assert found[0].retire == RetireReason.RESTART
    assert events(store, deployment.deployment_id) == []  # no failure of its slot: its replacement is coming


def test_a_placement_whose_ecs_task_was_never_recorded_ends_in_time(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment()
    write_deployment(store, deployment)
    node = write_node(store, make_node())
    placed = write_task(store, make_task(deployment, status=TaskStatus.STARTING), node=node)
    assert placed.ecs_task_arn is None
    limit = NOW + DEPLOYMENT_TASK_HEALTHY_WITHIN_SECONDS
    _, found = controller.run(deployment.deployment_id, limit - 1)
    assert [t.status for t in found] == [TaskStatus.STARTING]

    _, found = controller.run(deployment.deployment_id, limit)

    assert (found[0].status, found[0].last_error) == (TaskStatus.STOPPED, "its ECS task never started")
    assert [(t.slot, t.status) for t in live(found)] == [(0, TaskStatus.PENDING)]  # the slot starts over
    node_now = store.get_node(node.instance_id)
    assert node_now is not None and node_now.gpus_allocated == 0

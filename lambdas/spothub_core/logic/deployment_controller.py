"""The deployment controller: one run reconciles every deployment with ECS and the node groups.

A run takes the controller's lease (a run that finds it held marks it and leaves: the holder passes once more
before letting go), then passes until no one asked for another:
1. the nodes of every worker region (logic/node_tracker.py), with the agents' heartbeats;
2. for each live deployment: its ECS tasks described (per region), the health step (logic/deployment_health.observe)
   and the scaling step (logic/deployment_scaling.reconcile);
3. placement of the pending tasks (logic/deployment_placement.py);
4. capacity: nodes asked where GPUs are short, asks that gave nothing taken back, idle nodes released
   (logic/node_capacity.py).
A failure in one region or one deployment is logged and counted; the rest of the pass goes on, and the next run
(a minute at most) tries again. Every step is made of conditional writes, so a run cut off anywhere leaves nothing
half-done that the next run would do twice.

The consumed events (spothub_core.consumers, Target.DEPLOYMENT_CONTROLLER) each lead to a run: the API's nudge, a
deployment task's state change, and an agent's capacity notice for a node (the node is marked interrupted first).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from spothub_core.consumers import Dispatch, Target
from spothub_core.contracts import CapacityNotice, DeploymentsChanged, EcsTaskStateChangeDetail
from spothub_core.dal.deployment_store import DeploymentStore
from spothub_core.logic import deployment_health, deployment_scaling, node_capacity, node_tracker
from spothub_core.logic.deployment_context import ControllerContext, RegionClients
from spothub_core.logic.deployment_placement import place
from spothub_core.models.base import Model
from spothub_core.models.deployment_ecs import TaskState
from spothub_core.models.deployment_records import (
    DeploymentTask,
    GpuNode,
    ModelDeployment,
    NodeStatus,
    TaskStatus,
)
from spothub_core.models.orchestrator_tasks import FindAnswer, FindRequest
from spothub_core.models.records import AgentRecord
from spothub_core.settings import DeploymentSettings
from spothub_core.timings import DEPLOYMENT_CONTROLLER_LEASE_SECONDS

# A pass takes seconds; another starts only with this much of the function's time left.
PASS_BUDGET_SECONDS = 20
# Letting go of the lease when out of time: a release that finds it marked clears the mark and keeps it; this many
# tries let it go unless runs keep marking it (then it expires with the lease time).
RELEASE_TRIES = 3
# A capacity notice for a node in one of these is an interruption to act on (a gone node has nothing left to move).
INTERRUPTIBLE = (NodeStatus.READY, NodeStatus.CORDONED, NodeStatus.DRAINING)


@dataclass(frozen=True)
class ControllerServices:
    store: DeploymentStore
    settings: DeploymentSettings
    region: Callable[[str], RegionClients]  # a worker region's clients, created on first use
    find: Callable[[FindRequest], FindAnswer]  # the spot finder
    agents: Callable[[], Mapping[str, AgentRecord]]  # the agents' registrations and heartbeats, by instance id


class PassSummary(Model):
    deployments: int = 0  # live deployments reconciled
    nodes: int = 0  # nodes that take placements
    gpus_total: int = 0  # of those nodes
    gpus_allocated: int = 0
    tasks_healthy: int = 0
    tasks_pending: int = 0  # after placement: waiting for capacity or a restart backoff
    task_restarts: int = 0  # slots restarted after an unexpected stop
    placed: int = 0
    nodes_asked: int = 0
    released: list[str] = Field(default_factory=list)
    excluded: list[str] = Field(default_factory=list)
    errors: int = 0


class RunSummary(Model):
    lease: Literal["taken", "held"]
    passes: int = 0
    last: PassSummary = Field(default_factory=PassSummary)  # the state after the last pass
    task_restarts: int = 0  # over every pass
    placed: int = 0
    nodes_asked: int = 0
    errors: int = 0
    log: list[str] = Field(default_factory=list)


# --- the run ---------------------------------------------------------------------------------------------------


def run(
    services: ControllerServices,
    *,
    holder: str,
    clock: Callable[[], float],
    time_left: Callable[[], float] | None = None,
) -> RunSummary:
    """One invocation: the lease, then passes while another run asked for one (and the function has time)."""
    store = services.store
    now = clock()
    if not store.acquire_lease(holder, now=now, until=now + DEPLOYMENT_CONTROLLER_LEASE_SECONDS):
        return RunSummary(lease="held", log=["the lease is held by another run: marked to pass again"])
    summary = RunSummary(lease="taken")
    while True:
        ctx = ControllerContext(
            store=store, settings=services.settings, region=services.region, find=services.find, now=clock()
        )
        try:
            result = one_pass(ctx, services.agents)
        except Exception as exc:  # the table did not answer: nothing more this pass
            result = PassSummary(errors=1)
            ctx.say(f"pass cut short: {type(exc).__name__}: {exc}")
        summary.passes += 1
        summary.last = result
        summary.task_restarts += result.task_restarts
        summary.placed += result.placed
        summary.nodes_asked += result.nodes_asked
        summary.errors += result.errors
        summary.log += ctx.log
        if not store.release_lease(holder):
            return summary
        if time_left is not None and time_left() < PASS_BUDGET_SECONDS:
            summary.log.append("another pass was asked for, and the function is out of time: the next run's")
            for _ in range(RELEASE_TRIES):
                if not store.release_lease(holder):
                    break
            return summary


def one_pass(ctx: ControllerContext, agents: Callable[[], Mapping[str, AgentRecord]]) -> PassSummary:
    summary = PassSummary()
    nodes = _track(ctx, agents, summary)
    reconciled: list[ModelDeployment] = []
    tasks: dict[str, list[DeploymentTask]] = {}
    for live in ctx.store.live_deployments():
        try:
            deployment, now_tasks, restarts = _reconcile(ctx, live, nodes)
        except Exception as exc:
            summary.errors += 1
            ctx.say(f"{live.deployment_id}: not reconciled this pass: {type(exc).__name__}: {exc}")
            continue
        summary.task_restarts += restarts
        if deployment.status.live:
            summary.deployments += 1
        reconciled.append(deployment)
        tasks[deployment.deployment_id] = now_tasks
    # Placement and capacity read the nodes as the health step left them (its ends gave GPUs back).
    nodes = {n.instance_id: n for n in ctx.store.nodes()}
    placement = place(ctx, reconciled, tasks, nodes)
    summary.placed = len(placement.placed)
    placed = {t.task_id for t in placement.placed}
    pending = [
        (d, t)
        for d in reconciled
        for t in tasks[d.deployment_id]
        if t.status == TaskStatus.PENDING and t.task_id not in placed
    ]
    nodes = {n.instance_id: n for n in ctx.store.nodes()}
    try:
        capacity = node_capacity.provide(ctx, placement.shortfall, nodes, {d.node_class for d, _ in pending})
    except Exception as exc:
        summary.errors += 1
        ctx.say(f"capacity: not looked at this pass: {type(exc).__name__}: {exc}")
        capacity = node_capacity.CapacityResult()
    summary.nodes_asked = capacity.asked
    summary.released = capacity.released
    summary.excluded = capacity.excluded
    summary.errors += capacity.errors
    ready = [n for n in nodes.values() if n.status.schedulable and n.instance_id not in capacity.released]
    summary.nodes = len(ready)
    summary.gpus_total = sum(n.gpus_total for n in ready)
    summary.gpus_allocated = sum(n.gpus_allocated for n in ready)
    running = {t.task_id for d in reconciled for t in tasks[d.deployment_id] if t.status == TaskStatus.RUNNING}
    summary.tasks_healthy = len(running)
    summary.tasks_pending = len(pending)
    return summary


def _track(
    ctx: ControllerContext, agents: Callable[[], Mapping[str, AgentRecord]], summary: PassSummary
) -> dict[str, GpuNode]:
    """Every region's nodes, tracked; a region whose ECS did not answer keeps its nodes as recorded."""
    try:
        heartbeats = agents()
    except Exception as exc:
        summary.errors += 1
        ctx.say(f"the agents' heartbeats could not be read: {type(exc).__name__}: {exc}")
        heartbeats = {}
    stored = ctx.store.nodes()
    nodes = {n.instance_id: n for n in stored}
    for region in ctx.settings.worker_regions:
        try:
            nodes.update(node_tracker.track(ctx, region, stored, heartbeats))
        except Exception as exc:
            summary.errors += 1
            ctx.say(f"nodes of {region} not tracked this pass: {type(exc).__name__}: {exc}")
    return nodes


def _reconcile(
    ctx: ControllerContext, deployment: ModelDeployment, nodes: dict[str, GpuNode]
) -> tuple[ModelDeployment, list[DeploymentTask], int]:
    """Health then scaling for one deployment: the deployment and its tasks after them, and its slots restarted."""
    tasks = ctx.store.tasks(deployment.deployment_id)
    states, unreachable = _states(ctx, tasks)
    before = {t.task_id for t in tasks}
    tasks = deployment_health.observe(ctx, deployment, tasks, states, nodes, unreachable_regions=unreachable)
    deployment, tasks = deployment_scaling.reconcile(ctx, deployment, tasks, nodes)
    return deployment, tasks, restarted(before, tasks)


def _states(ctx: ControllerContext, tasks: list[DeploymentTask]) -> tuple[dict[str, TaskState], set[str]]:
    """ECS's states of the tasks that have an ECS task, and the regions whose DescribeTasks failed."""
    by_region: dict[str, list[str]] = {}
    for task in tasks:
        if task.ecs_task_arn and task.region and not task.status.ended:
            by_region.setdefault(task.region, []).append(task.ecs_task_arn)
    states: dict[str, TaskState] = {}
    unreachable: set[str] = set()
    for region, arns in sorted(by_region.items()):
        try:
            states.update(ctx.region(region).ecs.describe_tasks(arns))
        except Exception as exc:
            unreachable.add(region)
            ctx.say(f"tasks in {region} not described: {type(exc).__name__}: {exc}")
    return states, unreachable


def restarted(before: set[str], tasks: list[DeploymentTask]) -> int:
    """New tasks that restart their slot: a restart counts one more than the slot's tasks before it (a drain's or
    a rolling restart's replacement carries the count unchanged)."""
    most: dict[int, int] = {}
    for task in tasks:
        if task.task_id in before:
            most[task.slot] = max(most.get(task.slot, 0), task.restarts)
    return sum(1 for t in tasks if t.task_id not in before and t.restarts > most.get(t.slot, 0))


# --- the consumed events -------------------------------------------------------------------------------------

dispatch: Dispatch[ControllerServices] = Dispatch(Target.DEPLOYMENT_CONTROLLER)
RUN = "run"
IGNORED = "ignored"


@dispatch.on(DeploymentsChanged)
def deployments_changed(services: ControllerServices, detail: DeploymentsChanged, *, now: float) -> str:
    subject = detail.deployment_id or detail.instance_id or "-"
    return f"{RUN}: {detail.change} {subject}"


@dispatch.on(EcsTaskStateChangeDetail)
def task_state_changed(services: ControllerServices, detail: EcsTaskStateChangeDetail, *, now: float) -> str:
    # Which deployment it is does not matter: the run looks at every task (an unknown one changes nothing).
    return f"{RUN}: task {detail.task_arn} {detail.last_status or '?'}"


@dispatch.on(CapacityNotice)
def capacity_notice(services: ControllerServices, detail: CapacityNotice, *, now: float) -> str:
    node = services.store.get_node(detail.instance_id)
    if node is None:
        return f"{IGNORED}: {detail.instance_id} is not a deployment node"
    marked = services.store.update_node(
        detail.instance_id,
        {"status": NodeStatus.INTERRUPTED, "status_reason": f"{detail.kind} notice {detail.notice_id}"},
        expect=INTERRUPTIBLE,
    )
    state = "interrupted" if marked is not None else f"already {node.status}"
    return f"{RUN}: node {detail.instance_id} {state} ({detail.kind})"

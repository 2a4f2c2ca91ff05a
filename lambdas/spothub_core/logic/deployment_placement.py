"""Placement: the pending tasks whose restart backoff has passed go to nodes with free GPUs.

Oldest task first. A task may go to a node of its deployment's node class that takes placements (ready), whose agent
beat within NODE_HEARTBEAT_STALE_SECONDS, and that has the GPUs free. Among those: the nodes holding the fewest tasks
of the same deployment first (its replicas spread over nodes when it can), then best fit (the fewest GPUs left
free), then by instance id (one answer for one state).

For the chosen node, the store allocates the GPUs and moves the task to starting in one transaction (a node filled
meanwhile: the next node); then the deployment's task definition in the node's region (its ARN kept on the deployment
per region) and StartTask on exactly that container instance; the ECS task's ARN is recorded on the task. ECS refusing
(or any failure) undoes the placement (GPUs back, the task pending with the reason) and the task tries the next node; a
node ECS refused is not tried again in the same run, nor a task definition that could not be registered.

What no node could take, as the table counts GPUs, is the shortfall per node class: node_capacity asks for nodes for
it. A task that found room only on nodes ECS refused is not short of nodes (more would not help), and waits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from spothub_core.dal.deployment_store import PlaceOutcome
from spothub_core.logic.deployment_context import ControllerContext, PlacementRefused
from spothub_core.models.deployment_records import (
    DeploymentStatus,
    DeploymentTask,
    GpuNode,
    ModelDeployment,
    TaskStatus,
)
from spothub_core.timings import NODE_HEARTBEAT_STALE_SECONDS

# Deployments whose pending tasks are placed (a deleting one's are ended by the scaling step, a failed one has none).
PLACING = (DeploymentStatus.CREATING, DeploymentStatus.RUNNING, DeploymentStatus.DEGRADED)


@dataclass
class PlacementResult:
    placed: list[DeploymentTask] = field(default_factory=list)  # started (ECS task ARN recorded)
    shortfall: dict[str, list[DeploymentTask]] = field(default_factory=dict)  # by node class: no node had room
    refused: int = 0  # placements undone (ECS refused, or a call failed)


# --- pure decisions --------------------------------------------------------------------------------------------


def due(deployments: Iterable[ModelDeployment], tasks: Mapping[str, list[DeploymentTask]], now: float) -> list:
    """(deployment, task) of every pending task to place now, oldest first."""
    found = []
    for deployment in deployments:
        if deployment.status not in PLACING:
            continue
        for task in tasks.get(deployment.deployment_id, []):
            if task.status == TaskStatus.PENDING and (task.not_before or 0) <= now:
                found.append((deployment, task))
    return sorted(found, key=lambda pair: (pair[1].created_at, pair[1].task_id))


def fresh(node: GpuNode, now: float) -> bool:
    """Its agent beat recently: a node whose agent is silent may be going, and its utilization is unknown."""
    return node.last_heartbeat is not None and now - node.last_heartbeat <= NODE_HEARTBEAT_STALE_SECONDS


def candidates(
    task: DeploymentTask,
    deployment: ModelDeployment,
    nodes: Iterable[GpuNode],
    *,
    free: Mapping[str, int],
    spread: Mapping[str, int],
    now: float,
    regions: Iterable[str] | None = None,
) -> list[GpuNode]:
    """The nodes that can take the task, best first. `free`: GPUs free per node as this run knows them; `spread`:
    tasks of the deployment per node; `regions`: the worker regions (a node elsewhere is not placed on)."""
    allowed = set(regions) if regions is not None else None
    fitting = [
        n
        for n in nodes
        if n.node_class == deployment.node_class
        and n.status.schedulable
        and fresh(n, now)
        and free.get(n.instance_id, n.gpus_free) >= task.gpus
        and (allowed is None or n.region in allowed)
    ]
    return sorted(
        fitting,
        key=lambda n: (spread.get(n.instance_id, 0), free.get(n.instance_id, n.gpus_free) - task.gpus, n.instance_id),
    )


def deployment_spread(tasks: Iterable[DeploymentTask]) -> Counter[str]:
    """Placed tasks of one deployment per node."""
    return Counter(t.instance_id for t in tasks if t.status.placed and t.instance_id)


# --- placing -------------------------------------------------------------------------------------------------


def place(
    ctx: ControllerContext,
    deployments: list[ModelDeployment],
    tasks: Mapping[str, list[DeploymentTask]],
    nodes: Mapping[str, GpuNode],
) -> PlacementResult:
    """Place what is due; `tasks` by deployment id and `nodes` by instance id, as they are now."""
    result = PlacementResult()
    run = _Run(
        free={i: n.gpus_free for i, n in nodes.items()},
        deployments={d.deployment_id: d for d in deployments},
    )
    spreads = {d.deployment_id: deployment_spread(tasks.get(d.deployment_id, [])) for d in deployments}
    for deployment, task in due(deployments, tasks, ctx.now):
        spread = spreads[deployment.deployment_id]
        tried: set[str] = set()
        while True:
            options = _fitting(ctx, run, task, deployment, nodes, spread, leave_out=tried | run.refusing)
            if not options:
                # Short of capacity when no node has room as the table counts: a node with room that ECS refused
                # is no lack of nodes (more nodes would not help a task ECS refuses).
                if not _fitting(ctx, run, task, deployment, nodes, spread, leave_out=set()):
                    result.shortfall.setdefault(deployment.node_class, []).append(task)
                break
            node = options[0]
            outcome = _place_on(ctx, run, task, node, result)
            if outcome == "placed":
                spread[node.instance_id] += 1
            if outcome in ("placed", "moved"):
                break
            tried.add(node.instance_id)
    if result.shortfall:
        short = {c: sum(t.gpus for t in ts) for c, ts in result.shortfall.items()}
        ctx.say(f"placement: GPUs short per node class {short}")
    return result


def _fitting(  # noqa: PLR0917 (one task's look at the nodes)
    ctx: ControllerContext,
    run: _Run,
    task: DeploymentTask,
    deployment: ModelDeployment,
    nodes: Mapping[str, GpuNode],
    spread: Mapping[str, int],
    *,
    leave_out: set[str],
) -> list[GpuNode]:
    return candidates(
        task,
        deployment,
        [n for n in nodes.values() if n.instance_id not in leave_out],
        free=run.free,
        spread=spread,
        now=ctx.now,
        regions=ctx.settings.worker_regions,
    )


@dataclass
class _Run:
    """What one placement pass learns as it goes."""

    free: dict[str, int]  # GPUs free per node
    deployments: dict[str, ModelDeployment]  # as updated (task definitions)
    definitions: dict[tuple[str, str], str] = field(default_factory=dict)  # (deployment, region) -> ARN
    failed_definitions: dict[tuple[str, str], str] = field(default_factory=dict)  # (deployment, region) -> why
    refusing: set[str] = field(default_factory=set)  # nodes ECS refused a task on: not tried again this run


def _task_definition(ctx: ControllerContext, run: _Run, deployment_id: str, region: str) -> str:
    """The deployment's task definition ARN in the region (registered at most once a run; a failure is not retried
    in the same run), kept on the deployment."""
    key = (deployment_id, region)
    if key in run.failed_definitions:
        raise RuntimeError(run.failed_definitions[key])
    if key not in run.definitions:
        deployment = run.deployments[deployment_id]
        try:
            arn = ctx.region(region).ecs.ensure_task_definition(deployment)
        except Exception as exc:
            run.failed_definitions[key] = f"no task definition in {region}: {exc}"
            raise
        run.definitions[key] = arn
        if deployment.task_definitions.get(region) != arn:
            arns = {**deployment.task_definitions, region: arn}
            run.deployments[deployment_id] = ctx.store.update_deployment(
                deployment_id, {"task_definitions": arns}
            ) or deployment.model_copy(update={"task_definitions": arns})
    return run.definitions[key]


def _place_on(ctx: ControllerContext, run: _Run, task: DeploymentTask, node: GpuNode, result: PlacementResult) -> str:
    """One attempt: "placed", "moved" (the task is no longer pending), "full" (the node filled meanwhile), or
    "refused" (ECS refused, or a call failed: the placement undone)."""
    fields = {
        "instance_id": node.instance_id,
        "region": node.region,
        "container_instance_arn": node.container_instance_arn,
        "placed_at": ctx.now,
    }
    outcome = ctx.store.place_task(task, node, fields)
    if outcome == PlaceOutcome.TASK_MOVED:
        return "moved"
    if outcome == PlaceOutcome.NODE_FULL:
        latest = ctx.store.get_node(node.instance_id)
        run.free[node.instance_id] = latest.gpus_free if latest and latest.status.schedulable else 0
        return "full"
    run.free[node.instance_id] -= task.gpus
    placed = task.model_copy(update={**fields, "status": TaskStatus.STARTING})
    try:
        definition = _task_definition(ctx, run, task.deployment_id, node.region)
        task_arn = ctx.region(node.region).ecs.start_task(
            definition, node.container_instance_arn, deployment_id=task.deployment_id, task_id=task.task_id
        )
    except Exception as exc:  # PlacementRefused, or a failed call: the placement is undone either way
        if isinstance(exc, PlacementRefused):
            reason = f"ECS refused the task on {node.instance_id}: {exc}"
            run.refusing.add(node.instance_id)
        else:
            reason = f"could not start the task on {node.instance_id}: {exc}"
        if ctx.store.unplace_task(placed, {"last_error": reason}) is not None:
            run.free[node.instance_id] += task.gpus
        result.refused += 1
        ctx.say(f"task {task.task_id} of {task.deployment_id}: {reason}")
        return "refused"
    started = ctx.store.update_task(placed, {"ecs_task_arn": task_arn}, expect=[TaskStatus.STARTING])
    result.placed.append(started or placed.model_copy(update={"ecs_task_arn": task_arn}))
    ctx.say(f"task {task.task_id} of {task.deployment_id} placed on {node.instance_id} ({node.region}): {task_arn}")
    return "placed"

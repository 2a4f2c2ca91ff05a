"""The deployments API's decisions (routes: models/deployment_api.py; handler: lambdas/deployments_api).

The API writes the deployments table and nudges the controller (DeploymentsChanged on the hub bus); it never calls
ECS: the controller is the only writer of placements. A nudge that EventBridge refuses is logged and the answer
still given, since the change is written and the controller's schedule (every minute) picks it up anyway.

Decisions worth knowing:
- Node class: the smallest class with at least `gpus` GPUs per node (classes with max_nodes 0 offer nothing).
- Quota: a deployment reserves gpus x replicas of its tenant's quota (the store moves the reservation with
  change_replicas and gives it back with release_reservation). An autoscaled one is admitted only while its tenant
  has room for gpus x max_replicas: the reservation's condition is tightened by the difference, so the admission
  is as atomic as the reservation (its autoscaling up is then reserved step by step, within the quota).
- Scale: within min_replicas..max_replicas when the deployment autoscales (the bounds are the autoscaler's range);
  a deployment without autoscale has no range of its own (min and max default to its replicas), so a manual scale
  moves min_replicas/max_replicas with it.
- A deployment's tasks in its view: every task not ended, and for each slot (below the desired replicas) with no
  such task, its most recent ended one, so a slot that gave up shows its error and restarts.
- GET /nodes lists the nodes that are there (gone ones are shown by GET /nodes/{id} until they expire).
- Deleted deployments are listed until their record expires (status deleted); `?status=` filters.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import fmean
from typing import Any, Protocol

from spothub_core.contracts import DeploymentsChanged, HubEvent, Source
from spothub_core.dal.deployment_store import CreateOutcome, DeploymentStore
from spothub_core.dal.event_bus import put_event
from spothub_core.errors import Conflict, DependencyUnavailable, InvalidRequest, NotFound
from spothub_core.logic.deployment_ids import new_deployment_id, new_event_id
from spothub_core.models.api import iso_utc
from spothub_core.models.deployment_api import (
    DeploymentAccepted,
    DeploymentRequest,
    DeploymentsPage,
    DeploymentSummary,
    DeploymentUtilization,
    DeploymentView,
    GpuCount,
    GpuView,
    HealthCheck,
    InfrastructureHealth,
    NodeOperation,
    NodesView,
    NodeTaskView,
    NodeUtilization,
    NodeView,
    ReplicaCounts,
    ResourcesView,
    ScaleRequest,
    ScalingEventsPage,
    ScalingEventView,
    TaskView,
    UtilizationView,
)
from spothub_core.models.deployment_records import (
    DeploymentStatus,
    DeploymentTask,
    GpuNode,
    ModelDeployment,
    NodeStatus,
    ScalingEvent,
    ScalingResult,
    ScalingTrigger,
    TaskStatus,
)
from spothub_core.observability import logger
from spothub_core.settings import DeploymentSettings, NodeClass
from spothub_core.timings import (
    DEPLOYMENT_CREATING_LIMIT_SECONDS,
    DEPLOYMENT_RECORD_TTL_SECONDS,
    NODE_HEARTBEAT_STALE_SECONDS,
)

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
DEFAULT_EVENTS = 50
MAX_EVENTS = 100
# Statuses a change may start from: not while the deployment is being deleted (the race with a DELETE).
CHANGEABLE = (DeploymentStatus.CREATING, DeploymentStatus.RUNNING, DeploymentStatus.DEGRADED, DeploymentStatus.FAILED)
# Tries of a scale against concurrent changes of the replicas (another scale, an autoscaling decision).
SCALE_TRIES = 3


class AlarmReader(Protocol):
    def in_alarm(self, name_prefix: str) -> list[str]: ...


@dataclass(frozen=True)
class DeploymentsApi:
    """What the deployments API works with: the deployments table, the settings (node classes, quotas, the default
    image, the hub bus), EventBridge (the nudge) and the hub region's alarms."""

    store: DeploymentStore
    settings: DeploymentSettings
    events: Any
    alarms: AlarmReader


def _nudge(
    api: DeploymentsApi, change: str, *, deployment_id: str | None = None, instance_id: str | None = None
) -> None:
    detail = DeploymentsChanged(deployment_id=deployment_id, instance_id=instance_id, change=change)
    try:
        put_event(
            api.events,
            api.settings.hub_bus_name,
            Source.HUB,
            HubEvent.DEPLOYMENTS_CHANGED,
            detail.model_dump(mode="json"),
        )
    except DependencyUnavailable:
        logger.exception("controller not nudged: its schedule picks the change up", extra=detail.model_dump())


def _event(
    api: DeploymentsApi,
    deployment: ModelDeployment,
    reason: str,
    *,
    before: int,
    after: int,
    result: ScalingResult = ScalingResult.APPLIED,
    now: float,
) -> None:
    api.store.add_event(
        ScalingEvent(
            event_id=new_event_id(now),
            deployment_id=deployment.deployment_id,
            trigger=ScalingTrigger.MANUAL,
            reason=reason,
            before=before,
            after=after,
            result=result,
            at=now,
            expires_at=int(now) + DEPLOYMENT_RECORD_TTL_SECONDS,
        )
    )


def _iso(moment: float | None) -> str | None:
    return None if moment is None else iso_utc(moment)


# --- POST /deployments ----------------------------------------------------------------------------------------


def node_class_for(classes: dict[str, NodeClass], gpus: int) -> str:
    """The smallest node class with at least `gpus` GPUs per node; InvalidRequest naming the largest offered."""
    offered = {name: spec for name, spec in classes.items() if spec.max_nodes > 0}
    fitting = [(spec.gpus, name) for name, spec in offered.items() if spec.gpus >= gpus]
    if fitting:
        return min(fitting)[1]
    if not offered:
        raise InvalidRequest(f"{gpus} GPUs per replica: no node class offers GPU nodes (every max_nodes is 0)")
    largest = max(spec.gpus for spec in offered.values())
    named = "; ".join(
        f"class {name}: {', '.join(spec.instance_types)}"
        for name, spec in sorted(offered.items())
        if spec.gpus == largest
    )
    raise InvalidRequest(f"{gpus} GPUs per replica: the largest node class offers {largest} ({named})")


def _over_quota(api: DeploymentsApi, tenant: str, asked: int, how: str) -> Conflict:
    held = api.store.tenant(tenant).gpus_reserved
    quota = api.settings.quota_of(tenant)
    return Conflict(f"tenant {tenant} is over its quota: quota {quota} GPUs, holds {held}, asked {asked} ({how})")


def create(
    api: DeploymentsApi, request: DeploymentRequest, *, now: float, deployment_id: str | None = None
) -> DeploymentAccepted:
    node_class = node_class_for(api.settings.node_classes, request.gpus)
    min_replicas = request.replicas if request.min_replicas is None else request.min_replicas
    max_replicas = max(request.replicas, 1) if request.max_replicas is None else request.max_replicas
    deployment = ModelDeployment(
        deployment_id=deployment_id or new_deployment_id(now),
        model=request.model,
        tenant=request.tenant,
        image=request.image or api.settings.default_image,
        gpus=request.gpus,
        replicas=request.replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        autoscale=request.autoscale,
        max_model_len=request.max_model_len,
        env=request.env,
        node_class=node_class,
        status=DeploymentStatus.CREATING,
        created_at=now,
        updated_at=now,
    )
    reserve = request.gpus * request.replicas
    # What must fit the quota: the deployment at its largest (max_replicas, when autoscaled).
    room = request.gpus * max_replicas if request.autoscale else reserve
    how = (
        f"up to max_replicas {max_replicas} x {request.gpus} GPUs: an autoscaled deployment needs room for its largest"
        if request.autoscale
        else f"{request.replicas} replicas x {request.gpus} GPUs"
    )
    quota = api.settings.quota_of(request.tenant)
    if room > quota or (reserve == 0 and api.store.tenant(request.tenant).gpus_reserved + room > quota):
        # Nothing is reserved by a create of zero replicas, so the store's condition cannot check its room.
        raise _over_quota(api, request.tenant, room, how)
    outcome = api.store.create_deployment(deployment, reserve=reserve, quota=quota - (room - reserve))
    if outcome is CreateOutcome.OVER_QUOTA:
        raise _over_quota(api, request.tenant, room, how)
    if outcome is CreateOutcome.EXISTS:
        raise Conflict(f"deployment {deployment.deployment_id} exists already")
    _event(api, deployment, "created", before=0, after=deployment.replicas, now=now)
    _nudge(api, "created", deployment_id=deployment.deployment_id)
    return DeploymentAccepted(deployment_id=deployment.deployment_id, status=deployment.status)


# --- GET /deployments ------------------------------------------------------------------------------------------


def summary(deployment: ModelDeployment) -> DeploymentSummary:
    return DeploymentSummary(
        deployment_id=deployment.deployment_id,
        model=deployment.model,
        tenant=deployment.tenant,
        gpus=deployment.gpus,
        status=deployment.status,
        replicas=deployment.replicas,
        created_at=iso_utc(deployment.created_at),
    )


def list_deployments(
    api: DeploymentsApi,
    *,
    tenant: str | None = None,
    status: DeploymentStatus | None = None,
    model: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    next_token: str | None = None,
) -> DeploymentsPage:
    filters = {name: str(value) for name, value in (("tenant", tenant), ("status", status), ("model", model)) if value}
    try:
        found, token = api.store.deployments_page(limit=limit, next_token=next_token, filters=filters)
    except ValueError as exc:
        raise InvalidRequest(f"next_token: {exc}") from exc
    return DeploymentsPage(deployments=[summary(d) for d in found], next_token=token)


# --- GET /deployments/{id}/status ------------------------------------------------------------------------------


def shown_tasks(deployment: ModelDeployment, tasks: list[DeploymentTask]) -> list[DeploymentTask]:
    """Every task not ended; for each slot below the desired replicas with none, its most recent ended task."""
    current = [task for task in tasks if not task.status.ended]
    covered = {task.slot for task in current}
    last_ended: dict[int, DeploymentTask] = {}
    for task in tasks:
        if not task.status.ended or task.slot >= deployment.replicas or task.slot in covered:
            continue
        if task.slot not in last_ended or task.task_id > last_ended[task.slot].task_id:
            last_ended[task.slot] = task
    return sorted([*current, *last_ended.values()], key=lambda task: (task.slot, task.task_id))


def task_view(task: DeploymentTask) -> TaskView:
    return TaskView(
        task_id=task.task_id,
        slot=task.slot,
        instance_id=task.instance_id,
        region=task.region,
        gpus=task.gpus,
        status=task.status,
        endpoint=task.endpoint,
        started_at=_iso(task.placed_at),
        restarts=task.restarts,
        last_error=task.last_error,
    )


def deployment_view(deployment: ModelDeployment, tasks: list[DeploymentTask]) -> DeploymentView:
    healthy = [task for task in tasks if task.status == TaskStatus.RUNNING]
    return DeploymentView(
        deployment_id=deployment.deployment_id,
        model=deployment.model,
        tenant=deployment.tenant,
        image=deployment.image,
        gpus=deployment.gpus,
        status=deployment.status,
        replicas=ReplicaCounts(
            desired=deployment.replicas,
            running=sum(task.status.placed for task in tasks),
            healthy=len(healthy),
        ),
        min_replicas=deployment.min_replicas,
        max_replicas=deployment.max_replicas,
        autoscale=deployment.autoscale,
        tasks=[task_view(task) for task in shown_tasks(deployment, tasks)],
        endpoints=[task.endpoint for task in sorted(healthy, key=lambda t: (t.slot, t.task_id)) if task.endpoint],
        created_at=iso_utc(deployment.created_at),
        last_error=deployment.last_error,
    )


def _deployment(api: DeploymentsApi, deployment_id: str) -> ModelDeployment:
    deployment = api.store.get_deployment(deployment_id)
    if deployment is None:
        raise NotFound(f"no deployment {deployment_id}")
    return deployment


def view(api: DeploymentsApi, deployment_id: str) -> DeploymentView:
    deployment = _deployment(api, deployment_id)
    return deployment_view(deployment, api.store.tasks(deployment_id))


# --- DELETE /deployments/{id}, POST /deployments/{id}/restart|scale --------------------------------------------


def _being_deleted(deployment: ModelDeployment) -> Conflict:
    return Conflict(f"deployment {deployment.deployment_id} is {deployment.status}: it cannot change any more")


def delete(api: DeploymentsApi, deployment_id: str, *, now: float) -> DeploymentView:
    """Mark the deployment deleting (the controller stops its tasks, then gives its GPUs back); asked again, the
    deployment as it is."""
    deployment = _deployment(api, deployment_id)
    if deployment.status in CHANGEABLE:
        updated = api.store.update_deployment(
            deployment_id, {"status": DeploymentStatus.DELETING, "updated_at": now}, expect=CHANGEABLE
        )
        if updated is not None:
            _event(api, updated, "deleted", before=deployment.replicas, after=0, now=now)
            _nudge(api, "deleted", deployment_id=deployment_id)
            deployment = updated
        else:
            deployment = _deployment(api, deployment_id)  # deleted by another request meanwhile
    return deployment_view(deployment, api.store.tasks(deployment_id))


def restart(api: DeploymentsApi, deployment_id: str, *, now: float) -> DeploymentView:
    """A rolling restart: the generation goes up; the controller replaces the older generation's tasks one slot at
    a time, each old task stopping once its replacement is healthy."""
    deployment = _deployment(api, deployment_id)
    if deployment.status not in CHANGEABLE:
        raise _being_deleted(deployment)
    generation = deployment.restart_generation + 1
    # Two restarts at once both write the same next generation: one restart, as both asked.
    updated = api.store.update_deployment(
        deployment_id, {"restart_generation": generation, "updated_at": now}, expect=CHANGEABLE
    )
    if updated is None:
        raise _being_deleted(_deployment(api, deployment_id))
    _event(
        api,
        updated,
        f"rolling restart asked (generation {generation})",
        before=updated.replicas,
        after=updated.replicas,
        now=now,
    )
    _nudge(api, "restart", deployment_id=deployment_id)
    return deployment_view(updated, api.store.tasks(deployment_id))


def scale(api: DeploymentsApi, deployment_id: str, request: ScaleRequest, *, now: float) -> DeploymentView:
    """Set the desired replicas, reserving (or giving back) gpus x the difference of the tenant's quota."""
    replicas = request.replicas
    for _ in range(SCALE_TRIES):
        deployment = _deployment(api, deployment_id)
        if deployment.status not in CHANGEABLE:
            raise _being_deleted(deployment)
        fields: dict[str, Any] = {"updated_at": now}
        if deployment.autoscale is not None:
            if not deployment.min_replicas <= replicas <= deployment.max_replicas:
                raise InvalidRequest(
                    f"replicas must lie within min_replicas..max_replicas ({deployment.min_replicas}.."
                    f"{deployment.max_replicas}) of autoscaled deployment {deployment_id}; asked {replicas}"
                )
        else:
            fields["min_replicas"] = min(deployment.min_replicas, replicas)
            fields["max_replicas"] = max(deployment.max_replicas, replicas, 1)
        if replicas == deployment.replicas:
            return deployment_view(deployment, api.store.tasks(deployment_id))
        outcome = api.store.change_replicas(
            deployment, replicas, quota=api.settings.quota_of(deployment.tenant), fields=fields
        )
        if outcome is CreateOutcome.OVER_QUOTA:
            asked = (replicas - deployment.replicas) * deployment.gpus
            refusal = _over_quota(
                api, deployment.tenant, asked, f"{deployment.replicas} -> {replicas} replicas x {deployment.gpus} GPUs"
            )
            _event(
                api,
                deployment,
                f"scale refused: {refusal}",
                before=deployment.replicas,
                after=deployment.replicas,
                result=ScalingResult.REFUSED,
                now=now,
            )
            raise refusal
        if outcome is CreateOutcome.CREATED:
            _event(api, deployment, "scaled by request", before=deployment.replicas, after=replicas, now=now)
            _nudge(api, "scaled", deployment_id=deployment_id)
            return view(api, deployment_id)
        # None: the replicas changed since they were read (another scale, an autoscaling decision): again.
    raise Conflict(f"deployment {deployment_id} kept changing while it was scaled: try again")


# --- nodes -----------------------------------------------------------------------------------------------------


def _placed_tasks(api: DeploymentsApi) -> list[DeploymentTask]:
    """Every task holding GPUs on a node, of every deployment not deleted."""
    placed: list[DeploymentTask] = []
    for deployment in api.store.deployments():
        if deployment.status != DeploymentStatus.DELETED:
            placed.extend(task for task in api.store.tasks(deployment.deployment_id) if task.status.placed)
    return placed


def _mean(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return round(fmean(known), 1) if known else None


def node_view(node: GpuNode, tasks: list[DeploymentTask]) -> NodeView:
    return NodeView(
        instance_id=node.instance_id,
        region=node.region,
        instance_type=node.instance_type,
        node_class=node.node_class,
        capacity_type=node.capacity_type,
        status=node.status,
        status_reason=node.status_reason,
        gpus_total=node.gpus_total,
        gpus_allocated=node.gpus_allocated,
        gpus_free=node.gpus_free,
        last_heartbeat=_iso(node.last_heartbeat),
        gpu_utilization_pct=_mean(gpu.utilization_pct for gpu in node.gpu_usage),
        tasks=[
            NodeTaskView(deployment_id=task.deployment_id, task_id=task.task_id, gpus=task.gpus, status=task.status)
            for task in sorted(tasks, key=lambda t: (t.deployment_id, t.task_id))
            if task.instance_id == node.instance_id
        ],
    )


def list_nodes(api: DeploymentsApi) -> NodesView:
    tasks = _placed_tasks(api)
    nodes = [node for node in api.store.nodes() if node.status != NodeStatus.GONE]
    return NodesView(nodes=[node_view(node, tasks) for node in sorted(nodes, key=_node_order)])


def _node_order(node: GpuNode) -> tuple[str, str, str]:
    return (node.region, node.instance_type, node.instance_id)


def _node(api: DeploymentsApi, instance_id: str) -> GpuNode:
    node = api.store.get_node(instance_id)
    if node is None:
        raise NotFound(f"no GPU node {instance_id}")
    return node


def show_node(api: DeploymentsApi, instance_id: str) -> NodeView:
    node = _node(api, instance_id)
    return node_view(node, _placed_tasks(api))


@dataclass(frozen=True)
class _Operation:
    name: str  # the change named in DeploymentsChanged
    to: NodeStatus
    allowed_from: tuple[NodeStatus, ...]


CORDON = _Operation("cordon", NodeStatus.CORDONED, (NodeStatus.READY,))
UNCORDON = _Operation("uncordon", NodeStatus.READY, (NodeStatus.CORDONED, NodeStatus.DRAINING))
DRAIN = _Operation("drain", NodeStatus.DRAINING, (NodeStatus.READY, NodeStatus.CORDONED))
NODE_OPERATIONS = {operation.name: operation for operation in (CORDON, UNCORDON, DRAIN)}


def operate_node(
    api: DeploymentsApi, instance_id: str, operation: str, request: NodeOperation | None, *, caller: str
) -> NodeView:
    """cordon (ready -> cordoned), uncordon (cordoned or draining -> ready), drain (ready or cordoned -> draining:
    the controller replaces its tasks elsewhere, then stops them). A node already where the operation leads is
    answered as it is; one going (interrupted, gone) refuses every operation."""
    action = NODE_OPERATIONS[operation]
    node = _node(api, instance_id)
    if node.status != action.to:
        if node.status not in action.allowed_from:
            raise Conflict(
                f"node {instance_id} is {node.status}: {action.name} applies to a node that is "
                + " or ".join(str(status) for status in action.allowed_from)
            )
        reason = (request.reason if request else "") or f"{action.name} asked by {caller}"
        fields: dict[str, Any] = {"status": action.to, "status_reason": None if action.to.schedulable else reason}
        # The condition (still in a status the operation applies to) closes the race with an interruption or the
        # tracker finding the node gone between the read and this write: a node going stays going.
        updated = api.store.update_node(instance_id, fields, expect=action.allowed_from)
        if updated is None:
            current = _node(api, instance_id)
            if current.status != action.to:
                raise Conflict(f"node {instance_id} became {current.status} meanwhile: {action.name} not applied")
            updated = current
        else:
            logger.info(
                "node operation applied",
                extra={"instance_id": instance_id, "operation": action.name, "caller": caller, "reason": reason},
            )
            _nudge(api, action.name, instance_id=instance_id)
        node = updated
    return node_view(node, _placed_tasks(api))


# --- GET /resources/available, GET /gpu-utilization -----------------------------------------------------------


def resources(api: DeploymentsApi) -> ResourcesView:
    return resources_view(api.store.nodes())


def resources_view(nodes: list[GpuNode]) -> ResourcesView:
    """GPUs per region and instance type of the nodes that are there; free only on nodes that take placements."""
    groups: dict[tuple[str, str], list[GpuNode]] = defaultdict(list)
    for node in nodes:
        if node.status != NodeStatus.GONE:
            groups[(node.region, node.instance_type)].append(node)
    counts = [
        GpuCount(
            region=region,
            instance_type=instance_type,
            nodes=len(members),
            total=sum(node.gpus_total for node in members),
            allocated=sum(node.gpus_allocated for node in members),
            free=sum(node.gpus_free for node in members if node.status.schedulable),
        )
        for (region, instance_type), members in sorted(groups.items())
    ]
    return ResourcesView(
        resources=counts,
        total=sum(count.total for count in counts),
        allocated=sum(count.allocated for count in counts),
        free=sum(count.free for count in counts),
    )


def utilization(api: DeploymentsApi) -> UtilizationView:
    deployments = [d for d in api.store.deployments() if d.status != DeploymentStatus.DELETED]
    tasks = {d.deployment_id: api.store.tasks(d.deployment_id) for d in deployments}
    return utilization_view(deployments, tasks, api.store.nodes())


def utilization_view(
    deployments: list[ModelDeployment], tasks_of: dict[str, list[DeploymentTask]], all_nodes: list[GpuNode]
) -> UtilizationView:
    """Per node: each GPU of its agent's last sample and the deployment whose task holds it (by the task's gpu_ids,
    ECS's NVIDIA UUIDs). Per deployment not deleted: the mean over the GPUs of its running tasks, and the GPUs its
    placed tasks hold."""
    deployments = [d for d in deployments if d.status != DeploymentStatus.DELETED]
    tasks = {d.deployment_id: [t for t in tasks_of.get(d.deployment_id, []) if t.status.placed] for d in deployments}
    holder = {gpu: task.deployment_id for placed in tasks.values() for task in placed for gpu in task.gpu_ids}
    nodes = sorted((node for node in all_nodes if node.status != NodeStatus.GONE), key=_node_order)
    usage = {gpu.uuid: gpu.utilization_pct for node in nodes for gpu in node.gpu_usage}
    node_views = []
    for node in nodes:
        gpus = [
            GpuView(
                uuid=gpu.uuid,
                index=gpu.index,
                utilization_pct=gpu.utilization_pct,
                memory_used_mib=gpu.memory_used_mib,
                memory_total_mib=gpu.memory_total_mib,
                deployment_id=holder.get(gpu.uuid),
            )
            for gpu in sorted(node.gpu_usage, key=lambda g: g.index)
        ]
        if not gpus:  # no heartbeat with a sample yet: the GPUs ECS registered
            gpus = [
                GpuView(
                    uuid=uuid,
                    index=index,
                    utilization_pct=None,
                    memory_used_mib=None,
                    memory_total_mib=None,
                    deployment_id=holder.get(uuid),
                )
                for index, uuid in enumerate(node.gpu_ids)
            ]
        node_views.append(
            NodeUtilization(
                instance_id=node.instance_id,
                region=node.region,
                last_heartbeat=_iso(node.last_heartbeat),
                utilization_pct=_mean(gpu.utilization_pct for gpu in gpus),
                gpus=gpus,
            )
        )
    deployment_views = [
        DeploymentUtilization(
            deployment_id=d.deployment_id,
            utilization_pct=_mean(
                usage.get(gpu)
                for task in tasks[d.deployment_id]
                if task.status == TaskStatus.RUNNING
                for gpu in task.gpu_ids
            ),
            gpus=sum(task.gpus for task in tasks[d.deployment_id]),
            target_pct=d.autoscale.target_gpu_utilization if d.autoscale else None,
        )
        for d in deployments
    ]
    return UtilizationView(nodes=node_views, deployments=deployment_views)


# --- GET /scaling/events ---------------------------------------------------------------------------------------


def scaling_events(
    api: DeploymentsApi, *, deployment_id: str | None = None, limit: int = DEFAULT_EVENTS
) -> ScalingEventsPage:
    return ScalingEventsPage(
        events=[
            ScalingEventView(
                event_id=event.event_id,
                deployment_id=event.deployment_id,
                trigger=event.trigger,
                reason=event.reason,
                before=event.before,
                after=event.after,
                result=event.result,
                at=iso_utc(event.at),
            )
            for event in api.store.events(deployment_id=deployment_id, limit=limit)
        ]
    )


# --- GET /health -------------------------------------------------------------------------------------------------


def stuck(deployment: ModelDeployment, now: float) -> bool:
    """Failed, or creating past DEPLOYMENT_CREATING_LIMIT_SECONDS (the controller fails it at its next run)."""
    if deployment.status == DeploymentStatus.FAILED:
        return True
    return (
        deployment.status == DeploymentStatus.CREATING
        and now - deployment.created_at > DEPLOYMENT_CREATING_LIMIT_SECONDS
    )


def health(api: DeploymentsApi, *, now: float) -> InfrastructureHealth:
    prefix = f"{api.settings.prefix}-"
    try:
        alarms: list[str] | DependencyUnavailable = api.alarms.in_alarm(prefix)
    except DependencyUnavailable as exc:
        alarms = exc
    return health_view(api.store.nodes(), api.store.deployments(), alarms, prefix=prefix, now=now)


def health_view(
    all_nodes: list[GpuNode],
    deployments: list[ModelDeployment],
    alarms: list[str] | DependencyUnavailable,
    *,
    prefix: str,
    now: float,
) -> InfrastructureHealth:
    """The deployments' infrastructure: nodes (ready ones, agents heard from), stuck deployments, firing alarms
    (`alarms`: their names, or why they could not be read). Healthy when every check passes; a check that could not
    be made fails, saying why."""
    nodes = [node for node in all_nodes if node.status != NodeStatus.GONE]
    ready = [node for node in nodes if node.status == NodeStatus.READY]
    # A node's agent silent this long (or never heard from this long after the node appeared): it may be gone.
    silent = sorted(
        node.instance_id
        for node in nodes
        if now - (node.last_heartbeat or node.first_seen) > NODE_HEARTBEAT_STALE_SECONDS
        and node.status != NodeStatus.INTERRUPTED
    )
    by_status = ", ".join(
        f"{sum(node.status == status for node in nodes)} {status}"
        for status in NodeStatus
        if status != NodeStatus.GONE and any(node.status == status for node in nodes)
    )
    node_detail = f"{len(ready)} of {len(nodes)} nodes ready" + (f" ({by_status})" if by_status else "")
    if silent:
        node_detail += f"; agents silent over {NODE_HEARTBEAT_STALE_SECONDS} s: {', '.join(silent)}"
    stuck_ids = [d.deployment_id for d in deployments if stuck(d, now)]
    checks = [
        HealthCheck(name="nodes", ok=not silent, detail=node_detail),
        HealthCheck(
            name="deployments",
            ok=not stuck_ids,
            detail=(
                f"stuck (failed, or creating over {DEPLOYMENT_CREATING_LIMIT_SECONDS} s): {', '.join(stuck_ids)}"
                if stuck_ids
                else "none stuck"
            ),
        ),
    ]
    if isinstance(alarms, DependencyUnavailable):
        firing: list[str] = []
        checks.append(HealthCheck(name="alarms", ok=False, detail=str(alarms)))
    else:
        firing = alarms
        checks.append(
            HealthCheck(
                name="alarms",
                ok=not firing,
                detail=f"in ALARM: {', '.join(firing)}" if firing else f"no alarm {prefix}* in ALARM",
            )
        )
    return InfrastructureHealth(
        healthy=all(check.ok for check in checks),
        nodes_ready=len(ready),
        nodes_total=len(nodes),
        stuck_deployments=stuck_ids,
        alarms_in_alarm=firing,
        checks=checks,
    )

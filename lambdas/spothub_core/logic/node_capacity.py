"""Capacity for deployments: nodes asked of the worker regions' node groups when GPUs are short, asks that gave no
node taken back (the region excluded for a while), idle nodes released.

- Nodes to ask, per node class: the pending tasks no node could take, packed onto nodes of the class (first fit,
  largest first), less the nodes asked and still expected (asked within NODE_BOOT_SECONDS, not registered yet) and
  those registered whose agent has not beaten yet.
- Where: the spot finder's ranking for the class's instance types (share_regions: the node groups run beside the
  serving replicas), less the regions excluded for deployments; the best region's group grows (up to the class's
  max_nodes and the group's maximum size), the rest goes to the next. Each growth is recorded (NodeGroupAsk).
- An ask whose nodes did not register within NODE_BOOT_SECONDS: the region is excluded for the capacity exclusion
  time, the group's members that never registered are terminated and its desired capacity set back to what
  registered, and the nodes are asked elsewhere.
- No spot region left: with the on-demand fallback, the finder's on-demand region (else the first worker region)
  turns its group on-demand and grows it. A group on-demand with no node left returns to spot.
- A ready node with nothing allocated for NODE_IDLE_GRACE_SECONDS, when no task of its class is pending (or when its
  agent never beat), is cordoned and released (terminated, its group's desired capacity decremented). An on-demand
  ask in a region excluded for spot clears the exclusion: the group is on-demand now, whichever way it is asked.

The decisions are the pure functions at the top; `provide` does the reading and the writing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from spothub_core.logic.deployment_context import ControllerContext, NodeGroups
from spothub_core.logic.deployment_placement import fresh
from spothub_core.models.deployment_records import DeploymentTask, GpuNode, NodeGroupAsk, NodeStatus
from spothub_core.models.orchestrator_tasks import FindAnswer, FindRequest
from spothub_core.settings import NodeClass
from spothub_core.timings import EXCLUSION_SECONDS, NODE_BOOT_SECONDS, NODE_IDLE_GRACE_SECONDS

ON_DEMAND_FALLBACK = "on-demand"
IDLE_REASON = "released: nothing allocated for the idle grace"


@dataclass
class CapacityResult:
    asked: int = 0  # nodes asked of node groups
    asks: list[str] = field(default_factory=list)  # "<region>#<class>+<n>"
    excluded: list[str] = field(default_factory=list)  # "<region>#<class>"
    released: list[str] = field(default_factory=list)  # instance ids
    errors: int = 0


# --- pure decisions --------------------------------------------------------------------------------------------


def nodes_needed(task_gpus: Iterable[int], node_gpus: int) -> int:
    """Nodes of `node_gpus` GPUs that hold tasks of these GPU counts (first fit, largest first: a task's GPUs are on
    one node)."""
    bins: list[int] = []  # free GPUs per node
    for gpus in sorted(task_gpus, reverse=True):
        for i, free in enumerate(bins):
            if free >= gpus:
                bins[i] -= gpus
                break
        else:
            bins.append(node_gpus - gpus)
    return len(bins)


def registered(nodes: Iterable[GpuNode], region: str, node_class: str) -> int:
    """The group's members registered in ECS (recorded nodes that are not gone)."""
    return sum(1 for n in nodes if n.region == region and n.node_class == node_class and n.status != NodeStatus.GONE)


def excluded(ask: NodeGroupAsk | None, now: float, *, on_demand: bool = False) -> bool:
    """Whether the region is not asked for nodes of the class now. For on-demand, only an exclusion after an
    on-demand ask counts: an empty spot pool is not an empty region."""
    if ask is None or ask.excluded_until is None or ask.excluded_until <= now:
        return False
    return ask.on_demand or not on_demand


def expecting(ask: NodeGroupAsk) -> bool:
    """The ask grew the group beyond what had registered, and has not been seen fulfilled yet."""
    return ask.desired > ask.registered_at_ask


def overdue(ask: NodeGroupAsk, registered_now: int, now: float) -> bool:
    """Its nodes did not all register within the boot time."""
    return expecting(ask) and registered_now < ask.desired and now >= ask.asked_at + NODE_BOOT_SECONDS


def coming(ask: NodeGroupAsk, registered_now: int, now: float) -> int:
    """Nodes asked and still expected."""
    if not expecting(ask) or overdue(ask, registered_now, now) or excluded(ask, now, on_demand=ask.on_demand):
        return 0
    return max(0, ask.desired - registered_now)


def spot_regions(answer: FindAnswer, asks: Mapping[str, NodeGroupAsk], worker_regions: list[str], now: float) -> list:
    """The finder's ranking, best first, less the regions excluded for deployments (`asks` by region)."""
    ranked = [r.region for r in answer.ranked if r.region in worker_regions]
    return [r for r in dict.fromkeys(ranked) if not excluded(asks.get(r), now)]


def on_demand_regions(
    answer: FindAnswer, asks: Mapping[str, NodeGroupAsk], worker_regions: list[str], now: float
) -> list[str]:
    """Where on-demand nodes may go: the finder's on-demand region first, then the worker regions in order."""
    candidates = [answer.on_demand_region] if answer.on_demand_region in worker_regions else []
    candidates += worker_regions
    return [r for r in dict.fromkeys(candidates) if not excluded(asks.get(r), now, on_demand=True)]


def warming(nodes: Iterable[GpuNode], node_class: str, now: float) -> int:
    """Ready nodes of the class registered within the boot time whose agent has not beaten yet: placements go there
    as soon as it does."""
    return sum(
        1
        for n in nodes
        if n.node_class == node_class
        and n.status == NodeStatus.READY
        and not fresh(n, now)
        and now - n.first_seen < NODE_BOOT_SECONDS
    )


def silent(node: GpuNode, now: float) -> bool:
    """Registered longer than the boot time, and its agent not beating: it takes no placement."""
    return not fresh(node, now) and now - node.first_seen >= NODE_BOOT_SECONDS


def idle_nodes(nodes: Iterable[GpuNode], pending_classes: set[str], now: float) -> list[GpuNode]:
    """Ready nodes with nothing allocated since the idle grace, of a class no pending task waits for (or whose agent
    is silent: no task can go there anyway, and it holds a place in its group)."""
    return sorted(
        (
            n
            for n in nodes
            if n.status == NodeStatus.READY
            and n.gpus_allocated == 0
            and n.idle_since is not None
            and now - n.idle_since >= NODE_IDLE_GRACE_SECONDS
            and (n.node_class not in pending_classes or silent(n, now))
        ),
        key=lambda n: n.instance_id,
    )


# --- doing it --------------------------------------------------------------------------------------------------


def provide(
    ctx: ControllerContext,
    shortfall: Mapping[str, list[DeploymentTask]],
    nodes: Mapping[str, GpuNode],
    pending_classes: set[str],
) -> CapacityResult:
    """Asks, take-backs and releases for this run. `shortfall`: per node class, the pending tasks placement could not
    place; `nodes` by instance id as recorded now; `pending_classes`: the node classes of every pending task."""
    result = CapacityResult()
    asks = {(a.region, a.node_class): a for a in ctx.store.asks()}
    for key, ask in sorted(asks.items()):
        try:
            asks[key] = _review(ctx, ask, nodes, result)
        except Exception as exc:
            result.errors += 1
            ctx.say(f"capacity: the ask of {key[0]}#{key[1]} not reviewed: {exc}")
    for node_class, tasks in sorted(shortfall.items()):
        spec = ctx.settings.node_classes.get(node_class)
        if spec is None or not tasks:
            continue
        try:
            _ask(ctx, node_class, spec, tasks=tasks, asks=asks, nodes=nodes, result=result)
        except Exception as exc:
            result.errors += 1
            ctx.say(f"capacity: no nodes asked for {node_class}: {exc}")
    _release_idle(ctx, nodes, pending_classes, asks, result)
    return result


def _groups(ctx: ControllerContext, region: str) -> NodeGroups:
    return ctx.region(region).groups


def _review(
    ctx: ControllerContext, ask: NodeGroupAsk, nodes: Mapping[str, GpuNode], result: CapacityResult
) -> NodeGroupAsk:
    """An ask fulfilled is recorded so; one overdue is taken back and its region excluded; an on-demand group with
    nothing left returns to spot."""
    have = registered(nodes.values(), ask.region, ask.node_class)
    if overdue(ask, have, ctx.now):
        groups = _groups(ctx, ask.region)
        group = groups.describe(ask.node_class)
        known = {n.instance_id for n in nodes.values() if n.status != NodeStatus.GONE}
        never_registered = [i for i in (group.instance_ids if group else []) if i not in known]
        for instance_id in never_registered:
            groups.release(ask.node_class, instance_id)
        groups.set_desired(ask.node_class, have)
        until = ctx.now + EXCLUSION_SECONDS["capacity"]
        failure = f": {group.last_failure}" if group and group.last_failure else ""
        ctx.say(
            f"capacity: {ask.region} gave {have} of {ask.desired} {ask.node_class} nodes within {NODE_BOOT_SECONDS} s"
            f"{failure}; excluded for deployments until {until:.0f}, the ask taken back"
        )
        result.excluded.append(f"{ask.region}#{ask.node_class}")
        updated = ask.model_copy(update={"desired": have, "registered_at_ask": have, "excluded_until": until})
        ctx.store.put_ask(updated)
        return updated
    if expecting(ask) and have >= ask.desired:
        updated = ask.model_copy(update={"registered_at_ask": ask.desired})
        ctx.store.put_ask(updated)
        return updated
    if ask.on_demand and have == 0 and not expecting(ask) and not excluded(ask, ctx.now):
        _groups(ctx, ask.region).set_on_demand(ask.node_class, False)
        updated = ask.model_copy(update={"on_demand": False})
        ctx.store.put_ask(updated)
        ctx.say(f"capacity: {ask.region}#{ask.node_class} has no node left: back to spot")
        return updated
    return ask


def _ask(
    ctx: ControllerContext,
    node_class: str,
    spec: NodeClass,
    *,
    tasks: list[DeploymentTask],
    asks: dict[tuple[str, str], NodeGroupAsk],
    nodes: Mapping[str, GpuNode],
    result: CapacityResult,
) -> None:
    packed = nodes_needed([t.gpus for t in tasks], spec.gpus)
    on_the_way = warming(nodes.values(), node_class, ctx.now) + sum(
        coming(a, registered(nodes.values(), a.region, node_class), ctx.now)
        for (_, c), a in asks.items()
        if c == node_class
    )
    need = packed - on_the_way
    if need <= 0:
        return
    answer = ctx.find(FindRequest(instance_types=list(spec.instance_types), target_capacity=need, share_regions=True))
    by_region = {r: a for (r, c), a in asks.items() if c == node_class}
    regions = ctx.settings.worker_regions
    spot = spot_regions(answer, by_region, regions, ctx.now)
    on_demand = not spot and ctx.settings.capacity_fallback == ON_DEMAND_FALLBACK
    candidates = on_demand_regions(answer, by_region, regions, ctx.now) if on_demand else spot
    for region in candidates:
        if need <= 0:
            break
        need -= _grow(
            ctx, region, node_class, spec=spec, need=need, on_demand=on_demand, asks=asks, nodes=nodes, result=result
        )
    if need > 0:
        where = "on-demand" if on_demand else "spot" if spot else "spot (none left, no on-demand fallback)"
        ctx.say(f"capacity: {need} {node_class} nodes wanted and not asked ({where}): the regions are full or excluded")


def _grow(
    ctx: ControllerContext,
    region: str,
    node_class: str,
    *,
    spec: NodeClass,
    need: int,
    on_demand: bool,
    asks: dict[tuple[str, str], NodeGroupAsk],
    nodes: Mapping[str, GpuNode],
    result: CapacityResult,
) -> int:
    """Grow the region's group by up to `need` nodes; how many were asked."""
    groups = _groups(ctx, region)
    group = groups.describe(node_class)
    if group is None:
        return 0
    take = min(need, max(0, min(group.max_size, spec.max_nodes) - group.desired))
    if take <= 0:
        return 0
    if on_demand and not group.on_demand:
        groups.set_on_demand(node_class, True)
    groups.set_desired(node_class, group.desired + take)
    ask = NodeGroupAsk(
        region=region,
        node_class=node_class,
        desired=group.desired + take,
        asked_at=ctx.now,
        registered_at_ask=registered(nodes.values(), region, node_class),
        on_demand=on_demand or group.on_demand,
    )
    ctx.store.put_ask(ask)
    asks[(region, node_class)] = ask
    result.asked += take
    result.asks.append(f"{region}#{node_class}+{take}")
    kind = "on-demand" if ask.on_demand else "spot"
    ctx.say(f"capacity: asked {take} {node_class} nodes of {region} ({kind}; desired {ask.desired})")
    return take


def _release_idle(
    ctx: ControllerContext,
    nodes: Mapping[str, GpuNode],
    pending_classes: set[str],
    asks: dict[tuple[str, str], NodeGroupAsk],
    result: CapacityResult,
) -> None:
    for node in idle_nodes(nodes.values(), pending_classes, ctx.now):
        # Cordoned first, so nothing is placed on it while it goes (only a ready node takes placements).
        cordoned = ctx.store.update_node(
            node.instance_id, {"status": NodeStatus.CORDONED, "status_reason": IDLE_REASON}, expect=[NodeStatus.READY]
        )
        if cordoned is None:
            continue
        try:
            _groups(ctx, node.region).release(node.node_class, node.instance_id)
        except Exception as exc:
            result.errors += 1
            ctx.store.update_node(
                node.instance_id, {"status": NodeStatus.READY, "status_reason": None}, expect=[NodeStatus.CORDONED]
            )
            ctx.say(f"capacity: idle node {node.instance_id} not released: {exc}")
            continue
        result.released.append(node.instance_id)
        ask = asks.get((node.region, node.node_class))
        if ask is not None and ask.desired > 0:
            fewer = ask.model_copy(
                update={"desired": ask.desired - 1, "registered_at_ask": min(ask.registered_at_ask, ask.desired - 1)}
            )
            ctx.store.put_ask(fewer)
            asks[(node.region, node.node_class)] = fewer
        ctx.say(f"capacity: idle node {node.instance_id} ({node.node_class}, {node.region}) released")

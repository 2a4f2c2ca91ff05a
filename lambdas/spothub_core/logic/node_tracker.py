"""The resource tracker: a worker region's GPU nodes as ECS has them, kept in the deployments table (GpuNode).

- A node group member newly registered in ECS is recorded with the GPUs ECS registered (ready; draining when ECS is
  draining it), idle from then on.
- A known node keeps the agent's latest heartbeat (its time and the GPU sample: utilization per GPU by NVIDIA UUID),
  its address and container instance, and when it became idle (nothing allocated).
- A known node ECS no longer lists is gone: its record says so and expires. Its tasks are not ended here: the health
  step (logic/deployment_health.observe, given the nodes) ends them, giving their GPUs back, and replaces them.

The decisions (`changes_of`, `new_node`) are pure; `track` reads ECS and writes the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spothub_core.logic.deployment_context import ControllerContext
from spothub_core.models.deployment_ecs import ContainerNode
from spothub_core.models.deployment_records import GpuNode, GpuUsage, NodeStatus
from spothub_core.models.records import AgentRecord
from spothub_core.timings import DEPLOYMENT_RECORD_TTL_SECONDS

GONE_REASON = "no longer an ECS container instance of the GPU cluster"
ECS_DRAINING_REASON = "its ECS container instance is draining"
NOT_GONE = tuple(s for s in NodeStatus if s != NodeStatus.GONE)


def heartbeat_of(agent: AgentRecord | None) -> tuple[float | None, list[GpuUsage] | None]:
    """The agent's last heartbeat time and GPU sample (None: no sample, keep what is recorded)."""
    if agent is None:
        return None, None
    usage = None
    if agent.gpu and agent.gpu.get("available", True) and isinstance(agent.gpu.get("gpus"), list):
        usage = [GpuUsage.model_validate(g) for g in agent.gpu["gpus"] if isinstance(g, dict)]
    return agent.last_seen, usage


def new_node(seen: ContainerNode, region: str, agent: AgentRecord | None, now: float) -> GpuNode:
    last_heartbeat, usage = heartbeat_of(agent)
    draining = seen.status == "DRAINING"
    return GpuNode(
        instance_id=seen.instance_id,
        region=region,
        node_class=seen.node_class,
        instance_type=seen.instance_type,
        capacity_type=seen.capacity_type,
        container_instance_arn=seen.container_instance_arn,
        gpus_total=seen.gpus_registered,
        gpu_ids=list(seen.gpu_ids),
        status=NodeStatus.DRAINING if draining else NodeStatus.READY,
        status_reason=ECS_DRAINING_REASON if draining else None,
        private_ip=seen.private_ip,
        first_seen=now,
        last_heartbeat=last_heartbeat,
        gpu_usage=usage or [],
        idle_since=now,
    )


def changes_of(node: GpuNode, seen: ContainerNode, agent: AgentRecord | None, now: float) -> dict[str, Any]:
    """The fields of a known node's record that ECS and its agent say differently now."""
    changes: dict[str, Any] = {}
    last_heartbeat, usage = heartbeat_of(agent)
    if last_heartbeat is not None and last_heartbeat != node.last_heartbeat:
        changes["last_heartbeat"] = last_heartbeat
    if usage is not None and usage != node.gpu_usage:
        changes["gpu_usage"] = usage
    for field, value in (
        ("private_ip", seen.private_ip),
        ("container_instance_arn", seen.container_instance_arn),
        ("capacity_type", seen.capacity_type),
    ):
        if value and value != getattr(node, field):
            changes[field] = value
    if seen.gpu_ids and seen.gpu_ids != node.gpu_ids:
        changes["gpu_ids"] = list(seen.gpu_ids)
    if node.gpus_allocated == 0 and node.idle_since is None:
        changes["idle_since"] = now
    elif node.gpus_allocated > 0 and node.idle_since is not None:
        changes["idle_since"] = None
    if seen.status == "DRAINING" and node.status == NodeStatus.READY:
        changes.update(status=NodeStatus.DRAINING, status_reason=ECS_DRAINING_REASON)
    return changes


def track(
    ctx: ControllerContext, region: str, stored: list[GpuNode], agents: Mapping[str, AgentRecord]
) -> dict[str, GpuNode]:
    """Bring the region's node records in line with ECS and the agents; the region's nodes as recorded now (gone
    ones included, until they expire). `stored`: the region's records as read at the start of the run."""
    seen = {n.instance_id: n for n in ctx.region(region).ecs.nodes()}
    known = {n.instance_id: n for n in stored if n.region == region}
    nodes: dict[str, GpuNode] = {}
    for instance_id, container in seen.items():
        node = known.get(instance_id)
        agent = agents.get(instance_id)
        if node is None:
            added = new_node(container, region, agent, ctx.now)
            if ctx.store.add_node(added):
                ctx.say(f"node {instance_id} ({added.node_class}, {added.gpus_total} GPUs) registered in {region}")
                nodes[instance_id] = added
            else:
                nodes[instance_id] = ctx.store.get_node(instance_id) or added
            continue
        if node.status == NodeStatus.GONE:
            nodes[instance_id] = node  # gone for good: its tasks were ended; a re-registration is not a node again
            continue
        changes = changes_of(node, container, agent, ctx.now)
        updated = ctx.store.update_node(instance_id, changes, expect=NOT_GONE) if changes else node
        nodes[instance_id] = updated or ctx.store.get_node(instance_id) or node
    for instance_id, node in known.items():
        if instance_id in seen:
            continue
        nodes[instance_id] = node
        if node.status == NodeStatus.GONE:
            continue
        gone = ctx.store.update_node(
            instance_id,
            {
                "status": NodeStatus.GONE,
                "status_reason": GONE_REASON,
                "expires_at": int(ctx.now) + DEPLOYMENT_RECORD_TTL_SECONDS,
            },
            expect=NOT_GONE,
        )
        if gone is not None:
            ctx.say(f"node {instance_id} in {region} is gone ({node.gpus_allocated} GPUs were allocated)")
            nodes[instance_id] = gone
    return nodes

"""Replacing a serving instance, make before break: one replacement per replica at a time."""

from __future__ import annotations

from spothub_core.dal.spot_market import SpotDataUnavailable
from spothub_core.errors import DependencyUnavailable
from spothub_core.logic.hub_services import HubServices, start_orchestrator
from spothub_core.models.orchestrator_tasks import FindRequest, OrchestratorInput, Placement, Replacing
from spothub_core.models.records import ReplicaStatus


def start_replacement(
    hub: HubServices,
    replica_id: str | None,
    instance_id: str,
    region: str,
    why: str,
    *,
    now: float,
    spot_only: bool = False,
    name: str | None = None,
) -> str:
    """Replace `replica_id`'s serving instance `instance_id`, make before break: a new launch, preferring the
    same region, then the old instance retired once the new one is healthy. One replacement per replica at a time.

    `spot_only`: the replacement launches spot or nothing (a return to spot). `name`: the caller's own
    execution name for this one request; a retry of it finds the replica replacing under that very name
    and starts the execution again (a no-op by name when the first try did start it)."""
    config = hub.store.config()
    if not replica_id or not config.enabled:
        return "ignored: provisioning is disabled"
    retried = name is not None
    name = name or f"{replica_id}-r-{instance_id}"
    if not hub.store.start_replacing(replica_id, instance_id=instance_id, execution=name, now=now):
        replica = hub.store.replica(replica_id)
        if not (retried and replica and replica.status == ReplicaStatus.REPLACING and replica.execution == name):
            return "ignored: the replica is already being replaced or has moved"
    start_orchestrator(
        hub,
        name,
        OrchestratorInput(
            replica_id=replica_id,
            generation=config.generation,
            prefer_region=region,
            replacing=Replacing(instance_id=instance_id, region=region, notice=why),
            spot_only=spot_only,
            placement=_first_placement(hub, replica_id, region, spot_only=spot_only, now=now),
        ),
    )
    return f"replacement started: {name}"


def _first_placement(
    hub: HubServices, replica_id: str, region: str, *, spot_only: bool, now: float
) -> Placement | None:
    """The replacement's first attempt, ranked here as the orchestrator's FindRegion would (same request, same
    function): a spot finder invocation less between the notice and the launch. None when the ranking cannot be
    had now; FindRegion then ranks, with its retries."""
    if hub.spot_finder is None:
        return None
    request = FindRequest(replica_id=replica_id, prefer_region=region, spot_only=spot_only)
    try:
        answer = hub.spot_finder.find(request, now=now)
    except (SpotDataUnavailable, DependencyUnavailable):
        return None
    return Placement(best=answer.best, on_demand_region=answer.on_demand_region, reason=answer.reason)

"""POST /spot-provisioning: turn spot provisioning on or off, and what that starts or stops.

Enable writes the switch (a new generation when something changed) and starts one orchestrator
execution per replica that is not already placed; execution names carry the replica and the
generation, so a second enable, or two at once, start nothing new. Disable stops the orchestrators and,
with `teardown` (the default), asks every worker region to stop its tasks and scale its groups to 0 (also
when already disabled: that is how instances left running by a disable without teardown are stopped);
without it, the answer says how many instances keep running and billing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spothub_core.contracts import HubCommand, Source, TeardownRequested
from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.errors import Conflict, InvalidRequest
from spothub_core.models.api import ToggleRequest, ToggleResponse
from spothub_core.models.orchestrator_tasks import OrchestratorInput, Replacing
from spothub_core.models.records import (
    InstanceStatus,
    ProvisioningConfig,
    ProvisioningStatus,
    Replica,
    ReplicaStatus,
)


@dataclass(frozen=True)
class Orchestration:
    """What the toggle may start and stop (Step Functions and the hub bus, in production)."""

    start_execution: Callable[[str, OrchestratorInput], bool]  # (name, input) -> started (False: already ran)
    stop_execution: Callable[[str, str], None]  # (execution name, cause)
    put_command: Callable[[str, str, dict[str, Any]], None]  # (detail-type, source, detail)


# The operator's settings on the switch: enabling with the same ones (and nothing failed) changes nothing.
SETTINGS = ("replicas", "instance_types", "allowed_regions", "denied_regions")


# Instances that stop on their own: a teardown was asked for, or they are gone.
STOPPING = (InstanceStatus.TERMINATING, InstanceStatus.TERMINATED)
TEARDOWN_HINT = (
    'POST /spot-provisioning {"action": "disable"} (teardown defaults to true) terminates them; until then '
    'GET /spot-instances lists them with "billing": true'
)


def execution_name(replica_id: str, generation: int) -> str:
    return f"{replica_id}-g{generation}"


def toggle(
    request: ToggleRequest,
    *,
    store: ProvisioningStore,
    orchestration: Orchestration,
    worker_regions: list[str],
    default_instance_types: list[str],
    now: float,
) -> ToggleResponse:
    if request.action == "enable":
        _enable(request, store, orchestration, worker_regions, default_instance_types, now)
        return ToggleResponse(message="Spot provisioning enabled successfully")
    _disable(request, store, orchestration, worker_regions, now)
    if request.teardown:
        return ToggleResponse(message="Spot provisioning disabled successfully")
    return _left_running(store)


def _left_running(store: ProvisioningStore) -> ToggleResponse:
    """Disabled without teardown: say what keeps running and billing, and how to stop it."""
    running = sum(1 for i in store.instances() if i.status not in STOPPING)
    left = {0: "no instance is running", 1: "1 instance keeps running, serving and billing"}.get(
        running, f"{running} instances keep running, serving and billing"
    )
    return ToggleResponse(
        message=f"Spot provisioning disabled; {left}",
        instances_running=running,
        hint=TEARDOWN_HINT,
    )


def _enable(  # noqa: PLR0917
    request: ToggleRequest,
    store: ProvisioningStore,
    orchestration: Orchestration,
    worker_regions: list[str],
    default_instance_types: list[str],
    now: float,
) -> None:
    _check_deployed(request, worker_regions, default_instance_types)
    current = store.config()
    wanted = ProvisioningConfig(
        status=ProvisioningStatus.ENABLED,
        generation=current.generation,
        replicas=request.replicas or ((current.replicas or 1) if current.enabled else 1),
        instance_types=request.instance_types or current.instance_types or default_instance_types,
        allowed_regions=request.allowed_regions or current.allowed_regions,
        denied_regions=current.denied_regions if request.denied_regions is None else request.denied_regions,
        warm_standby=current.warm_standby if request.warm_standby is None else request.warm_standby,
    )
    replica_count = wanted.replicas or 1
    reachable = set(wanted.allowed_regions or worker_regions) - set(wanted.denied_regions)
    if not reachable:
        raise InvalidRequest("the allowed and denied regions leave no worker region to place a replica in")
    if replica_count > len(reachable):
        raise InvalidRequest(
            f"replicas: at most one replica per region, and {len(reachable)} worker regions are allowed"
        )
    generation = current.generation
    # A failed replica is retried under a new generation (its execution name is taken).
    failed = any(r.status == ReplicaStatus.FAILED for r in store.replicas())
    unchanged = current.enabled and not failed and all(getattr(current, k) == getattr(wanted, k) for k in SETTINGS)
    if not unchanged:
        if not store.write_config(
            wanted.model_copy(update={"generation": generation + 1, "updated_at": int(now)}),
            expected_generation=generation,
        ):
            raise Conflict("spot provisioning was changed by another request at the same time; try again")
        generation += 1
    elif current.warm_standby != wanted.warm_standby and not store.write_config(
        # Only the standby switch changed: the same generation, so no replica is placed again.
        wanted.model_copy(update={"generation": generation, "updated_at": int(now)}),
        expected_generation=generation,
    ):
        raise Conflict("spot provisioning was changed by another request at the same time; try again")
    replicas = {r.replica_id: r for r in store.replicas()}
    for index in range(replica_count):
        replica_id = f"replica-{index}"
        name = execution_name(replica_id, generation)
        serving = _serving_instance(replicas.get(replica_id))
        if store.start_placing(replica_id, generation=generation, execution=name, now=now):
            state = OrchestratorInput(replica_id=replica_id, generation=generation)
            if serving:
                # Re-placed under new settings while serving: make before break, as any replacement.
                state = state.model_copy(update={"replacing": serving, "prefer_region": serving.region})
            try:
                orchestration.start_execution(name, state)
            except Exception:
                # Not started: leave the replica claimable, so enabling again retries it.
                store.replica_status(replica_id, ReplicaStatus.STOPPED)
                raise
    for replica_id, replica in replicas.items():
        if _index(replica_id) >= replica_count and replica.status != ReplicaStatus.STOPPED:
            _retire_replica(replica, store, orchestration, now)


def _check_deployed(request: ToggleRequest, worker_regions: list[str], instance_types: list[str]) -> None:
    """The regions and instance types the request names must be this deployment's."""
    unknown = sorted(set((request.allowed_regions or []) + (request.denied_regions or [])) - set(worker_regions))
    if unknown:
        raise InvalidRequest(
            f"not worker regions of this deployment: {', '.join(unknown)} (worker regions: {', '.join(worker_regions)})"
        )
    # Only types the groups can launch: another would enable provisioning and fail later as a fatal launch.
    for name in request.instance_types or []:
        if name not in instance_types:
            raise InvalidRequest(
                f"instance type {name} is not in this deployment's instanceTypes [{', '.join(instance_types)}]"
            )


def _serving_instance(replica: Replica | None) -> Replacing | None:
    if replica and replica.instance_id and replica.region and replica.status != ReplicaStatus.STOPPED:
        return Replacing(instance_id=replica.instance_id, region=replica.region)
    return None


def _index(replica_id: str) -> int:
    return int(replica_id.rsplit("-", 1)[-1])


def _retire_replica(replica: Replica, store: ProvisioningStore, orchestration: Orchestration, now: float) -> None:
    """A replica above the wanted count: stop its orchestrator and tear its instance down."""
    store.replica_status(replica.replica_id, ReplicaStatus.STOPPED, {"updated_at": int(now)})
    store.release_regions(replica.replica_id, now=now)
    if replica.execution:
        orchestration.stop_execution(replica.execution, "fewer replicas wanted")
    serving = _serving_instance(replica)
    if serving:
        teardown = TeardownRequested(
            teardown_id=f"retire-{serving.instance_id}",
            region=serving.region,
            instance_id=serving.instance_id,
            reason=f"{replica.replica_id} is no longer wanted",
        )
        orchestration.put_command(HubCommand.TEARDOWN_REQUESTED, Source.HUB, json.loads(teardown.model_dump_json()))


def _disable(
    request: ToggleRequest,
    store: ProvisioningStore,
    orchestration: Orchestration,
    worker_regions: list[str],
    now: float,
) -> None:
    current = store.config()
    generation = current.generation
    if current.enabled and not store.write_config(
        current.model_copy(
            update={"status": ProvisioningStatus.DISABLED, "generation": generation + 1, "updated_at": int(now)}
        ),
        expected_generation=generation,
    ):
        raise Conflict("spot provisioning was changed by another request at the same time; try again")
    for replica in store.stop_replicas(now):
        store.release_regions(replica.replica_id, now=now)
        if replica.execution:
            orchestration.stop_execution(replica.execution, "spot provisioning disabled")
    if request.teardown:
        for region in worker_regions:
            teardown = TeardownRequested(
                teardown_id=f"teardown-{region}-{uuid.uuid4().hex[:12]}", region=region, reason="disabled with teardown"
            )
            orchestration.put_command(HubCommand.TEARDOWN_REQUESTED, Source.HUB, json.loads(teardown.model_dump_json()))

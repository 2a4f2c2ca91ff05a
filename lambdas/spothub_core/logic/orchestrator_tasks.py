"""The spot orchestrator's tasks on the hub: dispatch a launch or a teardown (the task token is stored with
the request; only the request's id travels), give up a launch, record a healthy instance, mark a replica
failed, continue as new, return a replica on on-demand to spot, keep it on on-demand.

Each takes its input model and returns its output model (spothub_core.models.orchestrator_tasks)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel

from spothub_core.contracts import HubCommand, LaunchRequested, TeardownRequested
from spothub_core.dal.provisioning import LAUNCH, TEARDOWN
from spothub_core.errors import RegionTaken, Superseded
from spothub_core.logic.hub_services import (
    HubServices,
    cancel_launch,
    send_command,
    serve_from,
    start_orchestrator,
)
from spothub_core.logic.region_exclusions import exclude_after_timeout
from spothub_core.logic.region_reservations import release, reserve
from spothub_core.logic.replacements import start_replacement
from spothub_core.models.orchestrator_tasks import (
    AbandonLaunchInput,
    AbandonLaunchOutput,
    ContinueAsNewInput,
    ContinueAsNewOutput,
    DispatchLaunchInput,
    DispatchLaunchOutput,
    DispatchTeardownInput,
    DispatchTeardownOutput,
    KeepOnDemandInput,
    KeepOnDemandOutput,
    OrchestratorInput,
    RecordInstanceInput,
    RecordInstanceOutput,
    ReplicaFailedInput,
    ReplicaFailedOutput,
    Retire,
    ReturnToSpotInput,
    ReturnToSpotOutput,
)
from spothub_core.models.records import (
    InstanceStatus,
    LaunchRecord,
    ProvisioningConfig,
    Replica,
    ReplicaStatus,
    RequestStatus,
    TeardownRecord,
)


def dispatch_launch(hub: HubServices, request: DispatchLaunchInput, *, now: float) -> DispatchLaunchOutput:
    config = hub.store.config()
    if not config.enabled or config.generation != request.generation:
        raise Superseded(f"provisioning is {config.status} at generation {config.generation}")
    command = LaunchRequested(
        launch_id=request.launch_id,
        replica_id=request.replica_id,
        region=request.region,
        capacity_type=request.capacity_type,
    )
    # Reserved before anything is dispatched: a replica that ranked at the same time finds the region taken.
    holder = reserve(hub, command.region, command.replica_id, command.launch_id, now=now)
    if holder != command.replica_id:
        raise RegionTaken(f"{command.region} is reserved for {holder}; {command.replica_id} looks again")
    launch = LaunchRecord(**command.model_dump(exclude={"version"}), generation=request.generation)
    if not hub.store.put_request(LAUNCH, launch, token=request.token, now=now):
        release(hub, command.region, command.launch_id, now=now)
        raise Superseded(f"launch {command.launch_id} was already answered")
    hub.store.update_replica(
        command.replica_id,
        {"target_region": command.region, "launch_id": command.launch_id, "capacity_type": command.capacity_type},
    )
    send_command(hub, HubCommand.LAUNCH_REQUESTED, command)
    return DispatchLaunchOutput(launch_id=command.launch_id)


def dispatch_teardown(hub: HubServices, request: DispatchTeardownInput, *, now: float) -> DispatchTeardownOutput:
    command = TeardownRequested(
        teardown_id=request.teardown_id, region=request.region, instance_id=request.instance_id, reason=request.reason
    )
    hub.store.put_request(
        TEARDOWN, TeardownRecord(**command.model_dump(exclude={"version"})), token=request.token, now=now
    )
    if command.instance_id:
        hub.store.put_instance(command.instance_id, {"status": InstanceStatus.TERMINATING, "updated_at": int(now)})
    send_command(hub, HubCommand.TEARDOWN_REQUESTED, command)
    return DispatchTeardownOutput(teardown_id=command.teardown_id)


def abandon_launch(hub: HubServices, request: AbandonLaunchInput, *, now: float) -> AbandonLaunchOutput:
    """The orchestrator gave up waiting (timeout): exclude the region for a while, cancel the launch there."""
    launch = hub.store.resolve_request(LAUNCH, request.launch_id, RequestStatus.ABANDONED, error=request.cause)
    release(hub, request.region, request.launch_id, now=now)
    exclude_after_timeout(hub, request.region, request.launch_id, now=now)
    cancel_launch(hub, request.region, request.launch_id)
    return AbandonLaunchOutput(abandoned=launch is not None)


def record_instance(hub: HubServices, request: RecordInstanceInput, *, now: float) -> RecordInstanceOutput:
    """The replacement is healthy: record it, publish it, move the endpoint; return what to retire."""
    instance, region = request.instance, request.region
    # The worker names the capacity it got; without it, the capacity the launch asked for.
    capacity_type = instance.capacity_type if "capacity_type" in instance.model_fields_set else request.capacity_type
    fields = {
        "region": region,
        "instance_id": instance.instance_id,
        "capacity_type": capacity_type,
        "placed_at": int(now),
        "reason": request.reason or "",
        "target_region": None,
    }
    if not hub.store.replica_serving(request.replica_id, generation=request.generation, fields=fields):
        # Disabled (or re-enabled) while this launch ran: the new instance is not wanted.
        release(hub, region, request.launch_id, now=now)
        return RecordInstanceOutput(retire=Retire(instance_id=instance.instance_id, region=region), superseded=True)
    serve_from(
        hub,
        replica_id=request.replica_id,
        launch_id=request.launch_id,
        region=region,
        instance_id=instance.instance_id,
        fields=instance.model_dump(exclude={"instance_id"}, exclude_unset=True),
        public_ip=instance.public_ip,
        private_ip=instance.private_ip,
        now=now,
    )
    replacing = request.replacing
    retire = None
    if replacing and replacing.instance_id and replacing.instance_id != instance.instance_id:
        retire = Retire(instance_id=replacing.instance_id, region=replacing.region)
    return RecordInstanceOutput(retire=retire, superseded=False)


def replica_failed(hub: HubServices, request: ReplicaFailedInput, *, now: float) -> ReplicaFailedOutput:
    error = request.error
    hub.store.replica_status(
        request.replica_id,
        ReplicaStatus.FAILED,
        {"error": f"{error.error}: {error.cause}"[:1000], "updated_at": int(now)},
    )
    hub.store.release_regions(request.replica_id, now=now)
    return ReplicaFailedOutput(replica_id=request.replica_id, status=ReplicaStatus.FAILED)


def continue_as_new(hub: HubServices, request: ContinueAsNewInput, *, now: float) -> ContinueAsNewOutput:
    """Start a fresh orchestrator execution for a replica whose execution has looped long (history cap).

    A spot watch (`state.watch_spot`) goes on only while it still watches: its replica serves on
    on-demand under this generation and this execution; otherwise it ends here (`continued_as` None)."""
    if request.state.watch_spot and not _watches(
        hub.store.config(), hub.store.replica(request.replica_id), request.generation, request.execution
    ):
        return ContinueAsNewOutput(continued_as=None)
    name = f"{request.replica_id}-g{request.generation}-c{int(now)}"
    start_orchestrator(hub, name, request.state.model_copy(update={"attempt": 0}))
    hub.store.update_replica(request.replica_id, {"execution": name})
    return ContinueAsNewOutput(continued_as=name)


def return_to_spot(hub: HubServices, request: ReturnToSpotInput, *, now: float) -> ReturnToSpotOutput:
    """A replica serving on on-demand found a spot region: replace its on-demand instance, make before
    break, with a spot-only replacement (it never falls back to on-demand; with no spot region left it
    ends in `keep_on_demand`). Nothing starts when the replica no longer serves on on-demand under this
    generation and this watch (replaced, disabled, re-enabled meanwhile); the watch then ends."""
    replica = hub.store.replica(request.replica_id)
    instance_id = replica.instance_id if replica else None
    # One name per look: a retried invocation of the same look reuses it, a later look never does.
    name = f"{request.replica_id}-s-{instance_id}-{_epoch(request.looked_at, now)}"
    retried = replica is not None and replica.status == ReplicaStatus.REPLACING and replica.execution == name
    watching = retried or _watches(hub.store.config(), replica, request.generation, request.execution)
    if not (watching and replica and instance_id and replica.region):
        return ReturnToSpotOutput(
            started=False, outcome="ignored: the replica no longer serves on on-demand under this watch"
        )
    outcome = start_replacement(
        hub, request.replica_id, instance_id, replica.region, "return-to-spot", now=now, spot_only=True, name=name
    )
    return ReturnToSpotOutput(started=outcome.startswith("replacement started"), outcome=outcome)


def keep_on_demand(hub: HubServices, request: KeepOnDemandInput, *, now: float) -> KeepOnDemandOutput:
    """A spot-only replacement found no spot region: the replica keeps serving on its on-demand instance
    (back from `replacing` to `serving`), and a new execution watches for spot again."""
    instance_id = request.replacing.instance_id
    watch = f"{request.execution}-w"
    instance = hub.store.instance(instance_id)
    kept = hub.store.keep_serving(
        request.replica_id,
        generation=request.generation,
        instance_id=instance_id,
        execution=request.execution,
        watch=watch,
        # What the spot-only launches overwrote (dispatch_launch notes its target), back to the instance's.
        fields={
            "capacity_type": (instance.capacity_type if instance else None) or "on-demand",
            "launch_id": instance.launch_id if instance else None,
            "target_region": None,
            "updated_at": int(now),
        },
    )
    if not kept:
        return KeepOnDemandOutput(kept=False, watch=None)
    start_orchestrator(
        hub, watch, OrchestratorInput(replica_id=request.replica_id, generation=request.generation, watch_spot=True)
    )
    return KeepOnDemandOutput(kept=True, watch=watch)


def _watches(config: ProvisioningConfig, replica: Replica | None, generation: int, execution: str | None) -> bool:
    """Whether the spot watch `execution` still has something to watch: its replica serves on on-demand,
    under the current generation and under this very execution (else the watch is stale)."""
    return (
        replica is not None
        and config.enabled
        and config.generation == generation
        and replica.generation == generation
        and replica.status == ReplicaStatus.SERVING
        and replica.capacity_type == "on-demand"
        and bool(replica.instance_id)
        and replica.execution == execution
    )


def _epoch(timestamp: str | None, default: float) -> int:
    """Epoch seconds of a Step Functions timestamp (ISO 8601, `Z` or an offset); `default` without one."""
    return int(datetime.fromisoformat(timestamp).timestamp()) if timestamp else int(default)


# The orchestrator's actions, by the name its ASL gives them: the model the input is read into, and the task.
TASKS: dict[str, tuple[type[BaseModel], Callable[..., BaseModel]]] = {
    "dispatch_launch": (DispatchLaunchInput, dispatch_launch),
    "dispatch_teardown": (DispatchTeardownInput, dispatch_teardown),
    "abandon_launch": (AbandonLaunchInput, abandon_launch),
    "record_instance": (RecordInstanceInput, record_instance),
    "replica_failed": (ReplicaFailedInput, replica_failed),
    "continue_as_new": (ContinueAsNewInput, continue_as_new),
    "return_to_spot": (ReturnToSpotInput, return_to_spot),
    "keep_on_demand": (KeepOnDemandInput, keep_on_demand),
}

"""The search launcher's tasks (statemachines/search_launcher.asl.json): bring up the volume's one instance for a
launch that holds the slot (logic/search_launches.py started it), or clean up after it.

place   the volume's zone, and a subnet of the search network in it.
launch  RunInstances there (spot, or on-demand after the spot launch's CapacityError or QuotaError); the record
        becomes starting with its instance.
attach  the volume to the instance once it runs and the volume is free; TransientError (the state machine waits
        and tries again) while the instance is pending or the volume is leaving an instance being retired,
        FatalError when it is held by any other live instance.
check   one health check of the service through the router; give_up once the start budget is spent.
ready   the record becomes ready: queries are routed to it from now on.
fail    terminate the launch's instances, end the record (terminated, launch-failed, the error), free the slot.

Every task can be retried (a Lambda error) and says the same the second time: the launch finds the instance its
first try started (by the launch id's tag, and EC2's ClientToken), the record's moves are conditional.

A launch whose record is no longer its own to move (a scale-down or the monitor ended it meanwhile) stops with
Superseded: the state machine runs `fail` for it all the same, which terminates what the launch started (nothing
else will use it) but leaves the record and the slot to whoever ended it (its conditions see they are not the
launch's any more), and the execution ends Cancelled rather than failed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from spothub_core.contracts import (
    MANAGED_BY,
    SEARCH_SERVICE,
    CapacityType,
    InstanceTag,
    SearchTag,
    search_instance_name,
)
from spothub_core.dal.search_instances import SearchInstances
from spothub_core.dal.search_placement import InstanceView, SearchPlacement, VolumeAttachment
from spothub_core.dal.search_router import SearchRouter
from spothub_core.dal.search_store import SearchStore
from spothub_core.errors import DependencyUnavailable, FatalError, Superseded, TransientError
from spothub_core.models.search_records import EndReason, SearchHost, SearchInstance, SearchStatus
from spothub_core.models.search_tasks import (
    Attach,
    Attached,
    Check,
    Fail,
    Health,
    Launch,
    Launched,
    LauncherAction,
    Outcome,
    Place,
    Placement,
    Ready,
)
from spothub_core.timings import SEARCH_HEALTH_TIMEOUT_SECONDS, SEARCH_START_TIMEOUT_SECONDS

# The device name the volume is attached as; on Nitro instances it appears as an NVMe device named by the volume
# id, which is what the agent waits for.
VOLUME_DEVICE = "/dev/sdf"
# EC2 states of an instance that is leaving (or gone): it will not run the service, and lets the volume go.
LEAVING_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
# A record in one of these has let go of the volume, or is about to: its instance is retired.
RETIRING = (SearchStatus.FAILED, SearchStatus.TERMINATING, SearchStatus.TERMINATED)
# A record in one of these is the launch's own to end when it fails (its instance is the one `fail` terminates):
# launching or starting, or ready if only the ready task's answer was lost.
NOT_ENDED = tuple(s for s in SearchStatus if s.launching or s.routable)
CLIENT_TOKEN_LENGTH = 64
MAX_ERROR_LENGTH = 1000


@dataclass(frozen=True)
class SearchLauncher:
    """What the launcher's tasks work with: the hub's search table, the search region's EC2 (and its SearchHost
    parameter) and router, and how the deployment wants the instance."""

    store: SearchStore
    placement: SearchPlacement
    instances: SearchInstances
    router: SearchRouter
    prefix: str
    hub_region: str
    instance_type: str
    spot_max_price: str  # "": up to the on-demand price
    port: int
    health_path: str


def _record(launcher: SearchLauncher, launch_id: str) -> SearchInstance:
    record = launcher.store.get(launch_id)
    if record is None:
        raise FatalError(f"launch {launch_id} has no record in the search table")
    return record


def _superseded(record: SearchInstance, step: str) -> Superseded:
    return Superseded(
        f"launch {record.launch_id} is {record.status}"
        + (f" ({record.reason})" if record.reason else "")
        + f" before {step}: stopped"
    )


def _starting(launcher: SearchLauncher, launch_id: str, step: str) -> SearchInstance:
    """The record, starting with its instance; Superseded when it was ended (or moved on) meanwhile."""
    record = _record(launcher, launch_id)
    if record.status != SearchStatus.STARTING or not record.instance_id:
        raise _superseded(record, step)
    return record


# --- place ------------------------------------------------------------------------------------------------------


def place(launcher: SearchLauncher, task: Place, *, now: float) -> Placement:
    record = _record(launcher, task.launch_id)
    if record.status != SearchStatus.LAUNCHING:
        raise _superseded(record, "its placement")
    region = launcher.placement.region
    volume = launcher.placement.volume(record.volume_id)
    if volume is None:
        raise FatalError(f"the search volume {record.volume_id} does not exist in {region}")
    host = launcher.placement.host()
    zones = launcher.placement.subnet_zones(host.subnet_ids)
    # The host's order is the stack's: the first subnet in the volume's zone, every time.
    in_zone = [subnet for subnet in host.subnet_ids if zones.get(subnet) == volume.availability_zone]
    if not in_zone:
        listed = ", ".join(f"{subnet} ({zones.get(subnet, 'unknown')})" for subnet in host.subnet_ids)
        raise FatalError(
            f"no subnet of the search network is in {volume.availability_zone}, the zone of {volume.volume_id} "
            f"(subnets: {listed})"
        )
    return Placement(volume_id=volume.volume_id, availability_zone=volume.availability_zone, subnet_id=in_zone[0])


# --- launch -----------------------------------------------------------------------------------------------------


def client_token(launch_id: str, capacity_type: CapacityType) -> str:
    """RunInstances' idempotency token: one per launch and purchase option, so a retried task gets the instance
    its first try started, and the on-demand launch after a refused spot one is a launch of its own."""
    token = f"{launch_id}-{capacity_type}"
    if len(token) <= CLIENT_TOKEN_LENGTH:
        return token
    return hashlib.sha256(token.encode()).hexdigest()[:CLIENT_TOKEN_LENGTH]


def instance_tags(launcher: SearchLauncher, launch_id: str, volume_id: str, now: float) -> dict[str, str]:
    """The search instance's tags (its root volume gets the same): discovery (Name, Service, ManagedBy,
    EBSVolumeId), the agent's search mode (Service, spothub:prefix, spothub:hub-region) and the launch."""
    return {
        SearchTag.NAME: search_instance_name(now),
        SearchTag.SERVICE: SEARCH_SERVICE,
        SearchTag.MANAGED_BY: MANAGED_BY,
        SearchTag.VOLUME: volume_id,
        InstanceTag.PREFIX: launcher.prefix,
        InstanceTag.HUB_REGION: launcher.hub_region,
        InstanceTag.LAUNCH: launch_id,
    }


def run_request(launcher: SearchLauncher, host: SearchHost, task: Launch, now: float) -> dict[str, Any]:
    """RunInstances' parameters: the search launch template gives the image, the role, IMDS and the agent; the
    launch gives where (a network interface in the placement's subnet, in the instance security group, with a
    public address: the subnets have no NAT), what, how it is bought, and the tags."""
    tags = [
        {"Key": str(key), "Value": value}
        for key, value in instance_tags(launcher, task.launch_id, task.placement.volume_id, now).items()
    ]
    request: dict[str, Any] = {
        "LaunchTemplate": {"LaunchTemplateId": host.launch_template_id, "Version": "$Latest"},
        "MinCount": 1,
        "MaxCount": 1,
        "InstanceType": launcher.instance_type,
        "NetworkInterfaces": [
            {
                "DeviceIndex": 0,
                "SubnetId": task.placement.subnet_id,
                "Groups": [host.security_group_id],
                "AssociatePublicIpAddress": True,
            }
        ],
        "TagSpecifications": [{"ResourceType": kind, "Tags": tags} for kind in ("instance", "volume")],
        "ClientToken": client_token(task.launch_id, task.capacity_type),
    }
    if task.capacity_type == "spot":
        spot: dict[str, Any] = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
        if launcher.spot_max_price:
            spot["MaxPrice"] = launcher.spot_max_price
        request["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
    return request


def launch(launcher: SearchLauncher, task: Launch, *, now: float) -> Launched:
    record = _record(launcher, task.launch_id)
    if record.status == SearchStatus.STARTING and record.instance_id and record.capacity_type:
        # A retried task whose first try recorded its instance.
        return Launched(
            instance_id=record.instance_id, capacity_type=record.capacity_type, instance_type=record.instance_type
        )
    if record.status != SearchStatus.LAUNCHING:
        raise _superseded(record, "its instance was launched")
    # A retried task whose first try launched but did not record: that instance, not a second one. (EC2's
    # ClientToken answers the same; the tag also covers a token EC2 has forgotten, and emulators that ignore it.)
    started = launcher.placement.launched_by(task.launch_id)
    instance = started[0] if started else None
    if instance is None:
        host = launcher.placement.host()
        instance = launcher.placement.run(run_request(launcher, host, task, now))
    facts = instance.facts
    fields: dict[str, Any] = {
        "status": SearchStatus.STARTING,
        "instance_id": facts.instance_id,
        "capacity_type": facts.capacity_type,
        "instance_type": facts.instance_type or launcher.instance_type,
        "availability_zone": facts.availability_zone or task.placement.availability_zone,
        "subnet_id": task.placement.subnet_id,
        "started_at": now,
        "private_ip": facts.private_ip,
        "public_ip": facts.public_ip,
    }
    # Expects launching: a scale-down (or the monitor) that ended the launch while RunInstances ran wins, and the
    # instance it could not know of is terminated here.
    moved = launcher.store.update(
        task.launch_id, {k: v for k, v in fields.items() if v is not None}, expected=(SearchStatus.LAUNCHING,), now=now
    )
    launched = Launched(
        instance_id=facts.instance_id, capacity_type=facts.capacity_type, instance_type=fields["instance_type"]
    )
    if moved is None:
        current = launcher.store.get(task.launch_id)
        if current is not None and current.status == SearchStatus.STARTING and current.instance_id == facts.instance_id:
            return launched
        launcher.instances.terminate([facts.instance_id])
        if current is None:
            raise FatalError(f"launch {task.launch_id} lost its record; {facts.instance_id} is terminated")
        raise _superseded(current, f"{facts.instance_id} was recorded ({facts.instance_id} is terminated)")
    return launched


# --- attach -----------------------------------------------------------------------------------------------------


def _is_search_instance(instance: InstanceView, volume_id: str) -> bool:
    tags = instance.tags
    return (
        tags.get(SearchTag.SERVICE) == SEARCH_SERVICE
        and tags.get(SearchTag.MANAGED_BY) == MANAGED_BY
        and tags.get(SearchTag.VOLUME) == volume_id
    )


def _wait_for_holder(launcher: SearchLauncher, record: SearchInstance, volume_id: str, held: VolumeAttachment) -> None:
    """The volume is attached to another instance: raise TransientError when that instance is letting it go (a
    search instance of ours that is leaving, retired, or the one this launch replaces), FatalError otherwise."""
    holder_id = held.instance_id
    if held.state == "detaching":
        raise TransientError(f"{volume_id} is detaching from {holder_id}")
    holder = launcher.placement.instance(holder_id)
    if holder is None or holder.state in LEAVING_STATES:
        state = holder.state if holder else "gone"
        raise TransientError(
            f"{volume_id} is still attached to {holder_id}, which is {state}: waiting for it to detach"
        )
    if _is_search_instance(holder, volume_id):
        holder_record = launcher.store.by_instance(holder_id)
        if holder_record is not None and (
            holder_record.status in RETIRING or holder_record.launch_id == record.replaces
        ):
            raise TransientError(
                f"{volume_id} is attached to {holder_id} (launch {holder_record.launch_id}, {holder_record.status}), "
                "which is being retired: waiting for it to let the volume go"
            )
    kind = "a search instance that is not being retired" if _is_search_instance(holder, volume_id) else "not ours"
    raise FatalError(f"VolumeInUse: {volume_id} is attached to {holder_id} ({holder.state}; {kind})")


def attach(launcher: SearchLauncher, task: Attach, *, now: float) -> Attached:
    record = _starting(launcher, task.launch_id, "its volume was attached")
    if record.instance_id != task.instance_id:
        raise _superseded(record, f"attaching to {task.instance_id}")
    instance = launcher.placement.instance(task.instance_id)
    if instance is None or instance.state in LEAVING_STATES:
        state = instance.state if instance else "gone"
        raise FatalError(f"{task.instance_id} is {state} before the volume was attached")
    if instance.state != "running":
        raise TransientError(f"{task.instance_id} is {instance.state}: the volume is attached once it runs")
    volume = launcher.placement.volume(task.volume_id)
    if volume is None:
        raise FatalError(f"the search volume {task.volume_id} does not exist in {launcher.placement.region}")
    mine = [a for a in volume.attachments if a.instance_id == task.instance_id and a.state in ("attaching", "attached")]
    if mine:
        device = mine[0].device or VOLUME_DEVICE  # a retried task, or a first try that timed out after attaching
    else:
        for held in volume.attachments:
            if held.instance_id == task.instance_id:
                raise TransientError(f"{task.volume_id} is {held.state} on {task.instance_id}")
            _wait_for_holder(launcher, record, task.volume_id, held)
        if volume.state != "available":
            raise TransientError(f"{task.volume_id} is {volume.state}")
        device = launcher.placement.attach(task.volume_id, task.instance_id, VOLUME_DEVICE)
    addresses = {"private_ip": instance.facts.private_ip, "public_ip": instance.facts.public_ip}
    # Expects starting: a record ended meanwhile stays ended (its ender terminates the instance).
    moved = launcher.store.update(
        task.launch_id,
        {k: v for k, v in addresses.items() if v is not None},
        expected=(SearchStatus.STARTING,),
        now=now,
    )
    if moved is None:
        raise _superseded(_record(launcher, task.launch_id), "its addresses were recorded")
    return Attached(device=device, **addresses)


# --- check ------------------------------------------------------------------------------------------------------


def check(launcher: SearchLauncher, task: Check, *, now: float) -> Health:
    record = _starting(launcher, task.launch_id, "its health check")
    elapsed = now - (record.started_at or record.created_at)
    if record.private_ip:
        try:
            answer = launcher.router.health(
                record.private_ip, launcher.port, launcher.health_path, SEARCH_HEALTH_TIMEOUT_SECONDS
            )
        except DependencyUnavailable as exc:
            # The router's own trouble (a cold start in the VPC, throttling) is one more miss: the start budget
            # bounds the misses, not the router.
            detail = str(exc)
        else:
            if answer.ok:
                return Health(healthy=True, detail=f"HTTP {answer.status_code} in {answer.elapsed_ms:.0f} ms")
            detail = answer.error or f"HTTP {answer.status_code}"
    else:
        detail = "no private address yet"
    # Not serving: an instance that is already leaving (spot reclaimed, terminated by hand) never will.
    instance_id = str(record.instance_id)
    state = launcher.instances.states([instance_id]).get(instance_id)
    if state is None or state in LEAVING_STATES:
        return Health(healthy=False, give_up=True, detail=f"{instance_id} is {state or 'gone'}: {detail}")
    give_up = elapsed >= SEARCH_START_TIMEOUT_SECONDS
    return Health(healthy=False, give_up=give_up, detail=f"not healthy {elapsed:.0f} s after its launch: {detail}")


# --- ready ------------------------------------------------------------------------------------------------------


def ready(launcher: SearchLauncher, task: Ready, *, now: float) -> Outcome:
    record = _record(launcher, task.launch_id)
    if record.status.routable and record.ready_at is not None:
        return Outcome(launch_id=record.launch_id, status=record.status.value)  # a retried task
    record = _starting(launcher, task.launch_id, "it was ready")
    instance = launcher.placement.instance(str(record.instance_id))
    fields: dict[str, Any] = {
        "status": SearchStatus.READY,
        "ready_at": now,
        "last_health_at": now,
        "health_failures": 0,
        "private_ip": instance.facts.private_ip if instance else record.private_ip,
        "public_ip": instance.facts.public_ip if instance else record.public_ip,
    }
    # Expects starting: a record ended between the last check and now stays ended, and is never routed to.
    moved = launcher.store.update(
        task.launch_id, {k: v for k, v in fields.items() if v is not None}, expected=(SearchStatus.STARTING,), now=now
    )
    if moved is None:
        current = _record(launcher, task.launch_id)
        if current.status.routable:
            return Outcome(launch_id=current.launch_id, status=current.status.value)
        raise _superseded(current, "it was ready")
    return Outcome(launch_id=moved.launch_id, status=moved.status.value)


# --- fail -------------------------------------------------------------------------------------------------------


def failure_text(error: str, cause: str) -> str:
    """The caught error as the operator reads it: `<class>: <message>` of a task's exception (Lambda's cause is
    JSON with errorType and errorMessage), else Step Functions' error and cause."""
    try:
        detail = json.loads(cause) if cause else None
    except ValueError:
        detail = None
    if isinstance(detail, dict) and detail.get("errorMessage"):
        text = f"{detail.get('errorType') or error}: {detail['errorMessage']}"
    elif cause:
        text = f"{error}: {cause}" if error else cause
    else:
        text = error or "the launch failed"
    return text[:MAX_ERROR_LENGTH]


def fail(launcher: SearchLauncher, task: Fail, *, now: float) -> Outcome:
    text = failure_text(task.error, task.cause)
    record = launcher.store.get(task.launch_id)
    # Terminated first: should that fail, the record still holds the slot and the monitor retires the launch later.
    doomed = {instance.instance_id for instance in launcher.placement.launched_by(task.launch_id)}
    if record is not None and record.instance_id:
        doomed.add(record.instance_id)
    launcher.instances.terminate(sorted(doomed))
    ended = None
    if record is not None and record.status in NOT_ENDED:
        # Expects it not ended: a record a scale-down or the monitor ended meanwhile keeps their status and reason.
        ended = launcher.store.end(
            task.launch_id, SearchStatus.TERMINATED, EndReason.LAUNCH_FAILED, now, text, expected=NOT_ENDED
        )
    launcher.store.release_slot(task.launch_id)
    current = ended or launcher.store.get(task.launch_id)
    return Outcome(launch_id=task.launch_id, status=current.status.value if current else "unknown")


# The tasks by action: the input model and the function that answers it.
TASKS: dict[str, tuple[type[BaseModel], Callable[..., BaseModel]]] = {
    LauncherAction.PLACE: (Place, place),
    LauncherAction.LAUNCH: (Launch, launch),
    LauncherAction.ATTACH: (Attach, attach),
    LauncherAction.CHECK: (Check, check),
    LauncherAction.READY: (Ready, ready),
    LauncherAction.FAIL: (Fail, fail),
}

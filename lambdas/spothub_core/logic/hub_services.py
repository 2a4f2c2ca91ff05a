"""What the hub's capacity logic works with: the state table's stores and the AWS clients of its side
effects, and the two things every part of it starts: orchestrator executions and commands to worker regions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from spothub_core.contracts import HubCommand, TeardownRequested
from spothub_core.dal.active_instance import (
    ActiveInstance,
    EndpointRecord,
    publish_active_instance,
    withdraw_endpoint_record,
)
from spothub_core.dal.event_bus import put_command
from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.dal.executions import start_named
from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.logic.endpoints import serving_address
from spothub_core.models.orchestrator_tasks import OrchestratorInput
from spothub_core.models.records import InstanceRecord, InstanceStatus

if TYPE_CHECKING:
    from spothub_core.dal.standby import StandbyStore
    from spothub_core.logic.spot_finder import SpotFinder

# The teardown id of a launch's cancellation: its completion (which names no instance) is no region's teardown.
CANCEL_PREFIX = "cancel-"


@dataclass(frozen=True)
class HubServices:
    store: ProvisioningStore
    exclusions: ExclusionStore
    health: InstanceHealthStore
    sfn: Any
    events: Any
    ssm: Any
    route53: Any
    bus_name: str
    orchestrator_arn: str
    active_instance_parameter: str
    hosted_zone_id: str | None = None
    endpoint_name: str | None = None
    # Whether clients reach instances at their public address (else the private one): the one the records hold.
    serving_public_ip: bool = True
    # The operator's alerts topic (SNS client and ARN), and the instance types the worker groups launch: a quota
    # alert names the quotas of their families.
    alerts: Any = None
    alerts_topic_arn: str | None = None
    instance_types: tuple[str, ...] = ()
    prefix: str = "spothub"
    # Ranks a replacement's first attempt in-process (replacements.start_replacement); None: the orchestrator's
    # FindRegion ranks every attempt.
    spot_finder: SpotFinder | None = None
    # The warm standby's state (spothub_core.logic.standby_watch); None: no standby is kept.
    standbys: StandbyStore | None = None


def endpoint_record(
    hub: HubServices, replica_id: str, public_ip: str | None, private_ip: str | None
) -> EndpointRecord | None:
    """The replica's A record holding this instance's serving address; None without a zone and a name, or
    while the instance has no such address."""
    address = serving_address(public_ip, private_ip, public=hub.serving_public_ip)
    if not (hub.hosted_zone_id and hub.endpoint_name and address):
        return None
    return EndpointRecord(hub.hosted_zone_id, hub.endpoint_name, replica_id, address)


def serve_from(
    hub: HubServices,
    *,
    replica_id: str,
    launch_id: str,
    region: str,
    instance_id: str,
    fields: dict[str, Any],
    public_ip: str | None,
    private_ip: str | None,
    now: float,
) -> None:
    """The replica serves from this instance now (a replacement recorded, a standby promoted): the region it leaves
    is free for another replica, the instance is recorded serving with `fields`, and the endpoint follows it, before
    the old instance is retired (make before break)."""
    hub.store.release_regions(replica_id, now=now, keep=region)
    hub.store.put_instance(
        instance_id,
        {
            **fields,
            "region": region,
            "replica_id": replica_id,
            "launch_id": launch_id,
            "status": InstanceStatus.SERVING,
            "updated_at": int(now),
        },
    )
    publish_active_instance(
        hub.ssm,
        hub.route53,
        parameter=hub.active_instance_parameter,
        active=ActiveInstance(region, instance_id, public_ip, private_ip),
        record=endpoint_record(hub, replica_id, public_ip, private_ip),
    )


def withdraw_endpoint(hub: HubServices, instance: InstanceRecord) -> None:
    """A torn-down instance leaves the endpoint name: its replica's record goes, if it still names this instance.

    A replica that moved on (make before break) had its record changed to the new instance already; it keeps
    it. Route 53 would refuse that DELETE anyway (other values), but the sandbox's emulator deletes by the
    replica's SetIdentifier alone."""
    if not instance.replica_id:
        return
    replica = hub.store.replica(instance.replica_id)
    if replica is None or replica.instance_id != instance.instance_id:
        return
    record = endpoint_record(hub, instance.replica_id, instance.public_ip, instance.private_ip)
    if record:
        withdraw_endpoint_record(hub.route53, record, instance_id=instance.instance_id)


def start_orchestrator(hub: HubServices, name: str, state: OrchestratorInput) -> bool:
    """Start an orchestrator execution named `name`; False when one of that name ran already."""
    # No placement: the key is left out, as the ASL's Begin tells a ranked start by its presence.
    return start_named(
        hub.sfn,
        hub.orchestrator_arn,
        name,
        state.model_dump(mode="json", exclude_none=False, exclude={"placement"} if state.placement is None else None),
    )


def send_command(hub: HubServices, detail_type: HubCommand, command: BaseModel) -> None:
    put_command(hub.events, hub.bus_name, detail_type, command)


def cancel_launch(hub: HubServices, region: str, launch_id: str) -> None:
    """Ask the region to stop a launch nobody waits for any more (and whatever it started)."""
    command = TeardownRequested(
        teardown_id=f"{CANCEL_PREFIX}{launch_id}", region=region, launch_id=launch_id, reason=f"cancel {launch_id}"
    )
    send_command(hub, HubCommand.TEARDOWN_REQUESTED, command)


def teardown_orphan(hub: HubServices, region: str, instance_id: str, reason: str) -> None:
    """Tear down an instance that came up for a launch nobody waits for: none runs unaccounted for."""
    command = TeardownRequested(
        teardown_id=f"orphan-{instance_id}", region=region, instance_id=instance_id, reason=reason
    )
    send_command(hub, HubCommand.TEARDOWN_REQUESTED, command)

"""What the hub's capacity logic works with: the state table's stores and the AWS clients of its side
effects, and the two things every part of it starts: orchestrator executions and commands to worker regions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from spothub_core.contracts import HubCommand, TeardownRequested
from spothub_core.dal.event_bus import put_command
from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.dal.executions import start_named
from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.models.orchestrator_tasks import OrchestratorInput


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
    # The operator's alerts topic (SNS client and ARN), and the instance types the worker groups launch: a quota
    # alert names the quotas of their families.
    alerts: Any = None
    alerts_topic_arn: str | None = None
    instance_types: tuple[str, ...] = ()
    prefix: str = "spothub"


def start_orchestrator(hub: HubServices, name: str, state: OrchestratorInput) -> bool:
    """Start an orchestrator execution named `name`; False when one of that name ran already."""
    return start_named(hub.sfn, hub.orchestrator_arn, name, state.model_dump(mode="json"))


def send_command(hub: HubServices, detail_type: HubCommand, command: BaseModel) -> None:
    put_command(hub.events, hub.bus_name, detail_type, command)


def cancel_launch(hub: HubServices, region: str, launch_id: str) -> None:
    """Ask the region to stop a launch nobody waits for any more (and whatever it started)."""
    command = TeardownRequested(
        teardown_id=f"cancel-{launch_id}", region=region, launch_id=launch_id, reason=f"cancel {launch_id}"
    )
    send_command(hub, HubCommand.TEARDOWN_REQUESTED, command)


def teardown_orphan(hub: HubServices, region: str, instance_id: str, reason: str) -> None:
    """Tear down an instance that came up for a launch nobody waits for: none runs unaccounted for."""
    command = TeardownRequested(
        teardown_id=f"orphan-{instance_id}", region=region, instance_id=instance_id, reason=reason
    )
    send_command(hub, HubCommand.TEARDOWN_REQUESTED, command)

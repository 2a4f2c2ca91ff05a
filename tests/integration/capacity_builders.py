"""Builders shared by the tests of the hub's orchestrator tasks and worker reports (logic against moto's
DynamoDB, with Step Functions, EventBridge, SSM and Route 53 mocked): the services, the requests, the reports."""

from __future__ import annotations

from typing import Any

from spothub_core.contracts import CapacityNotice, InstanceFacts, LaunchFailed, LaunchSucceeded
from spothub_core.logic.hub_services import HubServices
from tests.integration.conftest import config, hub_services, orchestrator_task

NOW = 1_700_000_000.0
BUS = "spothub-hub"
ORCHESTRATOR = "arn:aws:states:us-east-1:123456789012:stateMachine:spothub-orchestrator"
PARAMETER = "/spothub/active-instance"
REGION = "us-west-2"

dispatch_launch = orchestrator_task("dispatch_launch")
record_instance = orchestrator_task("record_instance")


def services(table: Any, **overrides: Any) -> HubServices:
    return hub_services(
        table, bus_name=BUS, orchestrator_arn=ORCHESTRATOR, active_instance_parameter=PARAMETER, **overrides
    )


def placing_hub(table: Any) -> HubServices:
    """Provisioning enabled at generation 1, replica-0 being placed."""
    hub = services(table)
    assert hub.store.write_config(config(status="enabled", generation=1, replicas=1), expected_generation=0)
    assert hub.store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW)
    return hub


def launch_request(**overrides: Any) -> dict[str, Any]:
    return {
        "launch_id": "launch-1",
        "replica_id": "replica-0",
        "region": REGION,
        "generation": 1,
        "token": "token-1",
        **overrides,
    }


def put_entries(hub: HubServices) -> list[dict[str, Any]]:
    """Every entry put on the bus, in order."""
    return [entry for call in hub.events.put_events.call_args_list for entry in call.kwargs["Entries"]]


def succeeded(instance_id: str = "i-1") -> LaunchSucceeded:
    return LaunchSucceeded(
        launch_id="launch-1",
        region=REGION,
        instance=InstanceFacts(instance_id=instance_id, instance_type="g5.xlarge", public_ip="203.0.113.7"),
    )


def capacity_failure() -> LaunchFailed:
    return LaunchFailed(
        launch_id="launch-1",
        region=REGION,
        error_class="capacity",
        code="InsufficientInstanceCapacity",
        message="no g5 capacity",
    )


def record_request(instance_id: str = "i-1", **overrides: Any) -> dict[str, Any]:
    return {
        "instance": {"instance_id": instance_id, "public_ip": "203.0.113.7", "private_ip": "10.0.0.7"},
        "region": REGION,
        "replica_id": "replica-0",
        "generation": 1,
        "launch_id": "launch-1",
        **overrides,
    }


def notice(instance_id: str = "i-1", kind: str = "rebalance", notice_id: str = "n-1") -> CapacityNotice:
    return CapacityNotice(region=REGION, instance_id=instance_id, kind=kind, notice_id=notice_id)  # type: ignore[arg-type]

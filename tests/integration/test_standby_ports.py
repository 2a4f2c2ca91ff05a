"""The hub's side effects of the warm standby (spothub_core.logic.standby_ports) against the state table in moto,
EventBridge, SSM and Route 53 mocked: a promotion records and publishes the standby as RecordInstance records a new
instance, retires the instance it replaces, and starts the spot watch of an on-demand standby; a release tears down."""

from __future__ import annotations

import json
from typing import Any

import pytest

from spothub_core.dal.provisioning import LAUNCH
from spothub_core.logic.hub_services import HubServices
from spothub_core.logic.standby_ports import HubStandbyPorts
from spothub_core.logic.standby_watch import StandbyLaunch
from spothub_core.models.records import InstanceStatus, ReservationStatus
from spothub_core.models.standby_records import StandbyRecord, StandbyStatus
from tests.integration.capacity_builders import NOW, REGION, placing_hub, put_entries


@pytest.fixture
def hub(table: Any) -> HubServices:
    """replica-0 serves on spot instance i-1 in us-west-2."""
    hub = placing_hub(table)
    assert hub.store.replica_serving("replica-0", generation=1, fields={"instance_id": "i-1", "region": REGION})
    hub.store.put_instance("i-1", {"region": REGION, "replica_id": "replica-0", "status": InstanceStatus.INTERRUPTED})
    return hub


def standby(capacity_type: str = "spot") -> StandbyRecord:
    return StandbyRecord(
        replica_id="replica-0",
        launch_id="replica-0-sb-1",
        region="us-east-1",
        zone="us-east-1a" if capacity_type == "spot" else None,
        capacity_type=capacity_type,  # type: ignore[arg-type]
        status=StandbyStatus.READY,
        launched_at=NOW - 600,
        instance_id="i-sb",
        public_ip="203.0.113.9",
        private_ip="10.1.0.9",
        adopted_for="i-1",
    )


def promote(hub: HubServices, record: StandbyRecord) -> None:
    replica = hub.store.replica("replica-0")
    assert replica is not None
    HubStandbyPorts(hub).promote(replica, record, replaced=hub.store.instance("i-1"), now=NOW)


def test_a_promotion_records_publishes_and_retires(hub: HubServices) -> None:
    promote(hub, standby())
    instance = hub.store.instance("i-sb")
    assert instance is not None
    assert (instance.status, instance.region, instance.availability_zone, instance.replica_id) == (
        InstanceStatus.SERVING,
        "us-east-1",
        "us-east-1a",
        "replica-0",
    )
    published = json.loads(hub.ssm.put_parameter.call_args.kwargs["Value"])
    assert (published["instance_id"], published["region"], published["public_ip"]) == (
        "i-sb",
        "us-east-1",
        "203.0.113.9",
    )
    reservation = hub.store.reservation("us-east-1")
    assert reservation is not None and (reservation.status, reservation.replica_id) == (
        ReservationStatus.HELD,
        "replica-0",
    )
    retired = hub.store.instance("i-1")
    assert retired is not None and retired.status == InstanceStatus.TERMINATING
    teardowns = [json.loads(e["Detail"]) for e in put_entries(hub) if e["DetailType"] == "Spothub Teardown Requested"]
    assert [(t["region"], t["instance_id"]) for t in teardowns] == [(REGION, "i-1")]
    hub.sfn.start_execution.assert_not_called()  # a spot standby: no watch


def test_an_on_demand_standby_promoted_is_watched_for_spot(hub: HubServices) -> None:
    promote(hub, standby("on-demand"))
    call = hub.sfn.start_execution.call_args.kwargs
    assert call["name"] == "replica-0-sb-1-w"
    assert json.loads(call["input"])["watch_spot"] is True
    replica = hub.store.replica("replica-0")
    assert replica is not None and replica.execution == "replica-0-sb-1-w"


def test_a_release_tears_down_the_instance_or_cancels_the_launch(hub: HubServices) -> None:
    ports = HubStandbyPorts(hub)
    ports.teardown(region="us-east-1", instance_id="i-sb", launch_id=None, reason="released")
    ports.teardown(region="us-east-1", instance_id=None, launch_id="replica-0-sb-2", reason="released")
    details = [json.loads(e["Detail"]) for e in put_entries(hub)]
    assert [(d["instance_id"], d["launch_id"]) for d in details] == [("i-sb", None), (None, "replica-0-sb-2")]


def test_a_standby_launch_is_a_launch_command_with_role_standby_and_its_zone(hub: HubServices) -> None:
    HubStandbyPorts(hub).launch(StandbyLaunch("replica-0", "replica-0-sb-1", "us-east-1", "us-east-1b", "spot"))
    (entry,) = put_entries(hub)
    assert entry["DetailType"] == "Spothub Launch Requested"
    detail = json.loads(entry["Detail"])
    assert (detail["launch_id"], detail["region"], detail["zone"], detail["role"]) == (
        "replica-0-sb-1",
        "us-east-1",
        "us-east-1b",
        "standby",
    )
    assert hub.store.request(LAUNCH, "replica-0-sb-1") is None  # no launch request: no task token waits on it

"""The orchestrator's tasks on the hub (spothub_core.logic.orchestrator_tasks) against DynamoDB (moto), with Step
Functions, EventBridge, SSM and Route 53 mocked: the task token is stored with its launch, a healthy instance is
recorded and published, work of a superseded generation is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from spothub_core.dal.provisioning import LAUNCH
from spothub_core.errors import Superseded
from spothub_core.logic.hub_services import HubServices
from spothub_core.logic.worker_reports import on_launch_failed
from spothub_core.timings import ENDPOINT_DNS_TTL_SECONDS
from tests.integration.capacity_builders import (
    BUS,
    NOW,
    PARAMETER,
    REGION,
    capacity_failure,
    launch_request,
    placing_hub,
    put_entries,
    record_request,
    services,
)
from tests.integration.conftest import config, orchestrator_task

dispatch_launch = orchestrator_task("dispatch_launch")
record_instance = orchestrator_task("record_instance")


@pytest.fixture
def hub(table: Any) -> HubServices:
    """Provisioning enabled at generation 1, replica-0 being placed."""
    return placing_hub(table)


# --- dispatch_launch ------------------------------------------------------------------------------


def test_dispatch_launch_stores_the_token_with_the_pending_launch(hub: HubServices) -> None:
    assert dispatch_launch(hub, launch_request(), now=NOW) == {"launch_id": "launch-1"}
    launch = hub.store.request(LAUNCH, "launch-1")
    assert launch is not None
    assert (launch.status, launch.task_token, launch.region) == ("pending", "token-1", REGION)


def test_dispatch_launch_puts_a_launch_requested_command_without_the_token(hub: HubServices) -> None:
    dispatch_launch(hub, launch_request(), now=NOW)
    (entry,) = put_entries(hub)
    assert entry["EventBusName"] == BUS
    assert entry["Source"] == "spothub.hub"
    assert entry["DetailType"] == "Spothub Launch Requested"
    detail = json.loads(entry["Detail"])
    assert detail["launch_id"] == "launch-1"
    assert detail["replica_id"] == "replica-0"
    assert detail["region"] == REGION
    assert detail["capacity_type"] == "spot"
    assert "token-1" not in entry["Detail"]


def test_dispatch_launch_notes_the_target_region_on_the_replica(hub: HubServices) -> None:
    dispatch_launch(hub, launch_request(), now=NOW)
    replica = hub.store.replica("replica-0")
    assert replica is not None
    assert (replica.target_region, replica.launch_id) == (REGION, "launch-1")


def test_dispatch_launch_of_another_generation_is_superseded(hub: HubServices) -> None:
    with pytest.raises(Superseded):
        dispatch_launch(hub, launch_request(generation=2), now=NOW)
    hub.events.put_events.assert_not_called()
    assert hub.store.request(LAUNCH, "launch-1") is None


def test_dispatch_launch_while_disabled_is_superseded(hub: HubServices) -> None:
    assert hub.store.write_config(config(status="disabled", generation=2), expected_generation=1)
    with pytest.raises(Superseded):
        dispatch_launch(hub, launch_request(generation=2), now=NOW)
    hub.events.put_events.assert_not_called()


def test_a_retried_dispatch_of_an_answered_launch_is_superseded(hub: HubServices) -> None:
    dispatch_launch(hub, launch_request(), now=NOW)
    on_launch_failed(hub, capacity_failure(), now=NOW + 1)
    with pytest.raises(Superseded, match="already answered"):
        dispatch_launch(hub, launch_request(token="token-2"), now=NOW + 2)
    assert len(put_entries(hub)) == 1


# --- record_instance -------------------------------------------------------------------------------


def test_record_instance_makes_the_replica_serve_on_the_instance(hub: HubServices) -> None:
    assert record_instance(hub, record_request("i-1"), now=NOW) == {"retire": None, "superseded": False}
    replica = hub.store.replica("replica-0")
    assert replica is not None
    assert (replica.status, replica.instance_id, replica.region) == ("serving", "i-1", REGION)


def test_record_instance_writes_the_instance(hub: HubServices) -> None:
    record_instance(hub, record_request("i-1"), now=NOW)
    instance = hub.store.instance("i-1")
    assert instance is not None
    assert (instance.status, instance.replica_id, instance.region) == ("serving", "replica-0", REGION)
    assert instance.launch_id == "launch-1"
    assert instance.public_ip == "203.0.113.7"


def test_record_instance_publishes_the_active_instance_parameter(hub: HubServices) -> None:
    record_instance(hub, record_request("i-1"), now=NOW)
    hub.ssm.put_parameter.assert_called_once()
    call = hub.ssm.put_parameter.call_args.kwargs
    assert (call["Name"], call["Type"], call["Overwrite"]) == (PARAMETER, "String", True)
    assert json.loads(call["Value"]) == {
        "region": REGION,
        "instance_id": "i-1",
        "public_ip": "203.0.113.7",
        "private_ip": "10.0.0.7",
    }


def test_record_instance_returns_the_replaced_instance_to_retire(hub: HubServices) -> None:
    replacing = {"instance_id": "i-old", "region": "eu-west-1", "notice": "interruption"}
    outcome = record_instance(hub, record_request("i-new", replacing=replacing), now=NOW)
    assert outcome == {"retire": {"instance_id": "i-old", "region": "eu-west-1"}, "superseded": False}


def test_record_instance_without_a_hosted_zone_leaves_dns_alone(hub: HubServices) -> None:
    record_instance(hub, record_request("i-1"), now=NOW)
    hub.route53.change_resource_record_sets.assert_not_called()


def test_record_instance_with_a_hosted_zone_upserts_the_endpoint(table: Any) -> None:
    hub = services(table, hosted_zone_id="Z123", endpoint_name="gpu.example.com")
    assert hub.store.write_config(config(status="enabled", generation=1), expected_generation=0)
    assert hub.store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW)
    record_instance(hub, record_request("i-1"), now=NOW)
    hub.route53.change_resource_record_sets.assert_called_once()
    call = hub.route53.change_resource_record_sets.call_args.kwargs
    assert call["HostedZoneId"] == "Z123"
    (change,) = call["ChangeBatch"]["Changes"]
    assert change["Action"] == "UPSERT"
    assert change["ResourceRecordSet"] == {
        "Name": "gpu.example.com",
        "Type": "A",
        "SetIdentifier": "replica-0",
        "MultiValueAnswer": True,
        "TTL": ENDPOINT_DNS_TTL_SECONDS,
        "ResourceRecords": [{"Value": "203.0.113.7"}],
    }


def test_record_instance_serving_privately_upserts_the_private_address(table: Any) -> None:
    hub = services(table, hosted_zone_id="Z123", endpoint_name="gpu.example.com", serving_public_ip=False)
    assert hub.store.write_config(config(status="enabled", generation=1), expected_generation=0)
    assert hub.store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW)
    record_instance(hub, record_request("i-1"), now=NOW)
    (change,) = hub.route53.change_resource_record_sets.call_args.kwargs["ChangeBatch"]["Changes"]
    assert change["ResourceRecordSet"]["ResourceRecords"] == [{"Value": "10.0.0.7"}]


def test_record_instance_of_an_older_generation_is_superseded(hub: HubServices) -> None:
    assert hub.store.start_placing("replica-0", generation=2, execution="replica-0-g2", now=NOW)
    outcome = record_instance(hub, record_request("i-1"), now=NOW)
    assert outcome == {"retire": {"instance_id": "i-1", "region": REGION}, "superseded": True}
    hub.ssm.put_parameter.assert_not_called()
    assert hub.store.instance("i-1") is None


def test_record_instance_after_a_disable_is_superseded(hub: HubServices) -> None:
    assert hub.store.write_config(config(status="disabled", generation=2), expected_generation=1)
    hub.store.stop_replicas(NOW)
    outcome = record_instance(hub, record_request("i-1"), now=NOW + 1)
    assert outcome["superseded"] is True
    hub.ssm.put_parameter.assert_not_called()

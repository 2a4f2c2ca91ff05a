"""The hub's capacity logic against DynamoDB (moto), with Step Functions, EventBridge, SSM and Route 53 mocked.

Task tokens are stored with their launch, answered once by the first report, and a launch that
succeeds after it was given up is torn down.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from spothub_core.contracts import CapacityNotice, InstanceFacts, LaunchFailed, LaunchProgress, LaunchSucceeded
from spothub_core.dal.provisioning import LAUNCH
from spothub_core.errors import Superseded
from spothub_core.logic.capacity import (
    HubServices,
    dispatch_launch,
    on_capacity_notice,
    on_launch_failed,
    on_launch_progress,
    on_launch_succeeded,
    record_instance,
)
from tests.integration.conftest import hub_services

NOW = 1_700_000_000.0
BUS = "spothub-hub"
ORCHESTRATOR = "arn:aws:states:us-east-1:123456789012:stateMachine:spothub-orchestrator"
PARAMETER = "/spothub/active-instance"
REGION = "us-west-2"


def services(table: Any, **overrides: Any) -> HubServices:
    return hub_services(
        table, bus_name=BUS, orchestrator_arn=ORCHESTRATOR, active_instance_parameter=PARAMETER, **overrides
    )


@pytest.fixture
def hub(table: Any) -> HubServices:
    """Provisioning enabled at generation 1, replica-0 being placed."""
    hub = services(table)
    assert hub.store.write_config({"status": "enabled", "generation": 1, "replicas": 1}, expected_generation=0)
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


# --- dispatch_launch ------------------------------------------------------------------------------


def test_dispatch_launch_stores_the_token_with_the_pending_launch(hub: HubServices) -> None:
    assert dispatch_launch(hub, launch_request(), now=NOW) == {"launch_id": "launch-1"}
    launch = hub.store.request(LAUNCH, "launch-1")
    assert launch is not None
    assert (launch["status"], launch["task_token"], launch["region"]) == ("pending", "token-1", REGION)


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
    assert (replica["target_region"], replica["launch_id"]) == (REGION, "launch-1")


def test_dispatch_launch_of_another_generation_is_superseded(hub: HubServices) -> None:
    with pytest.raises(Superseded):
        dispatch_launch(hub, launch_request(generation=2), now=NOW)
    hub.events.put_events.assert_not_called()
    assert hub.store.request(LAUNCH, "launch-1") is None


def test_dispatch_launch_while_disabled_is_superseded(hub: HubServices) -> None:
    assert hub.store.write_config({"status": "disabled", "generation": 2}, expected_generation=1)
    with pytest.raises(Superseded):
        dispatch_launch(hub, launch_request(generation=2), now=NOW)
    hub.events.put_events.assert_not_called()


def test_a_retried_dispatch_of_an_answered_launch_is_superseded(hub: HubServices) -> None:
    dispatch_launch(hub, launch_request(), now=NOW)
    on_launch_failed(hub, capacity_failure(), now=NOW + 1)
    with pytest.raises(Superseded, match="already answered"):
        dispatch_launch(hub, launch_request(token="token-2"), now=NOW + 2)
    assert len(put_entries(hub)) == 1


# --- reports ---------------------------------------------------------------------------------------


def test_a_success_answers_the_stored_token(hub: HubServices) -> None:
    dispatch_launch(hub, launch_request(), now=NOW)
    assert on_launch_succeeded(hub, succeeded(), now=NOW + 60) == "launch succeeded"
    hub.sfn.send_task_success.assert_called_once()
    call = hub.sfn.send_task_success.call_args.kwargs
    assert call["taskToken"] == "token-1"
    assert json.loads(call["output"])["instance"]["instance_id"] == "i-1"


def test_a_duplicate_success_answers_nothing_more(hub: HubServices) -> None:
    dispatch_launch(hub, launch_request(), now=NOW)
    on_launch_succeeded(hub, succeeded(), now=NOW + 60)
    assert on_launch_succeeded(hub, succeeded(), now=NOW + 61) == "ignored: duplicate"
    hub.sfn.send_task_success.assert_called_once()
    assert [e["DetailType"] for e in put_entries(hub)] == ["Spothub Launch Requested"]


def test_a_capacity_failure_fails_the_task_with_capacity_error(hub: HubServices) -> None:
    dispatch_launch(hub, launch_request(), now=NOW)
    assert on_launch_failed(hub, capacity_failure(), now=NOW + 30) == "launch failed (capacity)"
    hub.sfn.send_task_failure.assert_called_once()
    call = hub.sfn.send_task_failure.call_args.kwargs
    assert (call["taskToken"], call["error"]) == ("token-1", "CapacityError")
    assert "InsufficientInstanceCapacity" in call["cause"]


def test_a_capacity_failure_excludes_the_region(hub: HubServices) -> None:
    dispatch_launch(hub, launch_request(), now=NOW)
    on_launch_failed(hub, capacity_failure(), now=NOW + 30)
    (exclusion,) = hub.exclusions.active(NOW + 31)
    assert exclusion.region == REGION
    assert exclusion.until == NOW + 30 + 15 * 60
    assert "InsufficientInstanceCapacity" in exclusion.reason


def test_a_late_success_after_a_failure_tears_the_instance_down(hub: HubServices) -> None:
    dispatch_launch(hub, launch_request(), now=NOW)
    on_launch_failed(hub, capacity_failure(), now=NOW + 30)
    assert on_launch_succeeded(hub, succeeded("i-late"), now=NOW + 90) == "late: orphan instance torn down"
    hub.sfn.send_task_success.assert_not_called()
    teardown = put_entries(hub)[-1]
    assert teardown["DetailType"] == "Spothub Teardown Requested"
    detail = json.loads(teardown["Detail"])
    assert (detail["instance_id"], detail["region"]) == ("i-late", REGION)


def test_progress_sends_a_heartbeat_with_the_stored_token(hub: HubServices) -> None:
    dispatch_launch(hub, launch_request(), now=NOW)
    report = LaunchProgress(launch_id="launch-1", region=REGION, step="instance-running")
    assert on_launch_progress(hub, report, now=NOW + 10) == "heartbeat: instance-running"
    hub.sfn.send_task_heartbeat.assert_called_once_with(taskToken="token-1")


def test_progress_of_an_answered_launch_sends_no_heartbeat(hub: HubServices) -> None:
    dispatch_launch(hub, launch_request(), now=NOW)
    on_launch_succeeded(hub, succeeded(), now=NOW + 60)
    report = LaunchProgress(launch_id="launch-1", region=REGION, step="late")
    assert on_launch_progress(hub, report, now=NOW + 61) == "ignored: no pending launch"
    hub.sfn.send_task_heartbeat.assert_not_called()


# --- capacity notices ------------------------------------------------------------------------------


def test_a_notice_for_a_serving_instance_starts_one_replacement(hub: HubServices) -> None:
    record_instance(hub, record_request("i-1"), now=NOW)
    assert on_capacity_notice(hub, notice("i-1"), now=NOW + 5) == "replacement started: replica-0-r-i-1"
    hub.sfn.start_execution.assert_called_once()
    call = hub.sfn.start_execution.call_args.kwargs
    assert (call["stateMachineArn"], call["name"]) == (ORCHESTRATOR, "replica-0-r-i-1")
    state = json.loads(call["input"])
    assert (state["replica_id"], state["generation"], state["prefer_region"]) == ("replica-0", 1, REGION)
    assert state["replacing"]["instance_id"] == "i-1"
    assert hub.store.replica("replica-0")["status"] == "replacing"  # type: ignore[index]


def test_a_second_notice_for_the_same_instance_starts_no_replacement(hub: HubServices) -> None:
    record_instance(hub, record_request("i-1"), now=NOW)
    on_capacity_notice(hub, notice("i-1", "rebalance", "n-1"), now=NOW + 5)
    outcome = on_capacity_notice(hub, notice("i-1", "interruption", "n-2"), now=NOW + 6)
    assert outcome == "ignored: the replica is already being replaced or has moved"
    hub.sfn.start_execution.assert_called_once()


def test_a_notice_marks_the_instance_at_risk(hub: HubServices) -> None:
    record_instance(hub, record_request("i-1"), now=NOW)
    on_capacity_notice(hub, notice("i-1", "rebalance"), now=NOW + 5)
    assert hub.store.instance("i-1")["status"] == "at-risk"  # type: ignore[index]


def test_a_notice_for_an_unknown_instance_is_ignored(hub: HubServices) -> None:
    assert on_capacity_notice(hub, notice("i-unknown"), now=NOW) == "ignored: not an instance spothub placed"
    hub.sfn.start_execution.assert_not_called()
    assert hub.store.instance("i-unknown") is None


# --- record_instance -------------------------------------------------------------------------------


def test_record_instance_makes_the_replica_serve_on_the_instance(hub: HubServices) -> None:
    assert record_instance(hub, record_request("i-1"), now=NOW) == {"retire": None, "superseded": False}
    replica = hub.store.replica("replica-0")
    assert replica is not None
    assert (replica["status"], replica["instance_id"], replica["region"]) == ("serving", "i-1", REGION)


def test_record_instance_writes_the_instance(hub: HubServices) -> None:
    record_instance(hub, record_request("i-1"), now=NOW)
    instance = hub.store.instance("i-1")
    assert instance is not None
    assert (instance["status"], instance["replica_id"], instance["region"]) == ("serving", "replica-0", REGION)
    assert instance["launch_id"] == "launch-1"
    assert instance["public_ip"] == "203.0.113.7"


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
    assert hub.store.write_config({"status": "enabled", "generation": 1}, expected_generation=0)
    assert hub.store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW)
    record_instance(hub, record_request("i-1"), now=NOW)
    hub.route53.change_resource_record_sets.assert_called_once()
    call = hub.route53.change_resource_record_sets.call_args.kwargs
    assert call["HostedZoneId"] == "Z123"
    (change,) = call["ChangeBatch"]["Changes"]
    assert change["Action"] == "UPSERT"
    record_set = change["ResourceRecordSet"]
    assert (record_set["Name"], record_set["Type"]) == ("gpu.example.com", "A")
    assert record_set["ResourceRecords"] == [{"Value": "203.0.113.7"}]


def test_record_instance_of_an_older_generation_is_superseded(hub: HubServices) -> None:
    assert hub.store.start_placing("replica-0", generation=2, execution="replica-0-g2", now=NOW)
    outcome = record_instance(hub, record_request("i-1"), now=NOW)
    assert outcome == {"retire": {"instance_id": "i-1", "region": REGION}, "superseded": True}
    hub.ssm.put_parameter.assert_not_called()
    assert hub.store.instance("i-1") is None


def test_record_instance_after_a_disable_is_superseded(hub: HubServices) -> None:
    assert hub.store.write_config({"status": "disabled", "generation": 2}, expected_generation=1)
    hub.store.stop_replicas(NOW)
    outcome = record_instance(hub, record_request("i-1"), now=NOW + 1)
    assert outcome["superseded"] is True
    hub.ssm.put_parameter.assert_not_called()

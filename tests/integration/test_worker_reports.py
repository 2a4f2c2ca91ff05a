"""The reports the hub consumes (spothub_core.logic.worker_reports) against DynamoDB (moto), with Step Functions
and EventBridge mocked: the first report answers the stored task token, duplicates change nothing, a launch that
succeeds after it was given up is torn down, a capacity notice starts one replacement."""

from __future__ import annotations

import json
from typing import Any

import pytest

from spothub_core.consumers import Dispatch, Target, consumed_by
from spothub_core.contracts import LaunchProgress
from spothub_core.logic.hub_services import HubServices
from spothub_core.logic.worker_reports import (
    dispatch,
    on_capacity_notice,
    on_launch_failed,
    on_launch_progress,
    on_launch_succeeded,
)
from tests.integration.capacity_builders import (
    NOW,
    ORCHESTRATOR,
    REGION,
    capacity_failure,
    launch_request,
    notice,
    placing_hub,
    put_entries,
    record_request,
    succeeded,
)
from tests.integration.conftest import orchestrator_task

dispatch_launch = orchestrator_task("dispatch_launch")
record_instance = orchestrator_task("record_instance")


@pytest.fixture
def hub(table: Any) -> HubServices:
    """Provisioning enabled at generation 1, replica-0 being placed."""
    return placing_hub(table)


def test_every_kind_the_capacity_handler_consumes_has_a_consumer_registered() -> None:
    assert Dispatch(Target.CAPACITY_HANDLER).unregistered() != []  # a fresh Dispatch has none: the check bites
    assert dispatch.unregistered() == []
    assert set(dispatch.entries) == set(consumed_by(Target.CAPACITY_HANDLER))


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
    assert hub.store.replica("replica-0").status == "replacing"  # type: ignore[union-attr]


def test_a_second_notice_for_the_same_instance_starts_no_replacement(hub: HubServices) -> None:
    record_instance(hub, record_request("i-1"), now=NOW)
    on_capacity_notice(hub, notice("i-1", "rebalance", "n-1"), now=NOW + 5)
    outcome = on_capacity_notice(hub, notice("i-1", "interruption", "n-2"), now=NOW + 6)
    assert outcome == "ignored: the replica is already being replaced or has moved"
    hub.sfn.start_execution.assert_called_once()


def test_a_notice_marks_the_instance_at_risk(hub: HubServices) -> None:
    record_instance(hub, record_request("i-1"), now=NOW)
    on_capacity_notice(hub, notice("i-1", "rebalance"), now=NOW + 5)
    assert hub.store.instance("i-1").status == "at-risk"  # type: ignore[union-attr]


def test_a_notice_for_an_unknown_instance_is_ignored(hub: HubServices) -> None:
    assert on_capacity_notice(hub, notice("i-unknown"), now=NOW) == "ignored: not an instance spothub placed"
    hub.sfn.start_execution.assert_not_called()
    assert hub.store.instance("i-unknown") is None

"""The warm standby wired into the hub's report consumers (spothub_core.logic.worker_reports) and the capacity
handler's minute check, against the state table in moto (Step Functions, EventBridge, SSM, Route 53 mocked in the
consumer tests; moto in the handler's): a notice promotes a ready standby instead of starting a replacement, a
standby's launch reports are its own, capacity failures and notices are signals, the schedule's check starts one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from spothub_core.dal.standby import StandbyStore
from spothub_core.logic.hub_services import HubServices
from spothub_core.logic.standby import SignalKind
from spothub_core.logic.worker_reports import on_capacity_notice, on_launch_failed, on_launch_succeeded
from spothub_core.models.records import ReplicaStatus
from spothub_core.models.standby_records import StandbyRecord, ZoneScoreRecord
from tests.integration.capacity_builders import (
    NOW,
    REGION,
    capacity_failure,
    dispatch_launch,
    launch_request,
    notice,
    placing_hub,
    put_entries,
    record_instance,
    record_request,
    services,
    succeeded,
)
from tests.integration.conftest import ApiCalls, eventbridge_event
from tests.integration.test_capacity_handler_handler import clock, handler  # noqa: F401 (fixtures)
from tests.integration.test_standby_watch import switch_standby
from tests.lambda_events import FakeLambdaContext


@pytest.fixture
def hub(table: Any) -> HubServices:
    """replica-0 serves on spot instance i-1 (launch-1, us-west-2), the hub keeping standby state."""
    placing_hub(table)
    hub = services(table, standbys=StandbyStore(table))
    dispatch_launch(hub, launch_request(), now=NOW - 7200)
    on_launch_succeeded(hub, succeeded("i-1"), now=NOW - 7000)
    record_instance(hub, record_request("i-1"), now=NOW - 7000)
    hub.store.put_instance("i-1", {"availability_zone": "us-west-2a", "launched_at": "2023-11-14T20:13:20Z"})
    switch_standby(table, on=True)
    assert hub.standbys is not None
    hub.standbys.record_scores(
        ZoneScoreRecord(region=zone[:-1], zone=zone, score=7, at=NOW + 500, spot_price=0.9)
        for zone in ("us-west-2a", "us-west-2b", "eu-west-1a", "eu-west-1b")
    )
    hub.events.put_events.reset_mock()
    hub.sfn.reset_mock()
    return hub


def standby_ready(hub: HubServices, launch_id: str = "replica-0-sb-1") -> None:
    assert hub.standbys is not None
    assert hub.standbys.claim(
        StandbyRecord(
            replica_id="replica-0", launch_id=launch_id, region="eu-west-1", zone="eu-west-1b", launched_at=NOW
        )
    )
    report = succeeded("i-sb").model_copy(update={"launch_id": launch_id, "region": "eu-west-1"})
    assert on_launch_succeeded(hub, report, now=NOW + 300) == "standby ready"
    hub.sfn.send_task_success.assert_not_called()  # no orchestrator waits on a standby


def launch_commands(hub: HubServices) -> list[dict[str, Any]]:
    return [json.loads(e["Detail"]) for e in put_entries(hub) if e["DetailType"] == "Spothub Launch Requested"]


def test_a_warning_promotes_a_ready_standby_and_starts_no_replacement(hub: HubServices) -> None:
    standby_ready(hub)
    outcome = on_capacity_notice(hub, notice("i-1", kind="interruption"), now=NOW + 600)
    assert outcome == "standby promoted: i-sb serves in place of i-1"
    replica = hub.store.replica("replica-0")
    assert replica is not None
    assert (replica.status, replica.instance_id, replica.region) == (ReplicaStatus.SERVING, "i-sb", "eu-west-1")
    hub.sfn.start_execution.assert_not_called()  # no orchestrator: no replacement launch
    assert json.loads(hub.ssm.put_parameter.call_args.kwargs["Value"])["instance_id"] == "i-sb"
    # The promoted instance is young: the check right after the notice holds a new standby for it.
    (new_standby,) = launch_commands(hub)
    assert new_standby["launch_id"] == f"replica-0-sb-{int(NOW + 600)}"
    # Delivered again (EC2's event and the agent's own notice): nothing more.
    assert on_capacity_notice(hub, notice("i-1", kind="interruption"), now=NOW + 601).startswith("ignored")
    hub.sfn.start_execution.assert_not_called()


def test_a_warning_without_a_standby_starts_the_replacement_and_is_a_signal(hub: HubServices) -> None:
    assert on_capacity_notice(hub, notice("i-1", kind="interruption"), now=NOW).startswith("replacement started")
    assert hub.standbys is not None
    (signal,) = hub.standbys.signals(since=NOW - 1)
    assert (signal.kind, signal.region, signal.zone, signal.standby) == (
        SignalKind.INTERRUPTION,
        REGION,
        "us-west-2a",
        False,
    )


def test_a_replicas_capacity_failure_is_a_signal_and_a_standbys_is_the_standbys(hub: HubServices) -> None:
    assert hub.standbys is not None
    dispatch_launch(hub, launch_request(launch_id="launch-2"), now=NOW)
    failure = capacity_failure().model_copy(update={"launch_id": "launch-2"})
    assert on_launch_failed(hub, failure, now=NOW + 10) == "launch failed (capacity)"
    assert [(s.kind, s.zone, s.standby) for s in hub.standbys.signals(since=NOW)] == [
        (SignalKind.CAPACITY_ERROR, None, False)
    ]
    # The replica's region is now at risk: the check after the failure held a standby for it.
    standby = hub.standbys.standby("replica-0")
    assert standby is not None
    hub.sfn.reset_mock()
    refused = capacity_failure().model_copy(update={"launch_id": standby.launch_id, "region": standby.region})
    assert on_launch_failed(hub, refused, now=NOW + 20) == "standby launch failed (capacity)"
    hub.sfn.send_task_failure.assert_not_called()
    assert hub.exclusions.active(NOW + 20) != [] and all(e.region == REGION for e in hub.exclusions.active(NOW + 20))
    standby_signals = [s for s in hub.standbys.signals(since=NOW) if s.standby]
    assert [(s.region, s.kind) for s in standby_signals] == [(standby.region, SignalKind.CAPACITY_ERROR)]


# --- the capacity handler's minute check ------------------------------------------------------------------


@pytest.fixture
def serving(handler: ModuleType, clock: Any) -> Iterator[ModuleType]:  # noqa: F811 (fixtures)
    """replica-0 serves on spot in us-west-2a since an hour ago (not young), the region scored steadily."""
    store = handler.store
    assert store.write_config(config_enabled(), expected_generation=0)
    switch_standby(handler.table, on=True)
    assert store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=clock.now - 3600)
    assert store.replica_serving(
        "replica-0", generation=1, fields={"instance_id": "i-1", "region": REGION, "capacity_type": "spot"}
    )
    store.put_instance(
        "i-1", {"region": REGION, "replica_id": "replica-0", "availability_zone": "us-west-2a", "status": "serving"}
    )
    store.put_instance("i-1", {"launched_at": "2023-11-14T21:13:20Z"})
    yield handler


def config_enabled() -> Any:
    from tests.integration.conftest import config  # noqa: PLC0415

    return config(status="enabled", generation=1, replicas=1)


def test_the_minute_check_samples_the_zones_and_holds_a_standby_where_a_score_fell(
    serving: ModuleType,
    clock: Any,  # noqa: F811 (the fixture)
) -> None:
    scoring = ApiCalls(serving.ec2_for("us-east-1"), "GetSpotPlacementScores")
    answers = iter(
        [[("usw2-az1", 9), ("usw2-az2", 8), ("euw1-az1", 7)], [("usw2-az1", 9), ("usw2-az2", 4), ("euw1-az1", 7)]]
    )

    def answer_scores() -> None:
        scoring.answer(
            "GetSpotPlacementScores",
            {
                "SpotPlacementScores": [
                    {
                        "Region": (zone_id.startswith("usw2") and REGION) or "eu-west-1",
                        "AvailabilityZoneId": zone_id,
                        "Score": s,
                    }
                    for zone_id, s in next(answers)
                ]
            },
        )

    event = {"action": "check_standbys"}
    answer_scores()
    first = serving.lambda_handler(event, FakeLambdaContext())
    assert first == {"checked": 1, "actions": {"replica-0": "none"}, "reasons": {}}
    assert scoring.of("GetSpotPlacementScores")[0]["SingleAvailabilityZone"] is True
    clock.now += 600  # the next sample is due
    answer_scores()
    second = serving.lambda_handler(event, FakeLambdaContext())
    assert second["actions"] == {"replica-0": "start"}
    (reason,) = second["reasons"]["replica-0"]
    # EC2 answers zone ids; moto's account names usw2-az2 us-west-2a (the serving zone) and euw1-az1 eu-west-1b.
    assert reason == "score of us-west-2a fell from 8 to 4"
    standby = serving.standbys.standby("replica-0")
    # Another region first (least correlated); its group picks the zone (none recorded until the launch reports).
    assert standby is not None and (standby.region, standby.zone) == ("eu-west-1", None)
    # The samples name each zone as this account does.
    assert {s.zone for s in serving.standbys.scores(since=clock.now - 60)} == {"us-west-2b", "us-west-2a", "eu-west-1b"}


def test_a_standby_report_through_the_handler(serving: ModuleType, clock: Any) -> None:  # noqa: F811
    assert serving.standbys.claim(
        StandbyRecord(replica_id="replica-0", launch_id="replica-0-sb-9", region="eu-west-1", launched_at=clock.now)
    )
    report = {"launch_id": "replica-0-sb-9", "region": "eu-west-1", "instance": {"instance_id": "i-sb"}, "version": "1"}
    event = eventbridge_event("spothub.worker", "Spothub Launch Succeeded", report, region="eu-west-1")
    assert serving.lambda_handler(event, FakeLambdaContext()) == {"outcome": "standby ready"}


def test_switched_off_a_warning_starts_the_replacement_as_before(hub: HubServices, table: Any) -> None:
    switch_standby(table, on=False)
    assert on_capacity_notice(hub, notice("i-1", kind="interruption"), now=NOW).startswith("replacement started")
    assert hub.standbys is not None
    assert hub.standbys.signals(since=NOW - 1) == []
    assert hub.standbys.standbys() == []

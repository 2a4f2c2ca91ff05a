"""The warm standby in production (spothub_core.logic.standby_watch) against the state table in moto's DynamoDB:
one test per path (created when the risk rises, promoted on a warning with no new launch, a launching standby
becomes the replacement, released when the risk falls, a warned standby released, a notice delivered twice
promotes once), and the races the conditions close. The side effects go to recording ports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.dal.spot_market import SpotDataUnavailable
from spothub_core.dal.standby import StandbyStore
from spothub_core.logic.standby import SignalKind
from spothub_core.logic.standby_watch import StandbyAction, StandbyLaunch, StandbyWatch, adoption_name
from spothub_core.models.records import InstanceRecord, ProvisioningConfig, Replica, ReplicaStatus
from spothub_core.models.standby_records import StandbyOutcome, StandbyRecord, StandbyStatus
from spothub_core.timings import LAUNCH_TIMEOUT_SECONDS, STANDBY_NOTICE_WINDOW_SECONDS

NOW = 1_700_000_000.0
REGION = "us-west-2"
SERVING_ZONE = "us-west-2a"
PRICES = {"us-west-2": 0.9, "us-east-1": 1.1}


@dataclass
class RecordingPorts:
    """What the watch asked for, in order."""

    launches: list[StandbyLaunch] = field(default_factory=list)
    teardowns: list[dict[str, Any]] = field(default_factory=list)
    promotions: list[tuple[Replica, StandbyRecord, str | None]] = field(default_factory=list)
    replacements: list[dict[str, Any]] = field(default_factory=list)

    def launch(self, launch: StandbyLaunch) -> None:
        self.launches.append(launch)

    def teardown(self, *, region: str, instance_id: str | None, launch_id: str | None, reason: str) -> None:
        self.teardowns.append({"region": region, "instance_id": instance_id, "launch_id": launch_id})

    def promote(self, replica: Replica, standby: StandbyRecord, *, replaced: InstanceRecord | None, now: float) -> None:
        self.promotions.append((replica, standby, replaced.instance_id if replaced else None))

    def replace(self, replica_id: str, instance_id: str, region: str, why: str, *, now: float, name: str) -> str:
        self.replacements.append({"replica_id": replica_id, "instance_id": instance_id, "name": name, "why": why})
        return f"replacement started: {name}"


@dataclass
class Hub:
    provisioning: ProvisioningStore
    standbys: StandbyStore
    ports: RecordingPorts
    watch: StandbyWatch


@pytest.fixture
def hub(table: Any) -> Hub:
    """replica-0 serves on spot instance i-1 in us-west-2a, launched two hours ago (not young); the spot finder
    scored three zones, steadily."""
    provisioning, standbys, ports = ProvisioningStore(table), StandbyStore(table), RecordingPorts()
    config = ProvisioningConfig.model_validate({"status": "enabled", "generation": 1, "replicas": 1})
    assert provisioning.write_config(config, expected_generation=0)
    assert provisioning.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW - 7200)
    assert provisioning.replica_serving(
        "replica-0",
        generation=1,
        fields={"instance_id": "i-1", "region": REGION, "capacity_type": "spot", "placed_at": int(NOW - 7200)},
    )
    provisioning.put_instance(
        "i-1",
        {
            "region": REGION,
            "replica_id": "replica-0",
            "availability_zone": SERVING_ZONE,
            "capacity_type": "spot",
            "launched_at": iso(NOW - 7200),
            "status": "serving",
        },
    )
    switch_standby(table, on=True)
    watch = StandbyWatch(provisioning, standbys, ports)
    for at in (NOW - 600, NOW - 60):
        watch.record_scores(
            {(REGION, "us-west-2a"): 8, (REGION, "us-west-2b"): 7, ("us-east-1", "us-east-1a"): 6},
            prices=PRICES,
            now=at,
        )
    return Hub(provisioning, standbys, ports, watch)


def switch_standby(table: Any, *, on: bool) -> None:
    """The operator's switch: `warm_standby` on the provisioning switch's item."""
    table.update_item(
        Key={"pk": "PROVISIONING", "sk": "CONFIG"},
        UpdateExpression="SET warm_standby = :on",
        ExpressionAttributeValues={":on": on},
    )


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def rise_risk(hub: Hub, at: float = NOW - 300) -> None:
    """An interruption warning of another instance of the deployment in the serving region."""
    hub.watch.record_signal(
        SignalKind.INTERRUPTION, region=REGION, zone="us-west-2b", source="interruption#i-other", now=at
    )


def ready_standby(hub: Hub, instance_id: str = "i-sb") -> StandbyLaunch:
    rise_risk(hub)
    assessment = hub.watch.assess("replica-0", NOW)
    assert assessment.launch is not None
    outcome = hub.watch.on_launch_succeeded(
        assessment.launch.launch_id, instance_id=instance_id, zone=assessment.launch.zone, now=NOW + 300
    )
    assert outcome == "standby ready"
    return assessment.launch


def replica(hub: Hub) -> Replica:
    found = hub.provisioning.replica("replica-0")
    assert found is not None
    return found


# --- created when the risk rises --------------------------------------------------------------------


def test_no_standby_while_the_risk_is_low(hub: Hub) -> None:
    assessment = hub.watch.assess("replica-0", NOW)
    assert (assessment.action, assessment.reasons, assessment.standby) == (StandbyAction.NONE, (), False)
    assert hub.ports.launches == []
    assert hub.standbys.standby("replica-0") is None


def test_a_standby_is_created_when_the_risk_rises(hub: Hub) -> None:
    rise_risk(hub)
    assessment = hub.watch.assess("replica-0", NOW)
    assert assessment.action == StandbyAction.START
    assert assessment.wanted == ("spot",)
    assert assessment.reasons[0].startswith("interruption in us-west-2b")
    # Another zone, unsignalled, another region first (least correlated): us-east-1a, named as a preference (the
    # region's group picks the zone; the record has none until the launch says where it landed).
    assert hub.ports.launches == [
        StandbyLaunch("replica-0", f"replica-0-sb-{int(NOW)}", "us-east-1", "us-east-1a", "spot")
    ]
    standby = hub.standbys.standby("replica-0")
    assert standby is not None
    assert (standby.status, standby.zone, standby.launched_at) == (StandbyStatus.LAUNCHING, None, NOW)
    assert standby.reasons == assessment.reasons  # why it was started, for GET /events


def test_a_second_check_keeps_the_one_standby(hub: Hub) -> None:
    rise_risk(hub)
    hub.watch.assess("replica-0", NOW)
    again = hub.watch.assess("replica-0", NOW + 60)
    assert (again.action, again.standby) == (StandbyAction.NONE, True)
    assert len(hub.ports.launches) == 1


def test_two_checks_at_once_start_one_standby(hub: Hub) -> None:
    """The claim's condition: a check that read no standby, racing one that just claimed it, starts nothing."""
    rise_risk(hub)
    first = StandbyRecord(replica_id="replica-0", launch_id="other-check", region="us-east-1", launched_at=NOW)
    assert hub.standbys.claim(first)
    assert not hub.standbys.claim(first.model_copy(update={"launch_id": "late-check"}))


def test_a_standby_refused_for_capacity_is_a_signal_for_its_region_and_the_next_check_tries_another(hub: Hub) -> None:
    rise_risk(hub)
    first = hub.watch.assess("replica-0", NOW).launch
    assert first is not None
    assert hub.watch.on_launch_failed(first.launch_id, error_class="capacity", now=NOW + 30) == (
        "standby launch failed (capacity)"
    )
    assert hub.standbys.standby("replica-0") is None
    refused = [s for s in hub.standbys.signals(since=NOW) if s.kind == SignalKind.CAPACITY_ERROR]
    # The group tried every zone of us-east-1: the signal is the region's.
    assert [(s.region, s.zone, s.standby) for s in refused] == [("us-east-1", None, True)]
    second = hub.watch.assess("replica-0", NOW + 60).launch
    assert second is not None and second.zone == "us-west-2b"
    # The standby's own refusal raised no risk: the one reason is still the interruption.
    assert hub.watch.assess("replica-0", NOW + 61).reasons[0].startswith("interruption")


# --- promoted on a warning --------------------------------------------------------------------------


def test_a_ready_standby_is_promoted_on_a_warning_with_no_new_launch(hub: Hub) -> None:
    launch = ready_standby(hub)
    outcome = hub.watch.on_notice("i-1", "interruption", region=REGION, now=NOW + 600)
    assert outcome == "standby promoted: i-sb serves in place of i-1"
    moved = replica(hub)
    assert (moved.status, moved.instance_id, moved.region, moved.launch_id) == (
        ReplicaStatus.SERVING,
        "i-sb",
        "us-east-1",
        launch.launch_id,
    )
    assert [(r.instance_id, s.instance_id, old) for r, s, old in hub.ports.promotions] == [("i-sb", "i-sb", "i-1")]
    assert hub.ports.launches == [launch]  # the standby's own launch only
    assert hub.ports.replacements == []
    assert hub.standbys.standby("replica-0") is None
    assert [(e.launch_id, e.outcome, e.why, e.ended_at) for e in hub.standbys.ended()] == [
        (launch.launch_id, StandbyOutcome.PROMOTED, "serves in place of i-1", NOW + 600)
    ]
    warned = [s for s in hub.standbys.signals(since=NOW) if s.instance_id == "i-1"]
    assert [(s.kind, s.zone, s.standby) for s in warned] == [(SignalKind.INTERRUPTION, SERVING_ZONE, False)]


def test_a_rebalance_recommendation_holds_a_ready_standby_and_the_warning_then_promotes_it(hub: Hub) -> None:
    launch = ready_standby(hub)
    held = hub.watch.on_notice("i-1", "rebalance", region=REGION, now=NOW + 600)
    assert held == "standby held: i-sb serves at i-1's interruption warning, if it comes"
    assert replica(hub).instance_id == "i-1", "the recommended instance serves on"
    assert hub.ports.promotions == [] and hub.ports.replacements == []
    kept = hub.standbys.standby("replica-0")
    assert kept is not None and kept.ready and kept.adopted_for is None
    recommended = [s for s in hub.standbys.signals(since=NOW) if s.instance_id == "i-1"]
    assert [s.kind for s in recommended] == [SignalKind.REBALANCE], "a signal: the risk stays high, the standby kept"
    assert hub.watch.assess("replica-0", NOW + 660).standby is True

    assert hub.watch.on_notice("i-1", "interruption", region=REGION, now=NOW + 900) == (
        "standby promoted: i-sb serves in place of i-1"
    )
    assert (replica(hub).instance_id, replica(hub).launch_id) == ("i-sb", launch.launch_id)
    assert hub.ports.replacements == []


def test_a_notice_delivered_twice_promotes_once(hub: Hub) -> None:
    ready_standby(hub)
    assert hub.watch.on_notice("i-1", "interruption", region=REGION, now=NOW + 600) is not None
    # The second delivery finds the replica on the standby: nothing more (production's replacement, called on
    # None, finds the replica not serving on i-1 and starts nothing either).
    assert hub.watch.on_notice("i-1", "interruption", region=REGION, now=NOW + 700) is None
    assert len(hub.ports.promotions) == 1
    assert replica(hub).instance_id == "i-sb"
    assert [e.outcome for e in hub.standbys.ended()] == [StandbyOutcome.PROMOTED]
    assert len([s for s in hub.standbys.signals(since=NOW) if s.instance_id == "i-1"]) == 1
    assert next(s for s in hub.standbys.signals(since=NOW) if s.instance_id == "i-1").at == NOW + 600


def test_a_promotion_that_broke_off_is_finished_by_the_next_check(hub: Hub) -> None:
    """Adopted and switched, then the invocation died before the ports and the clear: the next check finishes."""
    launch = ready_standby(hub)
    adopted = hub.standbys.adopt("replica-0", launch_id=launch.launch_id, replacing="i-1")
    assert adopted is not None
    assert hub.standbys.switch_replica("replica-0", standby=adopted, adoption="-", now=NOW + 600) is not None
    assessment = hub.watch.assess("replica-0", NOW + 660)
    assert assessment.detail.startswith("standby promoted")
    assert [old for _, _, old in hub.ports.promotions] == ["i-1"]
    assert hub.standbys.standby("replica-0") is None


def test_no_promotion_when_a_replacement_holds_the_replica(hub: Hub) -> None:
    ready_standby(hub)
    assert hub.provisioning.start_replacing("replica-0", instance_id="i-1", execution="replica-0-r-i-1", now=NOW)
    assert hub.watch.on_notice("i-1", "interruption", region=REGION, now=NOW + 600) is None
    assert hub.ports.promotions == []
    assert replica(hub).instance_id == "i-1"


# --- a launching standby becomes the replacement -------------------------------------------------------


def test_a_launching_standby_becomes_the_replacement(hub: Hub) -> None:
    rise_risk(hub)
    launch = hub.watch.assess("replica-0", NOW).launch
    assert launch is not None
    outcome = hub.watch.on_notice("i-1", "interruption", region=REGION, now=NOW + 60)
    assert outcome == f"standby adopted: {launch.launch_id} replaces i-1"
    held = replica(hub)
    assert (held.status, held.execution, held.instance_id) == (
        ReplicaStatus.REPLACING,
        adoption_name(launch.launch_id),
        "i-1",
    )
    assert hub.ports.replacements == [] and hub.ports.promotions == []
    # The old instance serves until the standby is ready: its launch's success promotes it.
    done = hub.watch.on_launch_succeeded(launch.launch_id, instance_id="i-sb", zone="us-east-1a", now=NOW + 300)
    assert done == "standby promoted: i-sb serves in place of i-1"
    moved = replica(hub)
    assert (moved.status, moved.instance_id, moved.region) == (ReplicaStatus.SERVING, "i-sb", "us-east-1")
    assert [old for _, _, old in hub.ports.promotions] == ["i-1"]
    assert hub.ports.launches == [launch]
    assert hub.standbys.standby("replica-0") is None


def test_an_adopted_standby_that_fails_hands_the_replacement_to_the_orchestrator(hub: Hub) -> None:
    rise_risk(hub)
    launch = hub.watch.assess("replica-0", NOW).launch
    assert launch is not None
    hub.watch.on_notice("i-1", "rebalance", region=REGION, now=NOW + 60)
    outcome = hub.watch.on_launch_failed(launch.launch_id, error_class="capacity", now=NOW + 120)
    assert outcome is not None and outcome.startswith("standby launch failed (capacity); replacement started")
    assert hub.ports.replacements == [
        {
            "replica_id": "replica-0",
            "instance_id": "i-1",
            "name": adoption_name(launch.launch_id),
            "why": "standby launch failed (capacity)",
        }
    ]
    (ended,) = hub.standbys.ended()
    assert (ended.outcome, ended.why, ended.adopted_for) == (
        StandbyOutcome.FAILED,
        "its launch failed (capacity)",
        "i-1",
    )


def test_a_second_notice_while_adopted_changes_nothing(hub: Hub) -> None:
    rise_risk(hub)
    assert hub.watch.assess("replica-0", NOW).launch is not None
    hub.watch.on_notice("i-1", "rebalance", region=REGION, now=NOW + 60)
    assert hub.watch.on_notice("i-1", "interruption", region=REGION, now=NOW + 90) == (
        "ignored: the standby replaces it already"
    )
    assert hub.ports.replacements == [] and hub.ports.promotions == []


# --- released ---------------------------------------------------------------------------------------


def test_a_standby_is_released_when_the_risk_falls(hub: Hub) -> None:
    ready_standby(hub)
    later = NOW + STANDBY_NOTICE_WINDOW_SECONDS  # the interruption (at NOW - 300) left the window
    for at in (later - 120, later - 60):
        hub.watch.record_scores({(REGION, "us-west-2a"): 8, (REGION, "us-west-2b"): 7}, prices=PRICES, now=at)
    assessment = hub.watch.assess("replica-0", later)
    assert (assessment.action, assessment.wanted, assessment.standby) == (StandbyAction.RELEASE, (), False)
    assert hub.ports.teardowns == [{"region": "us-east-1", "instance_id": "i-sb", "launch_id": None}]
    assert hub.standbys.standby("replica-0") is None
    assert replica(hub).instance_id == "i-1"
    (ended,) = hub.standbys.ended()
    assert (ended.outcome, ended.why, ended.instance_id, ended.ended_at) == (
        StandbyOutcome.RELEASED,
        "the risk fell",
        "i-sb",
        later,
    )


def test_a_launching_standby_released_cancels_its_launch_and_its_late_success_is_no_standby(hub: Hub) -> None:
    rise_risk(hub)
    launch = hub.watch.assess("replica-0", NOW).launch
    assert launch is not None
    hub.provisioning.replica_status("replica-0", ReplicaStatus.STOPPED)  # disabled: no standby wanted
    assert hub.watch.assess("replica-0", NOW + 60).action == StandbyAction.RELEASE
    assert hub.ports.teardowns == [{"region": "us-east-1", "instance_id": None, "launch_id": launch.launch_id}]
    # Its success, late: no standby's (the launch path tears the orphan down).
    assert hub.watch.on_launch_succeeded(launch.launch_id, instance_id="i-late", zone=None, now=NOW + 300) is None


def test_a_warned_standby_is_released(hub: Hub) -> None:
    ready_standby(hub)
    assert hub.watch.on_notice("i-sb", "interruption", region="us-east-1", now=NOW + 600) == "standby released"
    assert hub.ports.teardowns == [{"region": "us-east-1", "instance_id": "i-sb", "launch_id": None}]
    assert hub.standbys.standby("replica-0") is None
    assert hub.ports.promotions == []
    signal = next(s for s in hub.standbys.signals(since=NOW) if s.instance_id == "i-sb")
    assert (signal.region, signal.zone, signal.standby) == ("us-east-1", "us-east-1a", True)
    # Its warning again: released once.
    assert hub.watch.on_notice("i-sb", "interruption", region="us-east-1", now=NOW + 610) is None
    assert len(hub.ports.teardowns) == 1
    assert [(e.outcome, e.why) for e in hub.standbys.ended()] == [
        (StandbyOutcome.RELEASED, "interruption of the standby")
    ]


def test_a_late_success_of_an_older_standby_does_not_mark_the_current_one_ready(hub: Hub) -> None:
    rise_risk(hub)
    launch = hub.watch.assess("replica-0", NOW).launch
    assert launch is not None
    assert (
        hub.standbys.mark_ready(
            "replica-0",
            launch_id="replica-0-sb-1",
            instance_id="i-old",
            zone=None,
            public_ip=None,
            private_ip=None,
            now=NOW,
        )
        is None
    )
    assert hub.standbys.clear("replica-0", launch_id="replica-0-sb-1") is None
    standby = hub.standbys.standby("replica-0")
    assert standby is not None and standby.status == StandbyStatus.LAUNCHING


def test_a_standby_launch_that_never_reports_is_given_up_and_another_tried(hub: Hub) -> None:
    rise_risk(hub, at=NOW + LAUNCH_TIMEOUT_SECONDS)  # the risk still high when the launch is given up
    launch = hub.watch.assess("replica-0", NOW).launch
    assert launch is not None
    later = NOW + LAUNCH_TIMEOUT_SECONDS + 60
    for at in (later - 120, later - 60):
        hub.watch.record_scores({("us-east-1", "us-east-1a"): 6, (REGION, "us-west-2b"): 7}, prices=PRICES, now=at)
    assessment = hub.watch.assess("replica-0", later)
    assert hub.ports.teardowns == [{"region": "us-east-1", "instance_id": None, "launch_id": launch.launch_id}]
    assert assessment.action == StandbyAction.START
    assert assessment.launch is not None and assessment.launch.launch_id == f"replica-0-sb-{int(later)}"


# --- the minute's check over every replica -------------------------------------------------------------


def test_the_check_samples_zone_scores_when_due_and_assesses_every_serving_replica(hub: Hub) -> None:
    asked: list[float] = []

    def observe() -> Any:
        asked.append(NOW)
        return {(REGION, "us-west-2a"): 8, (REGION, "us-west-2b"): 3}, {REGION: 0.9}

    # The fixture's latest sample (NOW - 60) is fresh: not asked.
    assert [a.replica_id for a in hub.watch.assess_all(NOW, observe=observe)] == ["replica-0"]
    assert asked == []
    # Ten minutes on, due: sampled; us-west-2b fell from 7 to 3 within the window, so the risk is up.
    later = NOW + 600
    (assessment,) = hub.watch.assess_all(later, observe=observe)
    assert len(asked) == 1
    assert assessment.action == StandbyAction.START
    assert assessment.reasons == ("score of us-west-2b fell from 7 to 3",)
    latest = [s for s in hub.standbys.scores(since=later) if s.zone == "us-west-2b"]
    assert [(s.score, s.spot_price) for s in latest] == [(3, 0.9)]


def test_the_check_goes_on_without_scores_when_ec2_does_not_answer(hub: Hub) -> None:
    def observe() -> Any:
        raise SpotDataUnavailable("GetSpotPlacementScores failed: Throttling")

    rise_risk(hub)
    (assessment,) = hub.watch.assess_all(NOW + 600, observe=observe)
    assert assessment.action == StandbyAction.START


def test_switched_off_nothing_is_recorded_or_started_and_a_held_standby_goes(hub: Hub, table: Any) -> None:
    ready_standby(hub)
    switch_standby(table, on=False)
    assert hub.watch.on_notice("i-1", "interruption", region=REGION, now=NOW + 600) is None
    assert [s for s in hub.standbys.signals(since=NOW) if s.instance_id == "i-1"] == []
    (released,) = hub.watch.assess_all(NOW + 660)
    assert released.action == StandbyAction.RELEASE
    assert hub.ports.teardowns == [{"region": "us-east-1", "instance_id": "i-sb", "launch_id": None}]
    rise_risk(hub, at=NOW + 700)
    assert hub.watch.assess_all(NOW + 720) == []
    assert len(hub.ports.launches) == 1  # the first standby's only


def test_an_adopted_standby_whose_launch_never_reports_hands_over_to_the_orchestrator(hub: Hub, table: Any) -> None:
    rise_risk(hub)
    launch = hub.watch.assess("replica-0", NOW).launch
    assert launch is not None
    hub.watch.on_notice("i-1", "interruption", region=REGION, now=NOW + 60)
    switch_standby(table, on=False)
    assert hub.watch.assess_all(NOW + 120) == []  # switched off: the adopted standby is the replacement, kept
    assessment = hub.watch.assess("replica-0", NOW + LAUNCH_TIMEOUT_SECONDS + 60)
    assert assessment.detail == f"replacement started: {adoption_name(launch.launch_id)}"
    assert hub.ports.teardowns == [{"region": "us-east-1", "instance_id": None, "launch_id": launch.launch_id}]
    assert [r["name"] for r in hub.ports.replacements] == [adoption_name(launch.launch_id)]
    assert hub.standbys.standby("replica-0") is None

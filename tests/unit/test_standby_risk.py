"""The warm standby's risk rules (spothub_core.logic.standby) and the replay policy that calls them."""

from __future__ import annotations

import pytest

from spothub.replay.policies import POLICIES
from spothub.replay.policies.standby import SpothubStandby
from spothub.replay.simulator import SPOT, Action, Simulator
from spothub.replay.traces import trace_set
from spothub_core.logic.standby import (
    Capacity,
    CapacitySignal,
    Placement,
    Risk,
    ScoreSample,
    SignalKind,
    StandbyRules,
    ZoneCandidate,
    assess_risk,
    choose_standby_zone,
    falling_score,
    recent_capacity_error,
    recent_interruption,
    wants_standby,
    young_instance,
)

RULES = StandbyRules(notice_window_s=3600, young_s=1800, score_window_s=1800, retry_s=300)
NOW = 100_000.0
SERVING = Placement(region="us-east-1", zone="us-east-1a", since=NOW - 7200)


def signal(kind: SignalKind, region: str = "us-east-1", zone: str | None = "us-east-1b", ago: float = 60.0, **kw: bool):
    return CapacitySignal(kind, region, zone, NOW - ago, **kw)


# --- one test per rule --------------------------------------------------------------------------------


def test_recent_interruption_fires_for_a_warning_in_the_serving_region_within_the_window() -> None:
    assert recent_interruption(SERVING, [signal(SignalKind.INTERRUPTION)], now=NOW, rules=RULES)
    assert recent_interruption(SERVING, [signal(SignalKind.REBALANCE, zone=None)], now=NOW, rules=RULES)
    assert recent_interruption(SERVING, [signal(SignalKind.INTERRUPTION, ago=3601)], now=NOW, rules=RULES) is None
    other_region = signal(SignalKind.INTERRUPTION, region="us-west-2", zone="us-west-2a")
    assert recent_interruption(SERVING, [other_region], now=NOW, rules=RULES) is None
    assert recent_interruption(SERVING, [signal(SignalKind.CAPACITY_ERROR)], now=NOW, rules=RULES) is None


def test_recent_capacity_error_fires_for_a_placement_refused_in_the_serving_region() -> None:
    assert recent_capacity_error(SERVING, [signal(SignalKind.CAPACITY_ERROR, zone=None)], now=NOW, rules=RULES)
    assert recent_capacity_error(SERVING, [signal(SignalKind.CAPACITY_ERROR, ago=4000)], now=NOW, rules=RULES) is None
    # A standby's own refusals steer the standby only: counting them would keep the risk up by itself.
    refused_standby = signal(SignalKind.CAPACITY_ERROR, standby=True)
    assert recent_capacity_error(SERVING, [refused_standby], now=NOW, rules=RULES) is None
    assert recent_capacity_error(SERVING, [signal(SignalKind.INTERRUPTION)], now=NOW, rules=RULES) is None


def test_young_instance_fires_only_while_the_serving_instance_is_younger_than_the_threshold() -> None:
    young = Placement("us-east-1", "us-east-1a", since=NOW - 1799)
    settled = Placement("us-east-1", "us-east-1a", since=NOW - 1800)
    assert young_instance(young, now=NOW, rules=RULES)
    assert young_instance(settled, now=NOW, rules=RULES) is None


def test_falling_score_fires_when_a_zone_of_the_serving_region_scores_below_its_recent_best() -> None:
    def sample(zone: str, score: int, ago: float) -> ScoreSample:
        return ScoreSample(zone[:-1], zone, score, NOW - ago)

    falling = [sample("us-east-1b", 7, 1200), sample("us-east-1b", 5, 0)]
    assert falling_score(SERVING, falling, now=NOW, rules=RULES) == "score of us-east-1b fell from 7 to 5"
    rising = [sample("us-east-1b", 5, 1200), sample("us-east-1b", 7, 0)]
    assert falling_score(SERVING, rising, now=NOW, rules=RULES) is None
    # A fall older than the window, or in another region, says nothing about the serving region now.
    assert (
        falling_score(SERVING, [sample("us-east-1b", 9, 1801), sample("us-east-1b", 5, 0)], now=NOW, rules=RULES)
        is None
    )
    other = [sample("us-west-2a", 9, 600), sample("us-west-2a", 1, 0)]
    assert falling_score(SERVING, other, now=NOW, rules=RULES) is None


def test_assess_risk_is_the_union_of_the_rules_and_counts_them() -> None:
    assert not assess_risk(SERVING, signals=[], scores=[], now=NOW, rules=RULES).high
    signals = [signal(SignalKind.INTERRUPTION), signal(SignalKind.CAPACITY_ERROR)]
    young = Placement("us-east-1", "us-east-1a", since=NOW - 60)
    risk = assess_risk(young, signals=signals, scores=[], now=NOW, rules=RULES)
    assert risk.high and risk.level == 3


def test_wants_standby_spot_from_one_rule_on_demand_only_when_enough_agree() -> None:
    rules = StandbyRules(spot_level=1, on_demand_level=3)
    assert wants_standby(Risk(()), rules) == frozenset()
    assert wants_standby(Risk(("a",)), rules) == {Capacity.SPOT}
    assert wants_standby(Risk(("a", "b")), rules) == {Capacity.SPOT}
    assert wants_standby(Risk(("a", "b", "c")), rules) == {Capacity.SPOT, Capacity.ON_DEMAND}


def test_choose_standby_zone_prefers_unsignalled_zones_of_another_region_and_skips_refused_ones() -> None:
    def zone(name: str, score: int = 5, price: float = 0.5) -> ZoneCandidate:
        return ZoneCandidate(name[:-1], name, score, price)

    candidates = [zone("us-east-1a"), zone("us-east-1b", 9), zone("us-east-2a"), zone("us-west-2a"), zone("us-west-2b")]
    signals = [
        signal(SignalKind.INTERRUPTION, region="us-east-2", zone="us-east-2a", ago=600),
        signal(SignalKind.CAPACITY_ERROR, region="us-west-2", zone="us-west-2a", ago=100, standby=True),
    ]
    ordered = choose_standby_zone(candidates, serving=SERVING, signals=signals, now=NOW, rules=RULES)
    # Never the serving zone; us-west-2a refused 100 s ago (retry after 300 s); us-east-2a had a warning: last;
    # another region before the serving one's, even at a lower score.
    assert [c.zone for c in ordered] == ["us-west-2b", "us-east-1b", "us-east-2a"]
    later = choose_standby_zone(candidates, serving=SERVING, signals=signals, now=NOW + 300, rules=RULES)
    assert "us-west-2a" in [c.zone for c in later]


# --- the replay policy ---------------------------------------------------------------------------------


def test_the_standby_policy_is_registered_after_production() -> None:
    names = list(POLICIES)
    assert names.index("spothub-standby") == names.index("spothub") + 1


def test_a_standby_is_started_when_the_risk_rises_promoted_on_a_warning_and_released_when_it_falls() -> None:
    # Only the score rule: us-east-2b (a zone of the serving region) loses its capacity at tick 30, us-east-2a
    # (serving) at tick 60; later, serving in us-east-1a, us-east-1b (its region's other zone) goes at tick 150.
    series = {
        "us-east-2a": [3] * 60 + [0] * 60 + [3] * 240,
        "us-east-2b": [1] * 30 + [0] * 330,
        "us-east-1a": [3] * 360,
        "us-east-1b": [3] * 150 + [0] * 210,
    }
    traces = trace_set("t", series, gap_seconds=60, spot_prices={"us-east-1": 0.5, "us-east-2": 0.3}, on_demand_price=3)
    rules = StandbyRules(young_s=0, score_window_s=1800, on_demand_level=9)
    sim = Simulator(traces, SpothubStandby(rules=rules), cold_start_s=300)
    outcome = sim.run()
    actions = [(a.what, a.zone) for a in sim.actions]
    assert actions == [
        ("launch", "us-east-2a"),  # placed by production's ranking
        ("launch", "us-east-1a"),  # us-east-2b's score falls: a standby in the other region
        ("warning", "us-east-2a"),
        ("terminate", "us-east-2a"),  # the ready standby serves at once: no replacement, no outage
        ("launch", "us-east-2a"),  # us-east-1b's score falls: a standby for the new serving instance
        ("terminate", "us-east-2a"),  # the score settles: the risk falls, the standby is released
    ]
    standby_started = sim.actions[1]
    assert standby_started == Action(standby_started.time, "launch", SPOT, "us-east-1", "us-east-1a")
    assert 1800 < standby_started.time < 3600 - 300  # after the fall began, warm before the warning
    assert outcome.availability == 1.0
    assert outcome.preemptions == 1


def test_a_warm_standby_turns_a_preemption_into_no_outage_where_production_loses_minutes() -> None:
    # The serving zone is preempted every 40 minutes; the other region always has capacity.
    series = {"us-east-2a": ([3] * 30 + [0] * 10) * 6, "us-east-1a": [3] * 240, "us-east-1b": [3] * 240}
    traces = trace_set("t", series, gap_seconds=60, spot_prices={"us-east-1": 0.5, "us-east-2": 0.3}, on_demand_price=3)
    standby = Simulator(traces, SpothubStandby(), cold_start_s=300).run()
    production = Simulator(traces, POLICIES["spothub"](), cold_start_s=300).run()
    assert production.availability < 1.0
    assert standby.availability == pytest.approx(1.0)

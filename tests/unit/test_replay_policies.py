"""Each replay policy's behaviour, and that no policy ever decides on the trace's future."""

from __future__ import annotations

import itertools
import random

import pytest

from spothub.replay.policies import POLICIES, make_policy, production
from spothub.replay.policies.production import Spothub
from spothub.replay.simulator import ON_DEMAND, SPOT, WARNING_S, Action, Simulator
from spothub.replay.traces import TraceSet, trace_set
from spothub_core.logic import ranking
from spothub_core.timings import EXCLUSION_SECONDS, SPOT_RETURN_SECONDS

SPOT_PRICES = {"us-east-1": 0.5, "us-east-2": 0.3, "us-west-2": 0.9}


def traces(series: dict[str, list[int]], gap: float = 60.0) -> TraceSet:
    return trace_set("t", series, gap_seconds=gap, spot_prices=SPOT_PRICES, on_demand_price=3.0)


def run(
    name: str, series: dict[str, list[int]], *, gap: float = 60.0, replicas: int = 1, cold_start_s: float = 300.0
) -> Simulator:
    sim = Simulator(traces(series, gap), make_policy(name), replicas=replicas, cold_start_s=cold_start_s)
    sim.run()
    return sim


def launches(sim: Simulator) -> list[Action]:
    return [a for a in sim.actions if a.what == "launch"]


def test_the_policies_are_registered_by_name_in_report_order() -> None:
    assert list(POLICIES) == ["on-demand", "single-zone-spot", "rule-of-thumb", "hedge", "spothub", "spothub-standby"]
    with pytest.raises(ValueError, match="unknown policy 'cheapest'"):
        make_policy("cheapest")


# --- no look-ahead ---------------------------------------------------------------------------------


def random_series(rng: random.Random, ticks: int) -> list[int]:
    series, level = [], 1
    while len(series) < ticks:
        series.extend([level] * rng.randint(1, 12))
        level = rng.choice([0, 0, 1, 2])
    return series[:ticks]


ZONES = ("us-east-1a", "us-east-1b", "us-east-2a", "us-west-2a", "us-west-2b")


@pytest.mark.parametrize("name", list(POLICIES))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_changing_the_future_of_a_trace_changes_no_decision_made_before_it(name: str, seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 (reproducible traces)
    ticks, gap = 600, 60.0
    past = {zone: random_series(rng, ticks) for zone in ZONES}
    for cut in (40, 211, 450):
        future = {zone: series[:cut] + random_series(rng, ticks - cut) for zone, series in past.items()}
        # A score window of an hour: the cut falls inside windows that also see the past.
        before = run(name, past, gap=gap, replicas=2, cold_start_s=300)
        after = run(name, future, gap=gap, replicas=2, cold_start_s=300)
        cut_at = cut * gap
        assert [a for a in before.actions if a.time < cut_at] == [a for a in after.actions if a.time < cut_at]


def test_the_no_look_ahead_check_would_see_a_change_after_the_cut() -> None:
    rng = random.Random(4)  # noqa: S311
    past = {zone: random_series(rng, 600) for zone in ZONES}
    future = {zone: series[:100] + [0] * 500 for zone, series in past.items()}
    changed = [name for name in POLICIES if run(name, past).actions != run(name, future).actions]
    assert "single-zone-spot" in changed
    assert "hedge" in changed


# --- baselines ---------------------------------------------------------------------------------------------


def test_on_demand_is_never_preempted_and_is_the_reference_cost() -> None:
    sim = run("on-demand", {"us-east-1a": [0, 1, 0, 1] * 50}, replicas=2)
    outcome = sim.ledger.outcome(2 * 3.0 * sim.traces.duration_s / 3600)
    assert outcome.availability == 1.0
    assert outcome.cost_vs_on_demand == pytest.approx(1.0)
    assert (outcome.preemptions, outcome.launches) == (0, 2)
    assert {a.kind for a in launches(sim)} == {ON_DEMAND}


def test_single_zone_spot_waits_in_the_cheapest_zone_while_others_have_capacity() -> None:
    # us-east-2a is the cheapest; us-west-2a has capacity throughout.
    sim = run("single-zone-spot", {"us-east-2a": [1] * 5 + [0] * 10 + [1] * 5, "us-west-2a": [3] * 20})
    assert [(a.time, a.zone) for a in launches(sim)] == [(0.0, "us-east-2a"), (900.0, "us-east-2a")]
    assert sim.ledger.outcome(1.0).preemptions == 1


def test_rule_of_thumb_starts_on_the_best_score_then_the_lowest_price() -> None:
    # Both regions score the same (one unit each): the cheaper one wins.
    sim = run("rule-of-thumb", {"us-east-1a": [1] * 10, "us-west-2a": [1] * 10})
    assert launches(sim)[0].region == "us-east-1"
    # A better score beats a lower price.
    sim = run("rule-of-thumb", {"us-east-1a": [1] * 10, "us-west-2a": [3] * 10})
    assert launches(sim)[0].region == "us-west-2"


def test_rule_of_thumb_moves_only_after_the_preemption_not_at_the_warning() -> None:
    sim = run("rule-of-thumb", {"us-east-1a": [1] * 10 + [0] * 10 + [1] * 20, "us-west-2a": [1] * 40})
    first, second = launches(sim)
    assert (first.time, first.region) == (0.0, "us-east-1")
    # Warned at tick 10 (600 s), preempted 120 s later: only then does it move to the other region.
    assert (second.time, second.region) == (600.0 + WARNING_S, "us-west-2")
    assert len(launches(sim)) == 2  # and stays there while it is not preempted


def test_rule_of_thumb_moves_after_a_capacity_error() -> None:
    # Preempted in us-west-2 at 720 s, it moves to the best-scored other region, us-east-1, which has
    # no capacity at that tick: a capacity error, then the next best regions until one launches.
    series = {
        "us-west-2a": [3] * 10 + [0] * 30,
        "us-east-1a": [2] * 12 + [0] * 5 + [2] * 23,
        "us-east-2a": [1] * 40,
    }
    sim = run("rule-of-thumb", series)
    assert [a.region for a in sim.actions if a.what == "capacity-error"] == ["us-east-1", "us-west-2"]
    assert [(a.time, a.region) for a in launches(sim)] == [(0.0, "us-west-2"), (720.0, "us-east-2")]


def test_rule_of_thumb_never_falls_back_to_on_demand() -> None:
    sim = run("rule-of-thumb", {"us-east-1a": [0] * 30})
    assert launches(sim) == []


# --- hedge ------------------------------------------------------------------------------------------


def test_hedge_spreads_one_more_spot_replica_than_needed_over_regions() -> None:
    sim = run("hedge", {"us-east-1a": [2] * 20, "us-east-1b": [2] * 20, "us-west-2a": [2] * 20}, replicas=1)
    spot = [(a.region, a.zone) for a in launches(sim) if a.kind == SPOT]
    assert spot == [("us-east-1", "us-east-1a"), ("us-west-2", "us-west-2a")]


def test_hedge_covers_missing_spot_with_on_demand_and_retires_it_when_spot_is_back() -> None:
    sim = run("hedge", {"us-east-1a": [0] * 10 + [1] * 30}, replicas=1, cold_start_s=120)
    kinds = [(a.time, a.what, a.kind) for a in sim.actions if a.what in ("launch", "terminate")]
    assert kinds[0] == (0.0, "launch", ON_DEMAND)
    assert (600.0, "launch", SPOT) in kinds
    # The spot replica is ready at 720: the on-demand one goes then.
    assert (720.0, "terminate", ON_DEMAND) in kinds


def test_hedge_avoids_a_zone_that_was_just_preempted() -> None:
    series = {"us-east-1a": [1] * 5 + [0] + [1] * 30, "us-west-2a": [1] * 36, "us-east-2a": [1] * 36}
    sim = run("hedge", series, replicas=1)
    after_warning = [a for a in launches(sim) if a.time >= 300.0 and a.kind == SPOT]
    assert after_warning[0].zone != "us-east-1a"


# --- spothub: production's policy --------------------------------------------------------------------


def test_spothub_ranks_with_the_production_function(monkeypatch: pytest.MonkeyPatch) -> None:
    assert production.rank_regions is ranking.rank_regions
    calls = []

    def spy(*args: object, **kwargs: object) -> ranking.Ranking:
        calls.append(kwargs)
        return ranking.rank_regions(*args, **kwargs)

    monkeypatch.setattr(production, "rank_regions", spy)
    run("spothub", {"us-east-1a": [1] * 5})
    assert calls


def test_spothub_places_by_score_then_price() -> None:
    sim = run("spothub", {"us-east-1a": [1] * 5, "us-east-2a": [1] * 5, "us-west-2a": [3] * 5})
    assert launches(sim)[0].region == "us-west-2"
    sim = run("spothub", {"us-east-1a": [1] * 5, "us-east-2a": [1] * 5, "us-west-2a": [1] * 5})
    assert launches(sim)[0].region == "us-east-2"


def test_spothub_excludes_a_region_after_a_capacity_error_for_the_production_duration() -> None:
    # us-west-2 scores best from its history but has nothing at tick 61: capacity error, next region.
    series = {"us-west-2a": [3] * 60 + [0] * 40, "us-east-1a": [1] * 100}
    policy = Spothub()
    sim = Simulator(traces(series), policy, cold_start_s=0)
    sim.run()
    # The first placement at 0 lands in us-west-2; at the drop (tick 60) it is warned, and the
    # replacement, preferring us-west-2, finds no capacity there.
    errors = [a for a in sim.actions if a.what == "capacity-error"]
    assert errors[0] == Action(3600.0, "capacity-error", SPOT, "us-west-2", None)
    assert launches(sim)[1] == Action(3600.0, "launch", SPOT, "us-east-1", "us-east-1a")
    excluded = [e for e in policy.exclusions if e.region == "us-west-2"]
    assert excluded and excluded[0].until == 3600.0 + EXCLUSION_SECONDS["capacity"]


def test_spothub_falls_back_to_on_demand_when_no_spot_region_is_left() -> None:
    sim = run("spothub", {"us-east-1a": [0] * 10, "us-west-2a": [0] * 10})
    assert [a.what for a in sim.actions] == ["capacity-error", "capacity-error", "launch"]
    assert launches(sim)[0].kind == ON_DEMAND


def test_spothub_replaces_make_before_break_on_the_warning() -> None:
    # Cold start 60 s, shorter than the warning: the replacement is ready before the old one goes.
    series = {"us-east-1a": [1] * 10 + [0] * 10, "us-east-1b": [1] * 20}
    sim = run("spothub", series, cold_start_s=60)
    events = [(a.time, a.what, a.zone) for a in sim.actions]
    assert events == [
        (0.0, "launch", "us-east-1a"),
        (600.0, "warning", "us-east-1a"),
        (600.0, "launch", "us-east-1b"),  # the same region, which still scores as well as the best
        (660.0, "terminate", "us-east-1a"),  # retired once the replacement is ready
    ]
    assert sim.ledger.outcome(1.0).availability == 1.0


def test_spothub_keeps_one_replica_per_region() -> None:
    sim = run("spothub", {"us-east-1a": [2] * 5, "us-west-2a": [2] * 5}, replicas=2)
    assert sorted(a.region for a in launches(sim)) == ["us-east-1", "us-west-2"]


def test_spothub_replaces_an_instance_whose_warning_came_during_its_cold_start() -> None:
    # Warned at 60 (still starting, ignored), ready at 100, gone at 180: replaced then.
    series = {"us-east-1a": [1] + [0] * 10, "us-east-1b": [0] * 3 + [1] * 8}
    sim = run("spothub", series, cold_start_s=100)
    assert [(a.time, a.what) for a in sim.actions][:4] == [
        (0.0, "launch"),
        (60.0, "warning"),
        (180.0, "preempted"),
        (180.0, "launch"),
    ]


# --- spothub: return to spot --------------------------------------------------------------------------------


def look_times(ready: float, end: float) -> list[float]:
    """When the spot watch of a replica recorded on on-demand at `ready` looks: every SPOT_RETURN_SECONDS."""
    return [ready + n * SPOT_RETURN_SECONDS for n in range(1, int((end - ready) // SPOT_RETURN_SECONDS) + 1)]


def test_spothub_returns_an_on_demand_replica_to_spot_once_capacity_comes_back() -> None:
    # No capacity for 20 minutes: on-demand at once (its region excluded after the capacity error), then back.
    series = {"us-east-1a": [0] * 20 + [1] * 40}
    sim = run("spothub", series, cold_start_s=300)
    excluded_until = EXCLUSION_SECONDS["capacity"]
    # The first look past the exclusion tries spot (spot only), fails for capacity and keeps on-demand;
    # the first look past that new exclusion, with capacity back at 1200 s, launches spot.
    retry = next(t for t in look_times(300.0, 3600.0) if t >= excluded_until)
    back = next(t for t in look_times(300.0, 3600.0) if t >= retry + EXCLUSION_SECONDS["capacity"])
    assert [(a.time, a.what, a.kind) for a in sim.actions] == [
        (0.0, "capacity-error", SPOT),
        (0.0, "launch", ON_DEMAND),
        (retry, "capacity-error", SPOT),  # a failed return: no second on-demand launch
        (back, "launch", SPOT),
        (back + 300.0, "terminate", ON_DEMAND),  # retired once the spot instance is ready
    ]
    end = sim.traces.duration_s
    outcome = sim.ledger.outcome(3.0 * end / 3600)
    assert outcome.availability == 1.0
    # Billed: on-demand until the spot instance is ready, spot (us-east-1, $0.5/h) from its launch.
    assert outcome.cost == pytest.approx((3.0 * (back + 300.0) + 0.5 * (end - back)) / 3600)


def test_spothub_stays_on_demand_while_spot_does_not_come_back() -> None:
    sim = run("spothub", {"us-east-1a": [0] * 120, "us-west-2a": [0] * 120}, cold_start_s=300)
    assert [(a.what, a.kind) for a in launches(sim)] == [("launch", ON_DEMAND)]
    assert not [a for a in sim.actions if a.what == "terminate"]
    # Each look past the exclusions tries spot again: both regions, spot only, and keeps on-demand.
    errors = [a.time for a in sim.actions if a.what == "capacity-error"]
    looks = look_times(300.0, sim.traces.duration_s)
    assert errors[:2] == [0.0, 0.0]
    tried = sorted(set(errors[2:]))
    assert tried and set(tried) <= set(looks)
    for before, after in itertools.pairwise([0.0, *tried]):
        assert after == next(t for t in looks if t >= before + EXCLUSION_SECONDS["capacity"])
    assert sim.ledger.outcome(1.0).availability == 1.0


def test_a_failed_return_to_spot_fails_over_to_the_next_spot_region_never_to_on_demand() -> None:
    # us-west-2 had the most capacity in the last hour (it scores best) but has none left at the look:
    # the spot-only replacement goes on to us-east-1, which has capacity again, and the on-demand instance goes.
    series = {"us-west-2a": [0] * 3 + [8] * 9 + [0] * 88, "us-east-1a": [0] * 10 + [1] * 90}
    sim = run("spothub", series, cold_start_s=300)
    look = next(t for t in look_times(300.0, 6000.0) if t >= EXCLUSION_SECONDS["capacity"])
    assert [(a.time, a.what, a.kind, a.region) for a in sim.actions][2:] == [
        (0.0, "launch", ON_DEMAND, "us-east-1"),
        (look, "capacity-error", SPOT, "us-west-2"),
        (look, "launch", SPOT, "us-east-1"),
        (look + 300.0, "terminate", ON_DEMAND, "us-east-1"),
    ]
    assert sim.ledger.outcome(1.0).availability == 1.0


def test_a_spot_instance_lost_during_a_return_excludes_its_region_and_the_replica_stays_on_demand() -> None:
    # Capacity for one tick at the look: the spot launch starts, is warned and goes before it is ready.
    sim = run("spothub", {"us-east-1a": [0] * 15 + [1] + [0] * 44}, cold_start_s=300)
    lost = next(a.time for a in sim.actions if a.what == "preempted")
    assert [(a.what, a.kind) for a in launches(sim)] == [("launch", ON_DEMAND), ("launch", SPOT)]
    assert not [a for a in sim.actions if a.what == "terminate"]
    # SpotGone: a new watch, which looks first once SPOT_RETURN_SECONDS passed and the exclusion is over.
    retried = [a.time for a in sim.actions if a.what == "capacity-error" and a.time > lost]
    assert retried[0] == next(
        lost + n * SPOT_RETURN_SECONDS
        for n in itertools.count(1)
        if lost + n * SPOT_RETURN_SECONDS >= lost + EXCLUSION_SECONDS["capacity"]
    )
    assert sim.ledger.outcome(1.0).availability == 1.0


def test_spothub_standby_goes_where_the_regions_group_puts_it_off_the_serving_zone_while_another_has_capacity() -> None:
    # Young serving instance: a spot standby is wanted. Its launch goes to the region's group, which picks the zone:
    # us-east-1b while it has capacity (zone balance), even though us-east-1a has more free.
    sim = run("spothub-standby", {"us-east-1a": [5] * 40, "us-east-1b": [1] * 40})
    serving, standby = launches(sim)[:2]
    assert (serving.kind, serving.zone, standby.kind, standby.zone) == (SPOT, "us-east-1a", SPOT, "us-east-1b")
    # With none in us-east-1b, the group takes the serving zone: the standby is not pinned to the zone ranked first.
    sim = run("spothub-standby", {"us-east-1a": [5] * 40, "us-east-1b": [0] * 40})
    serving, standby = launches(sim)[:2]
    assert (serving.zone, standby.kind, standby.zone) == ("us-east-1a", SPOT, "us-east-1a")
    refused = [a for a in sim.actions if a.what == "capacity-error"]
    assert refused == [], "a region launch finds the zone with capacity: no refusal"

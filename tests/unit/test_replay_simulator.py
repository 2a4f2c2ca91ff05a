"""The replay's market, fleet and accounting on traces small enough to compute by hand."""

from __future__ import annotations

import pytest

from spothub.replay.policies.base import Policy
from spothub.replay.policies.baselines import SingleZoneSpot
from spothub.replay.simulator import ON_DEMAND, SPOT, WARNING_S, Action, Instance, Simulator
from spothub.replay.traces import ReplayInputError, TraceSet, trace_set
from spothub.replay.view import MarketView

# $0.0001 a second on spot in us-east-1, $0.001 a second on demand: costs come out in round numbers.
SPOT_PRICES = {"us-east-1": 0.36, "us-west-2": 0.72}
ON_DEMAND_PRICE = 3.6


def traces(series: dict[str, list[int]], gap: float = 100.0) -> TraceSet:
    return trace_set("hand", series, gap_seconds=gap, spot_prices=SPOT_PRICES, on_demand_price=ON_DEMAND_PRICE)


class Scripted(Policy):
    """Does what the test says at the given times: ("spot", zone) / ("on-demand", region) / ("terminate", n)."""

    name = "scripted"

    def __init__(self, script: dict[float, list[tuple[str, str | int]]]) -> None:
        self.script = script
        self.launched: list[Instance | None] = []

    def start(self, sim: Simulator) -> None:
        for time in self.script:
            sim.wake_at(time)

    def decide(self, sim: Simulator) -> None:
        for what, where in self.script.pop(sim.now, []):
            if what == SPOT:
                self.launched.append(sim.launch_spot(str(where)[:-1], str(where)))
            elif what == ON_DEMAND:
                self.launched.append(sim.launch_on_demand(str(where)))
            else:
                instance = self.launched[int(where)]
                assert instance is not None
                sim.terminate(instance)


def test_a_hand_computed_trace_gives_the_exact_cost_and_availability() -> None:
    # Ticks of 100 s: capacity 1, 1, 0, 0, 1, 1. Cold start 150 s; the trace ends at 600 s.
    sim = Simulator(traces({"us-east-1a": [1, 1, 0, 0, 1, 1]}), SingleZoneSpot(), cold_start_s=150)
    outcome = sim.run()
    # A: launched at 0, ready at 150, warned at the drop (200), gone at 320; relaunching then is a
    # capacity error; B: launched when capacity returns (400), ready at 550, billed to the end.
    assert sim.actions == [
        Action(0.0, "launch", SPOT, "us-east-1", "us-east-1a"),
        Action(200.0, "warning", SPOT, "us-east-1", "us-east-1a"),
        Action(320.0, "preempted", SPOT, "us-east-1", "us-east-1a"),
        Action(320.0, "capacity-error", SPOT, "us-east-1", "us-east-1a"),
        Action(400.0, "launch", SPOT, "us-east-1", "us-east-1a"),
    ]
    # Measured from the cold start (150) to the end (600): up 150-320 and 550-600, 220 s of 450.
    assert outcome.availability == pytest.approx(220 / 450)
    assert outcome.longest_outage_s == pytest.approx(230)
    # Spot at $0.0001/s: 320 s + 200 s. On-demand reference: 600 s at $0.001/s.
    assert outcome.cost == pytest.approx(0.052)
    assert outcome.cost_vs_on_demand == pytest.approx(0.052 / 0.6)
    assert (outcome.preemptions, outcome.launches, outcome.failovers) == (1, 2, 0)


def test_on_demand_is_billed_per_second_at_its_price_and_never_preempted() -> None:
    sim = Simulator(
        traces({"us-east-1a": [0, 0, 0]}),
        Scripted({0.0: [(ON_DEMAND, "us-east-1")], 250.0: [(ON_DEMAND, "us-east-1"), ("terminate", 0)]}),
        cold_start_s=100,
    )
    outcome = sim.run()
    # First: 0-250, ready from 100. Second: 250-300 (the end), never ready.
    assert outcome.cost == pytest.approx(0.25 + 0.05)
    assert outcome.availability == pytest.approx(150 / 200)
    assert outcome.preemptions == 0
    assert outcome.failovers == 0


def test_a_launch_takes_one_unit_of_capacity_per_instance() -> None:
    policy = Scripted({0.0: [(SPOT, "us-east-1a"), (SPOT, "us-east-1a"), (SPOT, "us-east-1a")]})
    outcome = Simulator(traces({"us-east-1a": [2, 2]}), policy, replicas=2, cold_start_s=0).run()
    assert [i is not None for i in policy.launched] == [True, True, False]
    assert outcome.launches == 2
    assert outcome.availability == 1.0


def test_a_region_launch_takes_the_zone_with_the_most_free_capacity() -> None:
    sim = Simulator(traces({"us-east-1a": [1], "us-east-1b": [3]}), Scripted({}), cold_start_s=0)
    assert sim.launch_spot("us-east-1") is not None
    assert sim.actions[-1].zone == "us-east-1b"


def test_a_region_launch_spreads_from_the_groups_zone_while_another_has_capacity() -> None:
    """Auto Scaling's zone balance: a group holding an instance in us-east-1b launches the next one elsewhere, even
    where less is free, and in us-east-1b only when no other zone has any."""
    sim = Simulator(traces({"us-east-1a": [1], "us-east-1b": [3], "us-east-1c": [0]}), Scripted({}), cold_start_s=0)
    assert sim.launch_spot("us-east-1", spread_from="us-east-1b") is not None
    assert sim.actions[-1].zone == "us-east-1a"
    assert sim.launch_spot("us-east-1", spread_from="us-east-1b") is not None
    assert sim.actions[-1].zone == "us-east-1b"


def test_when_capacity_drops_the_newest_instances_beyond_it_are_warned_then_preempted() -> None:
    policy = Scripted({0.0: [(SPOT, "us-east-1a")], 50.0: [(SPOT, "us-east-1a")]})
    sim = Simulator(traces({"us-east-1a": [2, 2, 1, 1]}), policy, replicas=2, cold_start_s=10)
    outcome = sim.run()
    older, newer = policy.launched
    assert older is not None and newer is not None
    assert older.alive and older.warned_at is None
    assert newer.warned_at == 200.0
    assert newer.terminated_at == 200.0 + WARNING_S
    assert outcome.preemptions == 1


def test_a_warned_instance_serves_until_it_goes() -> None:
    sim = Simulator(traces({"us-east-1a": [1, 0, 0, 0]}), Scripted({0.0: [(SPOT, "us-east-1a")]}), cold_start_s=50)
    outcome = sim.run()
    # Ready 50-220 (warned at 100, gone 120 s later); measured 50-400.
    assert outcome.availability == pytest.approx(170 / 350)


def test_failovers_count_launches_elsewhere_after_lost_capacity() -> None:
    policy = Scripted({0.0: [(SPOT, "us-east-1a")], 100.0: [(SPOT, "us-west-2a")]})
    outcome = Simulator(traces({"us-east-1a": [1, 0], "us-west-2a": [1, 1]}), policy, cold_start_s=0).run()
    assert (outcome.preemptions, outcome.failovers) == (1, 1)


def test_files_of_unequal_length_are_aligned_to_the_longest_with_no_capacity_past_their_end() -> None:
    aligned = traces({"us-east-1a": [1, 1, 1, 1, 1], "us-west-2a": [1, 1]})
    assert aligned.ticks == 5
    assert aligned.measured_ticks == (5, 2)
    assert aligned.capacity[1] == (1, 1, 0, 0, 0)
    policy = Scripted({0.0: [(SPOT, "us-west-2a")]})
    sim = Simulator(aligned, policy, cold_start_s=0)
    sim.run()
    assert [a.what for a in sim.actions] == ["launch", "warning", "preempted"]
    assert sim.actions[1].time == 200.0


def test_trace_sets_refuse_what_they_cannot_price_or_replay() -> None:
    with pytest.raises(ReplayInputError, match=r"no spot price for p3\.2xlarge in eu-west-1"):
        traces({"eu-west-1a": [1]})
    with pytest.raises(ReplayInputError, match="no ticks"):
        traces({"us-east-1a": []})
    with pytest.raises(ReplayInputError, match="gap_seconds must be positive"):
        traces({"us-east-1a": [1]}, gap=0)


def test_placement_scores_follow_the_last_hour_of_capacity() -> None:
    # 600 s ticks: the score averages the current tick and the five before it.
    view = MarketView(traces({"us-east-1a": [3] * 6 + [0] * 6, "us-east-1b": [0] * 12}, gap=600))
    scores = []
    for tick in range(12):
        view.tick = tick
        scores.append(view.region_score("us-east-1"))
    assert scores[:6] == [10] * 6
    assert scores[6:] == [8, 7, 6, 4, 2, 1]  # derived_score of the means 2.5, 2, 1.5, 1, 0.5, 0
    view.tick = 0
    assert view.zone_score("us-east-1b") == 1


def test_the_simulator_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="replicas"):
        Simulator(traces({"us-east-1a": [1]}), Scripted({}), replicas=0)
    with pytest.raises(ValueError, match="cold start"):
        Simulator(traces({"us-east-1a": [1]}), Scripted({}), cold_start_s=-1)

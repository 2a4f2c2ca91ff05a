"""The Pareto check of `spothub replay`: a policy against hedge, and the frontier the plot draws."""

from __future__ import annotations

from typing import Any

import pytest

from spothub.replay.pareto import BASELINE, COST_FACTOR, DEFAULT_CANDIDATE, pareto_check, pareto_frontier, summary_line
from spothub.replay.policies import POLICIES


def result(trace: str = "t", **policies: tuple[float, float]) -> dict[str, Any]:
    """A replay result of the given policies: name -> (availability, cost as a share of on-demand)."""
    return {
        "trace": trace,
        "policies": {
            name.replace("_", "-"): {"availability": availability, "cost_vs_on_demand": cost}
            for name, (availability, cost) in policies.items()
        },
    }


def test_the_bar_is_hedge_at_four_fifths_of_its_cost_and_the_default_candidate_is_a_policy() -> None:
    assert (BASELINE, COST_FACTOR) == ("hedge", 0.8)
    assert DEFAULT_CANDIDATE in POLICIES
    assert BASELINE in POLICIES


def test_a_win_needs_both_and_says_so() -> None:
    check = pareto_check(result(hedge=(0.993, 0.6), spothub_standby=(0.9931, 0.479)))
    assert (check.availability_ok, check.cost_ok, check.win, check.misses) == (True, True, True, [])
    assert check.line() == (
        "pareto spothub-standby vs hedge: availability 99.310 % >= 99.300 % ok, "
        "cost 47.90 % <= 48.00 % (0.8 x hedge) ok -> win"
    )


@pytest.mark.parametrize(
    ("spothub", "misses", "shown"),
    [
        ((0.99, 0.3), ["availability"], "availability 99.000 % < 99.300 % miss, cost 30.00 % <= 48.00 %"),
        ((0.995, 0.5), ["cost"], "availability 99.500 % >= 99.300 % ok, cost 50.00 % > 48.00 % (0.8 x hedge) miss"),
        ((0.98, 0.7), ["availability", "cost"], "availability 98.000 % < 99.300 % miss, cost 70.00 % > 48.00 %"),
    ],
)
def test_each_half_can_miss(spothub: tuple[float, float], misses: list[str], shown: str) -> None:
    check = pareto_check(result(hedge=(0.993, 0.6), spothub_standby=spothub))
    assert not check.win
    assert check.misses == misses
    assert shown in check.line()
    assert check.line().endswith(f"-> miss ({', '.join(misses)})")


def test_the_bounds_are_inclusive() -> None:
    # Exactly hedge's availability at exactly 0.8 x its cost (0.8 x 0.5 is 0.4 in binary floating point too).
    check = pareto_check(result(hedge=(0.99, 0.5), spothub_standby=(0.99, 0.4)))
    assert check.win
    assert not pareto_check(result(hedge=(0.99, 0.5), spothub_standby=(0.99, 0.4001))).win
    assert not pareto_check(result(hedge=(0.99, 0.5), spothub_standby=(0.98999, 0.4))).win


def test_the_candidate_is_named_and_must_have_been_replayed() -> None:
    replayed = result("my-trace", hedge=(0.99, 0.5), on_demand=(1.0, 1.0), spothub_standby=(0.9, 0.1))
    check = pareto_check(replayed, "on-demand")
    assert (check.trace, check.candidate, check.misses) == ("my-trace", "on-demand", ["cost"])
    assert check.line().startswith("pareto on-demand vs hedge: availability 100.000 % >= 99.000 % ok")
    with pytest.raises(ValueError, match="no policy 'spothub' in the replay of my-trace; it has hedge, "):
        pareto_check(replayed, "spothub")
    with pytest.raises(ValueError, match="no policy 'hedge'"):
        pareto_check(result(spothub_standby=(0.9, 0.1)))


def test_the_summary_counts_the_wins_and_names_the_misses() -> None:
    checks = [
        pareto_check(result("a", hedge=(0.99, 0.5), spothub_standby=(0.995, 0.3))),
        pareto_check(result("b", hedge=(0.99, 0.5), spothub_standby=(0.98, 0.3))),
        pareto_check(result("c", hedge=(0.99, 0.5), spothub_standby=(0.98, 0.45))),
    ]
    assert summary_line(checks) == (
        "pareto spothub-standby vs hedge: win on 1 of 3 folders; missed on b (availability), c (availability, cost)"
    )
    assert summary_line(checks[:1]) == "pareto spothub-standby vs hedge: win on 1 of 1 folders"


def test_the_frontier_keeps_only_the_undominated_points_cheapest_first() -> None:
    points = {
        "on-demand": (100.0, 1.0),
        "hedge": (60.0, 0.993),
        "dear-and-worse": (70.0, 0.99),  # hedge is cheaper and better
        "spothub-standby": (38.0, 0.986),
        "same-cost-worse": (38.0, 0.95),  # spothub costs the same and is better
        "cheap": (7.0, 0.3),
        "worse-than-cheap": (9.0, 0.3),  # as available as cheap, dearer
    }
    assert pareto_frontier(points) == ["cheap", "spothub-standby", "hedge", "on-demand"]
    assert pareto_frontier({"a": (1.0, 0.5), "b": (1.0, 0.5)}) == ["a"]
    assert pareto_frontier({}) == []

"""Does a policy beat the strongest baseline? The issue's bar, checked on one replay result.

A win is a strict Pareto win over `hedge`: at least its availability for at most `COST_FACTOR` of its cost
(cost as a share of on-demand, the same reference for every policy of a folder). The Pareto frontier is the
set of policies no other policy beats on both figures: what the plot draws.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The policy `spothub replay` checks unless --pareto names another: production with its warm standby switched on.
DEFAULT_CANDIDATE = "spothub-standby"
BASELINE = "hedge"
COST_FACTOR = 0.8


@dataclass(frozen=True)
class ParetoCheck:
    trace: str
    candidate: str
    availability: float  # 0..1
    baseline_availability: float
    cost: float  # share of on-demand
    baseline_cost: float

    @property
    def cost_limit(self) -> float:
        return COST_FACTOR * self.baseline_cost

    @property
    def availability_ok(self) -> bool:
        return self.availability >= self.baseline_availability

    @property
    def cost_ok(self) -> bool:
        return self.cost <= self.cost_limit

    @property
    def misses(self) -> list[str]:
        return [what for what, ok in (("availability", self.availability_ok), ("cost", self.cost_ok)) if not ok]

    @property
    def win(self) -> bool:
        return not self.misses

    def line(self) -> str:
        availability = (
            f"availability {100 * self.availability:.3f} % {'>=' if self.availability_ok else '<'} "
            f"{100 * self.baseline_availability:.3f} % {'ok' if self.availability_ok else 'miss'}"
        )
        cost = (
            f"cost {100 * self.cost:.2f} % {'<=' if self.cost_ok else '>'} {100 * self.cost_limit:.2f} % "
            f"({COST_FACTOR:g} x {BASELINE}) {'ok' if self.cost_ok else 'miss'}"
        )
        verdict = "win" if self.win else f"miss ({', '.join(self.misses)})"
        return f"pareto {self.candidate} vs {BASELINE}: {availability}, {cost} -> {verdict}"


def pareto_check(result: Mapping[str, Any], candidate: str = DEFAULT_CANDIDATE) -> ParetoCheck:
    """`candidate` against the baseline in one result of `report.replay`; ValueError if either was not replayed."""
    policies = result["policies"]
    for name in (candidate, BASELINE):
        if name not in policies:
            raise ValueError(f"no policy {name!r} in the replay of {result['trace']}; it has {', '.join(policies)}")
    mine, theirs = policies[candidate], policies[BASELINE]
    return ParetoCheck(
        trace=result["trace"],
        candidate=candidate,
        availability=mine["availability"],
        baseline_availability=theirs["availability"],
        cost=mine["cost_vs_on_demand"],
        baseline_cost=theirs["cost_vs_on_demand"],
    )


def summary_line(checks: list[ParetoCheck]) -> str:
    """One line over several folders: on how many the candidate wins, and the folders it misses."""
    wins = sum(check.win for check in checks)
    candidate = checks[0].candidate if checks else DEFAULT_CANDIDATE
    missed = [f"{check.trace} ({', '.join(check.misses)})" for check in checks if not check.win]
    return f"pareto {candidate} vs {BASELINE}: win on {wins} of {len(checks)} folders" + (
        f"; missed on {', '.join(missed)}" if missed else ""
    )


def pareto_frontier(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """The names no other point dominates, cheapest first. `points`: name -> (cost, availability); a point is
    dominated by one at most as costly and at least as available that is better in one of the two (of equal
    points the first named stays)."""
    frontier: list[str] = []
    best_availability = -1.0
    for name in sorted(points, key=lambda n: (points[n][0], -points[n][1])):
        if points[name][1] > best_availability:
            frontier.append(name)
            best_availability = points[name][1]
    return frontier

"""What a replay run is judged by: availability, cost, and the counts behind them.

Availability is measured from the cold start on (no policy can have a replica ready earlier) to the
end of the trace: the share of that time with at least N ready replicas. Cost is per second from
launch to termination (instances still running at the end are billed to the end), at the spot
price of the instance's region or the on-demand price.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Outcome:
    availability: float
    cost: float
    cost_vs_on_demand: float
    preemptions: int
    launches: int
    failovers: int
    longest_outage_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ledger:
    """Time with fewer than `replicas` ready, cost, and counts; `advance` before any change of `ready`."""

    def __init__(self, *, replicas: int, measure_from: float, end: float) -> None:
        self.replicas = replicas
        self.measure_from = min(measure_from, end)
        self.end = end
        self.ready = 0
        self.cost = 0.0
        self.preemptions = 0
        self.launches = 0
        self.failovers = 0
        self._clock = 0.0
        self._down = 0.0
        self._outage = 0.0
        self._longest = 0.0

    def advance(self, now: float) -> None:
        start, stop = max(self._clock, self.measure_from), min(now, self.end)
        if stop > start:
            if self.ready < self.replicas:
                self._down += stop - start
                self._outage += stop - start
                self._longest = max(self._longest, self._outage)
            else:
                self._outage = 0.0
        self._clock = max(self._clock, now)

    def bill(self, hourly_price: float, launched_at: float, terminated_at: float) -> None:
        self.cost += hourly_price * (min(terminated_at, self.end) - launched_at) / SECONDS_PER_HOUR

    def outcome(self, on_demand_reference: float) -> Outcome:
        measured = self.end - self.measure_from
        return Outcome(
            availability=1.0 - self._down / measured if measured > 0 else 1.0,
            cost=self.cost,
            cost_vs_on_demand=self.cost / on_demand_reference if on_demand_reference > 0 else 0.0,
            preemptions=self.preemptions,
            launches=self.launches,
            failovers=self.failovers,
            longest_outage_s=self._longest,
        )

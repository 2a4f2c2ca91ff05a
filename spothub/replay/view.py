"""What a policy may know at the current tick: placement scores from the trace's past, prices.

Nothing here reads a tick after the current one. Policies never see capacity directly: like an
EC2 user they learn it from placement scores, launch errors and interruption warnings.
"""

from __future__ import annotations

from itertools import accumulate

from spothub.replay.traces import TraceSet
from spothub.sandbox.market import derived_score, region_of

# How much history a placement score averages over: AWS's scores follow recent capacity, not just this tick.
SCORE_WINDOW_S = 3600.0


class MarketView:
    def __init__(self, traces: TraceSet, *, score_window_s: float = SCORE_WINDOW_S) -> None:
        self.traces = traces
        self.tick = 0
        self.now = 0.0
        self.zones = traces.zones
        self.regions = traces.regions
        self.on_demand_price = traces.on_demand_price
        self._window = max(1, round(score_window_s / traces.gap_seconds))
        # Running sums, so a window mean is two lookups; only entries up to the current tick are read.
        self._sums = {z: (0, *accumulate(series)) for z, series in zip(traces.zones, traces.capacity, strict=True)}
        self._zones_of = {r: tuple(z for z in traces.zones if region_of(z) == r) for r in traces.regions}
        self._cache: dict[tuple[str, int], int] = {}
        self._cache_tick = -1

    def zones_of(self, region: str) -> tuple[str, ...]:
        return self._zones_of[region]

    def spot_price(self, region: str) -> float:
        return self.traces.spot_prices[region]

    def _recent_capacity(self, zone: str) -> float:
        sums = self._sums[zone]
        end = self.tick + 1
        start = max(0, end - self._window)
        return (sums[end] - sums[start]) / (end - start)

    def region_score(self, region: str, target: int = 1) -> int:
        """1-10 like GetSpotPlacementScores for a region: the recent mean capacity of its zones."""
        return self._score(region, self._zones_of[region], target)

    def zone_score(self, zone: str, target: int = 1) -> int:
        """1-10 like GetSpotPlacementScores with SingleAvailabilityZone."""
        return self._score(zone, (zone,), target)

    def _score(self, key: str, zones: tuple[str, ...], target: int) -> int:
        if self._cache_tick != self.tick:
            self._cache.clear()
            self._cache_tick = self.tick
        cached = self._cache.get((key, target))
        if cached is None:
            cached = derived_score(sum(self._recent_capacity(z) for z in zones), target)
            self._cache[(key, target)] = cached
        return cached

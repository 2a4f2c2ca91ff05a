"""A simulated spot market per region, zone and instance type: capacity, spot and on-demand prices,
placement scores; set by configuration or replayed over time from a trace directory.

Trace format (as in data/traces): `{"metadata": {"gap_seconds": N}, "data": [c0, c1, ...]}`, one file
per `<zone>_<gpu>_<count>.json`; the region is the zone without its trailing letter; shapes map to
instance types through the prices file. A replay sets each zone's capacity to the trace's value at
the current tick; past the end of a shorter file the zone has no capacity.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from spothub.sandbox.clock import SandboxClock

TRACE_FILE = re.compile(r"^(?P<zone>[a-z]{2}(?:-[a-z]+)+-\d[a-z])_(?P<shape>[a-z0-9]+_\d+)\.json$")
DEFAULT_CAPACITY = 10
DEFAULT_ZONE_LETTERS = ("a", "b", "c")


def region_of(zone: str) -> str:
    return zone[:-1]


@dataclass
class Pool:
    """One spot pool: an instance type in a zone."""

    zone: str
    instance_type: str
    capacity: int
    spot_price: float
    on_demand_price: float
    placement_score: int | None = None  # None: derived from free capacity
    in_use: int = 0

    @property
    def region(self) -> str:
        return region_of(self.zone)

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.in_use)


@dataclass
class Trace:
    zone: str
    instance_type: str
    gap_seconds: float
    data: list[int]


def derived_score(free: float, target: int) -> int:
    """1 when nothing is free; rising to 10 when three times the target is free. `free` may be an
    average (the replay scores a region by its recent mean capacity)."""
    if free <= 0:
        return 1
    return max(1, min(10, round(1 + 9 * min(1.0, free / (3 * max(1, target))))))


def load_prices(path: Path) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    document = json.loads(path.read_text())
    return document["shapes"], document["instance_types"]


def load_traces(directory: Path, shapes: dict[str, str], shape: str | None = None) -> list[Trace]:
    traces = []
    for file in sorted(directory.glob("*.json")):
        match = TRACE_FILE.match(file.name)
        if not match or (shape and match["shape"] != shape):
            continue
        if match["shape"] not in shapes:
            raise ValueError(f"{file.name}: shape {match['shape']} is not in the prices file")
        try:
            document = json.loads(file.read_text())
            gap_seconds = float(document["metadata"]["gap_seconds"])
            data = [int(v) for v in document["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{file.name}: not a trace file ({type(exc).__name__}: {exc})") from exc
        traces.append(Trace(match["zone"], shapes[match["shape"]], gap_seconds, data))
    if not traces:
        message = f"no trace files in {directory}" + (f" for shape {shape}" if shape else "")
        children = directory.iterdir() if directory.is_dir() else ()
        folders = sorted(p.name for p in children if p.is_dir() and any(p.glob("*.json")))
        if folders:
            message += f"; it holds trace folders ({', '.join(folders)}): name one, e.g. {directory / folders[0]}"
        raise ValueError(message)
    return traces


class SpotMarket:
    """Thread-safe market state. `on_change(pool)` is called after a pool's capacity changes."""

    def __init__(self, clock: SandboxClock) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._pools: dict[tuple[str, str], Pool] = {}
        self._replay: tuple[list[Trace], float] | None = None
        self._configured: dict[tuple[str, str], Pool] = {}
        self._prices: dict[str, dict[str, Any]] = {}  # what populate was given, for pools added later
        self.on_change: Callable[[Pool], None] = lambda _pool: None

    # --- configuration ------------------------------------------------------------------------

    def add_pool(
        self, zone: str, instance_type: str, *, capacity: int, spot_price: float, on_demand_price: float
    ) -> Pool:
        with self._lock:
            pool = Pool(zone, instance_type, capacity, spot_price, on_demand_price)
            self._pools[(zone, instance_type)] = pool
            self._configured[(zone, instance_type)] = replace(pool)
            return pool

    def restore(self) -> None:
        """Every pool back to how it was added (capacity, prices, scores); in-use counts are kept."""
        with self._lock:
            for key, configured in self._configured.items():
                pool = self._pools[key]
                pool.capacity = configured.capacity
                pool.spot_price = configured.spot_price
                pool.placement_score = configured.placement_score

    def populate(self, regions: list[str], instance_types: list[str], prices: dict[str, dict[str, Any]]) -> None:
        """Three zones per region with capacity for every type; prices from the prices file where it
        knows the type, else a nominal on-demand price and spot at 35 % of it."""
        self._prices = {**self._prices, **prices}
        for region in regions:
            for letter in DEFAULT_ZONE_LETTERS:
                for instance_type in instance_types:
                    known = prices.get(instance_type, {})
                    on_demand = float(known.get("on_demand", 1.0))
                    spot = float(known.get("spot", {}).get(region, round(on_demand * 0.35, 4)))
                    self.add_pool(
                        f"{region}{letter}",
                        instance_type,
                        capacity=DEFAULT_CAPACITY,
                        spot_price=spot,
                        on_demand_price=on_demand,
                    )

    def ensure_pools(self, region: str, instance_type: str) -> None:
        """The region's zones have a pool of this type (added as populate adds them, unless one exists): a type no
        group names, launched directly (the search instance), is on the market like any other."""
        with self._lock:
            if any(p.region == region and p.instance_type == instance_type for p in self._pools.values()):
                return
        self.populate([region], [instance_type], self._prices)

    def set_zone(
        self,
        zone: str,
        instance_type: str,
        *,
        capacity: int | None = None,
        spot_price: float | None = None,
        placement_score: int | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            pool = self._pools.get((zone, instance_type))
            if pool is None:
                raise KeyError(f"no pool {instance_type} in {zone}")
            if capacity is not None:
                if capacity < 0:
                    raise ValueError("capacity cannot be negative")
                pool.capacity = int(capacity)
            if spot_price is not None:
                pool.spot_price = float(spot_price)
            if placement_score is not None:
                if not 1 <= placement_score <= 10:  # noqa: PLR2004
                    raise ValueError("a placement score is 1 to 10")
                pool.placement_score = int(placement_score)
            described = asdict(pool)
        if capacity is not None:
            self.on_change(pool)
        return described

    def set_region(
        self,
        region: str,
        *,
        capacity: int | None = None,
        spot_price: float | None = None,
        placement_score: int | None = None,
        instance_type: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every pool of `region` (of `instance_type` only, when given) set as `set_zone` sets one: capacity 0 takes
        the region's spot capacity away, and its running spot instances get the interruption warning (on-demand
        ones are not on the spot market and keep running); capacity 10, the default, gives it back. Checked
        before anything changes. Under a trace replay, the next tick sets the traces' zones again."""
        if capacity is not None and capacity < 0:
            raise ValueError("capacity cannot be negative")
        if placement_score is not None and not 1 <= placement_score <= 10:  # noqa: PLR2004
            raise ValueError("a placement score is 1 to 10")
        with self._lock:
            keys = sorted(
                key
                for key, pool in self._pools.items()
                if pool.region == region and instance_type in {None, pool.instance_type}
            )
            regions = sorted({pool.region for pool in self._pools.values()})
        if not keys:
            of_type = f" of {instance_type}" if instance_type else ""
            raise KeyError(f"no pools{of_type} in {region}; the market's regions: {', '.join(regions)}")
        return [
            self.set_zone(zone, pool_type, capacity=capacity, spot_price=spot_price, placement_score=placement_score)
            for zone, pool_type in keys
        ]

    def replay(self, traces: list[Trace]) -> None:
        """Drive capacity from traces by the sandbox clock, starting now."""
        with self._lock:
            for trace in traces:
                if (trace.zone, trace.instance_type) not in self._pools:
                    self.add_pool(trace.zone, trace.instance_type, capacity=0, spot_price=1.0, on_demand_price=3.0)
            self._replay = (traces, self._clock.now())
        self.apply_replay()

    def apply_replay(self) -> None:
        if self._replay is None:
            return
        traces, started = self._replay
        elapsed = self._clock.now() - started
        for trace in traces:
            tick = int(elapsed // trace.gap_seconds)
            capacity = trace.data[tick] if tick < len(trace.data) else 0
            if self._pools[(trace.zone, trace.instance_type)].capacity != capacity:
                self.set_zone(trace.zone, trace.instance_type, capacity=capacity)

    # --- what EC2 answers --------------------------------------------------------------------------

    def pools(self, region: str | None = None, instance_types: list[str] | None = None) -> list[Pool]:
        with self._lock:
            return [
                p
                for p in self._pools.values()
                if (region is None or p.region == region) and (not instance_types or p.instance_type in instance_types)
            ]

    def describe(self) -> list[dict[str, Any]]:
        return [{**asdict(p), "free": p.free} for p in self.pools()]

    def placement_scores(
        self, instance_types: list[str], target_capacity: int, regions: list[str], single_az: bool
    ) -> list[dict[str, Any]]:
        scores = []
        with self._lock:
            for region in regions:
                zones: dict[str, list[Pool]] = {}
                for pool in self.pools(region, instance_types):
                    zones.setdefault(pool.zone, []).append(pool)
                if not zones:
                    continue
                if single_az:
                    for zone, pools in sorted(zones.items()):
                        scores.append(
                            {"Region": region, "AvailabilityZoneId": zone, "Score": _score(pools, target_capacity)}
                        )
                else:
                    every = [p for pools in zones.values() for p in pools]
                    scores.append({"Region": region, "Score": _score(every, target_capacity)})
        return sorted(scores, key=lambda s: -s["Score"])

    def spot_price_history(self, region: str, instance_types: list[str], zones: list[str]) -> list[dict[str, Any]]:
        timestamp = self._clock.datetime().strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return [
            {
                "InstanceType": p.instance_type,
                "ProductDescription": "Linux/UNIX",
                "SpotPrice": f"{p.spot_price:.6f}",
                "AvailabilityZone": p.zone,
                "Timestamp": timestamp,
            }
            for p in self.pools(region, instance_types)
            if not zones or p.zone in zones
        ]

    # --- capacity accounting for launches -------------------------------------------------------

    def take_spot(self, candidates: list[tuple[str, str]]) -> Pool | None:
        """Price-capacity-optimized: among the candidate (zone, type) pools with free capacity, the one
        with the most free capacity, cheapest first on a tie. Takes one unit; None when all are full."""
        with self._lock:
            pools = [self._pools[c] for c in candidates if c in self._pools and self._pools[c].free > 0]
            if not pools:
                return None
            chosen = min(pools, key=lambda p: (-min(p.free, 3), p.spot_price, p.zone, p.instance_type))
            chosen.in_use += 1
            return chosen

    def release(self, zone: str, instance_type: str) -> None:
        with self._lock:
            pool = self._pools.get((zone, instance_type))
            if pool and pool.in_use:
                pool.in_use -= 1

    def over_capacity(self, zone: str, instance_type: str) -> int:
        with self._lock:
            pool = self._pools.get((zone, instance_type))
            return 0 if pool is None else max(0, pool.in_use - pool.capacity)


def _score(pools: list[Pool], target: int) -> int:
    explicit = [p.placement_score for p in pools if p.placement_score is not None]
    if explicit:
        return max(explicit)
    return derived_score(sum(p.free for p in pools), target)

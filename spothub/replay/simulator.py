"""The replay's market and fleet: one policy against one trace set, tick by tick.

Time runs in seconds; capacity is constant within a tick (`gap_seconds`). Between ticks the replay
also stops at instance events (ready, preempted) and at times a policy asked to be woken; at every
stop the policy decides. Rules:

- a spot launch succeeds only in a zone whose capacity at this tick exceeds the spot instances this
  policy already holds there (each instance takes one unit); otherwise it is a capacity error;
- an instance is ready `cold_start_s` after its launch (boot plus model load);
- when a zone's capacity drops below what the policy holds there, the newest instances beyond it
  are preempted: the interruption warning is delivered at the tick of the drop (the policy learns
  then that the instance ends `WARNING_S` later) and the instance is terminated at that moment;
- on-demand launches always succeed; billing is per second from launch to termination.

A failover is a launch that replaces lost capacity (a preemption warning or a capacity error since
the last launch) in another region or on another capacity type than what was lost.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from spothub.replay.accounting import SECONDS_PER_HOUR, Ledger, Outcome
from spothub.replay.view import SCORE_WINDOW_S, MarketView

if TYPE_CHECKING:
    from spothub.replay.policies.base import Policy
    from spothub.replay.traces import TraceSet

SPOT = "spot"
ON_DEMAND = "on-demand"
WARNING_S = 120.0
DEFAULT_COLD_START_S = 300.0

_READY, _PREEMPTED, _WAKE = 0, 1, 2


@dataclass(eq=False, slots=True)
class Instance:
    id: int
    kind: str
    region: str
    zone: str | None  # None for on-demand (any zone of the region)
    launched_at: float
    ready_at: float
    ready: bool = False
    warned_at: float | None = None
    terminated_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.terminated_at is None

    @property
    def at_risk(self) -> bool:
        """An interruption warning was delivered: it ends WARNING_S after it."""
        return self.warned_at is not None


class Action(NamedTuple):
    """One decision or market event, for tests and for reading a run: what, when, where."""

    time: float
    what: str  # launch, capacity-error, terminate, warning, preempted
    kind: str
    region: str
    zone: str | None


class Simulator:
    def __init__(
        self,
        traces: TraceSet,
        policy: Policy,
        *,
        replicas: int = 1,
        cold_start_s: float = DEFAULT_COLD_START_S,
        score_window_s: float = SCORE_WINDOW_S,
    ) -> None:
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        if cold_start_s < 0:
            raise ValueError("the cold start cannot be negative")
        self.traces = traces
        self.policy = policy
        self.replicas = replicas
        self.cold_start_s = float(cold_start_s)
        self.view = MarketView(traces, score_window_s=score_window_s)
        self.now = 0.0
        self.actions: list[Action] = []
        self.ledger = Ledger(replicas=replicas, measure_from=self.cold_start_s, end=traces.duration_s)
        self._capacity = dict(zip(traces.zones, traces.capacity, strict=True))
        self._drops = _drops(traces)
        self._live: list[Instance] = []
        self._holding: dict[str, list[Instance]] = {zone: [] for zone in traces.zones}  # unwarned spot, oldest first
        self._events: list[tuple[float, int, int, Instance | None]] = []
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self._lost: deque[tuple[str, str]] = deque()

    # --- what a policy may do -------------------------------------------------------------------------

    @property
    def live(self) -> tuple[Instance, ...]:
        """Instances launched and not yet terminated, oldest first."""
        return tuple(self._live)

    def launch_spot(self, region: str, zone: str | None = None, *, spread_from: str | None = None) -> Instance | None:
        """Launch in `zone`, or in the region's zone with the most free capacity (as Auto Scaling's
        price-capacity-optimized allocation would); None is a capacity error. `spread_from`: a zone where the
        group holds an instance already, taken only when no other zone has capacity (its zone balance)."""
        tick = self.view.tick
        chosen, best = None, (False, 0)
        for candidate in (zone,) if zone else self.view.zones_of(region):
            free = self._capacity[candidate][tick] - len(self._holding[candidate])
            if free > 0 and (rank := (candidate != spread_from, free)) > best:
                chosen, best = candidate, rank
        if chosen is None:
            self.actions.append(Action(self.now, "capacity-error", SPOT, region, zone))
            if not self._lost:
                self._lost.append((region, SPOT))
            return None
        instance = self._start(SPOT, region, chosen)
        self._holding[chosen].append(instance)
        return instance

    def launch_on_demand(self, region: str) -> Instance:
        return self._start(ON_DEMAND, region, None)

    def terminate(self, instance: Instance) -> None:
        if instance.alive:
            self.actions.append(Action(self.now, "terminate", instance.kind, instance.region, instance.zone))
            self._end(instance)

    def wake_at(self, time: float) -> None:
        """Decide again at `time` even if no tick or event falls there."""
        if time > self.now:
            heapq.heappush(self._events, (time, next(self._seq), _WAKE, None))

    # --- the run ------------------------------------------------------------------------------------------

    def run(self) -> Outcome:
        gap, ticks, end = self.traces.gap_seconds, self.traces.ticks, self.traces.duration_s
        events, view, ledger, policy = self._events, self.view, self.ledger, self.policy
        policy.start(self)
        tick = 0
        while True:
            tick_at = tick * gap if tick < ticks else math.inf
            now = min(tick_at, events[0][0] if events else math.inf)
            if now >= end:
                break
            ledger.advance(now)
            self.now = view.now = now
            if now == tick_at:
                view.tick = tick
                tick += 1
            while events and events[0][0] == now:
                _, _, kind, instance = heapq.heappop(events)
                if instance is not None and instance.alive:
                    self._on_event(kind, instance)
            if now == tick_at:
                self._preempt_over_capacity(view.tick)
            policy.decide(self)
        ledger.advance(end)
        for instance in self._live:
            ledger.bill(self._price(instance), instance.launched_at, end)
        return ledger.outcome(self.replicas * self.traces.on_demand_price * end / SECONDS_PER_HOUR)

    # --- internals ----------------------------------------------------------------------------------------

    def _start(self, kind: str, region: str, zone: str | None) -> Instance:
        instance = Instance(next(self._ids), kind, region, zone, self.now, self.now + self.cold_start_s)
        self._live.append(instance)
        self.ledger.launches += 1
        if self._lost and self._lost.popleft() != (region, kind):
            self.ledger.failovers += 1
        self.actions.append(Action(self.now, "launch", kind, region, zone))
        heapq.heappush(self._events, (instance.ready_at, next(self._seq), _READY, instance))
        return instance

    def _end(self, instance: Instance) -> None:
        instance.terminated_at = self.now
        self.ledger.bill(self._price(instance), instance.launched_at, self.now)
        if instance.ready:
            self.ledger.ready -= 1
        self._live.remove(instance)
        if instance.zone is not None and instance.warned_at is None:
            self._holding[instance.zone].remove(instance)

    def _on_event(self, kind: int, instance: Instance) -> None:
        if kind == _READY:
            instance.ready = True
            self.ledger.ready += 1
            self.policy.on_ready(self, instance)
        elif kind == _PREEMPTED:
            self.actions.append(Action(self.now, "preempted", instance.kind, instance.region, instance.zone))
            self._end(instance)
            self.policy.on_preempted(self, instance)

    def _preempt_over_capacity(self, tick: int) -> None:
        for zone in self._drops.get(tick, ()):
            holding = self._holding[zone]
            for _ in range(len(holding) - self._capacity[zone][tick]):
                instance = holding.pop()  # the newest goes first
                instance.warned_at = self.now
                self.ledger.preemptions += 1
                self._lost.append((instance.region, instance.kind))
                self.actions.append(Action(self.now, "warning", instance.kind, instance.region, instance.zone))
                heapq.heappush(self._events, (self.now + WARNING_S, next(self._seq), _PREEMPTED, instance))
                self.policy.on_warning(self, instance)

    def _price(self, instance: Instance) -> float:
        if instance.kind == ON_DEMAND:
            return self.traces.on_demand_price
        return self.traces.spot_prices[instance.region]


def _drops(traces: TraceSet) -> dict[int, tuple[str, ...]]:
    """Tick -> zones whose capacity fell at that tick: the only moments a holding can exceed capacity."""
    drops: dict[int, list[str]] = {}
    for zone, series in zip(traces.zones, traces.capacity, strict=True):
        for tick in range(1, len(series)):
            if series[tick] < series[tick - 1]:
                drops.setdefault(tick, []).append(zone)
    return {tick: tuple(zones) for tick, zones in drops.items()}

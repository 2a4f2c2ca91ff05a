"""When a replica on spot keeps a warm standby, where it goes, and when it goes away: pure functions, no I/O.

A replica's spot instance that is preempted costs an outage of its replacement's cold start less the two minutes
of the warning (a model server: minutes). A standby is a second spot instance of the replica, started and
warmed up in another zone while the risk of a preemption is high, so that a warning promotes it at once; it is
released when the risk falls, so that the replica pays for two instances only while one is likely to be lost.

The risk rules read only what production records: the recent capacity signals of the deployment's own instances
and launches (interruption warnings, rebalance recommendations, capacity errors, each with region, zone and
time), placement scores per zone (the latest and the recent ones), the serving instance (where, since when) and
the clock. Each rule is a function of its own that says why it fired; `assess_risk` is their union. Used by the
replay benchmark (spothub/replay/policies/standby.py) and, in the same way, by the hub's orchestrator.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from spothub_core.models.standby_records import SignalKind
from spothub_core.timings import (
    STANDBY_NOTICE_WINDOW_SECONDS,
    STANDBY_ON_DEMAND_RULES,
    STANDBY_RETRY_SECONDS,
    STANDBY_SCORE_WINDOW_SECONDS,
    STANDBY_SPOT_RULES,
    STANDBY_YOUNG_SECONDS,
)


@dataclass(frozen=True)
class CapacitySignal:
    kind: SignalKind
    region: str
    zone: str | None  # None when the zone is not known (a capacity error of a launch into the whole region)
    at: float  # epoch seconds
    # Of a standby launch: its capacity errors steer where the next standby goes but raise no risk, or the risk
    # would feed on itself (a wanted standby retried into a short zone, each refusal keeping the risk high).
    standby: bool = False


@dataclass(frozen=True)
class ScoreSample:
    """A spot placement score (1-10, GetSpotPlacementScores with SingleAvailabilityZone) of one zone."""

    region: str
    zone: str
    score: int
    at: float


@dataclass(frozen=True)
class Placement:
    """Where a spot instance of the replica runs, and since when (its launch)."""

    region: str
    zone: str
    since: float


@dataclass(frozen=True)
class ZoneCandidate:
    """A zone a standby could go to: its latest placement score and its region's spot price."""

    region: str
    zone: str
    placement_score: int | None
    spot_price: float | None


@dataclass(frozen=True)
class StandbyRules:
    """The thresholds of the risk rules (defaults: spothub_core.timings, where their reasons are)."""

    notice_window_s: float = STANDBY_NOTICE_WINDOW_SECONDS
    young_s: float = STANDBY_YOUNG_SECONDS
    score_window_s: float = STANDBY_SCORE_WINDOW_SECONDS
    retry_s: float = STANDBY_RETRY_SECONDS
    spot_level: int = STANDBY_SPOT_RULES
    on_demand_level: int = STANDBY_ON_DEMAND_RULES


DEFAULT_RULES = StandbyRules()


@dataclass(frozen=True)
class Risk:
    """Whether the serving spot instance is likely to be lost soon, and every rule that says so."""

    reasons: tuple[str, ...] = field(default=())

    @property
    def high(self) -> bool:
        return bool(self.reasons)

    @property
    def level(self) -> int:
        """How many rules fired: independent signs that agree make a loss likelier."""
        return len(self.reasons)


# --- the risk rules --------------------------------------------------------------------------------------------


def recent_interruption(
    serving: Placement, signals: Iterable[CapacitySignal], *, now: float, rules: StandbyRules = DEFAULT_RULES
) -> str | None:
    """An interruption warning or a rebalance recommendation in the serving instance's region within the notice
    window: spot in that region is being taken back, and its zones tend to go together."""
    since = now - rules.notice_window_s
    for signal in signals:
        if signal.kind is not SignalKind.CAPACITY_ERROR and signal.region == serving.region and signal.at >= since:
            return f"{signal.kind} in {signal.zone or signal.region} {now - signal.at:.0f}s ago"
    return None


def recent_capacity_error(
    serving: Placement, signals: Iterable[CapacitySignal], *, now: float, rules: StandbyRules = DEFAULT_RULES
) -> str | None:
    """A spot launch refused for capacity in the serving instance's region within the notice window: the region
    has little spare, so the serving instance may be the next to go."""
    since = now - rules.notice_window_s
    for signal in signals:
        if (
            signal.kind is SignalKind.CAPACITY_ERROR
            and not signal.standby
            and signal.region == serving.region
            and signal.at >= since
        ):
            return f"capacity error in {signal.zone or signal.region} {now - signal.at:.0f}s ago"
    return None


def young_instance(serving: Placement, *, now: float, rules: StandbyRules = DEFAULT_RULES) -> str | None:
    """The serving instance was launched less than `young_s` ago: spot capacity that has just come back is
    likely to go again soon (most spells of capacity are short, a few are very long)."""
    age = now - serving.since
    return f"serving for {age:.0f}s only" if age < rules.young_s else None


def falling_score(
    serving: Placement, scores: Iterable[ScoreSample], *, now: float, rules: StandbyRules = DEFAULT_RULES
) -> str | None:
    """The latest placement score of a zone of the serving instance's region is below the best that zone had
    within the score window: the region's spare capacity is shrinking, and the serving zone may be next."""
    since = now - rules.score_window_s
    latest: dict[str, ScoreSample] = {}
    best: dict[str, int] = {}
    for sample in scores:
        if sample.region == serving.region and since <= sample.at <= now:
            if sample.zone not in latest or sample.at > latest[sample.zone].at:
                latest[sample.zone] = sample
            best[sample.zone] = max(best.get(sample.zone, sample.score), sample.score)
    for zone, sample in sorted(latest.items()):
        if sample.score < best[zone]:
            return f"score of {zone} fell from {best[zone]} to {sample.score}"
    return None


def assess_risk(
    serving: Placement,
    *,
    signals: Iterable[CapacitySignal],
    scores: Iterable[ScoreSample],
    now: float,
    rules: StandbyRules = DEFAULT_RULES,
) -> Risk:
    """Every rule that finds the serving spot instance at risk; none: the risk is low."""
    signals = tuple(signals)
    found = (
        recent_interruption(serving, signals, now=now, rules=rules),
        recent_capacity_error(serving, signals, now=now, rules=rules),
        young_instance(serving, now=now, rules=rules),
        falling_score(serving, scores, now=now, rules=rules),
    )
    return Risk(reasons=tuple(reason for reason in found if reason is not None))


# --- the standby ------------------------------------------------------------------------------------------------


class Capacity(StrEnum):
    SPOT = "spot"
    ON_DEMAND = "on-demand"


def wants_standby(risk: Risk, rules: StandbyRules = DEFAULT_RULES) -> frozenset[Capacity]:
    """The capacity types a standby may use at this risk: none (no standby; one held is released), spot, or spot
    and on-demand (spot first, on-demand when no spot zone has capacity)."""
    wanted = set()
    if risk.level >= rules.spot_level:
        wanted.add(Capacity.SPOT)
    if risk.level >= rules.on_demand_level:
        wanted.add(Capacity.ON_DEMAND)
    return frozenset(wanted)


def choose_standby_zone(
    candidates: Sequence[ZoneCandidate],
    *,
    serving: Placement,
    signals: Iterable[CapacitySignal],
    avoid_regions: Iterable[str] = (),
    avoid_zones: Iterable[str] = (),
    now: float,
    rules: StandbyRules = DEFAULT_RULES,
) -> list[ZoneCandidate]:
    """The zones to try for a standby, best first. Never the serving zone, nor a zone (or a region, for a
    capacity error without a zone) refused for capacity within the retry interval: trying it again so soon
    would only fail again. First the zones without a capacity signal within the notice window, then another
    region than the serving one's (and `avoid_regions`, the other replicas'): the least correlated risk; then
    the best placement score, the lowest price, the name."""
    avoid = set(avoid_zones) | {serving.zone}
    signals = tuple(signals)
    retry_since = now - rules.retry_s
    refused_zones = {s.zone for s in signals if s.kind is SignalKind.CAPACITY_ERROR and s.at > retry_since}
    refused_regions = {
        s.region for s in signals if s.kind is SignalKind.CAPACITY_ERROR and s.zone is None and s.at > retry_since
    }
    since = now - rules.notice_window_s
    signalled_zones = {s.zone for s in signals if s.at >= since}
    signalled_regions = {s.region for s in signals if s.at >= since and s.zone is None}
    same_region = {serving.region, *avoid_regions}
    kept = [
        c for c in candidates if c.zone not in avoid and c.zone not in refused_zones and c.region not in refused_regions
    ]
    return sorted(
        kept,
        key=lambda c: (
            c.zone in signalled_zones or c.region in signalled_regions,
            c.region in same_region,
            -(c.placement_score or 0),
            c.spot_price if c.spot_price is not None else float("inf"),
            c.zone,
        ),
    )

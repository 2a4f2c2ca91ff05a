"""Where to run: the one ranking of regions, a pure function with no I/O.

Used by the spot finder Lambda and by the replay benchmark, so what the replay measures is what
production runs. Order: spot placement score first (higher is better), latest spot price second
(lower is better), region name last (so equal regions always rank the same way). Exclusions with
an expiry and the operator's allow and deny lists always apply; every region left out says why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from spothub_core.models.orchestrator_tasks import LeftOutKind
from spothub_core.models.records import Exclusion


@dataclass(frozen=True)
class RegionObservation:
    """What was learned about a region for the requested instance types and capacity."""

    region: str
    placement_score: int | None  # 1-10 (GetSpotPlacementScores); None when the region was not scored
    spot_price: float | None  # latest hourly spot price, the cheapest pool; None when unknown
    spot_zone: str | None = None  # the cheapest pool's zone and instance type, when known
    spot_instance_type: str | None = None


@dataclass(frozen=True)
class RankedRegion:
    region: str
    rank: int
    placement_score: int | None
    spot_price: float | None
    reason: str


@dataclass(frozen=True)
class LeftOut:
    region: str
    reason: str
    kind: LeftOutKind


@dataclass(frozen=True)
class Ranking:
    ranked: tuple[RankedRegion, ...]
    left_out: tuple[LeftOut, ...]

    @property
    def best(self) -> RankedRegion | None:
        return self.ranked[0] if self.ranked else None

    def regions(self) -> list[str]:
        return [r.region for r in self.ranked]


def rank_regions(
    observations: Iterable[RegionObservation],
    *,
    now: float,
    exclusions: Iterable[Exclusion] = (),
    allowed: Iterable[str] | None = None,
    denied: Iterable[str] = (),
    occupied: dict[str, str] | None = None,
    prefer: str | None = None,
) -> Ranking:
    """Rank the observed regions; `allowed=None` allows every region.

    `occupied` maps regions to what already runs there (another replica): left out, so one region's
    capacity crunch never takes two replicas. `prefer` (a replacement's current region) ranks first
    when it scores as well as the best: moving then buys nothing but a cold start elsewhere.
    """
    allowed_set = None if allowed is None else set(allowed)
    denied_set = set(denied)
    active = {}
    for exclusion in exclusions:
        if exclusion.until > now and exclusion.until > active.get(exclusion.region, (0.0, ""))[0]:
            active[exclusion.region] = (exclusion.until, exclusion.reason)

    candidates: list[RegionObservation] = []
    left_out: list[LeftOut] = []
    for observation in sorted(observations, key=lambda o: o.region):
        region = observation.region
        if region in denied_set:
            left_out.append(LeftOut(region, "denied by the operator", LeftOutKind.DENIED))
        elif allowed_set is not None and region not in allowed_set:
            left_out.append(LeftOut(region, "not in the operator's allowed regions", LeftOutKind.NOT_ALLOWED))
        elif occupied and region in occupied:
            left_out.append(LeftOut(region, f"holds {occupied[region]}", LeftOutKind.OCCUPIED))
        elif region in active:
            until, reason = active[region]
            left_out.append(LeftOut(region, f"excluded for {until - now:.0f}s more: {reason}", LeftOutKind.EXCLUDED))
        else:
            candidates.append(observation)

    ordered = sorted(candidates, key=_order)
    kept = next((o for o in ordered if o.region == prefer), None)
    if kept is not None and _order(kept)[0] == _order(ordered[0])[0]:
        ordered = [kept] + [o for o in ordered if o is not kept]
    ranked = tuple(
        RankedRegion(
            o.region,
            rank,
            o.placement_score,
            o.spot_price,
            _kept_reason(o) if o is kept and rank == 1 else _reason(o, rank, ordered),
        )
        for rank, o in enumerate(ordered, start=1)
    )
    return Ranking(ranked=ranked, left_out=tuple(left_out))


def _order(observation: RegionObservation) -> tuple[int, float, str]:
    score = observation.placement_score if observation.placement_score is not None else 0
    price = observation.spot_price if observation.spot_price is not None else float("inf")
    return (-score, price, observation.region)


def _facts(observation: RegionObservation) -> tuple[str, str]:
    score = "no placement score" if observation.placement_score is None else f"score {observation.placement_score}"
    price = "no spot price" if observation.spot_price is None else f"${observation.spot_price:.4f}/h"
    return score, price


def _kept_reason(observation: RegionObservation) -> str:
    score, price = _facts(observation)
    return f"{score}, {price}, kept: scores as well as the best"


def _reason(observation: RegionObservation, rank: int, ordered: list[RegionObservation]) -> str:
    score, price = _facts(observation)
    if rank == 1:
        ties = [o for o in ordered[1:] if o.placement_score == observation.placement_score]
        decided = ", cheapest of the best-scored" if ties else ", best placement score"
        return f"{score}, {price}{decided}"
    return f"{score}, {price}"

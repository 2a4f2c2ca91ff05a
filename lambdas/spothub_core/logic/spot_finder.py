"""The spot finder's decision: observe the candidate regions, rank them, say why."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.dal.spot_market import Ec2ClientFor, observe_regions
from spothub_core.logic.ranking import LeftOut, Ranking, RegionObservation, rank_regions
from spothub_core.logic.region_reservations import held_regions, occupied_regions
from spothub_core.models.orchestrator_tasks import (
    ExclusionView,
    FindAnswer,
    FindRequest,
    LeftOutKind,
    LeftOutView,
    RankedRegionView,
    SurveyedRegion,
)
from spothub_core.models.records import Exclusion
from spothub_core.settings import HubSettings


@dataclass(frozen=True)
class SpotFinder:
    """A ranking as the deployment asks for it: the operator's choices on the switch, the regions the other
    replicas hold, the exclusions and EC2's spot data. The spot finder function answers with it, and the capacity
    handler ranks a replacement's first attempt with it in-process (spothub_core.logic.replacements)."""

    provisioning: ProvisioningStore
    exclusions: ExclusionStore
    ec2_for: Ec2ClientFor
    worker_regions: list[str]
    default_instance_types: list[str]
    scoring_region: str
    on_demand_fallback: bool

    @classmethod
    def for_hub(
        cls,
        settings: HubSettings,
        *,
        instance_types: list[str],
        provisioning: ProvisioningStore,
        exclusions: ExclusionStore,
        ec2_for: Ec2ClientFor,
    ) -> SpotFinder:
        """The ranking as the hub stack configures it (worker regions, scoring region, fallback)."""
        return cls(
            provisioning=provisioning,
            exclusions=exclusions,
            ec2_for=ec2_for,
            worker_regions=settings.worker_regions,
            default_instance_types=instance_types,
            scoring_region=settings.hub_region,
            on_demand_fallback=settings.capacity_fallback == "on-demand",
        )

    def find(self, request: FindRequest, *, now: float) -> FindAnswer:
        """Raises SpotDataUnavailable when EC2 does not answer (a caller retries)."""
        switch = self.provisioning.config()
        # The operator's choices on the switch apply unless the caller named its own.
        request = request.model_copy(
            update={
                "instance_types": request.instance_types or switch.instance_types,
                "allowed_regions": request.allowed_regions or switch.allowed_regions,
                "denied_regions": request.denied_regions or switch.denied_regions,
            }
        )
        occupied: dict[str, str] = {}
        held: dict[str, list[str]] = {}
        if request.survey or not request.share_regions:
            replicas, reservations = self.provisioning.replicas(), self.provisioning.reservations()
            if not request.share_regions:
                occupied = occupied_regions(request.replica_id, replicas, reservations)
            if request.survey:
                held = held_regions(replicas, reservations)
        return find_regions(
            request,
            occupied=occupied,
            held=held,
            on_demand_fallback=self.on_demand_fallback,
            worker_regions=self.worker_regions,
            default_instance_types=self.default_instance_types,
            scoring_region=self.scoring_region,
            ec2_for=self.ec2_for,
            exclusions=self.exclusions,
            now=now,
        )


def find_regions(
    request: FindRequest,
    *,
    worker_regions: list[str],
    default_instance_types: list[str],
    scoring_region: str,
    ec2_for: Ec2ClientFor,
    exclusions: ExclusionStore,
    now: float,
    occupied: dict[str, str] | None = None,
    held: dict[str, list[str]] | None = None,
    on_demand_fallback: bool = False,
) -> FindAnswer:
    """Rank the regions for spot; with `on_demand_fallback`, also name the region an on-demand
    launch would use when no spot region is left (the best one ignoring spot exclusions), unless the
    request is `spot_only`. A `survey` request also gets every region's facts (`held`: the replicas
    holding each region)."""
    instance_types = request.instance_types or default_instance_types
    unknown = sorted(set(request.allowed_regions or []) - set(worker_regions))
    observations = observe_regions(
        ec2_for,
        scoring_region=scoring_region,
        regions=list(worker_regions),
        instance_types=instance_types,
        target_capacity=request.target_capacity,
    )
    common = {
        "now": now,
        "allowed": request.allowed_regions,
        "denied": request.denied_regions,
        "occupied": occupied,
        "prefer": request.prefer_region,
    }
    standing = exclusions.active(now)
    ranking = rank_regions(observations, exclusions=standing, **common)
    on_demand_region = None
    if ranking.best is None and on_demand_fallback and not request.spot_only:
        unrestricted = rank_regions(observations, **common)
        on_demand_region = unrestricted.best.region if unrestricted.best else None
    return FindAnswer(
        best=ranking.best.region if ranking.best else None,
        reason=ranking.best.reason if ranking.best else _no_spot_reason(ranking.left_out, on_demand_region),
        on_demand_region=on_demand_region,
        ranked=[RankedRegionView(**asdict(r)) for r in ranking.ranked],
        left_out=[LeftOutView(**asdict(o)) for o in ranking.left_out]
        + [
            LeftOutView(region=r, reason="not a worker region of this deployment", kind=LeftOutKind.UNKNOWN_REGION)
            for r in unknown
        ],
        instance_types=instance_types,
        target_capacity=request.target_capacity,
        observed_at=now,
        regions=_survey(request, observations, ranking, standing=standing, held=held or {}, now=now)
        if request.survey
        else None,
    )


def _survey(
    request: FindRequest,
    observations: list[RegionObservation],
    ranking: Ranking,
    *,
    standing: list[Exclusion],
    held: dict[str, list[str]],
    now: float,
) -> list[SurveyedRegion]:
    """Every observed region, ranked ones first (by rank), then the ones left out (by name)."""
    ranked = {r.region: r for r in ranking.ranked}
    left_out = {o.region: o for o in ranking.left_out}
    longest: dict[str, Exclusion] = {}
    for exclusion in standing:
        if exclusion.until > now and exclusion.until > getattr(longest.get(exclusion.region), "until", 0.0):
            longest[exclusion.region] = exclusion
    allowed = None if request.allowed_regions is None else set(request.allowed_regions)
    surveyed = []
    for observation in observations:
        region = observation.region
        place = ranked.get(region)
        out = left_out.get(region)
        exclusion = longest.get(region)
        surveyed.append(
            SurveyedRegion(
                region=region,
                rank=place.rank if place else None,
                placement_score=observation.placement_score,
                spot_price=observation.spot_price,
                spot_zone=observation.spot_zone,
                spot_instance_type=observation.spot_instance_type,
                reason=place.reason if place else out.reason if out else "not ranked",
                left_out=out.kind if out else None,
                exclusion=ExclusionView(until=exclusion.until, kind=exclusion.kind, reason=exclusion.reason)
                if exclusion
                else None,
                denied=region in request.denied_regions,
                allowed=allowed is None or region in allowed,
                replicas=held.get(region, []),
            )
        )
    return sorted(surveyed, key=lambda r: (r.rank is None, r.rank or 0, r.region))


def _no_spot_reason(left_out: tuple[LeftOut, ...], on_demand_region: str | None) -> str:
    why = "; ".join(f"{o.region}: {o.reason}" for o in left_out) or "no worker region answered"
    if on_demand_region:
        return f"no spot region left ({why}); on-demand in {on_demand_region}"
    return f"no spot region left ({why})"

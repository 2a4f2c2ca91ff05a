"""The spot finder's decision: observe the candidate regions, rank them, say why."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.dal.spot_market import Ec2ClientFor, observe_regions
from spothub_core.logic.ranking import rank_regions


class FindRequest(BaseModel):
    """What the orchestrator asks; everything optional, defaults from the deployment and the switch."""

    model_config = ConfigDict(extra="forbid")

    instance_types: list[str] | None = Field(None, min_length=1)
    target_capacity: int = Field(1, ge=1, le=1000)
    allowed_regions: list[str] | None = None
    denied_regions: list[str] = Field(default_factory=list)
    # The replica being placed: regions holding the other replicas are left out.
    replica_id: str | None = None
    # A replacement's current region, kept when it scores as well as the best.
    prefer_region: str | None = None
    # Spot or nothing (a replica on on-demand looking for spot again): no on-demand region is offered.
    spot_only: bool = False

    @field_validator("instance_types", "allowed_regions", "denied_regions")
    @classmethod
    def _no_blanks(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not item.strip() for item in value):
            raise ValueError("must not contain empty names")
        return value


# A replica in these states holds no region: what it reserved was left behind (a release that never ran).
NOT_PLACED = ("stopped", "failed")


def occupied_regions(
    replica_id: str | None, replicas: list[dict[str, Any]], reservations: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """Regions that hold a replica other than `replica_id`: where it serves, where it is being launched, and
    what it reserved (which a launch does before it is dispatched, so replicas ranking at once see it)."""
    others = {r["replica_id"]: r for r in replicas if r["replica_id"] != replica_id}
    occupied = {
        r["region"]: r["replica_id"]
        for r in others.values()
        if r.get("region") and r.get("status") in ("serving", "replacing")
    }
    occupied.update(
        {
            r["target_region"]: r["replica_id"]
            for r in others.values()
            if r.get("target_region") and r.get("status") != "stopped"
        }
    )
    occupied.update(
        {
            region: held["replica_id"]
            for region, held in reservations.items()
            if held["replica_id"] in others and others[held["replica_id"]].get("status") not in NOT_PLACED
        }
    )
    return occupied


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
    on_demand_fallback: bool = False,
) -> dict[str, Any]:
    """Rank the regions for spot; with `on_demand_fallback`, also name the region an on-demand
    launch would use when no spot region is left (the best one ignoring spot exclusions), unless the
    request is `spot_only`."""
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
    ranking = rank_regions(observations, exclusions=exclusions.active(now), **common)
    on_demand_region = None
    if ranking.best is None and on_demand_fallback and not request.spot_only:
        unrestricted = rank_regions(observations, **common)
        on_demand_region = unrestricted.best.region if unrestricted.best else None
    return {
        "best": ranking.best.region if ranking.best else None,
        "reason": ranking.best.reason if ranking.best else _no_spot_reason(ranking.left_out, on_demand_region),
        "on_demand_region": on_demand_region,
        "ranked": [asdict(r) for r in ranking.ranked],
        "left_out": [asdict(r) for r in ranking.left_out]
        + [{"region": r, "reason": "not a worker region of this deployment"} for r in unknown],
        "instance_types": instance_types,
        "target_capacity": request.target_capacity,
        "observed_at": now,
    }


def _no_spot_reason(left_out: Any, on_demand_region: str | None) -> str:
    why = "; ".join(f"{o.region}: {o.reason}" for o in left_out) or "no worker region answered"
    if on_demand_region:
        return f"no spot region left ({why}); on-demand in {on_demand_region}"
    return f"no spot region left ({why})"

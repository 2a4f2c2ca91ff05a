"""What EC2 says about spot capacity per availability zone: placement scores with SingleAvailabilityZone (one call
over all regions), named by zone name. The warm standby's risk rule (a falling score in the serving region) and its
choice of zone read them (spothub_core.logic.standby_watch)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.spot_market import Ec2ClientFor, SpotDataUnavailable, cheapest_spot_pool
from spothub_core.dal.state_table import reason_of


def zone_placement_scores(
    ec2_for: Ec2ClientFor, *, scoring_region: str, regions: list[str], instance_types: list[str], target_capacity: int
) -> dict[tuple[str, str], int]:
    """The placement score (1-10) of each zone of `regions`, by (region, zone name). EC2 names zones by their id
    (use1-az1: the same place in every account); each region's ids are turned into this account's names."""
    if not regions or not instance_types:
        return {}
    request: dict[str, Any] = {
        "InstanceTypes": instance_types,
        "TargetCapacity": target_capacity,
        "TargetCapacityUnitType": "units",
        "SingleAvailabilityZone": True,
        "RegionNames": regions,
    }
    by_id: dict[tuple[str, str], int] = {}
    try:
        while True:
            page = ec2_for(scoring_region).get_spot_placement_scores(**request)
            for item in page.get("SpotPlacementScores", []):
                if item.get("AvailabilityZoneId"):
                    by_id[(item["Region"], item["AvailabilityZoneId"])] = int(item["Score"])
            if not page.get("NextToken"):
                break
            request["NextToken"] = page["NextToken"]
    except (ClientError, BotoCoreError) as exc:
        raise SpotDataUnavailable(f"GetSpotPlacementScores (per zone) failed: {reason_of(exc)}") from exc
    names = {region: zone_names(ec2_for(region)) for region in sorted({region for region, _ in by_id})}
    return {(region, names[region].get(zone_id, zone_id)): score for (region, zone_id), score in by_id.items()}


def zone_names(ec2: Any) -> dict[str, str]:
    """The region's zone ids to this account's zone names (a name is also its own key: a region that answers
    with names already maps them to themselves)."""
    try:
        zones = ec2.describe_availability_zones(AllAvailabilityZones=False)["AvailabilityZones"]
    except (ClientError, BotoCoreError) as exc:
        raise SpotDataUnavailable(f"DescribeAvailabilityZones failed: {reason_of(exc)}") from exc
    names = {z["ZoneId"]: z["ZoneName"] for z in zones if z.get("ZoneId")}
    return {**names, **{z["ZoneName"]: z["ZoneName"] for z in zones}}


def observe_zones(
    ec2_for: Ec2ClientFor, *, scoring_region: str, regions: list[str], instance_types: list[str], target_capacity: int
) -> tuple[dict[tuple[str, str], int], dict[str, float | None]]:
    """The zones' placement scores and, beside them, each region's cheapest spot price (what a standby's zone is
    chosen by). Raises SpotDataUnavailable."""
    scores = zone_placement_scores(
        ec2_for,
        scoring_region=scoring_region,
        regions=regions,
        instance_types=instance_types,
        target_capacity=target_capacity,
    )
    prices: dict[str, float | None] = {}
    for region in sorted({region for region, _ in scores}):
        cheapest = cheapest_spot_pool(ec2_for(region), instance_types)
        prices[region] = cheapest[0] if cheapest else None
    return scores, prices

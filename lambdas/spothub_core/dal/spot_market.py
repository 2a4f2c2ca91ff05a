"""What EC2 says about spot capacity: placement scores (one call over all regions) and the latest
spot prices (one call per region, in parallel)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.logic.ranking import RegionObservation

Ec2ClientFor = Callable[[str], Any]


class SpotDataUnavailable(Exception):
    """EC2 did not answer for spot data; a caller (the state machine) retries with backoff."""


def observe_regions(
    ec2_for: Ec2ClientFor,
    *,
    scoring_region: str,
    regions: list[str],
    instance_types: list[str],
    target_capacity: int,
) -> list[RegionObservation]:
    if not regions:
        return []
    scores = placement_scores(ec2_for(scoring_region), regions, instance_types, target_capacity)
    with ThreadPoolExecutor(max_workers=min(8, len(regions))) as pool:
        prices = dict(
            zip(regions, pool.map(lambda r: cheapest_spot_pool(ec2_for(r), instance_types), regions), strict=True)
        )
    return [
        RegionObservation(region, scores.get(region), *(prices[region] or (None, None, None))) for region in regions
    ]


def placement_scores(ec2: Any, regions: list[str], instance_types: list[str], target_capacity: int) -> dict[str, int]:
    request: dict[str, Any] = {
        "InstanceTypes": instance_types,
        "TargetCapacity": target_capacity,
        "TargetCapacityUnitType": "units",
        "SingleAvailabilityZone": False,
        "RegionNames": regions,
    }
    scores: dict[str, int] = {}
    try:
        while True:
            page = ec2.get_spot_placement_scores(**request)
            for item in page.get("SpotPlacementScores", []):
                scores[item["Region"]] = max(scores.get(item["Region"], 0), int(item["Score"]))
            if not page.get("NextToken"):
                return scores
            request["NextToken"] = page["NextToken"]
    except (ClientError, BotoCoreError) as exc:
        raise SpotDataUnavailable(f"GetSpotPlacementScores failed: {reason_of(exc)}") from exc


def cheapest_spot_pool(ec2: Any, instance_types: list[str]) -> tuple[float, str, str] | None:
    """The cheapest current spot price over the region's zones and the given types (Linux/UNIX), with its
    zone and type; None when EC2 has no price for them."""
    try:
        history = ec2.describe_spot_price_history(
            InstanceTypes=instance_types,
            ProductDescriptions=["Linux/UNIX", "Linux/UNIX (Amazon VPC)"],
            StartTime=datetime.now(UTC),
        )["SpotPriceHistory"]
    except (ClientError, BotoCoreError) as exc:
        raise SpotDataUnavailable(f"DescribeSpotPriceHistory failed: {reason_of(exc)}") from exc
    latest: dict[tuple[str, str], tuple[Any, float]] = {}
    for entry in history:
        key = (entry["AvailabilityZone"], entry["InstanceType"])
        if key not in latest or entry["Timestamp"] > latest[key][0]:
            latest[key] = (entry["Timestamp"], float(entry["SpotPrice"]))
    # Equal prices: the first zone and type by name, so the same market always names the same pool.
    return min(((price, zone, kind) for (zone, kind), (_, price) in latest.items()), default=None)

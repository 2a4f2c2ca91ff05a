"""The spot finder's decision for a spot-only request (a replica on on-demand looking for spot again): spot
or nothing, never an on-demand region.

The exclusions are in moto's DynamoDB and the spot prices come from moto's EC2; moto has no
GetSpotPlacementScores, so the scoring client answers it at the botocore boundary.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.logic.spot_finder import find_regions
from spothub_core.models.orchestrator_tasks import FindRequest
from tests.integration.conftest import ApiCalls

NOW = 1_700_000_000.0
WEST, EU = "us-west-2", "eu-west-1"
TYPES = ["g5.xlarge"]


@pytest.fixture
def clients(table: Any) -> dict[str, Any]:
    """One EC2 client per region; the hub region's answers placement scores: eu-west-1 9, us-west-2 5."""
    found = {region: boto3.client("ec2", region_name=region) for region in ("us-east-1", WEST, EU)}
    ApiCalls(found["us-east-1"], "GetSpotPlacementScores").answer(
        "GetSpotPlacementScores",
        {"SpotPlacementScores": [{"Region": EU, "Score": 9}, {"Region": WEST, "Score": 5}]},
    )
    return found


@pytest.fixture
def exclusions(table: Any) -> ExclusionStore:
    return ExclusionStore(table)


def find(clients: dict[str, Any], exclusions: ExclusionStore, **request: Any) -> dict[str, Any]:
    """The spot finder's answer, as JSON."""
    answer = find_regions(
        FindRequest.model_validate(request),
        worker_regions=[WEST, EU],
        default_instance_types=TYPES,
        scoring_region="us-east-1",
        ec2_for=clients.__getitem__,
        exclusions=exclusions,
        now=NOW,
        on_demand_fallback=True,
    )
    return answer.model_dump(mode="json")


def test_spot_only_ranks_spot_regions_as_any_request(clients: dict[str, Any], exclusions: ExclusionStore) -> None:
    found = find(clients, exclusions, replica_id="replica-0", spot_only=True)
    assert found["best"] == EU
    assert [r["region"] for r in found["ranked"]] == [EU, WEST]
    assert found["on_demand_region"] is None


def test_spot_only_honours_the_exclusions(clients: dict[str, Any], exclusions: ExclusionStore) -> None:
    exclusions.exclude(EU, NOW + 900, "capacity: InsufficientInstanceCapacity")
    found = find(clients, exclusions, spot_only=True)
    assert found["best"] == WEST
    assert [o["region"] for o in found["left_out"]] == [EU]


def test_with_no_spot_region_left_spot_only_offers_no_on_demand_region(
    clients: dict[str, Any], exclusions: ExclusionStore
) -> None:
    for region in (WEST, EU):
        exclusions.exclude(region, NOW + 900, "capacity: InsufficientInstanceCapacity")
    # The same request without spot_only falls back to on-demand in the best region.
    assert find(clients, exclusions)["on_demand_region"] == EU
    found = find(clients, exclusions, replica_id="replica-0", spot_only=True)
    assert (found["best"], found["on_demand_region"]) == (None, None)
    assert found["reason"].startswith("no spot region left (")
    assert "on-demand" not in found["reason"]


def test_spot_only_defaults_to_false_and_must_be_a_boolean() -> None:
    assert FindRequest.model_validate({}).spot_only is False
    with pytest.raises(ValueError, match="spot_only"):
        FindRequest.model_validate({"spot_only": "maybe"})

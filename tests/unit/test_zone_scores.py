"""Per-zone placement scores (spothub_core.dal.zone_scores): one SingleAvailabilityZone call, pages followed, zone
ids named as the account names them, EC2's refusal a SpotDataUnavailable."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from spothub_core.dal.spot_market import SpotDataUnavailable
from spothub_core.dal.zone_scores import zone_placement_scores

ZONES = {
    "us-east-1": [("use1-az1", "us-east-1b"), ("use1-az2", "us-east-1a")],
    "us-west-2": [("usw2-az1", "us-west-2a")],
}


class FakeEc2:
    def __init__(self, region: str, pages: list[dict[str, Any]] | None = None, error: str | None = None) -> None:
        self.region, self.pages, self.error = region, pages or [], error
        self.requests: list[dict[str, Any]] = []

    def get_spot_placement_scores(self, **request: Any) -> dict[str, Any]:
        if self.error:
            raise ClientError({"Error": {"Code": self.error, "Message": "no"}}, "GetSpotPlacementScores")
        self.requests.append(request)
        return self.pages[len(self.requests) - 1]

    def describe_availability_zones(self, **_: Any) -> dict[str, Any]:
        return {"AvailabilityZones": [{"ZoneId": i, "ZoneName": n} for i, n in ZONES[self.region]]}


def test_scores_are_per_zone_and_named_as_the_account_names_zones() -> None:
    pages = [
        {
            "SpotPlacementScores": [
                {"Region": "us-east-1", "AvailabilityZoneId": "use1-az1", "Score": 9},
                {"Region": "us-west-2", "AvailabilityZoneId": "usw2-az1", "Score": 3},
            ],
            "NextToken": "t",
        },
        {"SpotPlacementScores": [{"Region": "us-east-1", "AvailabilityZoneId": "use1-az2", "Score": 5}]},
    ]
    clients = {"us-east-1": FakeEc2("us-east-1", pages), "us-west-2": FakeEc2("us-west-2")}
    scores = zone_placement_scores(
        clients.__getitem__,
        scoring_region="us-east-1",
        regions=["us-east-1", "us-west-2"],
        instance_types=["g5.xlarge"],
        target_capacity=1,
    )
    assert scores == {("us-east-1", "us-east-1b"): 9, ("us-east-1", "us-east-1a"): 5, ("us-west-2", "us-west-2a"): 3}
    first, second = clients["us-east-1"].requests
    assert first["SingleAvailabilityZone"] is True and "NextToken" not in first
    assert second["NextToken"] == "t"


def test_a_refusal_is_spot_data_unavailable() -> None:
    with pytest.raises(SpotDataUnavailable, match="UnauthorizedOperation"):
        zone_placement_scores(
            lambda region: FakeEc2(region, error="UnauthorizedOperation"),
            scoring_region="us-east-1",
            regions=["us-east-1"],
            instance_types=["g5.xlarge"],
            target_capacity=1,
        )

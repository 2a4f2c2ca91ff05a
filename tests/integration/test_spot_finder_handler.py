"""The spot finder through its Lambda entry point, as the orchestrator's FindRegion step invokes it.

DynamoDB (the switch, the replicas, the exclusions) and EC2's spot price history come from moto. moto has
no GetSpotPlacementScores (the sandbox's market answers it there), so the scoring region's client is
answered at the botocore boundary with the scores a test sets; the calls still go through botocore's
parameter validation, and every other EC2 call reaches moto.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError

from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.dal.provisioning import ProvisioningStore
from tests.integration.conftest import (
    HUB_ENVIRONMENT,
    HUB_REGION,
    STATE_TABLE_KEYS,
    WORKER_REGIONS,
    ApiCalls,
    config,
    load_handler,
    set_environment,
)
from tests.lambda_events import FakeLambdaContext

TABLE = HUB_ENVIRONMENT["SPOTHUB_STATE_TABLE"]
DEFAULT_TYPES = ["g5.xlarge", "g6.xlarge"]
WEST, EU = WORKER_REGIONS
MOTO_SPOT_PRICE = 0.00001  # moto's fixed spot price, every zone and type


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    set_environment(
        monkeypatch,
        {
            **HUB_ENVIRONMENT,
            "POWERTOOLS_SERVICE_NAME": "spothub-spot-finder",
            "SPOTHUB_INSTANCE_TYPES": ",".join(DEFAULT_TYPES),
        },
    )
    with mock_aws():
        boto3.client("dynamodb").create_table(TableName=TABLE, **STATE_TABLE_KEYS)
        yield load_handler("spot_finder.handler")


@pytest.fixture
def scores(handler: ModuleType) -> ApiCalls:
    """GetSpotPlacementScores, asked of the hub region: eu-west-1 scores 9, us-west-2 scores 5."""
    calls = ApiCalls(handler.ec2_for(HUB_REGION), "GetSpotPlacementScores")
    placement_scores(calls, {EU: 9, WEST: 5})
    return calls


def placement_scores(calls: ApiCalls, by_region: dict[str, int]) -> None:
    calls.answer(
        "GetSpotPlacementScores",
        {"SpotPlacementScores": [{"Region": region, "Score": score} for region, score in by_region.items()]},
    )


@pytest.fixture
def store(handler: ModuleType) -> ProvisioningStore:
    return ProvisioningStore(boto3.resource("dynamodb").Table(TABLE))


@pytest.fixture
def exclusions(handler: ModuleType) -> ExclusionStore:
    return ExclusionStore(boto3.resource("dynamodb").Table(TABLE))


def find(handler: ModuleType, request: dict[str, Any] | None = None) -> dict[str, Any]:
    return handler.lambda_handler(request, FakeLambdaContext())


def test_the_orchestrators_request_gets_a_ranking_with_reasons(handler: ModuleType, scores: ApiCalls) -> None:
    result = find(handler, {"replica_id": "replica-0", "prefer_region": None})
    assert result["best"] == EU
    assert result["reason"] == result["ranked"][0]["reason"]
    assert result["ranked"] == [
        {
            "region": EU,
            "rank": 1,
            "placement_score": 9,
            "spot_price": MOTO_SPOT_PRICE,
            "reason": "score 9, $0.0000/h, best placement score",
        },
        {
            "region": WEST,
            "rank": 2,
            "placement_score": 5,
            "spot_price": MOTO_SPOT_PRICE,
            "reason": "score 5, $0.0000/h",
        },
    ]
    assert result["left_out"] == []
    assert result["on_demand_region"] is None
    assert (result["instance_types"], result["target_capacity"]) == (DEFAULT_TYPES, 1)


def test_the_scores_are_asked_once_for_every_worker_region_and_the_types(handler: ModuleType, scores: ApiCalls) -> None:
    find(handler, {})
    (asked,) = scores.of("GetSpotPlacementScores")
    assert asked["InstanceTypes"] == DEFAULT_TYPES
    assert sorted(asked["RegionNames"]) == sorted(WORKER_REGIONS)
    assert asked["TargetCapacity"] == 1


def test_an_empty_invocation_uses_the_deployments_defaults(handler: ModuleType, scores: ApiCalls) -> None:
    result = find(handler, None)
    assert result["best"] == EU
    assert result["instance_types"] == DEFAULT_TYPES


def test_the_callers_instance_types_and_capacity_are_scored(handler: ModuleType, scores: ApiCalls) -> None:
    result = find(handler, {"instance_types": ["p4d.24xlarge"], "target_capacity": 2})
    (asked,) = scores.of("GetSpotPlacementScores")
    assert (asked["InstanceTypes"], asked["TargetCapacity"]) == (["p4d.24xlarge"], 2)
    assert (result["instance_types"], result["target_capacity"]) == (["p4d.24xlarge"], 2)


def test_the_switchs_instance_types_and_allowed_regions_apply(
    handler: ModuleType, scores: ApiCalls, store: ProvisioningStore
) -> None:
    switch = config(status="enabled", generation=1, instance_types=["g6.xlarge"], allowed_regions=[WEST])
    assert store.write_config(switch, expected_generation=0)
    result = find(handler, {"replica_id": "replica-0"})
    assert scores.of("GetSpotPlacementScores")[0]["InstanceTypes"] == ["g6.xlarge"]
    assert result["best"] == WEST
    assert result["left_out"] == [
        {"region": EU, "reason": "not in the operator's allowed regions", "kind": "not-allowed"}
    ]


def test_a_region_denied_by_the_caller_is_left_out_with_the_reason(handler: ModuleType, scores: ApiCalls) -> None:
    result = find(handler, {"denied_regions": [EU]})
    assert [r["region"] for r in result["ranked"]] == [WEST]
    assert result["left_out"] == [{"region": EU, "reason": "denied by the operator", "kind": "denied"}]


def test_a_region_holding_another_replica_is_left_out(
    handler: ModuleType, scores: ApiCalls, store: ProvisioningStore
) -> None:
    assert store.start_placing("replica-1", generation=1, execution="replica-1-g1", now=time.time())
    store.update_replica("replica-1", {"status": "serving", "region": EU, "instance_id": "i-0eu"})
    result = find(handler, {"replica_id": "replica-0"})
    assert result["best"] == WEST
    assert result["left_out"] == [{"region": EU, "reason": "holds replica-1", "kind": "occupied"}]
    # The replica being placed does not keep itself out of its own region.
    assert find(handler, {"replica_id": "replica-1"})["best"] == EU


def test_a_region_another_replica_reserved_is_left_out_before_it_launches_there(
    handler: ModuleType, scores: ApiCalls, store: ProvisioningStore
) -> None:
    for replica_id in ("replica-0", "replica-1"):
        assert store.start_placing(replica_id, generation=1, execution=f"{replica_id}-g1", now=time.time())
    # replica-1 reserved the best region a moment ago; its launch is not dispatched yet (no target noted).
    assert store.reserve_region(EU, replica_id="replica-1", launch_id="replica-1-g1-0", now=time.time())
    result = find(handler, {"replica_id": "replica-0"})
    assert result["best"] == WEST
    assert result["left_out"] == [{"region": EU, "reason": "holds replica-1", "kind": "occupied"}]
    # Left behind by a replica since stopped, the reservation keeps no one out.
    store.replica_status("replica-1", "stopped")
    assert find(handler, {"replica_id": "replica-0"})["best"] == EU


def test_a_batch_job_shares_the_regions_that_hold_replicas(
    handler: ModuleType, scores: ApiCalls, store: ProvisioningStore
) -> None:
    assert store.start_placing("replica-1", generation=1, execution="replica-1-g1", now=time.time())
    assert store.reserve_region(EU, replica_id="replica-1", launch_id="replica-1-g1-0", now=time.time())
    result = find(handler, {"share_regions": True, "target_capacity": 3})
    assert result["best"] == EU
    assert result["left_out"] == []


def test_a_survey_gives_every_regions_facts_and_who_holds_it(
    handler: ModuleType, scores: ApiCalls, store: ProvisioningStore, exclusions: ExclusionStore
) -> None:
    """GET /regions's request: every region on its own merits, with the pool of its price, its exclusion (even
    behind the operator's lists) and its replicas; the orchestrator's answer carries no survey."""
    assert store.start_placing("replica-1", generation=1, execution="replica-1-g1", now=time.time())
    store.update_replica("replica-1", {"status": "serving", "region": EU, "instance_id": "i-0eu"})
    until = float(int(time.time()) + 900)
    assert exclusions.exclude(WEST, until, "capacity: InsufficientInstanceCapacity no g5", kind="capacity")
    result = find(handler, {"share_regions": True, "survey": True})
    assert result["best"] == EU
    excluded = {"until": until, "kind": "capacity", "reason": "capacity: InsufficientInstanceCapacity no g5"}
    assert result["regions"] == [
        {
            "region": EU,
            "rank": 1,
            "placement_score": 9,
            "spot_price": MOTO_SPOT_PRICE,
            "spot_zone": "eu-west-1a",
            "spot_instance_type": "g5.xlarge",
            "reason": "score 9, $0.0000/h, best placement score",
            "left_out": None,
            "exclusion": None,
            "denied": False,
            "allowed": True,
            "replicas": ["replica-1"],
        },
        {
            "region": WEST,
            "rank": None,
            "placement_score": 5,
            "spot_price": MOTO_SPOT_PRICE,
            "spot_zone": "us-west-2a",
            "spot_instance_type": "g5.xlarge",
            "reason": result["left_out"][0]["reason"],
            "left_out": "excluded",
            "exclusion": excluded,
            "denied": False,
            "allowed": True,
            "replicas": [],
        },
    ]
    denied = find(handler, {"share_regions": True, "survey": True, "denied_regions": [WEST]})["regions"][1]
    assert (denied["left_out"], denied["denied"], denied["exclusion"]) == ("denied", True, excluded)
    assert find(handler, {"replica_id": "replica-0"})["regions"] is None


def test_a_replacement_keeps_its_region_when_it_scores_as_well(handler: ModuleType, scores: ApiCalls) -> None:
    placement_scores(scores, {EU: 7, WEST: 7})
    result = find(handler, {"replica_id": "replica-0", "prefer_region": WEST})
    assert result["best"] == WEST
    assert result["ranked"][0]["reason"].endswith("kept: scores as well as the best")


def test_excluded_regions_leave_on_demand_as_the_fallback(
    handler: ModuleType, scores: ApiCalls, exclusions: ExclusionStore
) -> None:
    for region in WORKER_REGIONS:
        exclusions.exclude(region, time.time() + 900, "capacity: InsufficientInstanceCapacity")
    result = find(handler, {"replica_id": "replica-0"})
    assert result["best"] is None
    assert result["ranked"] == []
    assert result["on_demand_region"] == EU
    assert result["reason"].startswith("no spot region left (")
    assert result["reason"].endswith(f"; on-demand in {EU}")
    assert {o["region"] for o in result["left_out"]} == set(WORKER_REGIONS)
    assert all("InsufficientInstanceCapacity" in o["reason"] for o in result["left_out"])


def test_the_spot_watchs_look_gets_no_on_demand_region(
    handler: ModuleType, scores: ApiCalls, exclusions: ExclusionStore
) -> None:
    # LookForSpot's request, from a replica serving on on-demand: spot or nothing.
    for region in WORKER_REGIONS:
        exclusions.exclude(region, time.time() + 900, "capacity: InsufficientInstanceCapacity")
    result = find(handler, {"replica_id": "replica-0", "spot_only": True})
    assert (result["best"], result["on_demand_region"]) == (None, None)
    assert "on-demand" not in result["reason"]


def test_an_allowed_region_outside_the_deployment_is_named_in_left_out(handler: ModuleType, scores: ApiCalls) -> None:
    result = find(handler, {"allowed_regions": [WEST, "ap-south-1"]})
    assert result["best"] == WEST
    assert {
        "region": "ap-south-1",
        "reason": "not a worker region of this deployment",
        "kind": "unknown-region",
    } in result["left_out"]


def test_ec2_refusing_the_scores_raises_the_error_the_orchestrator_retries(handler: ModuleType) -> None:
    calls = ApiCalls(handler.ec2_for(HUB_REGION), "GetSpotPlacementScores")
    calls.answer("GetSpotPlacementScores", error=("RequestLimitExceeded", "Request limit exceeded."))
    with pytest.raises(Exception, match="GetSpotPlacementScores failed: RequestLimitExceeded") as raised:
        find(handler, {})
    assert type(raised.value).__name__ == "SpotDataUnavailable"  # the error name FindRegion retries


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        pytest.param({"colour": "blue"}, "colour", id="unknown-field"),
        pytest.param({"target_capacity": 0}, "target_capacity", id="capacity-below-1"),
        pytest.param({"target_capacity": "lots"}, "target_capacity", id="capacity-not-a-number"),
        pytest.param({"instance_types": []}, "instance_types", id="no-types"),
        pytest.param({"instance_types": ["  "]}, "instance_types", id="blank-type"),
        pytest.param({"denied_regions": "us-west-2"}, "denied_regions", id="denied-not-a-list"),
        pytest.param({"replica_id": 7}, "replica_id", id="replica-not-a-string"),
    ],
)
def test_a_bad_request_raises_naming_the_field_before_asking_ec2(
    handler: ModuleType, scores: ApiCalls, request_: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        find(handler, request_)
    assert field in {str(error["loc"][0]) for error in raised.value.errors()}
    assert scores.calls == []

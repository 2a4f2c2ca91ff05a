"""The spot finder Lambda in the sandbox: real EC2 calls answered by the simulated market."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3

from spothub.sandbox.sandbox import Sandbox
from spothub_core.dal.exclusions import ExclusionStore


def find(sandbox: Sandbox, request: dict[str, Any] | None = None) -> dict[str, Any]:
    function = next(
        r["PhysicalResourceId"]
        for r in sandbox.client("cloudformation").list_stack_resources(StackName=sandbox.hub.stack_name)[
            "StackResourceSummaries"
        ]
        if r["ResourceType"] == "AWS::Lambda::Function" and "SpotFinder" in r["LogicalResourceId"]
    )
    response = sandbox.client("lambda").invoke(FunctionName=function, Payload=json.dumps(request or {}).encode())
    payload = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, payload
    return payload


def empty_region(sandbox: Sandbox, region: str) -> None:
    for pool in sandbox.market.pools(region):
        sandbox.market.set_zone(pool.zone, pool.instance_type, capacity=0)


def test_capacity_only_in_the_second_region_ranks_it_first(fresh_sandbox: Sandbox) -> None:
    empty_region(fresh_sandbox, "us-west-2")
    result = find(fresh_sandbox)
    assert result["best"] == "eu-west-1"
    assert [r["region"] for r in result["ranked"]] == ["eu-west-1", "us-west-2"]
    assert result["ranked"][0]["placement_score"] > result["ranked"][1]["placement_score"]
    assert result["ranked"][0]["reason"].startswith(f"score {result['ranked'][0]['placement_score']}")


def test_on_a_tie_of_scores_the_cheaper_region_wins(fresh_sandbox: Sandbox) -> None:
    for pool in fresh_sandbox.market.pools():
        price = 0.40 if pool.region == "us-west-2" else 0.90
        fresh_sandbox.market.set_zone(pool.zone, pool.instance_type, spot_price=price, placement_score=8)
    result = find(fresh_sandbox)
    assert result["best"] == "us-west-2"
    assert result["ranked"][0]["spot_price"] == 0.40
    assert "cheapest of the best-scored" in result["ranked"][0]["reason"]


def test_an_exclusion_and_the_operators_lists_leave_regions_out_with_reasons(fresh_sandbox: Sandbox) -> None:
    table_name = fresh_sandbox.hub.outputs["StateTableName"]
    table = boto3.resource(
        "dynamodb",
        region_name=fresh_sandbox.hub.region,
        endpoint_url=fresh_sandbox.aws_endpoint_url,
        **fresh_sandbox.credentials(),
    ).Table(table_name)
    ExclusionStore(table).exclude("eu-west-1", time.time() + 900, "InsufficientInstanceCapacity")
    result = find(fresh_sandbox)
    assert result["best"] == "us-west-2"
    assert result["left_out"][0]["region"] == "eu-west-1"
    assert result["left_out"][0]["reason"].endswith("InsufficientInstanceCapacity")

    denied = find(fresh_sandbox, {"denied_regions": ["us-west-2"]})
    assert denied["best"] is None
    assert {r["region"] for r in denied["left_out"]} == {"eu-west-1", "us-west-2"}


def test_a_bad_request_is_a_function_error_naming_the_field(fresh_sandbox: Sandbox) -> None:
    function = next(
        r["PhysicalResourceId"]
        for r in fresh_sandbox.client("cloudformation").list_stack_resources(StackName=fresh_sandbox.hub.stack_name)[
            "StackResourceSummaries"
        ]
        if "SpotFinder" in r["LogicalResourceId"] and r["ResourceType"] == "AWS::Lambda::Function"
    )
    response = fresh_sandbox.client("lambda").invoke(
        FunctionName=function, Payload=json.dumps({"target_capacity": 0}).encode()
    )
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Payload"].read())
    assert error["errorType"] == "ValidationError"
    assert "target_capacity" in error["errorMessage"]

"""GET /regions in the sandbox: the platform status function asks the deployed spot finder (its role may invoke
that function and nothing else: the session's IAM enforcement fails the test on any refusal), and the finder
ranks the two worker regions from the emulated market's scores and prices, changing nothing."""

from __future__ import annotations

import time
from typing import Any

import boto3

from spothub.sandbox.sandbox import Sandbox
from spothub_core.dal.exclusions import ExclusionStore


def regions(sandbox: Sandbox) -> dict[str, Any]:
    response = sandbox.request("GET", "regions")
    assert response.status_code == 200, response.text
    return response.json()


def state_items(sandbox: Sandbox) -> list[dict[str, Any]]:
    table = sandbox.hub.outputs["StateTableName"]
    items = sandbox.client("dynamodb", sandbox.hub.region).scan(TableName=table)["Items"]
    return sorted(items, key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


def test_regions_ranks_the_worker_regions_from_the_market_and_changes_nothing(fresh_sandbox: Sandbox) -> None:
    west, eu = (w.region for w in fresh_sandbox.workers)
    west_pools = sorted(fresh_sandbox.market.pools(west), key=lambda p: (p.zone, p.instance_type))
    cheapest = west_pools[-1]
    for pool in fresh_sandbox.market.pools():
        price = 0.31 if pool is cheapest else 0.52 if pool.region == west else 0.90
        fresh_sandbox.market.set_zone(pool.zone, pool.instance_type, spot_price=price, placement_score=8)
    before = state_items(fresh_sandbox)

    answer = regions(fresh_sandbox)
    assert state_items(fresh_sandbox) == before, "asking changed the state table"
    assert answer["best"] == west
    assert "cheapest of the best-scored" in answer["reason"]
    assert answer["at"].endswith("Z")
    first, second = answer["regions"]
    assert {k: first[k] for k in ("region", "rank", "state", "placement_score", "spot_price")} == {
        "region": west,
        "rank": 1,
        "state": "ok",
        "placement_score": 8,
        "spot_price": 0.31,
    }
    assert (first["spot_zone"], first["spot_instance_type"]) == (cheapest.zone, cheapest.instance_type)
    assert (first["excluded"], first["denied"], first["allowed"], first["replicas"]) == (None, False, True, [])
    assert first["on_demand_price"] is None  # the finder does not price on-demand
    assert (second["region"], second["rank"], second["state"], second["spot_price"]) == (eu, 2, "ok", 0.90)
    assert second["spot_zone"].startswith(eu)


def test_an_excluded_region_says_until_when_and_why(fresh_sandbox: Sandbox) -> None:
    west, eu = (w.region for w in fresh_sandbox.workers)
    table = boto3.resource(
        "dynamodb",
        region_name=fresh_sandbox.hub.region,
        endpoint_url=fresh_sandbox.aws_endpoint_url,
        **fresh_sandbox.credentials(),
    ).Table(fresh_sandbox.hub.outputs["StateTableName"])
    until = int(time.time()) + 900
    reason = "capacity: InsufficientInstanceCapacity no g5 capacity"
    assert ExclusionStore(table).exclude(eu, until, reason, kind="capacity")

    answer = regions(fresh_sandbox)
    assert answer["best"] == west
    excluded = next(r for r in answer["regions"] if r["region"] == eu)
    assert (excluded["rank"], excluded["state"]) == (None, "excluded")
    assert excluded["excluded"]["kind"] == "capacity"
    assert excluded["excluded"]["error"] == "InsufficientInstanceCapacity no g5 capacity"
    assert excluded["placement_score"] is not None and excluded["spot_price"] is not None
    assert excluded["reason"].startswith("excluded for ")

"""The region-wide capacity switch of the control surface: `POST /_sandbox/market/regions/<region> {"capacity": 0}`
takes every spot pool of a region away (its spot instances get the interruption warning), as README "Driving it by
hand" uses it: the replica, wherever the finder placed it, fails over to the other worker region."""

from __future__ import annotations

from typing import Any

import requests

from spothub.sandbox.sandbox import Sandbox
from tests.sandbox.test_spot_provisioning import eventually, launches, serving, toggle


def switch(sandbox: Sandbox, region: str, **body: Any) -> requests.Response:
    return requests.post(f"{sandbox.control_url}market/regions/{region}", json=body, timeout=30)


def capacities(sandbox: Sandbox, region: str | None = None) -> dict[tuple[str, str], int]:
    assert sandbox.market is not None
    return {(p.zone, p.instance_type): p.capacity for p in sandbox.market.pools(region)}


def test_the_switch_sets_every_pool_of_the_region_and_no_other(fresh_sandbox: Sandbox) -> None:
    west, other = "us-west-2", "eu-west-1"
    assert fresh_sandbox.market is not None
    pools = capacities(fresh_sandbox, west)
    assert len({zone for zone, _type in pools}) == 3, "three zones a worker region"
    elsewhere = capacities(fresh_sandbox, other)

    answer = switch(fresh_sandbox, west, capacity=0)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["region"] == west
    assert {(p["zone"], p["instance_type"]) for p in body["pools"]} == set(pools)
    assert all(p["capacity"] == 0 for p in body["pools"])
    assert set(capacities(fresh_sandbox, west).values()) == {0}
    assert capacities(fresh_sandbox, other) == elsewhere
    # What the spot finder sees: no placement score left in the region.
    types = sorted({t for _zone, t in pools})
    scores = {s["Region"]: s["Score"] for s in fresh_sandbox.market.placement_scores(types, 1, [west, other], False)}
    assert scores[west] == 1
    assert scores[other] > 1

    # One type of the region only, then every pool back.
    answer = switch(fresh_sandbox, west, capacity=3, instance_type="g5.xlarge")
    assert answer.status_code == 200, answer.text
    assert {p["instance_type"] for p in answer.json()["pools"]} == {"g5.xlarge"}
    assert {c for (_zone, t), c in capacities(fresh_sandbox, west).items() if t == "g5.xlarge"} == {3}
    assert {c for (_zone, t), c in capacities(fresh_sandbox, west).items() if t != "g5.xlarge"} == {0}
    assert switch(fresh_sandbox, west, capacity=10).status_code == 200
    assert capacities(fresh_sandbox, west) == pools


def test_the_switch_refuses_what_it_cannot_do_and_changes_nothing(fresh_sandbox: Sandbox) -> None:
    before = capacities(fresh_sandbox)
    unknown = switch(fresh_sandbox, "ap-south-1", capacity=0)
    assert unknown.status_code == 404
    assert unknown.json()["message"] == "no pools in ap-south-1; the market's regions: eu-west-1, us-west-2"
    no_type = switch(fresh_sandbox, "us-west-2", capacity=0, instance_type="p5.48xlarge")
    assert no_type.status_code == 404
    assert no_type.json()["message"].startswith("no pools of p5.48xlarge in us-west-2")
    negative = switch(fresh_sandbox, "us-west-2", capacity=-1)
    assert negative.status_code == 400
    assert "capacity cannot be negative" in negative.json()["message"]
    score = switch(fresh_sandbox, "us-west-2", placement_score=11)
    assert score.status_code == 400
    assert "a placement score is 1 to 10" in score.json()["message"]
    assert capacities(fresh_sandbox) == before


def test_taking_the_replicas_region_away_moves_it_to_the_other_region(spot: Sandbox) -> None:
    """README "Driving it by hand": enable, read the replica's region, take that region's capacity away; the hub
    launches the replacement in the other worker region (make before break); advance the two minutes of the warning:
    the replica serves from the other region and the old instance is gone."""
    assert spot.fleet is not None
    toggle(spot, action="enable")
    first = serving(spot)
    region = first["region"]
    (old,) = [i["instance_id"] for i in first["instances"]]
    assert region in {w.region for w in spot.workers}

    answer = switch(spot, region, capacity=0)
    assert answer.status_code == 200, answer.text
    assert spot.fleet.instances[old].state == "interrupting", "the spot instance in the region is warned at once"
    (other,) = [w.region for w in spot.workers if w.region != region]
    # The warning reaches the hub (the worker's capacity monitor, the agent) in real time: the replacement is
    # launched before the two minutes are skipped, as on AWS where they pass.
    eventually(spot, lambda: any(launch["region"] == other for launch in launches(spot)), f"a launch in {other}")
    advance = requests.post(f"{spot.control_url}clock/advance", json={"seconds": 120}, timeout=30)
    assert advance.status_code == 200, advance.text

    moved = serving(
        spot,
        lambda d: d["region"] == other and all(i["instance_id"] != old for i in d["instances"]),
        f"the replica serves from {other}",
    )
    assert [i["region"] for i in moved["instances"]] == [other]
    spot.wait_for(lambda: spot.fleet.instances[old].state == "terminated", timeout_s=30)
    toggle(spot, action="disable")

"""The warm standby in the sandbox (spothub_core.logic.standby_watch, wired into the capacity handler and its minute
schedule): switched on, a replica that has just been placed on spot (young: at risk) gets a standby in another
region; an interruption warning of the serving instance promotes it with no replacement launch; when the risk has
fallen (the clock advanced past the young-instance window), the next check releases the standby it held; GET
/events tells the story.

Cost: one placement and two standby launches at SPEED on the session sandbox, then one clock advance: about a
minute on a 2-core machine (not seconds: the launches are the path under test).
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from spothub.sandbox.sandbox import Sandbox
from spothub_core.timings import STANDBY_YOUNG_SECONDS
from tests.sandbox.test_iam_enforcement import _as_role, _function
from tests.sandbox.test_spot_provisioning import (
    PLACEMENT_S,
    REPLICA,
    eventually,
    hub_events,
    items,
    launches,
    place,
    spot_instances,
    state_table,
)

CHECK_RULE = "StandbyCheck"


def switch_standby_on(sandbox: Sandbox) -> None:
    """The operator's switch, on the provisioning switch's item (after the enable, which rewrites that item)."""
    state_table(sandbox).update_item(
        Key={"pk": "PROVISIONING", "sk": "CONFIG"},
        UpdateExpression="SET warm_standby = :on",
        ExpressionAttributeValues={":on": True},
    )


def standby(sandbox: Sandbox) -> dict[str, Any] | None:
    return items(sandbox, "STANDBY").get(REPLICA)


def replica(sandbox: Sandbox) -> dict[str, Any]:
    return items(sandbox, "REPLICA")[REPLICA]


def test_a_standby_is_created_promoted_on_a_warning_and_released_when_the_risk_falls(spot: Sandbox) -> None:
    assert spot.fleet is not None
    placed = place(spot)
    (old,) = placed["instances"]
    switch_standby_on(spot)

    # Created: the check finds the new spot instance young, and starts a standby in another region.
    assert spot.fire_schedule(CHECK_RULE) == 1
    ready = eventually(
        spot,
        lambda: (s := standby(spot)) and s.get("status") == "ready" and s,
        "the standby is launched and ready",
        timeout_s=PLACEMENT_S,
        evidence=lambda: standby(spot),
    )
    assert ready["region"] != placed["region"], "another region first: the least correlated risk"
    assert str(ready["launch_id"]).startswith(f"{REPLICA}-sb-")
    shown = spot_instances(spot)
    assert [(s["status"], s["instance_id"], s["region"]) for s in shown["standbys"]] == [
        ("ready", ready["instance_id"], ready["region"])
    ], "GET /spot-instances shows the standby it holds"
    assert shown["settings"]["warm_standby"] is True
    launched_before = len(launches(spot))

    # Promoted: the serving instance's warning makes the standby serve, and no replacement is launched.
    spot.fleet.send_interruption_warning(old["instance_id"])
    promoted = eventually(
        spot,
        lambda: (r := replica(spot)).get("instance_id") == ready["instance_id"] and r,
        "the standby serves in place of the warned instance",
        evidence=lambda: {"replica": replica(spot), "standby": standby(spot)},
    )
    assert promoted["status"] == "serving" and promoted["region"] == ready["region"]
    orchestrated = [d for d in launches(spot)[launched_before:] if not str(d["launch_id"]).startswith(f"{REPLICA}-sb-")]
    assert orchestrated == [], "no replacement launch: the standby took over"
    eventually(
        spot,
        lambda: [
            d for _at, d in hub_events(spot, "Spothub Teardown Requested") if d.get("instance_id") == old["instance_id"]
        ],
        "the warned instance is retired",
    )

    # The promoted instance is young: the check after the warning holds a new standby for it.
    second = eventually(
        spot, lambda: standby(spot), "a standby for the promoted instance", evidence=lambda: replica(spot)
    )

    # Released: past the young window no rule fires any more (the warning was in the other region).
    teardowns_before = len(standby_teardowns(spot))
    spot.clock.advance(STANDBY_YOUNG_SECONDS + 120)
    spot.fire_schedule(CHECK_RULE)
    eventually(spot, lambda: standby(spot) is None, "the standby is released", evidence=lambda: standby(spot))
    assert spot_instances(spot)["standbys"] == []
    assert len(standby_teardowns(spot)) > teardowns_before, f"the released standby {second['launch_id']} is torn down"
    assert replica(spot)["instance_id"] == ready["instance_id"], "the replica still serves on the promoted standby"

    # GET /events tells the standbys' story, each end with its reason (oldest first; within a second, causes first).
    answer = spot.request("GET", "events")
    assert answer.status_code == 200, answer.text
    mine = [e for e in reversed(answer.json()["events"]) if e["kind"].startswith("standby-")]
    story = [(e["at"], e["kind"], e["summary"]) for e in mine]
    second_ready = ["standby-ready"] if [k for _, k, _ in story[4:]].count("standby-ready") else []
    assert [k for _, k, _ in story] == [
        "standby-started",
        "standby-ready",
        "standby-promoted",
        "standby-started",
        *second_ready,
        "standby-released",
    ], story
    assert (
        mine[0]["summary"].startswith(f"standby of {REPLICA} started (spot in ") and "serving for" in mine[0]["summary"]
    )
    assert mine[2]["summary"] == f"standby of {REPLICA} promoted: serves in place of {old['instance_id']}", story
    assert mine[-1]["summary"] == f"standby of {REPLICA} released: the risk fell", story


def standby_teardowns(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [
        d
        for _at, d in hub_events(sandbox, "Spothub Teardown Requested")
        if str(d["teardown_id"]).startswith("standby-")
    ]


@pytest.mark.access_denied_expected
def test_the_capacity_handler_may_delete_in_the_state_table_only(fresh_sandbox: Sandbox) -> None:
    """Its new grant, dynamodb:DeleteItem, is pinned to the state table (and, in AWS, to its STANDBY partition by
    dynamodb:LeadingKeys, a key the sandbox does not supply: that part is checked by the infrastructure tests'
    synthesized policy, not here). Its other new call, ec2:DescribeAvailabilityZones, has no resource-level form."""
    hub = fresh_sandbox.hub
    handler = _function(fresh_sandbox, hub.region, "CapacityHandler")
    dynamodb = _as_role(fresh_sandbox, "dynamodb", hub.region, handler["Role"])
    state = hub.outputs["StateTableName"]
    dynamodb.delete_item(TableName=state, Key={"pk": {"S": "STANDBY"}, "sk": {"S": REPLICA}})  # allowed
    other = next(t for t in fresh_sandbox.client("dynamodb", hub.region).list_tables()["TableNames"] if t != state)
    with pytest.raises(ClientError) as refused:
        dynamodb.delete_item(TableName=other, Key={"pk": {"S": "STANDBY"}, "sk": {"S": REPLICA}})
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert fresh_sandbox.iam.denials, "the refusal is recorded"
    ec2 = _as_role(fresh_sandbox, "ec2", fresh_sandbox.workers[0].region, handler["Role"])
    assert ec2.describe_availability_zones()["AvailabilityZones"]

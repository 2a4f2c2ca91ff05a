"""The node groups of one worker region (dal/node_groups.py) against moto's Auto Scaling: the group as the controller
sees it, its size within its bounds, its purchase option, and the release of one member (never another group's)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spothub.sandbox import autoscaling_updates
from spothub_core.contracts import node_group_name
from spothub_core.dal.node_groups import RegionNodeGroups
from tests.integration.conftest import ApiCalls
from tests.integration.deployment_fixtures import NODE_REGION
from tests.integration.test_worker_ecs import PREFIX, create_node_group, group_members

NOW = 1_700_000_000.0


@pytest.fixture
def groups() -> Iterator[RegionNodeGroups]:
    # AWS takes an update naming part of a mixed instances policy (the on-demand switch names only the distribution);
    # moto 5.2 needs the sandbox's addition for it.
    autoscaling_updates.apply()
    with mock_aws():
        yield RegionNodeGroups(
            boto3.client("autoscaling", region_name=NODE_REGION), region=NODE_REGION, prefix=PREFIX, clock=lambda: NOW
        )
    autoscaling_updates.undo()


def described(node_class: str) -> dict[str, Any]:
    return boto3.client("autoscaling", region_name=NODE_REGION).describe_auto_scaling_groups(
        AutoScalingGroupNames=[node_group_name(PREFIX, node_class)]
    )["AutoScalingGroups"][0]


def test_a_class_without_a_group_in_the_region_is_none(groups: RegionNodeGroups) -> None:
    assert groups.describe("1gpu") is None


def test_the_group_as_the_controller_sees_it(groups: RegionNodeGroups) -> None:
    create_node_group("1gpu", desired=2)
    state = groups.describe("1gpu")
    assert state is not None
    assert (state.name, state.region, state.node_class) == ("spothub-nodes-1gpu", NODE_REGION, "1gpu")
    assert (state.desired, state.max_size, state.on_demand, state.last_failure) == (2, 4, False, None)
    assert sorted(state.instance_ids) == sorted(group_members("1gpu"))


def test_the_desired_capacity_stays_within_the_groups_bounds(groups: RegionNodeGroups) -> None:
    create_node_group("1gpu")
    calls = ApiCalls(groups.autoscaling, "SetDesiredCapacity")
    groups.set_desired("1gpu", 10)
    assert described("1gpu")["DesiredCapacity"] == 4
    groups.set_desired("1gpu", 4)  # as it is: nothing asked
    groups.set_desired("1gpu", -1)
    assert described("1gpu")["DesiredCapacity"] == 0
    assert [c["DesiredCapacity"] for c in calls.of("SetDesiredCapacity")] == [4, 0]
    assert all(c["HonorCooldown"] is False for c in calls.of("SetDesiredCapacity"))


def test_on_demand_covers_the_whole_group_and_off_is_spot_only(groups: RegionNodeGroups) -> None:
    create_node_group("4gpu")
    calls = ApiCalls(groups.autoscaling, "UpdateAutoScalingGroup")

    groups.set_on_demand("4gpu", True)
    groups.set_on_demand("4gpu", True)  # already: nothing asked

    policy = described("4gpu")["MixedInstancesPolicy"]
    assert policy["InstancesDistribution"]["OnDemandBaseCapacity"] == 2  # max_nodes of the class
    assert [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]] == ["g5.12xlarge"]  # kept
    state = groups.describe("4gpu")
    assert state is not None and state.on_demand
    (update,) = calls.of("UpdateAutoScalingGroup")
    # The distribution only: no launch template named, so none of its permissions asked of the hub.
    assert update["MixedInstancesPolicy"] == {"InstancesDistribution": {"OnDemandBaseCapacity": 2}}

    groups.set_on_demand("4gpu", False)
    assert described("4gpu")["MixedInstancesPolicy"]["InstancesDistribution"]["OnDemandBaseCapacity"] == 0
    state = groups.describe("4gpu")
    assert state is not None and not state.on_demand


def test_a_release_terminates_the_member_and_shrinks_its_group(groups: RegionNodeGroups) -> None:
    create_node_group("1gpu", desired=2)
    gone, kept = group_members("1gpu")

    groups.release("1gpu", gone)
    groups.release("1gpu", gone)  # again (a retried run): it is no member any more

    group = described("1gpu")
    assert group["DesiredCapacity"] == 1
    assert [m["InstanceId"] for m in group["Instances"] if m["LifecycleState"] == "InService"] == [kept]


def test_a_release_never_terminates_another_groups_instance(groups: RegionNodeGroups) -> None:
    create_node_group("1gpu", desired=1)
    create_node_group("4gpu", desired=1)
    (other,) = group_members("4gpu")
    calls = ApiCalls(groups.autoscaling, "TerminateInstanceInAutoScalingGroup")

    groups.release("1gpu", other)
    groups.release("1gpu", "i-0000000000000dead")

    assert calls.of("TerminateInstanceInAutoScalingGroup") == []
    assert described("4gpu")["DesiredCapacity"] == 1


def _activities(groups: RegionNodeGroups, *activities: dict[str, Any]) -> None:
    ApiCalls(groups.autoscaling, "DescribeScalingActivities").answer(
        "DescribeScalingActivities", {"Activities": list(activities)}
    )


def _activity(status: str, minutes_ago: float, message: str = "") -> dict[str, Any]:
    at = datetime.fromtimestamp(NOW - minutes_ago * 60, UTC)
    return {
        "ActivityId": f"a-{minutes_ago}",
        "AutoScalingGroupName": "spothub-nodes-1gpu",
        "Cause": "a user request",
        "StartTime": at,
        "EndTime": at,
        "StatusCode": status,
        "StatusMessage": message,
        "Progress": 100,
    }


NO_CAPACITY = "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available"


def test_the_last_recent_failed_launch_is_the_groups_last_failure(groups: RegionNodeGroups) -> None:
    create_node_group("1gpu")
    _activities(groups, _activity("InProgress", 0), _activity("Failed", 2, NO_CAPACITY), _activity("Successful", 30))
    state = groups.describe("1gpu")
    assert state is not None and state.last_failure == NO_CAPACITY


@pytest.mark.parametrize(
    "activities",
    [
        [_activity("Successful", 1), _activity("Failed", 2, NO_CAPACITY)],  # a launch went through since
        [_activity("Failed", 60, NO_CAPACITY)],  # long ago
        [],
    ],
)
def test_no_last_failure_when_none_is_recent(groups: RegionNodeGroups, activities: list[dict[str, Any]]) -> None:
    create_node_group("1gpu")
    _activities(groups, *activities)
    state = groups.describe("1gpu")
    assert state is not None and state.last_failure is None

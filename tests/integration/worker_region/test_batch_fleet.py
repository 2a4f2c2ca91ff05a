"""The batch_fleet function in a worker region in moto: a job's Auto Scaling group created from the region's batch
launch template on the hub's first request, grown and never shrunk, an older request ignored, members released,
the group deleted on release, and every applied request answered with a report on the worker bus.

moto launches real instances when a group's desired capacity changes, and records no failed scaling activity:
that answer is given at the client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spothub_core.consumers import Target, consumed_by
from spothub_core.contracts import InstanceTag
from spothub_core.dal.job_groups import FLEET_REQUESTED_AT_TAG
from spothub_core.timings import BATCH_FLEET_CREATE_MAX_AGE_SECONDS
from tests.integration.conftest import ApiCalls, BusRecorder, eventbridge_event, load_handler, set_environment
from tests.integration.worker_region.conftest import WORKER_ENVIRONMENT
from tests.integration.worker_region.region import REGION
from tests.lambda_events import FakeLambdaContext

JOB = "job-0123456789ab"
GROUP = f"spothub-{JOB}"
WORKER_BUS = "spothub-worker"
MAX_WORKERS = 4
REGION_TYPES = ["g5.xlarge", "g6.xlarge"]


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"][:2]]
        template = ec2.create_launch_template(
            LaunchTemplateName="spothub-batch",
            LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "g5.xlarge"},
        )["LaunchTemplate"]["LaunchTemplateId"]
        boto3.client("events", region_name=REGION).create_event_bus(Name=WORKER_BUS)
        set_environment(
            monkeypatch,
            {
                **WORKER_ENVIRONMENT,
                "POWERTOOLS_SERVICE_NAME": "spothub-batch-fleet",
                "SPOTHUB_HUB_REGION": "us-east-1",
                "SPOTHUB_WORKER_BUS": WORKER_BUS,
                "SPOTHUB_BATCH_LAUNCH_TEMPLATE_ID": template,
                "SPOTHUB_BATCH_SUBNETS": ",".join(subnets),
                "SPOTHUB_BATCH_INSTANCE_TYPES": ",".join(REGION_TYPES),
                "SPOTHUB_BATCH_MAX_WORKERS": str(MAX_WORKERS),
            },
        )
        yield load_handler("batch_fleet.handler")


@pytest.fixture
def bus(handler: ModuleType) -> BusRecorder:
    return BusRecorder(WORKER_BUS, REGION)


def ask(handler: ModuleType, **fields: Any) -> str:
    detail = {"job_id": JOB, "region": REGION, "requested_at": time.time(), **fields}
    event = eventbridge_event("spothub.hub", "Spothub Batch Fleet Requested", detail, region=REGION)
    return str(handler.lambda_handler(event, FakeLambdaContext())["outcome"])


def reports(bus: BusRecorder) -> list[dict[str, Any]]:
    found = []
    for event in bus.events():
        assert (event["source"], event["detail-type"]) == ("spothub.worker", "Spothub Batch Fleet Report")
        found.append(event["detail"])
    return found


def group() -> dict[str, Any] | None:
    groups = boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
        AutoScalingGroupNames=[GROUP]
    )["AutoScalingGroups"]
    return groups[0] if groups else None


def members() -> list[str]:
    found = group()
    return [m["InstanceId"] for m in (found or {}).get("Instances", []) if m["LifecycleState"] == "InService"]


def test_the_function_consumes_the_fleet_request_only(handler: ModuleType) -> None:
    assert handler.commands.unregistered() == []
    assert set(handler.commands.entries) == set(consumed_by(Target.BATCH_FLEET))


def test_the_first_request_creates_the_jobs_group_from_the_batch_launch_template(
    handler: ModuleType, bus: BusRecorder
) -> None:
    asked_at = time.time()
    assert ask(handler, desired=2, instance_types=["g6.xlarge"], requested_at=asked_at) == "created with 2 spot"
    created = group()
    assert created is not None
    assert (created["MinSize"], created["MaxSize"], created["DesiredCapacity"]) == (0, MAX_WORKERS, 2)
    policy = created["MixedInstancesPolicy"]
    spec = policy["LaunchTemplate"]["LaunchTemplateSpecification"]
    assert spec["LaunchTemplateId"] == handler.settings.launch_template_id and spec["Version"] == "$Latest"
    assert policy["LaunchTemplate"]["Overrides"] == [{"InstanceType": "g6.xlarge"}]
    distribution = policy["InstancesDistribution"]
    assert distribution["OnDemandPercentageAboveBaseCapacity"] == 0
    assert distribution["SpotAllocationStrategy"] == "price-capacity-optimized"
    assert set(created["VPCZoneIdentifier"].split(",")) == set(handler.settings.subnets)
    tags = {t["Key"]: (t["Value"], t["PropagateAtLaunch"]) for t in created["Tags"]}
    assert tags[InstanceTag.JOB.value] == (JOB, True)
    assert tags[InstanceTag.PREFIX.value] == ("spothub", True)
    assert tags[InstanceTag.HUB_REGION.value] == ("us-east-1", True)
    assert tags[FLEET_REQUESTED_AT_TAG] == (repr(asked_at), False)
    assert not created.get("LifecycleHookList")
    (report,) = reports(bus)
    assert report["job_id"] == JOB and report["region"] == REGION and report["group_name"] == GROUP
    assert (report["desired"], report["requested_at"], report["released"]) == (2, asked_at, False)
    assert sorted(report["instance_ids"]) == sorted(members()) and len(report["instance_ids"]) == 2
    assert report["error"] is None and report["error_class"] is None


def test_a_job_naming_no_instance_types_gets_the_regions(handler: ModuleType) -> None:
    ask(handler, desired=1)
    overrides = group()["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]  # type: ignore[index]
    assert [o["InstanceType"] for o in overrides] == REGION_TYPES


def test_a_repeated_request_changes_nothing_and_a_group_never_shrinks_by_a_request(
    handler: ModuleType, bus: BusRecorder
) -> None:
    first = time.time()
    ask(handler, desired=3, requested_at=first)
    assert ask(handler, desired=3, requested_at=first) == "desired 3"
    assert ask(handler, desired=1) == "desired 3"
    assert group()["DesiredCapacity"] == 3  # type: ignore[index]
    assert [r["desired"] for r in reports(bus)] == [3, 3, 3]
    assert len(members()) == 3


def test_growth_is_capped_at_the_regions_maximum(handler: ModuleType) -> None:
    ask(handler, desired=2)
    assert ask(handler, desired=MAX_WORKERS + 3) == f"desired 2 -> {MAX_WORKERS}"
    assert group()["DesiredCapacity"] == MAX_WORKERS  # type: ignore[index]


def test_a_request_older_than_the_one_applied_is_ignored(handler: ModuleType, bus: BusRecorder) -> None:
    now = time.time()
    ask(handler, desired=1, requested_at=now)
    bus.events()
    # Sent before the one applied, delivered after it (workers may have left meanwhile): it must not grow.
    assert ask(handler, desired=3, requested_at=now - 30).startswith("ignored: older than the request applied")
    assert group()["DesiredCapacity"] == 1  # type: ignore[index]
    assert reports(bus) == []


def test_released_instances_leave_with_the_groups_capacity_decremented(handler: ModuleType, bus: BusRecorder) -> None:
    ask(handler, desired=3)
    leaving, *staying = members()
    bus.events()
    outcome = ask(handler, desired=0, release_instances=[leaving, "i-0notamember"])
    assert outcome == f"desired 2; released {leaving}"
    assert group()["DesiredCapacity"] == 2  # type: ignore[index]
    assert sorted(members()) == sorted(staying)
    (report,) = reports(bus)
    assert leaving not in report["instance_ids"] and report["desired"] == 2
    # Released again (the hub asks until a report no longer lists it): nothing more leaves.
    assert ask(handler, desired=0, release_instances=[leaving]) == "desired 2"
    assert group()["DesiredCapacity"] == 2  # type: ignore[index]


def test_released_instances_leave_before_the_growth_that_replaces_them(handler: ModuleType) -> None:
    ask(handler, desired=2)
    leaving = members()[0]
    # The hub asks for its one active worker and two more, releasing the unavailable one in the same request.
    assert ask(handler, desired=3, release_instances=[leaving]) == f"desired 1 -> 3; released {leaving}"
    assert group()["DesiredCapacity"] == 3  # type: ignore[index]
    assert leaving not in members()


def test_a_growth_on_demand_turns_the_groups_launches_on_demand(handler: ModuleType) -> None:
    ask(handler, desired=1)
    ask(handler, desired=2, capacity_type="on-demand")
    distribution = group()["MixedInstancesPolicy"]["InstancesDistribution"]  # type: ignore[index]
    assert distribution["OnDemandPercentageAboveBaseCapacity"] == 100
    assert group()["DesiredCapacity"] == 2  # type: ignore[index]


def test_on_demand_asked_at_the_groups_size_still_turns_its_launches_on_demand(handler: ModuleType) -> None:
    # Two spot workers never came; the hub asks for the same two on-demand instead.
    ask(handler, desired=2)
    ask(handler, desired=2, capacity_type="on-demand")
    distribution = group()["MixedInstancesPolicy"]["InstancesDistribution"]  # type: ignore[index]
    assert distribution["OnDemandPercentageAboveBaseCapacity"] == 100
    assert group()["DesiredCapacity"] == 2  # type: ignore[index]


def test_release_deletes_the_group_and_is_done_when_it_is_gone(handler: ModuleType, bus: BusRecorder) -> None:
    ask(handler, desired=2)
    bus.events()
    assert ask(handler, release=True) == "released"
    assert group() is None
    assert ask(handler, release=True) == "released"
    first, second = reports(bus)
    assert first["released"] and second["released"] and first["instance_ids"] == []


def test_a_late_request_does_not_bring_a_released_group_back(handler: ModuleType, bus: BusRecorder) -> None:
    stale = time.time() - BATCH_FLEET_CREATE_MAX_AGE_SECONDS - 5
    assert ask(handler, desired=2, requested_at=stale).startswith("ignored: too old to create the group")
    assert group() is None
    assert reports(bus) == []


def test_a_look_at_a_group_not_there_creates_nothing(handler: ModuleType, bus: BusRecorder) -> None:
    assert ask(handler, desired=0) == "no group"
    assert group() is None
    (report,) = reports(bus)
    assert (report["desired"], report["instance_ids"], report["released"]) == (0, [], False)


def test_a_request_for_another_region_is_ignored(handler: ModuleType, bus: BusRecorder) -> None:
    assert ask(handler, desired=2, region="eu-west-1") == "ignored: a request for eu-west-1"
    assert group() is None


def test_the_report_carries_the_last_failed_scaling_activity_and_its_class(
    handler: ModuleType, bus: BusRecorder
) -> None:
    activities = ApiCalls(handler.fleet.groups._autoscaling, "DescribeScalingActivities")
    started = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    message = "We currently do not have sufficient g5.xlarge capacity (InsufficientInstanceCapacity)."
    activities.answer(
        "DescribeScalingActivities",
        {
            "Activities": [
                {
                    "ActivityId": "a-2",
                    "AutoScalingGroupName": GROUP,
                    "Cause": "desired capacity changed",
                    "StartTime": started,
                    "StatusCode": "Failed",
                    "StatusMessage": message,
                },
                {
                    "ActivityId": "a-1",
                    "AutoScalingGroupName": GROUP,
                    "Cause": "desired capacity changed",
                    "StartTime": datetime(2023, 11, 14, 22, 0, 0, tzinfo=UTC),
                    "StatusCode": "Successful",
                },
            ]
        },
    )
    ask(handler, desired=2)
    (report,) = reports(bus)
    assert (report["error"], report["error_class"]) == (message, "capacity")
    assert report["error_at"] == started.timestamp()


def test_a_failure_followed_by_a_successful_launch_is_over(handler: ModuleType, bus: BusRecorder) -> None:
    activities = ApiCalls(handler.fleet.groups._autoscaling, "DescribeScalingActivities")
    activities.answer(
        "DescribeScalingActivities",
        {
            "Activities": [
                {
                    "ActivityId": "a-3",
                    "AutoScalingGroupName": GROUP,
                    "Cause": "c",
                    "StartTime": datetime(2023, 11, 14, 22, 20, tzinfo=UTC),
                    "StatusCode": "InProgress",
                },
                {
                    "ActivityId": "a-2",
                    "AutoScalingGroupName": GROUP,
                    "Cause": "c",
                    "StartTime": datetime(2023, 11, 14, 22, 10, tzinfo=UTC),
                    "StatusCode": "Successful",
                },
                {
                    "ActivityId": "a-1",
                    "AutoScalingGroupName": GROUP,
                    "Cause": "c",
                    "StartTime": datetime(2023, 11, 14, 22, 0, tzinfo=UTC),
                    "StatusCode": "Failed",
                    "StatusMessage": "Max spot instance count exceeded",
                },
            ]
        },
    )
    ask(handler, desired=1)
    (report,) = reports(bus)
    assert report["error"] is None and report["error_class"] is None


def test_a_group_the_region_refuses_to_create_is_reported_not_retried(handler: ModuleType, bus: BusRecorder) -> None:
    calls = ApiCalls(handler.fleet.groups._autoscaling, "CreateAutoScalingGroup")
    calls.answer(
        "CreateAutoScalingGroup", error=("ValidationError", "You must use a valid fully-formed launch template.")
    )
    assert ask(handler, desired=2).startswith("refused:")
    (report,) = reports(bus)
    assert report["error_class"] == "fatal" and "launch template" in report["error"]


def test_a_throttled_call_raises_for_eventbridge_to_deliver_again(handler: ModuleType) -> None:
    calls = ApiCalls(handler.fleet.groups._autoscaling, "DescribeAutoScalingGroups")
    calls.answer("DescribeAutoScalingGroups", error=("Throttling", "Rate exceeded"))
    with pytest.raises(Exception, match="Throttling"):
        ask(handler, desired=1)

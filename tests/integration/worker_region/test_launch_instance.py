"""The launch_instance state machine's tasks through the worker function's entry point: scale out, claim the
instance, start the serving task and watch it become healthy, arm the alarms, undo a failed launch."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import ModuleType

import boto3
import pytest

from spothub_core.contracts import InstanceTag
from spothub_core.errors import CapacityError, FatalError, TransientError
from stacks.paths import STATEMACHINES_DIR
from tests.integration.conftest import ApiCalls
from tests.integration.worker_region.region import (
    CLUSTER,
    GROUP,
    LAUNCH_ID,
    LONG_AGO,
    REGION,
    TASK_FAMILY,
    alarms,
    ec2_instance,
    group,
    in_service,
    launched,
    register_with_ecs,
    run,
    running_launch,
    serving,
    tags,
    tasks,
)

# --- launch_instance: scale_out -------------------------------------------------------------------


def test_scale_out_asks_the_group_for_one_more_instance(handler: ModuleType) -> None:
    result = run(handler, "scale_out", launch_id=LAUNCH_ID, capacity_type="spot")
    assert (result["desired"], result["on_demand_base"]) == (1, 0)
    assert datetime.strptime(result["started_at"], "%Y-%m-%dT%H:%M:%SZ").year >= 2024
    assert group()["DesiredCapacity"] == 1
    assert len(in_service()) == 1


def test_scale_out_twice_for_one_launch_asks_for_one_instance(handler: ModuleType) -> None:
    run(handler, "scale_out", launch_id=LAUNCH_ID, capacity_type="spot")
    assert run(handler, "scale_out", launch_id=LAUNCH_ID, capacity_type="spot")["desired"] == 1
    assert group()["DesiredCapacity"] == 1


def test_scale_out_for_a_second_launch_keeps_the_first_launchs_instance(handler: ModuleType) -> None:
    launched(handler, "replica-0-g1-0")
    assert run(handler, "scale_out", launch_id="replica-1-g1-0", capacity_type="spot")["desired"] == 2
    assert group()["DesiredCapacity"] == 2


def test_scale_out_counts_another_launch_still_in_flight(handler: ModuleType) -> None:
    # Another launch runs and has not claimed an instance yet: its instance is still to come, or unclaimed.
    running_launch(handler, "replica-1-g1-0")
    running_launch(handler, LAUNCH_ID)
    assert run(handler, "scale_out", launch_id=LAUNCH_ID, capacity_type="spot")["desired"] == 2
    assert group()["DesiredCapacity"] == 2
    # The other launch scaling out after it asks for no third instance.
    assert run(handler, "scale_out", launch_id="replica-1-g1-0", capacity_type="spot")["desired"] == 2
    assert group()["DesiredCapacity"] == 2


def test_a_launch_in_flight_that_claimed_its_instance_is_counted_once(handler: ModuleType) -> None:
    running_launch(handler, "replica-1-g1-0")
    launched(handler, "replica-1-g1-0", "replica-1")
    assert run(handler, "scale_out", launch_id=LAUNCH_ID, capacity_type="spot")["desired"] == 2


def test_cleanup_of_an_unclaimed_launch_keeps_an_instance_for_another_launch_in_flight(handler: ModuleType) -> None:
    running_launch(handler, "replica-1-g1-0")
    run(handler, "scale_out", launch_id="replica-1-g1-0", capacity_type="spot")
    running_launch(handler, LAUNCH_ID)
    run(handler, "scale_out", launch_id=LAUNCH_ID, capacity_type="spot")
    assert len(in_service()) == 2
    run(handler, "cleanup", launch_id=LAUNCH_ID)
    assert group()["DesiredCapacity"] == 1
    (left,) = in_service()
    claim = run(handler, "claim_instance", launch_id="replica-1-g1-0", replica_id="replica-1", since=LONG_AGO)
    assert (claim["status"], claim["instance"]["instance_id"]) == ("ready", left)


def test_an_on_demand_launch_raises_the_groups_on_demand_base(handler: ModuleType) -> None:
    assert run(handler, "scale_out", launch_id=LAUNCH_ID, capacity_type="on-demand")["on_demand_base"] == 1
    distribution = group()["MixedInstancesPolicy"]["InstancesDistribution"]
    assert distribution["OnDemandBaseCapacity"] == 1
    assert [o["InstanceType"] for o in group()["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]] == [
        "g5.xlarge",
        "g6.xlarge",
    ]


def test_scale_out_past_the_groups_maximum_is_a_capacity_error(handler: ModuleType) -> None:
    launched(handler, "replica-0-g1-0")
    launched(handler, "replica-1-g1-0", "replica-1")
    with pytest.raises(CapacityError, match="at its maximum of 2 instances") as raised:
        run(handler, "scale_out", launch_id="replica-2-g1-0", capacity_type="spot")
    assert type(raised.value).__name__ == "CapacityError"  # the error name the launch state machine catches
    assert group()["DesiredCapacity"] == 2


def test_a_missing_group_is_a_fatal_error(handler: ModuleType) -> None:
    boto3.client("autoscaling", region_name=REGION).delete_auto_scaling_group(
        AutoScalingGroupName=GROUP, ForceDelete=True
    )
    with pytest.raises(FatalError, match=f"Auto Scaling group {GROUP} does not exist in {REGION}"):
        run(handler, "scale_out", launch_id=LAUNCH_ID, capacity_type="spot")


# --- launch_instance: claim_instance --------------------------------------------------------------


def test_claim_instance_tags_the_new_instance_with_the_launch_and_replica(handler: ModuleType) -> None:
    run(handler, "scale_out", launch_id=LAUNCH_ID, capacity_type="spot")
    (instance_id,) = in_service()
    claim = run(handler, "claim_instance", launch_id=LAUNCH_ID, replica_id="replica-0", since=LONG_AGO)
    assert claim["status"] == "ready"
    instance = claim["instance"]
    described = ec2_instance(instance_id)
    assert instance["instance_id"] == instance_id
    assert instance["instance_type"] == described["InstanceType"]
    assert instance["availability_zone"] == described["Placement"]["AvailabilityZone"]
    assert (instance["private_ip"], instance["public_ip"]) == (
        described["PrivateIpAddress"],
        described.get("PublicIpAddress"),
    )
    assert instance["launched_at"].endswith("Z")
    assert tags(instance_id)[InstanceTag.LAUNCH] == LAUNCH_ID
    assert tags(instance_id)[InstanceTag.REPLICA] == "replica-0"


def test_a_claimed_instance_is_not_watched_yet(handler: ModuleType) -> None:
    # Claimed on its lifecycle hook, before its agent beats: a heartbeat alarm (missing data breaching) would fire.
    launched(handler)
    assert alarms() == {}


def test_an_instance_in_service_with_a_healthy_workload_is_watched_by_its_agent_alarms(handler: ModuleType) -> None:
    instance_id, task_arn = serving(handler)
    assert run(handler, "workload_status", task_arn=task_arn, instance_id=instance_id)["status"] == "healthy"
    assert alarms() == {}
    assert run(handler, "watch_instance", instance_id=instance_id) == {"watched": instance_id}
    watched = alarms()
    assert set(watched) == {f"spothub-agent-heartbeat-{instance_id}", f"spothub-agent-gpu-{instance_id}"}
    for alarm in watched.values():
        assert alarm["AlarmActions"] == [handler.settings.alerts_topic_arn]
        assert {"Name": "InstanceId", "Value": instance_id} in alarm["Dimensions"]


def test_the_launch_arms_the_alarms_only_after_the_workload_is_healthy() -> None:
    states = json.loads((STATEMACHINES_DIR / "launch_instance.asl.json").read_text())["States"]
    healthy = next(c["Next"] for c in states["WorkloadHealthy"]["Choices"] if c.get("StringEquals") == "healthy")
    assert states[healthy]["Parameters"]["Payload"]["action"] == "watch_instance"
    assert states[healthy]["Next"] == "ReportSucceeded"


def test_claiming_again_returns_the_same_instance(handler: ModuleType) -> None:
    instance_id = launched(handler)
    claim = run(handler, "claim_instance", launch_id=LAUNCH_ID, replica_id="replica-0", since=LONG_AGO)
    assert (claim["status"], claim["instance"]["instance_id"]) == ("ready", instance_id)


def test_another_launchs_instance_is_never_claimed(handler: ModuleType) -> None:
    launched(handler, "replica-0-g1-0")
    claim = run(handler, "claim_instance", launch_id="replica-1-g1-0", replica_id="replica-1", since=LONG_AGO)
    assert claim == {"status": "waiting", "pending": []}


def test_claim_instance_reports_a_failed_scaling_activity_since_the_scale_out(handler: ModuleType) -> None:
    run(handler, "scale_out", launch_id=LAUNCH_ID, capacity_type="spot")
    boto3.client("autoscaling", region_name=REGION).set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=0)
    activities = ApiCalls(handler.autoscaling, "DescribeScalingActivities")
    message = (
        "Launching a new EC2 instance. Status Reason: InsufficientInstanceCapacity. Launching EC2 instance failed."
    )
    activities.answer(
        "DescribeScalingActivities",
        {
            "Activities": [
                {
                    "ActivityId": "a-1",
                    "AutoScalingGroupName": GROUP,
                    "Cause": "desired capacity changed",
                    "StartTime": datetime(2030, 1, 1, tzinfo=UTC),
                    "StatusCode": "Failed",
                    "StatusMessage": message,
                }
            ]
        },
    )
    claim = run(handler, "claim_instance", launch_id=LAUNCH_ID, replica_id="replica-0", since="2029-12-31T23:59:00Z")
    assert claim == {"status": "failed", "error_class": "capacity", "code": "LaunchUnsuccessful", "message": message}
    # An activity that failed before this launch scaled out is not its failure.
    claim = run(handler, "claim_instance", launch_id=LAUNCH_ID, replica_id="replica-0", since="2030-01-01T00:00:01Z")
    assert claim["status"] == "waiting"


# --- launch_instance: start_workload and workload_status ------------------------------------------


def test_start_workload_runs_the_serving_task_on_the_claimed_instance(handler: ModuleType) -> None:
    instance_id = launched(handler)
    container_instance = register_with_ecs(instance_id)
    result = run(handler, "start_workload", launch_id=LAUNCH_ID, instance_id=instance_id)
    (task,) = tasks()
    assert result == {"task_arn": task["taskArn"]}
    assert task["containerInstanceArn"] == container_instance
    assert task["startedBy"] == LAUNCH_ID
    assert f":task-definition/{TASK_FAMILY}:" in task["taskDefinitionArn"]


def test_start_workload_twice_runs_one_task(handler: ModuleType) -> None:
    instance_id, task_arn = serving(handler)
    assert run(handler, "start_workload", launch_id=LAUNCH_ID, instance_id=instance_id) == {"task_arn": task_arn}
    assert len(tasks()) == 1


def test_start_workload_before_the_ecs_agent_registers_is_retried(handler: ModuleType) -> None:
    instance_id = launched(handler)
    with pytest.raises(TransientError, match=f"{instance_id} has not registered with ECS cluster {CLUSTER}") as raised:
        run(handler, "start_workload", launch_id=LAUNCH_ID, instance_id=instance_id)
    assert type(raised.value).__name__ == "WorkloadNotReady"  # the error name StartWorkload retries
    assert tasks() == []


def test_a_running_task_is_healthy_with_the_instances_facts(handler: ModuleType) -> None:
    instance_id, task_arn = serving(handler)
    status = run(handler, "workload_status", task_arn=task_arn, instance_id=instance_id)
    assert status["status"] == "healthy"
    assert (status["instance"]["instance_id"], status["instance"]["task_arn"]) == (instance_id, task_arn)


@pytest.mark.parametrize(
    ("reason", "error_class"),
    [
        ("CannotPullContainerError: pull access denied for serve", "fatal"),
        ("Essential container in task exited", "transient"),
        (
            "ResourceInitializationError: unable to pull secrets or registry auth: AccessDeniedException: the role"
            " may not call secretsmanager:GetSecretValue",
            "fatal",
        ),
        ("ResourceInitializationError: unable to pull secrets or registry auth: connection timed out", "transient"),
    ],
)
def test_a_stopped_task_is_a_failure_classed_by_its_reason(handler: ModuleType, reason: str, error_class: str) -> None:
    instance_id, task_arn = serving(handler)
    boto3.client("ecs", region_name=REGION).stop_task(cluster=CLUSTER, task=task_arn, reason=reason)
    status = run(handler, "workload_status", task_arn=task_arn, instance_id=instance_id)
    assert (status["status"], status["error_class"], status["code"]) == ("failed", error_class, "TaskStopped")
    assert reason in status["message"]


def test_a_running_task_on_an_instance_still_starting_is_not_healthy_yet(handler: ModuleType) -> None:
    instance_id, task_arn = serving(handler)
    boto3.client("autoscaling", region_name=REGION).enter_standby(
        AutoScalingGroupName=GROUP, InstanceIds=[instance_id], ShouldDecrementDesiredCapacity=True
    )
    status = run(handler, "workload_status", task_arn=task_arn, instance_id=instance_id)
    assert status["status"] == "starting"


def test_a_running_task_on_an_instance_that_left_the_group_is_a_capacity_failure(handler: ModuleType) -> None:
    instance_id, task_arn = serving(handler)
    boto3.client("autoscaling", region_name=REGION).detach_instances(
        AutoScalingGroupName=GROUP, InstanceIds=[instance_id], ShouldDecrementDesiredCapacity=True
    )
    status = run(handler, "workload_status", task_arn=task_arn, instance_id=instance_id)
    assert (status["status"], status["error_class"]) == ("failed", "capacity")


def test_a_task_ecs_no_longer_knows_is_a_transient_failure(handler: ModuleType) -> None:
    instance_id = launched(handler)
    gone = f"arn:aws:ecs:{REGION}:123456789012:task/{CLUSTER}/0123456789abcdef"
    status = run(handler, "workload_status", task_arn=gone, instance_id=instance_id)
    assert (status["status"], status["error_class"], status["code"]) == ("failed", "transient", "TaskMissing")


# --- launch_instance: a failed launch ---------------------------------------------------------------


def test_cleanup_stops_the_launchs_task_and_terminates_its_instance(handler: ModuleType) -> None:
    instance_id, _task = serving(handler)
    run(handler, "cleanup", launch_id=LAUNCH_ID)
    assert tasks() == []
    assert instance_id not in in_service()
    assert ec2_instance(instance_id)["State"]["Name"] == "terminated"
    assert group()["DesiredCapacity"] == 0


def test_cleanup_of_a_launch_whose_instance_never_came_up_shrinks_the_group_back(handler: ModuleType) -> None:
    run(handler, "scale_out", launch_id=LAUNCH_ID, capacity_type="spot")
    (failed_to_boot,) = in_service()
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=[failed_to_boot])
    run(handler, "cleanup", launch_id=LAUNCH_ID)
    assert group()["DesiredCapacity"] == 0


def test_cleanup_of_an_unclaimed_launch_never_terminates_the_serving_instance(handler: ModuleType) -> None:
    serving_instance = launched(handler, "replica-0-g1-0")
    replacement = "replica-0-r-i-0serving-0"
    run(handler, "scale_out", launch_id=replacement, capacity_type="spot")
    (unclaimed,) = [i for i in in_service() if i != serving_instance]
    run(handler, "cleanup", launch_id=replacement)
    assert group()["DesiredCapacity"] == 1
    assert ec2_instance(serving_instance)["State"]["Name"] == "running"
    assert ec2_instance(unclaimed)["State"]["Name"] == "terminated"


def test_describe_failure_names_the_class_the_hub_acts_on(handler: ModuleType) -> None:
    error = {"Error": "CapacityError", "Cause": "no g5 capacity"}
    assert run(handler, "describe_failure", error=error) == {
        "error_class": "capacity",
        "code": "CapacityError",
        "message": "no g5 capacity",
    }
    assert (
        run(handler, "describe_failure", error={"Error": "States.Timeout", "Cause": ""})["error_class"] == "transient"
    )

"""The worker region's function through its Lambda entry point: every task its state machines call, and the
hub's commands it turns into executions, against moto's Auto Scaling, EC2, ECS and Step Functions.

The group launches real moto instances when its desired capacity changes; the ECS agent's registration is
done by the test (moto runs no agent); tasks stay in the status they are put in (moto advances a task on
every describe unless told not to). moto records no failed scaling activity, so that one answer is given
at the client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.moto_api import state_manager
from pydantic import ValidationError

from spothub_core.errors import CapacityError, FatalError, TransientError
from tests.integration.conftest import (
    ApiCalls,
    asl_actions,
    create_state_machine,
    eventbridge_event,
    executions,
    load_handler,
    set_environment,
)
from tests.lambda_events import FakeLambdaContext

STATEMACHINES = Path(__file__).resolve().parents[2] / "statemachines"

REGION = "us-west-2"
GROUP = "spothub-gpu"
CLUSTER = "spothub-serving"
TASK_FAMILY = "spothub-serving"
TEMPLATE = "spothub-gpu"
LAUNCH_MACHINE = "spothub-launch-instance"
TEARDOWN_MACHINE = "spothub-teardown-instance"
LAUNCH_ID = "replica-0-g1-0"
REPLICA_TAG = "spothub:replica"
LAUNCH_TAG = "spothub:launch-id"
LONG_AGO = "2000-01-01T00:00:00Z"


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    with mock_aws():
        launch_arn = create_state_machine(LAUNCH_MACHINE, REGION)
        teardown_arn = create_state_machine(TEARDOWN_MACHINE, REGION)
        alerts_arn = boto3.client("sns", region_name=REGION).create_topic(Name="spothub-alerts")["TopicArn"]
        set_environment(
            monkeypatch,
            {
                "SPOTHUB_PREFIX": "spothub",
                "SPOTHUB_VERSION": "0.1.0",
                "POWERTOOLS_SERVICE_NAME": "spothub-instance-from-asg",
                "POWERTOOLS_TRACE_DISABLED": "true",
                # Lambda sets both; boto3 reads the second.
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "SPOTHUB_GROUP_NAME": GROUP,
                "SPOTHUB_CLUSTER_NAME": CLUSTER,
                "SPOTHUB_TASK_DEFINITION": TASK_FAMILY,
                "SPOTHUB_LAUNCH_STATE_MACHINE_ARN": launch_arn,
                "SPOTHUB_TEARDOWN_STATE_MACHINE_ARN": teardown_arn,
                "SPOTHUB_ALERTS_TOPIC_ARN": alerts_arn,
            },
        )
        ec2 = boto3.client("ec2", region_name=REGION)
        subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
        ec2.create_launch_template(
            LaunchTemplateName=TEMPLATE, LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "g5.xlarge"}
        )
        boto3.client("autoscaling", region_name=REGION).create_auto_scaling_group(
            AutoScalingGroupName=GROUP,
            MinSize=0,
            MaxSize=2,
            DesiredCapacity=0,
            VPCZoneIdentifier=subnet,
            MixedInstancesPolicy={
                "LaunchTemplate": {
                    "LaunchTemplateSpecification": {"LaunchTemplateName": TEMPLATE, "Version": "$Latest"},
                    "Overrides": [{"InstanceType": "g5.xlarge"}, {"InstanceType": "g6.xlarge"}],
                },
                "InstancesDistribution": {
                    "OnDemandBaseCapacity": 0,
                    "OnDemandPercentageAboveBaseCapacity": 0,
                    "SpotAllocationStrategy": "price-capacity-optimized",
                },
            },
        )
        ecs = boto3.client("ecs", region_name=REGION)
        ecs.create_cluster(clusterName=CLUSTER)
        ecs.register_task_definition(
            family=TASK_FAMILY, containerDefinitions=[{"name": "serve", "image": "serve:latest", "memory": 1024}]
        )
        before = state_manager.get_transition("ecs::task")
        state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**9})
        try:
            yield load_handler("worker_tasks.handler")
        finally:
            state_manager.set_transition("ecs::task", before)


def run(handler: ModuleType, action: str, **fields: Any) -> dict[str, Any]:
    return handler.lambda_handler({"action": action, **fields}, FakeLambdaContext())


def group() -> dict[str, Any]:
    return boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])[
        "AutoScalingGroups"
    ][0]


def in_service() -> list[str]:
    return [m["InstanceId"] for m in group()["Instances"] if m["LifecycleState"] == "InService"]


def ec2_instance(instance_id: str) -> dict[str, Any]:
    return boto3.client("ec2", region_name=REGION).describe_instances(InstanceIds=[instance_id])["Reservations"][0][
        "Instances"
    ][0]


def tags(instance_id: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in ec2_instance(instance_id).get("Tags", [])}


def register_with_ecs(instance_id: str) -> str:
    """What the instance's ECS agent does when it starts."""
    document = json.dumps({"instanceId": instance_id, "region": REGION})
    return boto3.client("ecs", region_name=REGION).register_container_instance(
        cluster=CLUSTER, instanceIdentityDocument=document
    )["containerInstance"]["containerInstanceArn"]


def tasks(desired_status: str = "RUNNING") -> list[dict[str, Any]]:
    ecs = boto3.client("ecs", region_name=REGION)
    arns = ecs.list_tasks(cluster=CLUSTER, desiredStatus=desired_status)["taskArns"]
    return ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"] if arns else []


def launched(handler: ModuleType, launch_id: str = LAUNCH_ID, replica_id: str = "replica-0") -> str:
    """Scale out and claim the instance, as launch_instance does first; the claimed instance's id."""
    run(handler, "scale_out", launch_id=launch_id, capacity_type="spot")
    claim = run(handler, "claim_instance", launch_id=launch_id, replica_id=replica_id, since=LONG_AGO)
    assert claim["status"] == "ready"
    return str(claim["instance"]["instance_id"])


def serving(handler: ModuleType, launch_id: str = LAUNCH_ID) -> tuple[str, str]:
    """A claimed instance, registered with ECS, running the launch's task: (instance id, task arn)."""
    instance_id = launched(handler, launch_id)
    register_with_ecs(instance_id)
    return instance_id, run(handler, "start_workload", launch_id=launch_id, instance_id=instance_id)["task_arn"]


def test_every_task_the_worker_state_machines_call_is_an_action(handler: ModuleType) -> None:
    named: set[str] = set()
    for machine in ("launch_instance", "teardown_instance", "capacity_monitor"):
        named |= asl_actions(machine)
    assert {"scale_out", "claim_instance", "teardown", "identify"} <= named
    assert named <= set(handler.ACTIONS)


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


def running_launch(handler: ModuleType, launch_id: str) -> None:
    """A launch_instance execution of that name, running (moto runs no definition: it stays RUNNING)."""
    boto3.client("stepfunctions", region_name=REGION).start_execution(
        stateMachineArn=handler.settings.launch_state_machine_arn, name=launch_id, input="{}"
    )


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
    run(handler, "cleanup", launch_id=LAUNCH_ID, error={"Error": "InstanceTimedOut", "Cause": "claim timed out"})
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
    assert tags(instance_id)[LAUNCH_TAG] == LAUNCH_ID
    assert tags(instance_id)[REPLICA_TAG] == "replica-0"


def alarms() -> dict[str, dict[str, Any]]:
    found = boto3.client("cloudwatch", region_name=REGION).describe_alarms()["MetricAlarms"]
    return {a["AlarmName"]: a for a in found}


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
    states = json.loads((STATEMACHINES / "launch_instance.asl.json").read_text())["States"]
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
    activities = ApiCalls(handler.worker.autoscaling, "DescribeScalingActivities")
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
    run(handler, "cleanup", launch_id=LAUNCH_ID, error={"Error": "TransientError", "Cause": "health check failed"})
    assert tasks() == []
    assert instance_id not in in_service()
    assert ec2_instance(instance_id)["State"]["Name"] == "terminated"
    assert group()["DesiredCapacity"] == 0


def test_cleanup_of_a_launch_whose_instance_never_came_up_shrinks_the_group_back(handler: ModuleType) -> None:
    run(handler, "scale_out", launch_id=LAUNCH_ID, capacity_type="spot")
    (failed_to_boot,) = in_service()
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=[failed_to_boot])
    run(handler, "cleanup", launch_id=LAUNCH_ID, error={"Error": "InstanceTimedOut", "Cause": "not in service in time"})
    assert group()["DesiredCapacity"] == 0


def test_cleanup_of_an_unclaimed_launch_never_terminates_the_serving_instance(handler: ModuleType) -> None:
    serving_instance = launched(handler, "replica-0-g1-0")
    replacement = "replica-0-r-i-0serving-0"
    run(handler, "scale_out", launch_id=replacement, capacity_type="spot")
    (unclaimed,) = [i for i in in_service() if i != serving_instance]
    run(handler, "cleanup", launch_id=replacement, error={"Error": "InstanceTimedOut", "Cause": "claim timed out"})
    assert group()["DesiredCapacity"] == 1
    assert ec2_instance(serving_instance)["State"]["Name"] == "running"
    assert ec2_instance(unclaimed)["State"]["Name"] == "terminated"


def test_describe_failure_names_the_class_the_hub_acts_on(handler: ModuleType) -> None:
    if "describe_failure" not in handler.ACTIONS:
        pytest.skip("this version of the worker describes failures in cleanup")
    error = {"Error": "CapacityError", "Cause": "no g5 capacity"}
    assert run(handler, "describe_failure", error=error) == {
        "error_class": "capacity",
        "code": "CapacityError",
        "message": "no g5 capacity",
    }
    assert (
        run(handler, "describe_failure", error={"Error": "States.Timeout", "Cause": ""})["error_class"] == "transient"
    )


# --- teardown_instance ------------------------------------------------------------------------------


def test_teardown_of_an_instance_stops_its_task_and_terminates_it(handler: ModuleType) -> None:
    instance_id, _task = serving(handler)
    run(handler, "watch_instance", instance_id=instance_id)
    assert run(handler, "teardown", instance_id=instance_id, launch_id=None) == {"waiting_for": [instance_id]}
    assert tasks() == []
    assert ec2_instance(instance_id)["State"]["Name"] == "terminated"
    assert run(handler, "teardown_status", waiting_for=[instance_id]) == {"done": True, "remaining": []}
    assert alarms() == {}


def test_teardown_of_a_launch_stops_its_execution_and_releases_its_instance(handler: ModuleType) -> None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    launch_arn = handler.settings.launch_state_machine_arn
    sfn.start_execution(stateMachineArn=launch_arn, name=LAUNCH_ID, input="{}")
    sfn.start_execution(stateMachineArn=launch_arn, name="replica-1-g1-0", input="{}")
    instance_id = launched(handler)
    assert run(handler, "teardown", instance_id=None, launch_id=LAUNCH_ID) == {"waiting_for": []}
    statuses = {name: e["status"] for name, e in executions(launch_arn).items()}
    assert statuses == {LAUNCH_ID: "ABORTED", "replica-1-g1-0": "RUNNING"}
    assert ec2_instance(instance_id)["State"]["Name"] == "terminated"


def test_teardown_of_the_region_stops_everything_and_empties_the_group(handler: ModuleType) -> None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    launch_arn = handler.settings.launch_state_machine_arn
    sfn.start_execution(stateMachineArn=launch_arn, name=LAUNCH_ID, input="{}")
    first, _ = serving(handler, "replica-0-g1-0")
    second = launched(handler, "replica-1-g1-0", "replica-1")
    result = run(handler, "teardown", instance_id=None, launch_id=None)
    assert sorted(result["waiting_for"]) == sorted([first, second])
    assert tasks() == []
    assert group()["DesiredCapacity"] == 0
    assert executions(launch_arn)[LAUNCH_ID]["status"] == "ABORTED"


def test_teardown_status_waits_for_a_running_instance(handler: ModuleType) -> None:
    instance_id = launched(handler)
    assert run(handler, "teardown_status", waiting_for=[instance_id]) == {"done": False, "remaining": [instance_id]}


def test_teardown_status_counts_instances_ec2_no_longer_knows_as_gone(handler: ModuleType) -> None:
    assert run(handler, "teardown_status", waiting_for=["i-0123456789abcdef0"]) == {"done": True, "remaining": []}
    assert run(handler, "teardown_status", waiting_for=[]) == {"done": True, "remaining": []}


def test_tearing_down_an_instance_twice_is_harmless(handler: ModuleType) -> None:
    instance_id = launched(handler)
    run(handler, "teardown", instance_id=instance_id, launch_id=None)
    assert run(handler, "teardown", instance_id=instance_id, launch_id=None) == {"waiting_for": [instance_id]}


MIN_SIZE_REFUSAL = (
    "Currently, desiredSize equals minSize (1). Terminating instance without replacement will violate group's min"
    " size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's min size."
)


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(MIN_SIZE_REFUSAL, id="min-size"),
        pytest.param("1 validation error detected: Value at 'instanceId' failed to satisfy constraint", id="other"),
    ],
)
def test_a_teardown_auto_scaling_refuses_is_no_success_while_the_instance_runs(
    handler: ModuleType, message: str
) -> None:
    instance_id = launched(handler)
    ApiCalls(handler.worker.autoscaling).answer(
        "TerminateInstanceInAutoScalingGroup", error=("ValidationError", message)
    )
    with pytest.raises(FatalError, match=f"terminate {instance_id}: .*ValidationError") as raised:
        run(handler, "teardown", instance_id=instance_id, launch_id=None)
    assert type(raised.value).__name__ == "FatalError"  # the teardown fails: no "completed" report reaches the hub
    assert ec2_instance(instance_id)["State"]["Name"] == "running"
    assert instance_id in in_service()


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("Instance Id not found - No managed instance found for instance ID: {}", id="not-found"),
        pytest.param("The instance {} is not part of Auto Scaling group spothub-gpu.", id="not-in-the-group"),
    ],
)
def test_a_teardown_of_an_instance_the_group_no_longer_has_is_done(handler: ModuleType, message: str) -> None:
    instance_id = launched(handler)
    # It left the group between the look and the terminate call.
    ApiCalls(handler.worker.autoscaling).answer(
        "TerminateInstanceInAutoScalingGroup", error=("ValidationError", message.format(instance_id))
    )
    assert run(handler, "teardown", instance_id=instance_id, launch_id=None) == {"waiting_for": [instance_id]}


def test_a_teardown_of_an_instance_already_terminating_asks_nothing_more(handler: ModuleType) -> None:
    instance_id = launched(handler)
    autoscaling = ApiCalls(handler.worker.autoscaling, "TerminateInstanceInAutoScalingGroup")
    member = {"InstanceId": instance_id, "AutoScalingGroupName": GROUP, "LifecycleState": "Terminating:Wait"}
    autoscaling.answer("DescribeAutoScalingInstances", {"AutoScalingInstances": [member]})
    assert run(handler, "teardown", instance_id=instance_id, launch_id=None) == {"waiting_for": [instance_id]}
    assert autoscaling.of("TerminateInstanceInAutoScalingGroup") == []


def test_a_teardown_of_an_instance_between_states_is_retried(handler: ModuleType) -> None:
    instance_id = launched(handler)
    ApiCalls(handler.worker.autoscaling).answer(
        "TerminateInstanceInAutoScalingGroup",
        error=("ValidationError", f"The instance {instance_id} is not in InService or Standby."),
    )
    with pytest.raises(TransientError, match="not in InService or Standby"):
        run(handler, "teardown", instance_id=instance_id, launch_id=None)


# --- capacity_monitor: identify ---------------------------------------------------------------------


def test_identify_on_an_interruption_takes_the_instance_out_of_the_group(handler: ModuleType) -> None:
    instance_id = launched(handler)
    result = run(handler, "identify", instance_id=instance_id, kind="interruption")
    assert result == {"ours": True, "replica_id": "replica-0", "launch_id": LAUNCH_ID, "kind": "interruption"}
    member = next(m for m in group()["Instances"] if m["InstanceId"] == instance_id)
    assert member["LifecycleState"] == "Standby"
    assert group()["DesiredCapacity"] == 0


def test_identify_on_a_rebalance_leaves_the_instance_in_service(handler: ModuleType) -> None:
    instance_id = launched(handler)
    result = run(handler, "identify", instance_id=instance_id, kind="rebalance")
    assert (result["ours"], result["replica_id"], result["kind"]) == (True, "replica-0", "rebalance")
    assert instance_id in in_service()
    assert group()["DesiredCapacity"] == 1


def test_identify_an_instance_outside_the_group(handler: ModuleType) -> None:
    stranger = boto3.client("ec2", region_name=REGION).run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="g5.xlarge"
    )["Instances"][0]["InstanceId"]
    assert run(handler, "identify", instance_id=stranger, kind="interruption") == {"ours": False}
    assert ec2_instance(stranger)["State"]["Name"] == "running"


# --- the hub's commands -------------------------------------------------------------------------------


def command(detail_type: str, detail: dict[str, Any], source: str = "spothub.hub") -> dict[str, Any]:
    return eventbridge_event(source, detail_type, {"version": "1", **detail}, region=REGION)


def launch_requested(**overrides: Any) -> dict[str, Any]:
    detail = {"launch_id": LAUNCH_ID, "replica_id": "replica-0", "region": REGION, "capacity_type": "spot"}
    return command("Spothub Launch Requested", {**detail, **overrides})


def test_a_launch_command_starts_the_launch_named_by_its_id(handler: ModuleType) -> None:
    result = handler.lambda_handler(launch_requested(), FakeLambdaContext())
    assert result == {"execution": LAUNCH_ID, "started": True}
    started = executions(handler.settings.launch_state_machine_arn)
    assert started[LAUNCH_ID]["status"] == "RUNNING"
    assert started[LAUNCH_ID]["input"] == {
        "version": "1",
        "launch_id": LAUNCH_ID,
        "replica_id": "replica-0",
        "region": REGION,
        "capacity_type": "spot",
    }


def test_a_launch_command_delivered_twice_starts_one_launch(handler: ModuleType) -> None:
    # Step Functions answers a second start of a running execution (same name, same input) with the first one.
    handler.lambda_handler(launch_requested(), FakeLambdaContext())
    assert handler.lambda_handler(launch_requested(), FakeLambdaContext())["execution"] == LAUNCH_ID
    assert list(executions(handler.settings.launch_state_machine_arn)) == [LAUNCH_ID]


def test_a_launch_command_delivered_after_its_launch_ended_starts_nothing(handler: ModuleType) -> None:
    handler.lambda_handler(launch_requested(), FakeLambdaContext())
    launch_arn = handler.settings.launch_state_machine_arn
    execution_arn = launch_arn.replace(":stateMachine:", ":execution:") + f":{LAUNCH_ID}"
    boto3.client("stepfunctions", region_name=REGION).stop_execution(executionArn=execution_arn)
    assert handler.lambda_handler(launch_requested(), FakeLambdaContext()) == {"execution": LAUNCH_ID, "started": False}
    assert {name: e["status"] for name, e in executions(launch_arn).items()} == {LAUNCH_ID: "ABORTED"}


def test_a_teardown_command_starts_the_teardown_named_by_its_id(handler: ModuleType) -> None:
    detail = {"teardown_id": "retire-i-0old", "region": REGION, "instance_id": "i-0old", "reason": "replaced"}
    result = handler.lambda_handler(command("Spothub Teardown Requested", detail), FakeLambdaContext())
    assert result == {"execution": "retire-i-0old", "started": True}
    started = executions(handler.settings.teardown_state_machine_arn)["retire-i-0old"]
    assert (started["input"]["instance_id"], started["input"]["launch_id"]) == ("i-0old", None)
    assert executions(handler.settings.launch_state_machine_arn) == {}


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(eventbridge_event("spothub.worker", "Spothub Launch Requested", {}), id="not-from-the-hub"),
        pytest.param(eventbridge_event("spothub.hub", "Spothub Launch Succeeded", {}), id="not-a-command"),
        pytest.param({"detail": {}}, id="no-source"),
    ],
)
def test_an_event_that_is_not_a_hub_command_is_ignored(handler: ModuleType, event: dict[str, Any]) -> None:
    assert handler.lambda_handler(event, FakeLambdaContext()) == {"outcome": "ignored: unknown kind"}
    assert executions(handler.settings.launch_state_machine_arn) == {}
    assert executions(handler.settings.teardown_state_machine_arn) == {}


@pytest.mark.parametrize(
    ("detail", "field"),
    [
        pytest.param({"launch_id": ""}, "launch_id", id="empty-launch-id"),
        pytest.param({"capacity_type": "reserved"}, "capacity_type", id="unknown-capacity-type"),
        pytest.param({"replica_id": "r" * 41}, "replica_id", id="replica-id-too-long"),
    ],
)
def test_a_broken_command_raises_naming_the_field_and_starts_nothing(
    handler: ModuleType, detail: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        handler.lambda_handler(launch_requested(**detail), FakeLambdaContext())
    assert field in {str(error["loc"][0]) for error in raised.value.errors()}
    assert executions(handler.settings.launch_state_machine_arn) == {}


def test_an_unknown_action_is_an_error_naming_the_known_ones(handler: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"unknown action 'reboot'; known: scale_out, claim_instance, .*identify"):
        run(handler, "reboot")

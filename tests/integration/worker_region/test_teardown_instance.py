"""The teardown_instance state machine's tasks through the worker function's entry point: stop the tasks, give
the instances back (one, a launch's, or the region's), and confirm they are gone."""

from __future__ import annotations

from types import ModuleType

import boto3
import pytest

from spothub_core.errors import FatalError, TransientError
from tests.integration.conftest import ApiCalls, executions
from tests.integration.worker_region.region import (
    GROUP,
    LAUNCH_ID,
    REGION,
    alarms,
    ec2_instance,
    group,
    in_service,
    launched,
    run,
    serving,
    tasks,
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
    ApiCalls(handler.autoscaling).answer("TerminateInstanceInAutoScalingGroup", error=("ValidationError", message))
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
    ApiCalls(handler.autoscaling).answer(
        "TerminateInstanceInAutoScalingGroup", error=("ValidationError", message.format(instance_id))
    )
    assert run(handler, "teardown", instance_id=instance_id, launch_id=None) == {"waiting_for": [instance_id]}


def test_a_teardown_of_an_instance_already_terminating_asks_nothing_more(handler: ModuleType) -> None:
    instance_id = launched(handler)
    autoscaling = ApiCalls(handler.autoscaling, "TerminateInstanceInAutoScalingGroup")
    member = {"InstanceId": instance_id, "AutoScalingGroupName": GROUP, "LifecycleState": "Terminating:Wait"}
    autoscaling.answer("DescribeAutoScalingInstances", {"AutoScalingInstances": [member]})
    assert run(handler, "teardown", instance_id=instance_id, launch_id=None) == {"waiting_for": [instance_id]}
    assert autoscaling.of("TerminateInstanceInAutoScalingGroup") == []


def test_a_teardown_of_an_instance_between_states_is_retried(handler: ModuleType) -> None:
    instance_id = launched(handler)
    ApiCalls(handler.autoscaling).answer(
        "TerminateInstanceInAutoScalingGroup",
        error=("ValidationError", f"The instance {instance_id} is not in InService or Standby."),
    )
    with pytest.raises(TransientError, match="not in InService or Standby"):
        run(handler, "teardown", instance_id=instance_id, launch_id=None)

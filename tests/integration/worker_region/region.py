"""A worker region in moto for the worker function's tests: its constants, the calls into the function, and
looks at what it did to the group, the instances and the cluster."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import boto3

from spothub_core.contracts import InstanceTag
from tests.lambda_events import FakeLambdaContext

REGION = "us-west-2"
GROUP = "spothub-gpu"
CLUSTER = "spothub-serving"
TASK_FAMILY = "spothub-serving"
TEMPLATE = "spothub-gpu"
LAUNCH_MACHINE = "spothub-launch-instance"
TEARDOWN_MACHINE = "spothub-teardown-instance"
LAUNCH_ID = "replica-0-g1-0"
LONG_AGO = "2000-01-01T00:00:00Z"


def create_group() -> None:
    """The region's launch template and Auto Scaling group (empty, at most two instances), as the worker stack
    defines them."""
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


def tag(instance_id: str, launch_id: str, replica_id: str) -> None:
    """What a launch's claim does to its instance."""
    boto3.client("ec2", region_name=REGION).create_tags(
        Resources=[instance_id],
        Tags=[
            {"Key": InstanceTag.LAUNCH.value, "Value": launch_id},
            {"Key": InstanceTag.REPLICA.value, "Value": replica_id},
        ],
    )


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


def alarms() -> dict[str, dict[str, Any]]:
    found = boto3.client("cloudwatch", region_name=REGION).describe_alarms()["MetricAlarms"]
    return {a["AlarmName"]: a for a in found}


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


def running_launch(handler: ModuleType, launch_id: str) -> None:
    """A launch_instance execution of that name, running (moto runs no definition: it stays RUNNING)."""
    boto3.client("stepfunctions", region_name=REGION).start_execution(
        stateMachineArn=handler.settings.launch_state_machine_arn, name=launch_id, input="{}"
    )

"""A worker region's Auto Scaling group and ECS cluster: the mechanics its state machines' tasks share.

Every function takes plain values and boto3 clients and is safe to run twice: instances are claimed by
tags naming the launch, desired capacity is computed from what is claimed (never incremented blindly),
tasks carry the launch in `startedBy`. AWS errors become the classes the state machines catch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import CapacityError, FatalError, QuotaError, TransientError
from spothub_core.logic import instance_alarms
from spothub_core.logic.launch_errors import LaunchFailure, classify_launch_error

LAUNCH_TAG = "spothub:launch-id"
REPLICA_TAG = "spothub:replica"
GONE_STATES = {"Terminating", "Terminating:Wait", "Terminating:Proceed", "Terminated", "Standby"}
# What Auto Scaling says (ValidationError) when terminating an instance that is not, or no longer, in the group.
NOT_IN_GROUP = ("instance id not found", "no managed instance found", "is not part of auto scaling group")
BETWEEN_STATES = "is not in inservice or standby"
# ECS startedBy holds at most 36 characters.
STARTED_BY_LENGTH = 36


@dataclass(frozen=True)
class WorkerRegion:
    region: str
    group_name: str
    cluster_name: str
    task_definition: str
    autoscaling: Any
    ec2: Any
    ecs: Any
    sfn: Any
    launch_state_machine_arn: str = ""
    cloudwatch: Any = None
    prefix: str = ""
    alerts_topic_arn: str = ""


def aws_call(what: str, method: Any, **kwargs: Any) -> Any:
    """Call AWS; errors become the classes the state machines catch (capacity, transient, fatal)."""
    try:
        return method(**kwargs)
    except ClientError as exc:
        raise classified(what, exc) from exc
    except BotoCoreError as exc:
        raise TransientError(f"{what}: {reason_of(exc)}") from exc


def classified(what: str, exc: ClientError) -> Exception:
    """The class the state machines catch for an AWS error (capacity, quota, transient, fatal)."""
    error = exc.response.get("Error", {})
    failure = classify_launch_error(error.get("Code"), error.get("Message", ""))
    kind = {
        LaunchFailure.CAPACITY: CapacityError,
        LaunchFailure.QUOTA: QuotaError,
        LaunchFailure.FATAL: FatalError,
    }.get(failure, TransientError)
    return kind(f"{what}: {reason_of(exc)}")


def started_by(launch_id: str) -> str:
    return launch_id[-STARTED_BY_LENGTH:]


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def instances(worker: WorkerRegion, instance_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not instance_ids:
        return {}
    reservations = aws_call("describe instances", worker.ec2.describe_instances, InstanceIds=instance_ids)[
        "Reservations"
    ]
    return {i["InstanceId"]: i for r in reservations for i in r["Instances"]}


def members(worker: WorkerRegion) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The group and its live members (not leaving), each with its EC2 description under `ec2`."""
    groups = aws_call(
        "describe the group", worker.autoscaling.describe_auto_scaling_groups, AutoScalingGroupNames=[worker.group_name]
    )["AutoScalingGroups"]
    if not groups:
        raise FatalError(f"Auto Scaling group {worker.group_name} does not exist in {worker.region}")
    group = groups[0]
    staying = [m for m in group.get("Instances", []) if m.get("LifecycleState") not in GONE_STATES]
    described = instances(worker, [m["InstanceId"] for m in staying])
    live = []
    for member in staying:
        ec2 = described.get(member["InstanceId"])
        if ec2 and ec2.get("State", {}).get("Name") not in ("shutting-down", "terminated", "stopping", "stopped"):
            live.append({**member, "ec2": ec2})
    return group, live


def claimed(live: list[dict[str, Any]], *, but: str | None = None) -> list[dict[str, Any]]:
    """Members claimed by a launch (other than `but`)."""
    return [m for m in live if tags_of(m["ec2"]).get(LAUNCH_TAG) and tags_of(m["ec2"]).get(LAUNCH_TAG) != but]


def claimed_by(live: list[dict[str, Any]], launch_id: str) -> list[dict[str, Any]]:
    return [m for m in live if tags_of(m["ec2"]).get(LAUNCH_TAG) == launch_id]


def on_demand_count(live: list[dict[str, Any]]) -> int:
    return sum(1 for m in live if m["ec2"].get("InstanceLifecycle") != "spot")


def facts(instance: dict[str, Any], task_arn: str | None = None) -> dict[str, Any]:
    """An EC2 instance as the hub records it."""
    launched = instance.get("LaunchTime")
    return {
        "instance_id": instance["InstanceId"],
        "instance_type": instance.get("InstanceType", ""),
        "availability_zone": instance.get("Placement", {}).get("AvailabilityZone", ""),
        "capacity_type": "spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand",
        "private_ip": instance.get("PrivateIpAddress"),
        "public_ip": instance.get("PublicIpAddress"),
        "launched_at": launched.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(launched, "strftime") else launched,
        "task_arn": task_arn,
    }


def set_size(worker: WorkerRegion, group: dict[str, Any], *, desired: int, on_demand: int) -> None:
    policy = group.get("MixedInstancesPolicy")
    if policy is not None:
        distribution = policy.get("InstancesDistribution", {})
        if int(distribution.get("OnDemandBaseCapacity", 0)) != on_demand:
            # The whole policy is sent back: an update replaces it, overrides included. Describe names the
            # launch template by id and by name; an update must name it one way only.
            template = policy["LaunchTemplate"]
            spec = {k: v for k, v in template["LaunchTemplateSpecification"].items() if k != "LaunchTemplateName"}
            updated = {
                **policy,
                "LaunchTemplate": {**template, "LaunchTemplateSpecification": spec},
                "InstancesDistribution": {**distribution, "OnDemandBaseCapacity": on_demand},
            }
            aws_call(
                "set the on-demand base",
                worker.autoscaling.update_auto_scaling_group,
                AutoScalingGroupName=worker.group_name,
                MixedInstancesPolicy=updated,
            )
    if int(group.get("DesiredCapacity", 0)) != desired:
        if desired > int(group.get("MaxSize", 0)):
            raise CapacityError(
                f"{worker.group_name} in {worker.region} is at its maximum of {group.get('MaxSize')} instances "
                "(maxInstancesPerRegion)"
            )
        aws_call(
            "set the desired capacity",
            worker.autoscaling.set_desired_capacity,
            AutoScalingGroupName=worker.group_name,
            DesiredCapacity=desired,
            HonorCooldown=False,
        )


def container_instance(worker: WorkerRegion, instance_id: str) -> str | None:
    """The instance's ACTIVE container instance in the cluster; None until its ECS agent registers."""
    arns = aws_call("list container instances", worker.ecs.list_container_instances, cluster=worker.cluster_name).get(
        "containerInstanceArns", []
    )
    if not arns:
        return None
    described = aws_call(
        "describe container instances",
        worker.ecs.describe_container_instances,
        cluster=worker.cluster_name,
        containerInstances=arns,
    ).get("containerInstances", [])
    return next(
        (
            c["containerInstanceArn"]
            for c in described
            if c.get("ec2InstanceId") == instance_id and c.get("status") == "ACTIVE"
        ),
        None,
    )


def stop_tasks(worker: WorkerRegion, *, launch_id: str | None = None, instance_id: str | None = None) -> None:
    """Stop the running tasks of a launch, of an instance, or (neither given) of the whole cluster."""
    query: dict[str, Any] = {"cluster": worker.cluster_name, "desiredStatus": "RUNNING"}
    if launch_id:
        query["startedBy"] = started_by(launch_id)
    if instance_id:
        arn = container_instance(worker, instance_id)
        if arn is None:
            return
        query["containerInstance"] = arn
    for task_arn in aws_call("list tasks", worker.ecs.list_tasks, **query).get("taskArns", []):
        aws_call(
            "stop a task", worker.ecs.stop_task, cluster=worker.cluster_name, task=task_arn, reason="spothub teardown"
        )


def group_member(worker: WorkerRegion, instance_id: str) -> dict[str, Any] | None:
    """The instance as a member of this region's spothub group (LifecycleState and all); None when it is not."""
    members_of = aws_call(
        "describe the instance's group", worker.autoscaling.describe_auto_scaling_instances, InstanceIds=[instance_id]
    ).get("AutoScalingInstances", [])
    return next((m for m in members_of if m.get("AutoScalingGroupName") == worker.group_name), None)


def watch(worker: WorkerRegion, instance_id: str) -> None:
    """Alarm on the instance's agent (silence, GPU errors), to the alerts topic and remediation."""
    if worker.cloudwatch is not None:
        aws_call(
            "create the instance's alarms",
            instance_alarms.watch,
            cloudwatch=worker.cloudwatch,
            prefix=worker.prefix,
            instance_id=instance_id,
            alarm_actions=[worker.alerts_topic_arn] if worker.alerts_topic_arn else [],
        )


def unwatch(worker: WorkerRegion, instance_id: str) -> None:
    if worker.cloudwatch is not None:
        aws_call(
            "delete the instance's alarms",
            instance_alarms.unwatch,
            cloudwatch=worker.cloudwatch,
            prefix=worker.prefix,
            instance_id=instance_id,
        )


def terminate(worker: WorkerRegion, instance_id: str) -> None:
    unwatch(worker, instance_id)
    member = group_member(worker, instance_id)
    if member is None or str(member.get("LifecycleState")).startswith("Terminat"):
        return  # gone or already leaving: a teardown is done when the instance is
    # A Standby instance (interruption warning) no longer counts in the desired capacity: decrementing
    # again would make the group terminate the replacement.
    decrement = member.get("LifecycleState") != "Standby"
    try:
        worker.autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId=instance_id, ShouldDecrementDesiredCapacity=decrement
        )
    except ClientError as exc:
        message = exc.response["Error"].get("Message", "").lower()
        if exc.response["Error"].get("Code") == "ValidationError" and any(m in message for m in NOT_IN_GROUP):
            return  # left the group since the look above: a teardown is done when the instance is
        if BETWEEN_STATES in message:
            # Pending (a lifecycle state Auto Scaling cannot terminate from): the retry looks again.
            raise TransientError(f"terminate {instance_id}: {reason_of(exc)}") from exc
        # Any other refusal (the group's min size, say) leaves the instance running: never a teardown's success.
        raise classified(f"terminate {instance_id}", exc) from exc


def release_launch(worker: WorkerRegion, launch_id: str) -> None:
    """Undo what a launch took: stop its task, terminate its instance, shrink the group back."""
    stop_tasks(worker, launch_id=launch_id)
    _group, live = members(worker)
    mine = claimed_by(live, launch_id)
    in_flight = launches_in_flight(worker, live, but=launch_id)
    if not mine:
        # Not claimed yet (the claim timed out or never ran): terminate the unclaimed instances by name, but one
        # for each other launch in flight, which will claim it (any of them: a launch claims the newest). Lowering
        # the desired capacity instead would let Auto Scaling choose, and it may choose a serving instance.
        unclaimed = [m for m in live if not tags_of(m["ec2"]).get(LAUNCH_TAG)]
        newest_first = sorted(unclaimed, key=lambda m: str(m["ec2"].get("LaunchTime")), reverse=True)
        mine = newest_first[: max(0, len(unclaimed) - in_flight)]
    for member in mine:
        terminate(worker, member["InstanceId"])
    group, live = members(worker)
    others = claimed(live, but=launch_id)
    set_size(worker, group, desired=len(others) + in_flight, on_demand=on_demand_count(others))


def launches_in_flight(worker: WorkerRegion, live: list[dict[str, Any]], *, but: str) -> int:
    """Running launches, other than `but`, that have not claimed an instance yet. The desired capacity counts
    each: its instance is still to come, or waits unclaimed. (Claimed ones count as the instances they hold.)"""
    if not worker.launch_state_machine_arn:
        return 0
    running: set[str] = set()
    query: dict[str, Any] = {"stateMachineArn": worker.launch_state_machine_arn, "statusFilter": "RUNNING"}
    while True:
        page = aws_call("list running launches", worker.sfn.list_executions, **query)
        running |= {e["name"] for e in page.get("executions", [])}
        if not page.get("nextToken"):
            break
        query["nextToken"] = page["nextToken"]
    holding = {tags_of(m["ec2"]).get(LAUNCH_TAG) for m in live}
    return len(running - holding - {but})

"""A worker region's Auto Scaling group and ECS cluster: the decisions its state machines' tasks share.

Every function is safe to run twice: instances are claimed by tags naming the launch, desired capacity is
computed from what is claimed (never incremented blindly), tasks carry the launch in `startedBy`. The AWS
calls are the dal's (auto_scaling_group, ec2_instances, serving_tasks, instance_alarms, launch_executions);
their errors arrive as the classes the state machines catch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spothub_core.contracts import InstanceFacts, InstanceTag
from spothub_core.dal.auto_scaling_group import AutoScalingGroup
from spothub_core.dal.ec2_instances import Ec2Instances, tags_of
from spothub_core.dal.instance_alarms import InstanceAlarms
from spothub_core.dal.launch_executions import LaunchExecutions
from spothub_core.dal.serving_tasks import ServingTasks
from spothub_core.errors import CapacityError
from spothub_core.logic import instance_alarms

GONE_STATES = {"Terminating", "Terminating:Wait", "Terminating:Proceed", "Terminated", "Standby"}
ENDED_EC2_STATES = ("shutting-down", "terminated", "stopping", "stopped")
TEARDOWN_REASON = "spothub teardown"


@dataclass(frozen=True)
class WorkerRegion:
    """What the worker_tasks function works with in its region."""

    region: str
    group: AutoScalingGroup
    instances: Ec2Instances
    tasks: ServingTasks
    alarms: InstanceAlarms
    launches: LaunchExecutions
    prefix: str
    alerts_topic_arn: str


def launch_of(member: dict[str, Any]) -> str | None:
    """The launch that claimed a member (its tag), None while unclaimed."""
    return tags_of(member["ec2"]).get(InstanceTag.LAUNCH)


def members(worker: WorkerRegion) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The group and its live members (not leaving), each with its EC2 description under `ec2`."""
    group = worker.group.describe()
    staying = [m for m in group.get("Instances", []) if m.get("LifecycleState") not in GONE_STATES]
    described = worker.instances.describe([m["InstanceId"] for m in staying])
    live = []
    for member in staying:
        ec2 = described.get(member["InstanceId"])
        if ec2 and ec2.get("State", {}).get("Name") not in ENDED_EC2_STATES:
            live.append({**member, "ec2": ec2})
    return group, live


def claimed(live: list[dict[str, Any]], *, but: str | None = None) -> list[dict[str, Any]]:
    """Members claimed by a launch (other than `but`)."""
    return [m for m in live if launch_of(m) and launch_of(m) != but]


def claimed_by(live: list[dict[str, Any]], launch_id: str) -> list[dict[str, Any]]:
    return [m for m in live if launch_of(m) == launch_id]


def unclaimed(live: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in live if not launch_of(m)]


def on_demand_count(live: list[dict[str, Any]]) -> int:
    return sum(1 for m in live if m["ec2"].get("InstanceLifecycle") != "spot")


def iso(moment: Any) -> str:
    """An AWS timestamp (a datetime from boto3) as ISO 8601 UTC."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(moment, "strftime") else str(moment)


def facts(instance: dict[str, Any], task_arn: str | None = None) -> InstanceFacts:
    """An EC2 instance as the hub records it."""
    launched = instance.get("LaunchTime")
    return InstanceFacts(
        instance_id=instance["InstanceId"],
        instance_type=instance.get("InstanceType", ""),
        availability_zone=instance.get("Placement", {}).get("AvailabilityZone", ""),
        capacity_type="spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand",
        private_ip=instance.get("PrivateIpAddress"),
        public_ip=instance.get("PublicIpAddress"),
        launched_at=None if launched is None else iso(launched),
        task_arn=task_arn,
    )


def set_size(worker: WorkerRegion, group: dict[str, Any], *, desired: int, on_demand: int) -> None:
    policy = group.get("MixedInstancesPolicy")
    if policy is not None and int(policy.get("InstancesDistribution", {}).get("OnDemandBaseCapacity", 0)) != on_demand:
        worker.group.set_on_demand_base(policy, on_demand)
    if int(group.get("DesiredCapacity", 0)) != desired:
        if desired > int(group.get("MaxSize", 0)):
            raise CapacityError(
                f"{worker.group.name} in {worker.region} is at its maximum of {group.get('MaxSize')} instances "
                "(maxInstancesPerRegion)"
            )
        worker.group.set_desired_capacity(desired)


def stop_tasks(worker: WorkerRegion, *, launch_id: str | None = None, instance_id: str | None = None) -> None:
    """Stop the running tasks of a launch, of an instance, or (neither given) of the whole cluster."""
    container = None
    if instance_id:
        container = worker.tasks.container_instance(instance_id)
        if container is None:
            return
    for task_arn in worker.tasks.running(launch_id=launch_id, container_instance=container):
        worker.tasks.stop(task_arn, TEARDOWN_REASON)


def watch(worker: WorkerRegion, instance_id: str) -> None:
    """Alarm on the instance's agent (silence, GPU errors), to the alerts topic and remediation."""
    actions = [worker.alerts_topic_arn] if worker.alerts_topic_arn else []
    worker.alarms.put(instance_alarms.alarm_definitions(worker.prefix, instance_id, actions))


def unwatch(worker: WorkerRegion, instance_id: str) -> None:
    worker.alarms.delete(instance_alarms.alarm_names(worker.prefix, instance_id))


def terminate(worker: WorkerRegion, instance_id: str) -> None:
    unwatch(worker, instance_id)
    member = worker.group.member(instance_id)
    if member is None or str(member.get("LifecycleState")).startswith("Terminat"):
        return  # gone or already leaving: a teardown is done when the instance is
    # A Standby instance (interruption warning) no longer counts in the desired capacity: decrementing
    # again would make the group terminate the replacement.
    worker.group.terminate(instance_id, decrement=member.get("LifecycleState") != "Standby")


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
        waiting = unclaimed(live)
        newest_first = sorted(waiting, key=lambda m: str(m["ec2"].get("LaunchTime")), reverse=True)
        mine = newest_first[: max(0, len(waiting) - in_flight)]
    for member in mine:
        terminate(worker, member["InstanceId"])
    group, live = members(worker)
    others = claimed(live, but=launch_id)
    set_size(worker, group, desired=len(others) + in_flight, on_demand=on_demand_count(others))


def launches_in_flight(worker: WorkerRegion, live: list[dict[str, Any]], *, but: str) -> int:
    """Running launches, other than `but`, that have not claimed an instance yet. The desired capacity counts
    each: its instance is still to come, or waits unclaimed. (Claimed ones count as the instances they hold.)"""
    holding = {launch_of(m) for m in live}
    return len(set(worker.launches.running()) - holding - {but})

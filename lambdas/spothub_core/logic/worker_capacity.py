"""A worker region's mechanics: its Auto Scaling group and ECS cluster, driven by the state machines.

Each function is one task of `launch_instance`, `teardown_instance` or `capacity_monitor`, takes plain
values and boto3 clients, and is safe to run twice: instances are claimed by tags naming the launch,
desired capacity is computed from what is claimed (never incremented blindly), tasks carry the launch
in `startedBy`. At most one launch is in flight per region (the hub places one replica per region), so
"the newest unclaimed instance" is the launch's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import CapacityError, FatalError, TransientError
from spothub_core.logic.launch_errors import LaunchFailure, classify_launch_error

LAUNCH_TAG = "spothub:launch-id"
REPLICA_TAG = "spothub:replica"
GONE_STATES = {"Terminating", "Terminating:Wait", "Terminating:Proceed", "Terminated", "Standby"}
# ECS startedBy holds at most 36 characters.
STARTED_BY_LENGTH = 36
FATAL_STOP_CODES = ("CannotPullContainerError", "CannotCreateContainerError", "InvalidImage")


class WorkloadNotReady(TransientError):
    """The instance's ECS agent has not registered it with the cluster yet; the state machine retries."""


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


def _aws(what: str, method: Any, **kwargs: Any) -> Any:
    """Call AWS; errors become the classes the state machines catch (capacity, transient, fatal)."""
    try:
        return method(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        failure = classify_launch_error(error.get("Code"), error.get("Message", ""))
        message = f"{what}: {reason_of(exc)}"
        raise {LaunchFailure.CAPACITY: CapacityError, LaunchFailure.FATAL: FatalError}.get(failure, TransientError)(
            message
        ) from exc
    except BotoCoreError as exc:
        raise TransientError(f"{what}: {reason_of(exc)}") from exc


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the group and its instances ----------------------------------------------------------------


def _group(worker: WorkerRegion) -> dict[str, Any]:
    groups = _aws(
        "describe the group", worker.autoscaling.describe_auto_scaling_groups, AutoScalingGroupNames=[worker.group_name]
    )["AutoScalingGroups"]
    if not groups:
        raise FatalError(f"Auto Scaling group {worker.group_name} does not exist in {worker.region}")
    return groups[0]


def _instances(worker: WorkerRegion, instance_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not instance_ids:
        return {}
    reservations = _aws("describe instances", worker.ec2.describe_instances, InstanceIds=instance_ids)["Reservations"]
    return {i["InstanceId"]: i for r in reservations for i in r["Instances"]}


def _tags(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def _members(worker: WorkerRegion) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The group and its live members (not leaving), each with its EC2 description under `ec2`."""
    group = _group(worker)
    members = [m for m in group.get("Instances", []) if m.get("LifecycleState") not in GONE_STATES]
    described = _instances(worker, [m["InstanceId"] for m in members])
    live = []
    for member in members:
        ec2 = described.get(member["InstanceId"])
        if ec2 and ec2.get("State", {}).get("Name") not in ("shutting-down", "terminated", "stopping", "stopped"):
            live.append({**member, "ec2": ec2})
    return group, live


def facts(instance: dict[str, Any], task_arn: str | None = None) -> dict[str, Any]:
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


def _set_size(worker: WorkerRegion, group: dict[str, Any], *, desired: int, on_demand: int) -> None:
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
            _aws(
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
        _aws(
            "set the desired capacity",
            worker.autoscaling.set_desired_capacity,
            AutoScalingGroupName=worker.group_name,
            DesiredCapacity=desired,
            HonorCooldown=False,
        )


def _claimed(live: list[dict[str, Any]], *, but: str | None = None) -> list[dict[str, Any]]:
    return [m for m in live if _tags(m["ec2"]).get(LAUNCH_TAG) and _tags(m["ec2"]).get(LAUNCH_TAG) != but]


def _on_demand(members: list[dict[str, Any]]) -> int:
    return sum(1 for m in members if m["ec2"].get("InstanceLifecycle") != "spot")


# --- launch_instance ------------------------------------------------------------------------------


def scale_out(worker: WorkerRegion, launch_id: str, capacity_type: str) -> dict[str, Any]:
    group, live = _members(worker)
    claimed = _claimed(live, but=launch_id)
    desired = len(claimed) + 1
    on_demand = _on_demand(claimed) + (1 if capacity_type == "on-demand" else 0)
    _set_size(worker, group, desired=desired, on_demand=on_demand)
    return {"started_at": _now_iso(), "desired": desired, "on_demand_base": on_demand}


def claim_instance(worker: WorkerRegion, launch_id: str, replica_id: str, since: str) -> dict[str, Any]:
    _group_now, live = _members(worker)
    mine = [m for m in live if _tags(m["ec2"]).get(LAUNCH_TAG) == launch_id]
    if mine:
        return {"status": "ready", "instance": facts(mine[0]["ec2"])}
    failure = _failed_activity(worker, since)
    if failure is not None:
        return {"status": "failed", **failure}
    unclaimed = [m for m in live if not _tags(m["ec2"]).get(LAUNCH_TAG) and m.get("LifecycleState") == "InService"]
    if not unclaimed:
        pending = [m["InstanceId"] for m in live if not _tags(m["ec2"]).get(LAUNCH_TAG)]
        return {"status": "waiting", "pending": pending}
    newest = max(unclaimed, key=lambda m: str(m["ec2"].get("LaunchTime")))
    _aws(
        "tag the instance",
        worker.ec2.create_tags,
        Resources=[newest["InstanceId"]],
        Tags=[{"Key": LAUNCH_TAG, "Value": launch_id}, {"Key": REPLICA_TAG, "Value": replica_id}],
    )
    return {"status": "ready", "instance": facts(newest["ec2"])}


def _failed_activity(worker: WorkerRegion, since: str) -> dict[str, Any] | None:
    activities = _aws(
        "read scaling activities",
        worker.autoscaling.describe_scaling_activities,
        AutoScalingGroupName=worker.group_name,
        MaxRecords=20,
    ).get("Activities", [])
    for activity in activities:
        started = activity.get("StartTime")
        started_iso = started.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(started, "strftime") else str(started)
        if activity.get("StatusCode") in ("Failed", "Cancelled") and started_iso >= since:
            message = str(activity.get("StatusMessage") or activity.get("Description") or "")
            failure = classify_launch_error(None, message)
            return {"error_class": failure.value, "code": "LaunchUnsuccessful", "message": message[:500]}
    return None


def start_workload(worker: WorkerRegion, launch_id: str, instance_id: str) -> dict[str, Any]:
    started_by = launch_id[-STARTED_BY_LENGTH:]
    existing = _aws("list tasks", worker.ecs.list_tasks, cluster=worker.cluster_name, startedBy=started_by).get(
        "taskArns", []
    )
    if existing:
        return {"task_arn": existing[0]}
    container_instance = _container_instance(worker, instance_id)
    if container_instance is None:
        raise WorkloadNotReady(f"{instance_id} has not registered with ECS cluster {worker.cluster_name} yet")
    response = _aws(
        "start the serving task",
        worker.ecs.start_task,
        cluster=worker.cluster_name,
        taskDefinition=worker.task_definition,
        containerInstances=[container_instance],
        startedBy=started_by,
        tags=[{"key": LAUNCH_TAG, "value": launch_id}],
    )
    if response.get("failures") or not response.get("tasks"):
        raise TransientError(f"ECS did not start the task on {instance_id}: {response.get('failures')}")
    return {"task_arn": response["tasks"][0]["taskArn"]}


def _container_instance(worker: WorkerRegion, instance_id: str) -> str | None:
    arns = _aws("list container instances", worker.ecs.list_container_instances, cluster=worker.cluster_name).get(
        "containerInstanceArns", []
    )
    if not arns:
        return None
    described = _aws(
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


def workload_status(worker: WorkerRegion, task_arn: str, instance_id: str) -> dict[str, Any]:
    tasks = _aws("describe the task", worker.ecs.describe_tasks, cluster=worker.cluster_name, tasks=[task_arn]).get(
        "tasks", []
    )
    if not tasks:
        return {"status": "failed", "error_class": "transient", "code": "TaskMissing", "message": f"{task_arn} is gone"}
    task = tasks[0]
    if task.get("lastStatus") == "STOPPED":
        reason = f"{task.get('stopCode', '')} {task.get('stoppedReason', '')}".strip()
        fatal = any(code in reason for code in FATAL_STOP_CODES)
        return {
            "status": "failed",
            "error_class": "fatal" if fatal else "transient",
            "code": "TaskStopped",
            "message": reason[:500],
        }
    if task.get("lastStatus") == "RUNNING" and task.get("healthStatus", "UNKNOWN") in ("HEALTHY", "UNKNOWN"):
        instance = _instances(worker, [instance_id]).get(instance_id)
        if instance is None:
            return {"status": "failed", "error_class": "capacity", "code": "InstanceGone", "message": instance_id}
        return {"status": "healthy", "instance": facts(instance, task_arn)}
    return {"status": "starting", "last_status": task.get("lastStatus"), "health": task.get("healthStatus")}


def cleanup(worker: WorkerRegion, launch_id: str, error: dict[str, Any] | None) -> dict[str, Any]:
    """Undo a failed launch: stop its task, terminate its instance or shrink the group back."""
    _stop_tasks(worker, started_by=launch_id[-STARTED_BY_LENGTH:])
    group, live = _members(worker)
    mine = [m for m in live if _tags(m["ec2"]).get(LAUNCH_TAG) == launch_id]
    for member in mine:
        _terminate(worker, member["InstanceId"])
    if not mine:
        others = _claimed(live, but=launch_id)
        _set_size(worker, group, desired=len(others), on_demand=_on_demand(others))
    return describe_error(error)


def describe_error(error: dict[str, Any] | None) -> dict[str, Any]:
    """A state machine's caught error ({Error, Cause}) as the failure class the hub acts on."""
    if not error:
        return {"error_class": "transient", "code": "Unknown", "message": ""}
    name = str(error.get("Error", ""))
    cause = str(error.get("Cause", ""))
    if name in ("CapacityError", "FatalError", "TransientError"):
        error_class = name.removesuffix("Error").lower()
    elif name in ("capacity", "fatal", "transient"):
        error_class = name
    else:
        error_class = "transient"
    return {"error_class": error_class, "code": name, "message": cause[:1000]}


# --- teardown_instance ----------------------------------------------------------------------------


def teardown(worker: WorkerRegion, instance_id: str | None, launch_id: str | None) -> dict[str, Any]:
    if launch_id:
        _stop_launch(worker, launch_id)
        cleanup(worker, launch_id, None)
        return {"waiting_for": []}
    if instance_id:
        _stop_tasks(worker, instance_id=instance_id)
        _terminate(worker, instance_id)
        return {"waiting_for": [instance_id]}
    _stop_launch(worker, None)
    _stop_tasks(worker)
    group, live = _members(worker)
    _set_size(worker, group, desired=0, on_demand=0)
    return {"waiting_for": [m["InstanceId"] for m in live]}


def teardown_status(worker: WorkerRegion, waiting_for: list[str]) -> dict[str, Any]:
    if not waiting_for:
        return {"done": True, "remaining": []}
    described = _instances_tolerant(worker, waiting_for)
    remaining = [i for i in waiting_for if described.get(i, "terminated") not in ("terminated",)]
    return {"done": not remaining, "remaining": remaining}


def _instances_tolerant(worker: WorkerRegion, instance_ids: list[str]) -> dict[str, str]:
    try:
        reservations = worker.ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
    except ClientError as exc:
        if "InvalidInstanceID" in exc.response["Error"].get("Code", ""):
            return {}
        raise TransientError(f"describe instances: {reason_of(exc)}") from exc
    return {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}


def _terminate(worker: WorkerRegion, instance_id: str) -> None:
    members = _aws(
        "describe the instance's group", worker.autoscaling.describe_auto_scaling_instances, InstanceIds=[instance_id]
    ).get("AutoScalingInstances", [])
    if not members:
        return  # already gone: a teardown is done when the instance is
    # A Standby instance (interruption warning) no longer counts in the desired capacity: decrementing
    # again would make the group terminate the replacement.
    decrement = members[0].get("LifecycleState") != "Standby"
    try:
        worker.autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId=instance_id, ShouldDecrementDesiredCapacity=decrement
        )
    except ClientError as exc:
        message = exc.response["Error"].get("Message", "")
        if "not found" in message.lower() or "terminated" in message.lower() or "ValidationError" in str(exc):
            return  # already gone: a teardown is done when the instance is
        raise TransientError(f"terminate {instance_id}: {reason_of(exc)}") from exc


def _stop_tasks(worker: WorkerRegion, *, started_by: str | None = None, instance_id: str | None = None) -> None:
    query: dict[str, Any] = {"cluster": worker.cluster_name, "desiredStatus": "RUNNING"}
    if started_by:
        query["startedBy"] = started_by
    if instance_id:
        container_instance = _container_instance(worker, instance_id)
        if container_instance is None:
            return
        query["containerInstance"] = container_instance
    for task_arn in _aws("list tasks", worker.ecs.list_tasks, **query).get("taskArns", []):
        _aws("stop a task", worker.ecs.stop_task, cluster=worker.cluster_name, task=task_arn, reason="spothub teardown")


def _stop_launch(worker: WorkerRegion, launch_id: str | None) -> None:
    if not worker.launch_state_machine_arn:
        return
    running = _aws(
        "list launches",
        worker.sfn.list_executions,
        stateMachineArn=worker.launch_state_machine_arn,
        statusFilter="RUNNING",
    ).get("executions", [])
    for execution in running:
        if launch_id is None or execution["name"] == launch_id:
            _aws(
                "stop a launch",
                worker.sfn.stop_execution,
                executionArn=execution["executionArn"],
                cause="spothub teardown",
            )


# --- capacity_monitor -----------------------------------------------------------------------------


def identify(worker: WorkerRegion, instance_id: str, kind: str) -> dict[str, Any]:
    """Is this instance one of ours? On an interruption warning, also take it out of the group's count
    (Standby, decrementing), so the group does not replace it: the hub does, possibly elsewhere."""
    members = _aws(
        "describe the instance's group",
        worker.autoscaling.describe_auto_scaling_instances,
        InstanceIds=[instance_id],
    ).get("AutoScalingInstances", [])
    member = next((m for m in members if m.get("AutoScalingGroupName") == worker.group_name), None)
    if member is None:
        return {"ours": False}
    instance = _instances(worker, [instance_id]).get(instance_id, {})
    tags = _tags(instance)
    if kind == "interruption" and member.get("LifecycleState") == "InService":
        _aws(
            "put the instance in standby",
            worker.autoscaling.enter_standby,
            AutoScalingGroupName=worker.group_name,
            InstanceIds=[instance_id],
            ShouldDecrementDesiredCapacity=True,
        )
    return {"ours": True, "replica_id": tags.get(REPLICA_TAG), "launch_id": tags.get(LAUNCH_TAG), "kind": kind}

"""The tasks of the worker's `launch_instance` state machine: scale out, claim the instance, run the
workload, watch it become healthy, arm the instance's alarms once it is in service, and undo a failed launch.

At most one launch is in flight per region (the hub places one replica per region), so "the newest
unclaimed instance" is the launch's own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from spothub_core.errors import TransientError
from spothub_core.logic.launch_errors import classify_launch_error
from spothub_core.logic.worker_region import (
    LAUNCH_TAG,
    REPLICA_TAG,
    WorkerRegion,
    aws_call,
    claimed,
    claimed_by,
    container_instance,
    facts,
    group_member,
    instances,
    launches_in_flight,
    members,
    on_demand_count,
    release_launch,
    set_size,
    started_by,
    tags_of,
    watch,
)

FATAL_STOP_CODES = ("CannotPullContainerError", "CannotCreateContainerError", "InvalidImage")
CLAIMABLE = ("Pending:Wait", "InService")


class WorkloadNotReady(TransientError):
    """The instance's ECS agent has not registered it with the cluster yet; the state machine retries."""


def _iso(moment: Any) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(moment, "strftime") else str(moment)


def scale_out(worker: WorkerRegion, launch_id: str, capacity_type: str) -> dict[str, Any]:
    group, live = members(worker)
    others = claimed(live, but=launch_id)
    # Computed, never incremented, so a retry asks for nothing more; launches in flight count, so two launches
    # scaling out at once ask for two instances.
    desired = len(others) + launches_in_flight(worker, live, but=launch_id) + 1
    on_demand = on_demand_count(others) + (1 if capacity_type == "on-demand" else 0)
    set_size(worker, group, desired=desired, on_demand=on_demand)
    return {"started_at": _iso(datetime.now(UTC)), "desired": desired, "on_demand_base": on_demand}


def claim_instance(worker: WorkerRegion, launch_id: str, replica_id: str, since: str) -> dict[str, Any]:
    _group, live = members(worker)
    mine = claimed_by(live, launch_id)
    if mine:
        return {"status": "ready", "instance": facts(mine[0]["ec2"])}
    failure = _failed_activity(worker, since)
    if failure is not None:
        return {"status": "failed", **failure}
    # Pending:Wait is claimable: the agent completes the launch lifecycle action only once the workload this
    # launch starts on the instance is healthy, so waiting for InService here would wait forever.
    unclaimed = [m for m in live if not tags_of(m["ec2"]).get(LAUNCH_TAG) and m.get("LifecycleState") in CLAIMABLE]
    if not unclaimed:
        pending = [m["InstanceId"] for m in live if not tags_of(m["ec2"]).get(LAUNCH_TAG)]
        return {"status": "waiting", "pending": pending}
    newest = max(unclaimed, key=lambda m: str(m["ec2"].get("LaunchTime")))
    aws_call(
        "tag the instance",
        worker.ec2.create_tags,
        Resources=[newest["InstanceId"]],
        Tags=[{"Key": LAUNCH_TAG, "Value": launch_id}, {"Key": REPLICA_TAG, "Value": replica_id}],
    )
    return {"status": "ready", "instance": facts(newest["ec2"])}


def _failed_activity(worker: WorkerRegion, since: str) -> dict[str, Any] | None:
    activities = aws_call(
        "read scaling activities",
        worker.autoscaling.describe_scaling_activities,
        AutoScalingGroupName=worker.group_name,
        MaxRecords=20,
    ).get("Activities", [])
    for activity in activities:
        if activity.get("StatusCode") in ("Failed", "Cancelled") and _iso(activity.get("StartTime")) >= since:
            message = str(activity.get("StatusMessage") or activity.get("Description") or "")
            failure = classify_launch_error(None, message)
            return {"error_class": failure.value, "code": "LaunchUnsuccessful", "message": message[:500]}
    return None


def start_workload(worker: WorkerRegion, launch_id: str, instance_id: str) -> dict[str, Any]:
    existing = aws_call(
        "list tasks", worker.ecs.list_tasks, cluster=worker.cluster_name, startedBy=started_by(launch_id)
    ).get("taskArns", [])
    if existing:
        return {"task_arn": existing[0]}
    container = container_instance(worker, instance_id)
    if container is None:
        raise WorkloadNotReady(f"{instance_id} has not registered with ECS cluster {worker.cluster_name} yet")
    response = aws_call(
        "start the serving task",
        worker.ecs.start_task,
        cluster=worker.cluster_name,
        taskDefinition=worker.task_definition,
        containerInstances=[container],
        startedBy=started_by(launch_id),
        tags=[{"key": LAUNCH_TAG, "value": launch_id}],
    )
    if response.get("failures") or not response.get("tasks"):
        raise TransientError(f"ECS did not start the task on {instance_id}: {response.get('failures')}")
    return {"task_arn": response["tasks"][0]["taskArn"]}


def workload_status(worker: WorkerRegion, task_arn: str, instance_id: str) -> dict[str, Any]:
    tasks = aws_call("describe the task", worker.ecs.describe_tasks, cluster=worker.cluster_name, tasks=[task_arn]).get(
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
        instance = instances(worker, [instance_id]).get(instance_id)
        member = group_member(worker, instance_id)
        lifecycle = member.get("LifecycleState") if member else None
        if instance is None or lifecycle is None or lifecycle.startswith("Terminat"):
            # Gone while starting: interrupted, or the agent abandoned the lifecycle action (unhealthy workload).
            return {"status": "failed", "error_class": "capacity", "code": "InstanceGone", "message": instance_id}
        if lifecycle != "InService":
            return {"status": "starting", "last_status": "RUNNING", "health": f"instance {lifecycle}"}
        return {"status": "healthy", "instance": facts(instance, task_arn)}
    return {"status": "starting", "last_status": task.get("lastStatus"), "health": task.get("healthStatus")}


def watch_instance(worker: WorkerRegion, instance_id: str) -> dict[str, Any]:
    """Arm the instance's alarms, once it is in service with a healthy workload. Not at the claim: the
    instance then waits on its lifecycle hook with no agent beating yet, and missing heartbeats breach."""
    watch(worker, instance_id)
    return {"watched": instance_id}


def cleanup(worker: WorkerRegion, launch_id: str) -> dict[str, Any]:
    """Undo a failed launch: stop its task, terminate its instance or shrink the group back."""
    release_launch(worker, launch_id)
    return {"released": launch_id}

"""The tasks of the worker's `launch_instance` state machine: scale out, claim the instance, run the
workload, watch it become healthy, arm the instance's alarms once it is in service, and undo a failed launch.

At most one launch is in flight per region (the hub places one replica per region), so "the newest
unclaimed instance" is the launch's own.
"""

from __future__ import annotations

from datetime import UTC, datetime

from spothub_core.contracts import InstanceTag
from spothub_core.errors import TransientError
from spothub_core.logic.launch_errors import LaunchFailure, classify_launch_error, describe_error
from spothub_core.logic.worker_region import (
    WorkerRegion,
    claimed,
    claimed_by,
    facts,
    iso,
    launches_in_flight,
    members,
    on_demand_count,
    release_launch,
    set_size,
    unclaimed,
    watch,
)
from spothub_core.models.worker_tasks import (
    Claim,
    ClaimFailed,
    ClaimInstance,
    ClaimWaiting,
    Cleanup,
    DescribeFailure,
    Failure,
    InstanceClaimed,
    InstanceWatched,
    LaunchReleased,
    ScaledOut,
    ScaleOut,
    StartWorkload,
    WatchInstance,
    Workload,
    WorkloadFailed,
    WorkloadHealthy,
    WorkloadStarted,
    WorkloadStarting,
    WorkloadStatus,
)

FATAL_STOP_CODES = ("CannotPullContainerError", "CannotCreateContainerError", "InvalidImage")
# ECS could not fetch the container's secrets: fatal only when it was refused or the secret does not exist (a
# grant or a name to fix, not a region to retry in); a network error there is worth retrying.
SECRETS_NOT_FETCHED = "ResourceInitializationError"
SECRETS_REFUSED = ("AccessDenied", "ResourceNotFoundException", "not authorized")
CLAIMABLE = ("Pending:Wait", "InService")
FAILED_ACTIVITY = ("Failed", "Cancelled")


class WorkloadNotReady(TransientError):
    """The instance's ECS agent has not registered it with the cluster yet; the state machine retries."""


def scale_out(worker: WorkerRegion, task: ScaleOut) -> ScaledOut:
    group, live = members(worker)
    others = claimed(live, but=task.launch_id)
    # Computed, never incremented, so a retry asks for nothing more; launches in flight count, so two launches
    # scaling out at once ask for two instances.
    desired = len(others) + launches_in_flight(worker, live, but=task.launch_id) + 1
    on_demand = on_demand_count(others) + (1 if task.capacity_type == "on-demand" else 0)
    set_size(worker, group, desired=desired, on_demand=on_demand)
    return ScaledOut(started_at=iso(datetime.now(UTC)), desired=desired, on_demand_base=on_demand)


def claim_instance(worker: WorkerRegion, task: ClaimInstance) -> Claim:
    _group, live = members(worker)
    mine = claimed_by(live, task.launch_id)
    if mine:
        return InstanceClaimed(instance=facts(mine[0]["ec2"]))
    failure = _failed_activity(worker, task.since)
    if failure is not None:
        return failure
    # Pending:Wait is claimable: the agent completes the launch lifecycle action only once the workload this
    # launch starts on the instance is healthy, so waiting for InService here would wait forever.
    claimable = [m for m in unclaimed(live) if m.get("LifecycleState") in CLAIMABLE]
    if not claimable:
        return ClaimWaiting(pending=[m["InstanceId"] for m in unclaimed(live)])
    newest = max(claimable, key=lambda m: str(m["ec2"].get("LaunchTime")))
    worker.instances.tag(
        newest["InstanceId"], {InstanceTag.LAUNCH: task.launch_id, InstanceTag.REPLICA: task.replica_id}
    )
    return InstanceClaimed(instance=facts(newest["ec2"]))


def _failed_activity(worker: WorkerRegion, since: str) -> ClaimFailed | None:
    for activity in worker.group.recent_activities():
        if activity.get("StatusCode") in FAILED_ACTIVITY and iso(activity.get("StartTime")) >= since:
            message = str(activity.get("StatusMessage") or activity.get("Description") or "")
            failure = classify_launch_error(None, message)
            return ClaimFailed(error_class=failure.value, code="LaunchUnsuccessful", message=message[:500])
    return None


def start_workload(worker: WorkerRegion, task: StartWorkload) -> WorkloadStarted:
    existing = worker.tasks.started_for(task.launch_id)
    if existing:
        return WorkloadStarted(task_arn=existing[0])
    container = worker.tasks.container_instance(task.instance_id)
    if container is None:
        raise WorkloadNotReady(
            f"{task.instance_id} has not registered with ECS cluster {worker.tasks.cluster_name} yet"
        )
    return WorkloadStarted(task_arn=worker.tasks.start(task.launch_id, container))


def workload_status(worker: WorkerRegion, task: WorkloadStatus) -> Workload:
    described = worker.tasks.describe(task.task_arn)
    if described is None:
        return WorkloadFailed(
            error_class=LaunchFailure.TRANSIENT.value, code="TaskMissing", message=f"{task.task_arn} is gone"
        )
    if described.get("lastStatus") == "STOPPED":
        reason = f"{described.get('stopCode', '')} {described.get('stoppedReason', '')}".strip()
        fatal = any(code in reason for code in FATAL_STOP_CODES) or (
            SECRETS_NOT_FETCHED in reason and any(refusal in reason for refusal in SECRETS_REFUSED)
        )
        return WorkloadFailed(
            error_class=(LaunchFailure.FATAL if fatal else LaunchFailure.TRANSIENT).value,
            code="TaskStopped",
            message=reason[:500],
        )
    if described.get("lastStatus") == "RUNNING" and described.get("healthStatus", "UNKNOWN") in ("HEALTHY", "UNKNOWN"):
        instance = worker.instances.describe([task.instance_id]).get(task.instance_id)
        member = worker.group.member(task.instance_id)
        lifecycle = member.get("LifecycleState") if member else None
        if instance is None or lifecycle is None or lifecycle.startswith("Terminat"):
            # Gone while starting: interrupted, or the agent abandoned the lifecycle action (unhealthy workload).
            return WorkloadFailed(
                error_class=LaunchFailure.CAPACITY.value, code="InstanceGone", message=task.instance_id
            )
        if lifecycle != "InService":
            return WorkloadStarting(last_status="RUNNING", health=f"instance {lifecycle}")
        return WorkloadHealthy(instance=facts(instance, task.task_arn))
    return WorkloadStarting(last_status=described.get("lastStatus"), health=described.get("healthStatus"))


def watch_instance(worker: WorkerRegion, task: WatchInstance) -> InstanceWatched:
    """Arm the instance's alarms, once it is in service with a healthy workload. Not at the claim: the
    instance then waits on its lifecycle hook with no agent beating yet, and missing heartbeats breach."""
    watch(worker, task.instance_id)
    return InstanceWatched(watched=task.instance_id)


def describe_failure(_worker: WorkerRegion, task: DescribeFailure) -> Failure:
    return describe_error(task.error)


def cleanup(worker: WorkerRegion, task: Cleanup) -> LaunchReleased:
    """Undo a failed launch: stop its task, terminate its instance or shrink the group back."""
    release_launch(worker, task.launch_id)
    return LaunchReleased(released=task.launch_id)

"""The event contracts: every event spothub emits or consumes, named and shaped in one module.

Sources, detail-types and, for spothub's own events, the payload (`detail`) as a pydantic model with
the contract version. Handlers, state machine tests, the stacks' EventBridge rules, the sandbox and
the worker agent (this module ships in its bundle) all take them from here, so a rename or a new
field cannot leave one side behind.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field

from spothub_core.models.base import Model


class Source(StrEnum):
    """`source` of spothub's own events."""

    HUB = "spothub.hub"
    WORKER = "spothub.worker"
    AGENT = "spothub.agent"


class AwsEvent(StrEnum):
    """AWS service events a worker region forwards to the hub bus, as `detail-type`."""

    SPOT_INTERRUPTION_WARNING = "EC2 Spot Instance Interruption Warning"
    REBALANCE_RECOMMENDATION = "EC2 Instance Rebalance Recommendation"
    LAUNCH_UNSUCCESSFUL = "EC2 Instance Launch Unsuccessful"
    ALARM_STATE_CHANGE = "CloudWatch Alarm State Change"
    ECS_TASK_STATE_CHANGE = "ECS Task State Change"


AWS_EVENT_SOURCES: dict[AwsEvent, str] = {
    AwsEvent.SPOT_INTERRUPTION_WARNING: "aws.ec2",
    AwsEvent.REBALANCE_RECOMMENDATION: "aws.ec2",
    AwsEvent.LAUNCH_UNSUCCESSFUL: "aws.autoscaling",
    AwsEvent.ALARM_STATE_CHANGE: "aws.cloudwatch",
    AwsEvent.ECS_TASK_STATE_CHANGE: "aws.ecs",
}

# The metric namespace of every spothub metric: Lambda metrics and the agent's heartbeat.
METRICS_NAMESPACE = "Spothub"


class AgentMetric(StrEnum):
    """The agent's metrics, dimensioned by Prefix and InstanceId; per-instance alarms watch them."""

    READY = "AgentReady"  # every heartbeat: 1 when the workload is healthy, 0 when not (yet)
    GPU_XID_ERRORS = "GpuXidErrors"  # XID errors NVML counted since the last heartbeat


class HubCommand(StrEnum):
    """Commands the hub puts on its bus for one worker region (`detail.region`), source `spothub.hub`."""

    LAUNCH_REQUESTED = "Spothub Launch Requested"
    TEARDOWN_REQUESTED = "Spothub Teardown Requested"
    BATCH_FLEET_REQUESTED = "Spothub Batch Fleet Requested"


class WorkerReport(StrEnum):
    """Reports to the hub bus: from a worker region's automation (source `spothub.worker`) or from the
    agent on an instance (source `spothub.agent`: capacity notices and drain outcomes)."""

    LAUNCH_PROGRESS = "Spothub Launch Progress"
    LAUNCH_SUCCEEDED = "Spothub Launch Succeeded"
    LAUNCH_FAILED = "Spothub Launch Failed"
    TEARDOWN_COMPLETED = "Spothub Teardown Completed"
    CAPACITY_NOTICE = "Spothub Capacity Notice"
    DRAIN_COMPLETED = "Spothub Drain Completed"
    INSTANCE_UNHEALTHY = "Spothub Instance Unhealthy"
    BATCH_FLEET_REPORT = "Spothub Batch Fleet Report"


class HubEvent(StrEnum):
    """What the hub announces on its own bus for automation (source `spothub.hub`, no region)."""

    JOB_FINISHED = "Spothub Job Finished"
    # The deployments API changed what is wanted (create, scale, restart, delete, a node operation): the deployment
    # controller reconciles now rather than at its next scheduled run.
    DEPLOYMENTS_CHANGED = "Spothub Deployments Changed"


class TaskError(StrEnum):
    """Error names the state machines catch (statemachines/*.asl.json): the capacity handler fails task
    tokens with them, and functions raise exceptions of the same class names (Lambda's errorType)."""

    CAPACITY = "CapacityError"
    TRANSIENT = "TransientError"
    FATAL = "FatalError"
    SUPERSEDED = "Superseded"
    REGION_TAKEN = "RegionTaken"


class InstanceTag(StrEnum):
    """Tags on spothub's instances: the group sets the first four at launch (the agent reads its configuration
    from them, through IMDS); the worker region sets replica and launch on the instance it claims for a launch."""

    PREFIX = "spothub:prefix"
    HUB_REGION = "spothub:hub-region"
    LIFECYCLE_HOOK = "spothub:lifecycle-hook"
    MODEL_CACHE = "spothub:model-cache"
    REPLICA = "spothub:replica"
    LAUNCH = "spothub:launch-id"
    # On the instances of a batch job's group (set by the group at launch): the agent runs in batch mode.
    JOB = "spothub:job-id"


def job_group_name(prefix: str, job_id: str) -> str:
    """A batch job's Auto Scaling group in a worker region: the worker stack's grants match `<prefix>-job-*`."""
    return f"{prefix}-{job_id}"


class SearchTag(StrEnum):
    """Tags on the search instance (set by the launch, with spothub:prefix, spothub:hub-region and spothub:launch-id):
    the reconciliation finds it by them, the agent's search mode is chosen by Service."""

    NAME = "Name"  # semantic-search-YYYYMMDD-HHMMSS (search_instance_name)
    SERVICE = "Service"  # SEARCH_SERVICE
    MANAGED_BY = "ManagedBy"  # MANAGED_BY
    VOLUME = "EBSVolumeId"  # the index volume it is bound to


SEARCH_SERVICE = "semantic-search"
MANAGED_BY = "spothub"


def search_instance_name(epoch_seconds: float) -> str:
    """The search instance's Name tag: semantic-search-YYYYMMDD-HHMMSS (UTC, when the launch asked for it)."""
    return f"{SEARCH_SERVICE}-{datetime.fromtimestamp(epoch_seconds, UTC):%Y%m%d-%H%M%S}"


def search_router_name(prefix: str) -> str:
    """The search region's router function: named, so the hub's functions can build its ARN and be granted it."""
    return f"{prefix}-search-router"


def search_template_name(prefix: str) -> str:
    """The search instance's launch template in the search region (RunInstances names it; the grants match it)."""
    return f"{prefix}-search"


# --- model deployments: GPU nodes in the worker regions and the deployments' ECS tasks on them ----------------

# The tag on a node (its node group sets it at launch, with spothub:prefix and spothub:hub-region; key
# SearchTag.SERVICE): the agent runs in node mode (registration, heartbeats with the GPUs' NVML figures, capacity
# notices; no workload of its own).
MODEL_NODE_SERVICE = "model-node"
# ECS startedBy of every deployment task (36 characters at most): the forwarding rule and the controller's listing
# match it.
DEPLOYMENT_STARTED_BY = "spothub-deployments"
# The inference server's container in a deployment's task definition.
DEPLOYMENT_CONTAINER_NAME = "model"


class DeploymentMetric(StrEnum):
    """The deployment controller's metrics (namespace METRICS_NAMESPACE, powertools' `service` dimension), one value
    per run: the operations dashboard's deployments row."""

    GPUS_TOTAL = "DeploymentGpusTotal"  # GPUs of the nodes that take placements
    GPUS_ALLOCATED = "DeploymentGpusAllocated"
    TASKS_HEALTHY = "DeploymentTasksHealthy"
    TASKS_PENDING = "DeploymentTasksPending"  # waiting for capacity or a restart backoff
    TASK_RESTARTS = "DeploymentTaskRestarts"  # tasks restarted after stopping unexpectedly, this run
    NODES_ASKED = "DeploymentNodesAsked"  # nodes asked of node groups, this run


def gpu_cluster_name(prefix: str) -> str:
    """A worker region's ECS cluster (stacks/constructs/gpu_capacity.py): serving replicas and deployment nodes."""
    return f"{prefix}-gpu"


def node_group_name(prefix: str, node_class: str) -> str:
    """A worker region's Auto Scaling group of one node class (`<prefix>-nodes-<class>`: the grants match it)."""
    return f"{prefix}-nodes-{node_class}"


def deployment_task_family(prefix: str, deployment_id: str) -> str:
    """The task definition family of one deployment, registered in each worker region it runs in."""
    return f"{prefix}-model-{deployment_id}"


def deployment_role_names(prefix: str) -> tuple[str, str]:
    """(execution role, task role) of every deployment task: fixed names, so the hub may pass exactly these."""
    return f"{prefix}-deployment-execution", f"{prefix}-deployment-task"


def deployment_log_group(prefix: str) -> str:
    """The worker region's log group of the deployments' containers (one stream per task)."""
    return f"/spothub/{prefix}/deployments"


# Auto Scaling's own tag on every member of a group.
GROUP_TAG = "aws:autoscaling:groupName"

# The serving task's container, by its name in the task definition (stacks/constructs/serving_task.py). The ECS
# agent labels the container it starts `com.amazonaws.ecs.container-name=<this>`, which the worker agent watches.
SERVING_CONTAINER_NAME = "server"
ECS_CONTAINER_NAME_LABEL = "com.amazonaws.ecs.container-name"

CONTRACT_VERSION = "1"


def alarm_name_prefix(prefix: str) -> str:
    """Every per-instance alarm is named `<prefix>-agent-<kind>-<instance id>`: the worker stack's rule and grants
    match this prefix, the launch creates the alarms and the remediation parses their names."""
    return f"{prefix}-agent-"


# --- payloads: the detail of each of spothub's own detail-types ---------------------------------

CapacityType = Literal["spot", "on-demand"]


class NoticeKind(StrEnum):
    """What a capacity notice warns of: a rebalance recommendation, or an interruption (two minutes left)."""

    REBALANCE = "rebalance"
    INTERRUPTION = "interruption"


ErrorClass = Literal["capacity", "quota", "transient", "fatal"]


class _Detail(Model):
    # Extra fields are tolerated: a newer sender may add some; a reader must not break on them.
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: str = CONTRACT_VERSION


class LaunchRequested(_Detail):
    launch_id: str = Field(min_length=1, max_length=80)
    replica_id: str = Field(min_length=1, max_length=40)
    region: str
    capacity_type: CapacityType = "spot"
    # The zone the hub ranked first for a warm standby: a preference the worker's group does not pin (it picks the
    # zone: the most spare capacity, zone balance); None: no preference.
    zone: str | None = None
    # "standby": a replica's warm standby (spothub_core.logic.standby_watch): no task token waits on it, its reports
    # are the standby's; "serve": the orchestrator's launch.
    role: Literal["serve", "standby"] = "serve"


class TeardownRequested(_Detail):
    teardown_id: str = Field(min_length=1, max_length=80)
    region: str
    # One instance (after a replacement), one launch (cancelled), or everything spothub runs in the region.
    instance_id: str | None = None
    launch_id: str | None = None
    reason: str = ""


class InstanceFacts(Model):
    model_config = ConfigDict(extra="ignore", frozen=True)

    instance_id: str
    instance_type: str = ""
    availability_zone: str = ""
    capacity_type: CapacityType = "spot"
    private_ip: str | None = None
    public_ip: str | None = None
    launched_at: str | None = None
    task_arn: str | None = None


class LaunchProgress(_Detail):
    launch_id: str
    region: str
    step: str


class LaunchSucceeded(_Detail):
    launch_id: str
    region: str
    instance: InstanceFacts


class LaunchFailed(_Detail):
    launch_id: str
    region: str
    error_class: ErrorClass
    code: str = ""
    message: str = ""


class TeardownCompleted(_Detail):
    teardown_id: str
    region: str
    instance_id: str | None = None


class CapacityNotice(_Detail):
    """A rebalance recommendation or interruption warning for an instance spothub owns."""

    region: str
    instance_id: str
    kind: NoticeKind
    notice_id: str
    replica_id: str | None = None
    launch_id: str | None = None


class DrainCompleted(_Detail):
    """The agent's account of draining an instance after an interruption warning."""

    region: str
    instance_id: str
    notice_id: str
    outcome: Literal["drained", "timed_out", "failed"]
    exit_code: int | None = None
    last_lines: list[str] = Field(default_factory=list)
    seconds: float | None = None


class InstanceUnhealthy(_Detail):
    """A worker region's remediation: an alarm on one of spothub's instances (silent agent, GPU errors)."""

    region: str
    instance_id: str
    notice_id: str  # the alarm and the time it fired: one remediation per firing
    reason: str
    alarm_name: str = ""
    replica_id: str | None = None
    launch_id: str | None = None


class BatchFleetRequested(_Detail):
    """The hub asks a worker region for a batch job's capacity: its group (created on first use from the region's
    batch launch template, tagged with the job) grows to `desired` (never shrinks by this: workers leave
    themselves, decrementing); `release_instances` are terminated (decrementing); `release` deletes the group."""

    job_id: str = Field(min_length=1, max_length=40)
    region: str
    desired: int = Field(0, ge=0)
    capacity_type: CapacityType = "spot"
    instance_types: list[str] = Field(default_factory=list)  # empty: the region's batch instance types
    release_instances: list[str] = Field(default_factory=list)
    release: bool = False
    requested_at: float = 0.0  # the hub's time: a region applies nothing older than what it applied


class BatchFleetReport(_Detail):
    """A worker region's answer to a batch fleet request: the group as it is, and its last launch failure."""

    job_id: str
    region: str
    group_name: str
    desired: int = 0
    in_service: int = 0
    instance_ids: list[str] = Field(default_factory=list)
    error: str | None = None
    error_class: ErrorClass | None = None
    # When the failed scaling activity started (epoch seconds): the hub acts on a failure of its latest growth
    # only, and excludes the region from the failure's time, so a repeated report of it extends nothing.
    error_at: float | None = None
    released: bool = False
    requested_at: float = 0.0  # echoed from the request it answers


class BatchCounts(Model):
    model_config = ConfigDict(extra="ignore", frozen=True)

    pending: int = 0
    assigned: int = 0
    processing: int = 0
    completed: int = 0
    failed: int = 0


class JobFinished(_Detail):
    """A batch job ended (completed, failed or cancelled): for automation on the hub bus."""

    job_id: str
    status: Literal["completed", "failed", "cancelled"]
    files: int
    batches: BatchCounts
    output_bucket: str
    output_prefix: str
    reason: str | None = None
    finished_at: str  # ISO 8601 UTC


COMMAND_MODELS: dict[HubCommand, type[_Detail]] = {
    HubCommand.LAUNCH_REQUESTED: LaunchRequested,
    HubCommand.TEARDOWN_REQUESTED: TeardownRequested,
    HubCommand.BATCH_FLEET_REQUESTED: BatchFleetRequested,
}

REPORT_MODELS: dict[WorkerReport, type[_Detail]] = {
    WorkerReport.LAUNCH_PROGRESS: LaunchProgress,
    WorkerReport.LAUNCH_SUCCEEDED: LaunchSucceeded,
    WorkerReport.LAUNCH_FAILED: LaunchFailed,
    WorkerReport.TEARDOWN_COMPLETED: TeardownCompleted,
    WorkerReport.CAPACITY_NOTICE: CapacityNotice,
    WorkerReport.DRAIN_COMPLETED: DrainCompleted,
    WorkerReport.INSTANCE_UNHEALTHY: InstanceUnhealthy,
    WorkerReport.BATCH_FLEET_REPORT: BatchFleetReport,
}


class DeploymentsChanged(_Detail):
    """What the deployments API changed, for the controller's log; the controller reconciles everything anyway."""

    deployment_id: str | None = None  # None: a node operation
    instance_id: str | None = None
    change: str  # created, scaled, restart, deleted, cordon, uncordon, drain


HUB_EVENT_MODELS: dict[HubEvent, type[_Detail]] = {
    HubEvent.JOB_FINISHED: JobFinished,
    HubEvent.DEPLOYMENTS_CHANGED: DeploymentsChanged,
}


# --- AWS service events spothub consumes: the fields of `detail` it reads ------------------------------


class _AwsDetail(Model):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class LaunchUnsuccessfulDetail(_AwsDetail):
    """EC2 Instance Launch Unsuccessful (aws.autoscaling), forwarded from a worker region."""

    group_name: str = Field("", alias="AutoScalingGroupName")
    status_message: str = Field("", alias="StatusMessage")
    description: str = Field("", alias="Description")


class AlarmState(_AwsDetail):
    value: str
    reason: str = ""
    timestamp: str = ""


class AlarmStateChangeDetail(_AwsDetail):
    """CloudWatch Alarm State Change (aws.cloudwatch) of a per-instance alarm, in a worker region."""

    alarm_name: str = Field(alias="alarmName")
    state: AlarmState


class SpotNoticeDetail(_AwsDetail):
    """EC2 Spot Instance Interruption Warning / EC2 Instance Rebalance Recommendation (aws.ec2)."""

    instance_id: str = Field(alias="instance-id")


class InterruptionWarningDetail(SpotNoticeDetail):
    """EC2 Spot Instance Interruption Warning, as the capacity handler consumes it: a model of its own, so that it is
    told from a rebalance recommendation (a consumer dispatches on the model)."""


class RebalanceRecommendationDetail(SpotNoticeDetail):
    """EC2 Instance Rebalance Recommendation, as the capacity handler consumes it."""


class EcsContainerDetail(_AwsDetail):
    name: str = ""
    exit_code: int | None = Field(None, alias="exitCode")
    reason: str = ""
    last_status: str = Field("", alias="lastStatus")
    health_status: str = Field("", alias="healthStatus")


class EcsTaskStateChangeDetail(_AwsDetail):
    """ECS Task State Change (aws.ecs) of a deployment task (startedBy DEPLOYMENT_STARTED_BY), forwarded from a
    worker region: the controller looks at the deployment at once instead of at its next scheduled run."""

    task_arn: str = Field(alias="taskArn")
    cluster_arn: str = Field("", alias="clusterArn")
    container_instance_arn: str = Field("", alias="containerInstanceArn")
    last_status: str = Field("", alias="lastStatus")
    desired_status: str = Field("", alias="desiredStatus")
    health_status: str = Field("", alias="healthStatus")
    started_by: str = Field("", alias="startedBy")
    stopped_reason: str = Field("", alias="stoppedReason")
    stop_code: str = Field("", alias="stopCode")
    containers: list[EcsContainerDetail] = Field(default_factory=list)

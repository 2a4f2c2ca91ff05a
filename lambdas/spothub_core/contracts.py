"""The event contracts: every event spothub emits or consumes, named in one module.

Handlers, state machine tests, the stacks' EventBridge rules and the worker agent all take their
sources and detail-types from here, so a rename cannot leave one side behind.
"""

from __future__ import annotations

from enum import StrEnum


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
    ECS_TASK_STATE_CHANGE = "ECS Task State Change"
    ALARM_STATE_CHANGE = "CloudWatch Alarm State Change"


AWS_EVENT_SOURCES: dict[AwsEvent, str] = {
    AwsEvent.SPOT_INTERRUPTION_WARNING: "aws.ec2",
    AwsEvent.REBALANCE_RECOMMENDATION: "aws.ec2",
    AwsEvent.LAUNCH_UNSUCCESSFUL: "aws.autoscaling",
    AwsEvent.ECS_TASK_STATE_CHANGE: "aws.ecs",
    AwsEvent.ALARM_STATE_CHANGE: "aws.cloudwatch",
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


class TaskError(StrEnum):
    """Error names the state machines catch (statemachines/*.asl.json): the capacity handler fails task
    tokens with them, and functions raise exceptions of the same class names (Lambda's errorType)."""

    CAPACITY = "CapacityError"
    TRANSIENT = "TransientError"
    FATAL = "FatalError"
    SUPERSEDED = "Superseded"
    REGION_TAKEN = "RegionTaken"


# The serving task's container, by its name in the task definition (stacks/constructs/serving_task.py). The ECS
# agent labels the container it starts `com.amazonaws.ecs.container-name=<this>`, which the worker agent watches.
SERVING_CONTAINER_NAME = "server"
ECS_CONTAINER_NAME_LABEL = "com.amazonaws.ecs.container-name"

CONTRACT_VERSION = "1"

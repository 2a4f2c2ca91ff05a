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


AWS_EVENT_SOURCES: dict[AwsEvent, str] = {
    AwsEvent.SPOT_INTERRUPTION_WARNING: "aws.ec2",
    AwsEvent.REBALANCE_RECOMMENDATION: "aws.ec2",
    AwsEvent.LAUNCH_UNSUCCESSFUL: "aws.autoscaling",
    AwsEvent.ECS_TASK_STATE_CHANGE: "aws.ecs",
}

# The metric namespace of every spothub metric: Lambda metrics and the agent's heartbeat.
METRICS_NAMESPACE = "Spothub"


class HubCommand(StrEnum):
    """Commands the hub puts on its bus for one worker region (`detail.region`), source `spothub.hub`."""

    LAUNCH_REQUESTED = "Spothub Launch Requested"
    TEARDOWN_REQUESTED = "Spothub Teardown Requested"


class WorkerReport(StrEnum):
    """Reports a worker region sends back to the hub bus, source `spothub.worker`."""

    LAUNCH_PROGRESS = "Spothub Launch Progress"
    LAUNCH_SUCCEEDED = "Spothub Launch Succeeded"
    LAUNCH_FAILED = "Spothub Launch Failed"
    TEARDOWN_COMPLETED = "Spothub Teardown Completed"
    CAPACITY_NOTICE = "Spothub Capacity Notice"


class TaskError(StrEnum):
    """Error names the state machines catch (statemachines/*.asl.json): the capacity handler fails task
    tokens with them, and functions raise exceptions of the same class names (Lambda's errorType)."""

    CAPACITY = "CapacityError"
    TRANSIENT = "TransientError"
    FATAL = "FatalError"
    SUPERSEDED = "Superseded"


CONTRACT_VERSION = "1"

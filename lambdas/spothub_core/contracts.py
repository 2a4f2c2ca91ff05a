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

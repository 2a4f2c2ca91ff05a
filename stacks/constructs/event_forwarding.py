"""Forward the AWS events the hub decides on from a worker region's default bus to the hub bus.

Launch failures and ECS task changes, filtered to this region's group and cluster. Spot notices are
not forwarded raw: they carry no tags, so the region's capacity monitor first decides whether the
instance is ours and reports only those (worker_automation.py).
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spothub_core.contracts import AWS_EVENT_SOURCES, AwsEvent


class EventForwarding(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        hub_bus_arn: str,
        auto_scaling_group_name: str,
        cluster_arn: str,
        dead_letter_queue: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        hub_bus = events.EventBus.from_event_bus_arn(self, "HubBus", hub_bus_arn)
        target = targets.EventBus(hub_bus, dead_letter_queue=dead_letter_queue)
        patterns = {
            "LaunchUnsuccessful": events.EventPattern(
                source=[AWS_EVENT_SOURCES[AwsEvent.LAUNCH_UNSUCCESSFUL]],
                detail_type=[AwsEvent.LAUNCH_UNSUCCESSFUL.value],
                detail={"AutoScalingGroupName": [auto_scaling_group_name]},
            ),
            "EcsTaskStateChange": events.EventPattern(
                source=[AWS_EVENT_SOURCES[AwsEvent.ECS_TASK_STATE_CHANGE]],
                detail_type=[AwsEvent.ECS_TASK_STATE_CHANGE.value],
                detail={"clusterArn": [cluster_arn]},
            ),
        }
        region = Stack.of(self).region
        for name, pattern in patterns.items():
            rule = events.Rule(
                self,
                name,
                description=f"Forward {name} from {region} to the hub bus",
                event_pattern=pattern,
            )
            # EventBridge's default retry policy (24 h, 185 tries) applies before the dead-letter queue.
            rule.add_target(target)

"""Forward the AWS events the hub consumes from a worker region's default bus to the hub bus.

Exactly the hub's consumer entries with an AWS source (spothub_core.consumers), one rule each, narrowed by
`detail_filters` to this region's resources. Spot notices are not forwarded raw for the serving capacity: they
carry no tags, so the region's capacity monitor first decides whether the instance is ours and reports only those
(worker_automation.py). The search monitor's entries are forwarded from the search region only, unfiltered (an
interruption warning cannot be told by tags in a pattern; the monitor ignores every instance but the search
instance's).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spothub_core.consumers import Bus, Target
from spothub_core.contracts import DEPLOYMENT_STARTED_BY, AwsEvent
from stacks.constructs.consumer_rules import aws_event_id, entries, is_aws_event, only_pattern

# Consumers whose AWS events come from the search region only (SearchHost's region), not from every worker region.
SEARCH_REGION_TARGETS = frozenset({Target.SEARCH_MONITOR})


def detail_filters(auto_scaling_group_name: str, gpu_cluster_arn: str) -> dict[AwsEvent, dict[str, Any]]:
    """Which of the region's events are spothub's, by detail-type: a forwarded kind without one would send the
    hub every such event in the region. A task state change is a deployment task's: the GPU cluster's, started by
    the deployment controller (a serving task's changes stay in the region)."""
    return {
        AwsEvent.LAUNCH_UNSUCCESSFUL: {"AutoScalingGroupName": [auto_scaling_group_name]},
        AwsEvent.ECS_TASK_STATE_CHANGE: {"clusterArn": [gpu_cluster_arn], "startedBy": [DEPLOYMENT_STARTED_BY]},
    }


class EventForwarding(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        hub_bus_arn: str,
        auto_scaling_group_name: str,
        gpu_cluster_arn: str,
        dead_letter_queue: sqs.IQueue,
        search_region: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        hub_bus = events.EventBus.from_event_bus_arn(self, "HubBus", hub_bus_arn)
        target = targets.EventBus(hub_bus, dead_letter_queue=dead_letter_queue)
        filters = detail_filters(auto_scaling_group_name, gpu_cluster_arn)
        region = Stack.of(self).region
        for entry in filter(is_aws_event, entries(bus=Bus.HUB)):
            name = aws_event_id(entry)
            description = f"Forward {name} from {region} to the hub bus"
            if entry.target in SEARCH_REGION_TARGETS:
                if not search_region:
                    continue
                # Its own id: a worker-wide entry of the same kind could be forwarded too, narrowed by its filter.
                name, detail = f"Search{name}", None
                description = f"{description}, for the search monitor (the search region only)"
            else:
                detail = filters[AwsEvent(entry.detail_type)]
            rule = events.Rule(self, name, description=description, event_pattern=only_pattern([entry], detail=detail))
            # EventBridge's default retry policy (24 h, 185 tries) applies before the dead-letter queue.
            rule.add_target(target)

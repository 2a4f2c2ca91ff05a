"""Forward the AWS events the hub consumes from a worker region's default bus to the hub bus.

Exactly the hub's consumer entries with an AWS source (spothub_core.consumers), one rule per kind, narrowed by
`detail_filters` to this region's resources where a pattern can tell them. Spot notices (interruption warnings,
rebalance recommendations) carry no tags, so they are forwarded unfiltered, and the hub tells its instances by its
own records: a notice for an instance spothub did not place costs one capacity handler invocation that reads one
item, and no function stands between a warning and the hub (the capacity monitor used to identify the instance
first: one Lambda invocation more on every failover). The search monitor's entries are forwarded from the search
region only, unfiltered (the monitor ignores every instance but the search instance's), unless a worker-wide
rule forwards that kind already.
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
        forwarded = [entry for entry in entries(bus=Bus.HUB) if is_aws_event(entry)]
        worker_wide = {entry.key for entry in forwarded if entry.target not in SEARCH_REGION_TARGETS}
        done: set[tuple[str, str]] = set()
        for entry in forwarded:
            if entry.key in done:
                continue
            done.add(entry.key)
            name = aws_event_id(entry)
            description = f"Forward {name} from {region} to the hub bus"
            if entry.key not in worker_wide:
                if not search_region:
                    continue
                # Its own id: a worker-wide entry of the same kind could be forwarded too, narrowed by its filter.
                name, detail = f"Search{name}", None
                description = f"{description}, for the search monitor (the search region only)"
            else:
                detail = filters.get(AwsEvent(entry.detail_type))
            rule = events.Rule(self, name, description=description, event_pattern=only_pattern([entry], detail=detail))
            # EventBridge's default retry policy (24 h, 185 tries) applies before the dead-letter queue.
            rule.add_target(target)

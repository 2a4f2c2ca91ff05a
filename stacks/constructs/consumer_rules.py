"""EventBridge rule patterns taken from the consumer list (spothub_core.consumers), so that every rule matches
exactly the (source, detail-type) pairs some function or state machine consumes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spothub_core.consumers import CONSUMERS, Bus, Consumer, Target, event_patterns
from spothub_core.contracts import AWS_EVENT_SOURCES, AwsEvent
from spothub_core.timings import EVENT_DELIVERY_MAX_AGE_SECONDS


def entries(*, bus: Bus, target: Target | None = None, source: str | None = None) -> list[Consumer]:
    """The consumer entries on `bus`, of one target and one source when given."""
    return [
        c
        for c in CONSUMERS
        if c.bus == bus and (target is None or c.target == target) and (source is None or c.source == source)
    ]


def is_aws_event(entry: Consumer) -> bool:
    """An AWS service's event (not one of spothub's own)."""
    return entry.source in AWS_EVENT_SOURCES.values()


def patterns(consumers: Iterable[Consumer], detail: Mapping[str, Any] | None = None) -> dict[str, events.EventPattern]:
    """One pattern per source (consumers.event_patterns), by source; `detail` narrows every one of them."""
    return {
        source: events.EventPattern(
            source=pattern["source"],
            detail_type=pattern["detail-type"],
            detail=dict(detail) if detail else None,
        )
        for source, pattern in event_patterns(consumers).items()
    }


def only_pattern(consumers: Iterable[Consumer], detail: Mapping[str, Any] | None = None) -> events.EventPattern:
    """The one pattern of entries that share a source (an error otherwise: one rule cannot match them exactly)."""
    by_source = patterns(consumers, detail)
    if len(by_source) != 1:
        raise ValueError(f"expected entries of one source, got {sorted(by_source)}")
    return next(iter(by_source.values()))


def aws_event_id(entry: Consumer) -> str:
    """A construct id for a rule of one AWS event: `EC2 Instance Launch Unsuccessful` -> `LaunchUnsuccessful`."""
    return "".join(word.title() for word in AwsEvent(entry.detail_type).name.split("_"))


def lambda_delivery(function: lambda_.IFunction, dead_letter_queue: sqs.IQueue) -> targets.LambdaFunction:
    """A rule's Lambda target as every consuming rule has it: a failed delivery retried for up to two hours (a
    report lost to a throttled function would leave a launch waiting), then the dead-letter queue."""
    return targets.LambdaFunction(
        function,
        dead_letter_queue=dead_letter_queue,
        retry_attempts=8,
        max_event_age=Duration.seconds(EVENT_DELIVERY_MAX_AGE_SECONDS),
    )


def consuming_rules(
    scope: Construct,
    id_prefix: str,
    *,
    bus: events.IEventBus,
    consumed: Iterable[Consumer],
    function: lambda_.IFunction,
    dead_letter_queue: sqs.IQueue,
    description: str,
) -> list[events.Rule]:
    """What `function` consumes on `bus`: one rule per source (`<id_prefix>-<source>`), so that no rule lets
    through a pairing of one source's name with another's detail-type. `description` may name `{source}`."""
    rules = []
    for source, pattern in patterns(consumed).items():
        rule = events.Rule(
            scope,
            f"{id_prefix}-{source}",
            event_bus=bus,
            description=description.format(source=source),
            event_pattern=pattern,
        )
        rule.add_target(lambda_delivery(function, dead_letter_queue))
        rules.append(rule)
    return rules

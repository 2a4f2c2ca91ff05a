"""EventBridge rule patterns taken from the consumer list (spothub_core.consumers), so that every rule matches
exactly the (source, detail-type) pairs some function or state machine consumes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aws_cdk import aws_events as events

from spothub_core.consumers import CONSUMERS, Bus, Consumer, Target, event_patterns
from spothub_core.contracts import AWS_EVENT_SOURCES, AwsEvent


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

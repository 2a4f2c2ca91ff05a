"""The agent's payloads are the control plane's models: events built as their contracts and consumed by the hub
with the same model, API bodies within what the agent API accepts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from spothub_agent.publisher import DETAIL_TYPES, Publisher, PublishError
from spothub_agent.settings import MAX_LAST_LINES
from spothub_core.consumers import CONSUMERS, Bus
from spothub_core.contracts import CONTRACT_VERSION, CapacityNotice, DrainCompleted, Source
from spothub_core.models.agent import WorkloadHealth


class FakeEvents:
    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.entries: list[dict[str, Any]] = []
        self.answer = answer or {"FailedEntryCount": 0, "Entries": [{"EventId": "event-1"}]}

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.entries.extend(Entries)
        return self.answer


NOTICE = CapacityNotice(
    region="us-west-2", instance_id="i-0abc1234def567890", kind="interruption", notice_id="interruption-1"
)
DRAINED = DrainCompleted(
    region="us-west-2",
    instance_id="i-0abc1234def567890",
    notice_id="interruption-1",
    outcome="timed_out",
    exit_code=-9,
    last_lines=["ignoring SIGTERM"],
    seconds=2.5,
)


@pytest.mark.parametrize("detail", [NOTICE, DRAINED], ids=["capacity notice", "drain completed"])
def test_an_event_is_its_contracts_model_as_the_hub_consumes_it(detail: CapacityNotice | DrainCompleted) -> None:
    events = FakeEvents()
    assert Publisher(lambda: events, "arn:aws:events:us-east-1:123456789012:event-bus/spothub-hub").publish(detail) == (
        "event-1"
    )
    [entry] = events.entries
    assert entry["Source"] == Source.AGENT
    assert entry["DetailType"] == DETAIL_TYPES[type(detail)]
    assert entry["EventBusName"].endswith(":event-bus/spothub-hub")
    body = json.loads(entry["Detail"])
    assert body["version"] == CONTRACT_VERSION
    # Every hub consumer of this (source, detail-type) reads the detail into the very model the agent built.
    consumers = [c for c in CONSUMERS if c.key == (entry["Source"], entry["DetailType"])]
    assert consumers
    for consumer in consumers:
        assert consumer.bus == Bus.HUB
        assert consumer.model is type(detail)
        assert consumer.model.model_validate(body) == detail


def test_everything_the_agent_publishes_has_a_consumer_on_the_hub() -> None:
    consumed = {(c.source, c.detail_type): c.model for c in CONSUMERS if c.source == Source.AGENT}
    assert {(Source.AGENT, kind): model for model, kind in DETAIL_TYPES.items()} == consumed


def test_a_refused_event_raises() -> None:
    events = FakeEvents({"FailedEntryCount": 1, "Entries": [{"ErrorCode": "AccessDenied", "ErrorMessage": "no"}]})
    with pytest.raises(PublishError, match="AccessDenied"):
        Publisher(lambda: events, "spothub-hub").publish(NOTICE)


def test_the_agent_keeps_no_more_output_lines_than_a_heartbeat_may_carry() -> None:
    limits = {type(m).__name__: m for m in WorkloadHealth.model_fields["last_lines"].metadata}
    assert limits["MaxLen"].max_length == MAX_LAST_LINES

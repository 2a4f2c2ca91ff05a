"""Events to the hub bus (source `spothub.agent`): capacity notices and drain outcomes, each built as its
contract's model (spothub_core.contracts) and sent as the model serializes itself, the contract version
included: the hub validates the detail against the same model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from spothub_core.contracts import CapacityNotice, DrainCompleted, Source, WorkerReport

# EventBridge refuses an entry over 256 KiB; the agent's details are far smaller, this only guards.
MAX_DETAIL_BYTES = 200_000

AgentReport = CapacityNotice | DrainCompleted
# What the agent publishes, by the detail-type the hub consumes it as (spothub_core.consumers).
DETAIL_TYPES: dict[type[AgentReport], WorkerReport] = {
    CapacityNotice: WorkerReport.CAPACITY_NOTICE,
    DrainCompleted: WorkerReport.DRAIN_COMPLETED,
}


class PublishError(RuntimeError):
    pass


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def hub_bus_arn(hub_region: str, account_id: str, prefix: str) -> str:
    return f"arn:{partition_of(hub_region)}:events:{hub_region}:{account_id}:event-bus/{prefix}-hub"


class Publisher:
    def __init__(self, events: Callable[[], Any], bus_arn: str) -> None:
        self._events = events
        self.bus_arn = bus_arn

    def publish(self, detail: AgentReport) -> str:
        """Put one event; returns its id. Raises PublishError (or a botocore error) when it was not accepted."""
        detail_type = DETAIL_TYPES[type(detail)]
        body = json.dumps(detail.model_dump(mode="json"), separators=(",", ":"))
        if len(body) > MAX_DETAIL_BYTES:
            raise PublishError(f"{detail_type} detail is {len(body)} bytes, over {MAX_DETAIL_BYTES}")
        answer = self._events().put_events(
            Entries=[
                {
                    "Source": str(Source.AGENT),
                    "DetailType": str(detail_type),
                    "Detail": body,
                    "EventBusName": self.bus_arn,
                }
            ]
        )
        entry = (answer.get("Entries") or [{}])[0]
        if answer.get("FailedEntryCount") or "EventId" not in entry:
            raise PublishError(f"{detail_type} refused: {entry.get('ErrorCode', '')} {entry.get('ErrorMessage', '')}")
        return str(entry["EventId"])

"""Events to the hub bus (source `spothub.agent`): capacity notices and drain outcomes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from spothub_core.contracts import CONTRACT_VERSION, Source, WorkerReport

# EventBridge refuses an entry over 256 KiB; the agent's details are far smaller, this only guards.
MAX_DETAIL_BYTES = 200_000


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

    def publish(self, detail_type: WorkerReport, detail: dict[str, Any]) -> str:
        """Put one event; returns its id. Raises PublishError (or a botocore error) when it was not accepted."""
        body = json.dumps({"version": CONTRACT_VERSION, **detail}, separators=(",", ":"))
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

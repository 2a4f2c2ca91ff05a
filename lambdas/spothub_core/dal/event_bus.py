"""Putting spothub's own events on a bus: one entry, refused entries are errors."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from spothub_core.contracts import HubCommand, Source
from spothub_core.dal.state_table import reason_of
from spothub_core.errors import DependencyUnavailable


def put_event(events: Any, bus_name: str, source: str, detail_type: str, detail: dict[str, Any]) -> str:
    """Put one event; returns its id. Raises DependencyUnavailable when EventBridge refuses it."""
    entry = {
        "EventBusName": bus_name,
        "Source": str(source),
        "DetailType": str(detail_type),
        "Detail": json.dumps(detail),
    }
    try:
        response = events.put_events(Entries=[entry])
    except (ClientError, BotoCoreError) as exc:
        raise DependencyUnavailable(f"could not put {detail_type}: {reason_of(exc)}") from exc
    if response.get("FailedEntryCount"):
        raise DependencyUnavailable(f"EventBridge refused {detail_type}: {response['Entries'][0]}")
    return str(response["Entries"][0].get("EventId", ""))


def put_command(events: Any, bus_name: str, detail_type: HubCommand, command: BaseModel) -> str:
    """Put one of the hub's commands (source spothub.hub) for a worker region; returns its id."""
    return put_event(events, bus_name, Source.HUB, detail_type, command.model_dump(mode="json"))

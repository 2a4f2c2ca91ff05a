"""`spothub events [--follow]`: what the control plane did and saw recently (GET /events): launches and their
failures, teardowns, capacity notices, remediations, regions excluded. `--follow` keeps asking for what is new
until Ctrl-C, as `tail -f` does."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import click
from rich.text import Text

from spothub import cli_render
from spothub.cli_api import Api, api_command

KIND_STYLES = {
    "launched": "green",
    "launch-failed": "bold red",
    "launch-cancelled": "yellow",
    "notice": "yellow",
    "remediation": "magenta",
    "exclusion": "yellow",
    "teardown": "dim",
    "teardown-done": "dim",
    "standby-started": "cyan",
    "standby-ready": "cyan",
    "standby-promoted": "green",
    "standby-released": "dim",
    "standby-failed": "yellow",
}
FOLLOW_INTERVAL_S = 5.0


def events_command(cli: click.Group) -> None:
    @api_command(
        cli,
        "events",
        help="what happened recently: launches, failovers, notices, remediations, warm standbys (GET /events)",
    )
    @click.option("--since", metavar="ISO-8601", help="only events after this time")
    @click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
    @click.option("--follow", "-f", is_flag=True, help="keep showing new events until Ctrl-C")
    @click.option(
        "--interval",
        type=click.FloatRange(min=0.5),
        default=FOLLOW_INTERVAL_S,
        show_default=True,
        metavar="SECONDS",
        help="seconds between asks with --follow",
    )
    def events(api: Api, since: str | None, limit: int, follow: bool, interval: float) -> None:
        answer = fetch(api, since=since, limit=limit)
        shown = emit(api, oldest_first(answer), seen=set())
        while follow:
            time.sleep(interval)
            latest = max((e["at"] for e in answer["events"]), default=since)
            answer = fetch(api, since=latest, limit=500) if latest else fetch(api, since=None, limit=limit)
            shown = emit(api, oldest_first(answer), seen=shown)


def fetch(api: Api, *, since: str | None, limit: int) -> dict[str, Any]:
    return api.client.request("GET", "events", query={"since": since, "limit": limit})


def oldest_first(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(reversed(answer.get("events") or []))


def _key(event: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(event.get(k) or "") for k in ("at", "kind", "region", "instance_id", "summary"))


def emit(api: Api, events: Iterable[dict[str, Any]], *, seen: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    """Show each event not shown before (one JSON object per line with --json); the keys shown so far."""
    fresh = [e for e in events if _key(e) not in seen]
    if api.as_json:
        for event in fresh:
            api.out(event)
    elif fresh:
        api.show(
            cli_render.table(
                ("AT", "KIND", "REGION", "INSTANCE", "WHAT"),
                ((e.get("at"), event_kind(e), e.get("region"), e.get("instance_id"), e.get("summary")) for e in fresh),
            )
        )
    elif not seen:
        api.show(Text("no events kept", style="dim"))
    return seen | {_key(e) for e in fresh}


def event_kind(event: Mapping[str, Any]) -> Text:
    kind = str(event.get("kind") or "")
    return Text(kind, style=KIND_STYLES.get(kind, ""))

"""`spothub regions`: the spot finder's ranking now (GET /regions): every worker region with its rank, placement
score, spot price (and where), whether an exclusion or the operator's lists leave it out and why, and which
replicas hold it. Asking changes nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.text import Text

from spothub import cli_render
from spothub.cli_api import Api, api_command

STATE_STYLES = {"ok": "green", "excluded": "yellow", "denied": "magenta", "not-allowed": "magenta"}


def regions_command(cli: click.Group) -> None:
    @api_command(
        cli,
        "regions",
        help="the spot finder's ranking now: scores, prices, exclusions and why, replicas (GET /regions)",
    )
    def regions(api: Api) -> None:
        answer = api.client.regions()
        if api.as_json:
            api.out(answer)
        else:
            api.show(regions_view(answer))


def regions_view(data: Mapping[str, Any]) -> RenderableType:
    types = ", ".join(data.get("instance_types") or []) or "-"
    best = data.get("best")
    head = Text.assemble(
        f"ranked at {data.get('at') or '-'} for {types}: ",
        Text(f"best {best}", style="green") if best else Text("no spot region", style="bold red"),
        f" ({data.get('reason') or 'no reason given'})",
    )
    regions = data.get("regions") or []
    if not regions:
        return Group(head, Text("regions: none", style="dim"))
    grid = cli_render.table(
        ("RANK", "REGION", "SCORE", "SPOT $/h", "ON-DEMAND $/h", "STATE", "WHY", "REPLICAS"),
        (
            (
                r.get("rank"),
                r.get("region"),
                r.get("placement_score"),
                spot_price(r),
                price(r.get("on_demand_price")),
                state(r),
                why(r),
                r.get("replicas") or None,
            )
            for r in regions
        ),
    )
    return Group(head, grid)


def price(value: Any) -> str | None:
    return None if value is None else f"{float(value):.4f}"


def spot_price(region: Mapping[str, Any]) -> str | None:
    """`0.3512 (us-west-2a g5.xlarge)`: the price and the pool that has it."""
    shown = price(region.get("spot_price"))
    pool = " ".join(str(part) for part in (region.get("spot_zone"), region.get("spot_instance_type")) if part)
    return f"{shown} ({pool})" if shown and pool else shown


def state(region: Mapping[str, Any]) -> Text:
    name = str(region.get("state") or "unknown")
    excluded = region.get("excluded") or {}
    text = f"excluded until {excluded['until']}" if name == "excluded" and excluded.get("until") else name
    return Text(text, style=STATE_STYLES.get(name, ""))


def why(region: Mapping[str, Any]) -> str | None:
    """The exclusion's class and error when one stands (even behind the operator's lists), else the finder's."""
    excluded = region.get("excluded") or {}
    reason = region.get("reason")
    if not excluded:
        return reason
    failure = ": ".join(str(part) for part in (excluded.get("kind"), excluded.get("error")) if part)
    if region.get("state") == "excluded":
        return failure
    return f"{reason}; also excluded until {excluded.get('until')}: {failure}"

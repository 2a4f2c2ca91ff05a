"""Every policy over one trace set, as one JSON-ready object and as a table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from spothub.replay.policies import POLICIES, make_policy
from spothub.replay.simulator import DEFAULT_COLD_START_S, Simulator
from spothub.replay.traces import TraceSet


def replay(
    traces: TraceSet,
    *,
    replicas: int = 1,
    cold_start_s: float = DEFAULT_COLD_START_S,
    policies: Iterable[str] | None = None,
) -> dict[str, Any]:
    results = {}
    for name in policies if policies is not None else POLICIES:
        outcome = Simulator(traces, make_policy(name), replicas=replicas, cold_start_s=cold_start_s).run()
        results[name] = {
            "availability": round(outcome.availability, 6),
            "cost": round(outcome.cost, 2),
            "cost_vs_on_demand": round(outcome.cost_vs_on_demand, 4),
            "preemptions": outcome.preemptions,
            "launches": outcome.launches,
            "failovers": outcome.failovers,
            "longest_outage_s": round(outcome.longest_outage_s, 1),
        }
    return {
        "trace": traces.name,
        "shape": traces.shape,
        "replicas": replicas,
        "cold_start_s": cold_start_s,
        "policies": results,
    }


def render_table(result: dict[str, Any], traces: TraceSet) -> str:
    days = traces.duration_s / 86400
    zones = ", ".join(
        z if n == traces.ticks else f"{z} ({n} ticks)" for z, n in zip(traces.zones, traces.measured_ticks, strict=True)
    )
    lines = [
        f"{result['trace']}: {result['shape']} ({traces.instance_type}), {_count(len(traces.zones), 'zone')} in "
        f"{_count(len(traces.regions), 'region')}, {traces.ticks} ticks x {traces.gap_seconds:g} s = {days:.1f} days",
        f"zones: {zones}; replicas {result['replicas']}, cold start {result['cold_start_s']:g} s",
        "",
        "| policy | availability | cost | vs on-demand | preemptions | launches | failovers | longest outage |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, p in result["policies"].items():
        lines.append(
            f"| {name} | {100 * p['availability']:.3f} % | ${p['cost']:,.2f} | {100 * p['cost_vs_on_demand']:.1f} % "
            f"| {p['preemptions']} | {p['launches']} | {p['failovers']} | {_duration(p['longest_outage_s'])} |"
        )
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _duration(seconds: float) -> str:
    if seconds < 60:  # noqa: PLR2004
        return f"{seconds:.0f} s"
    if seconds < 3600:  # noqa: PLR2004
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"

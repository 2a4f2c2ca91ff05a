"""How the API's answers look on a terminal: rich tables for people, one progress line per change for
`--wait`/`--watch`. The data is the API's JSON as it comes (dicts), read with .get so a newer or older
deployment's answer still shows."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

# Wide enough that ids, endpoints and reasons stay on one line when the output is a file or a pipe.
PIPE_WIDTH = 160
BATCH_STATES = ("pending", "assigned", "processing", "completed", "failed")


def console(*, stderr: bool = False) -> Console:
    """A console on the current stdout/stderr (pytest's capture included): colours only on a terminal,
    markup never interpreted in the data."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    width = None if terminal else int(os.environ.get("COLUMNS") or PIPE_WIDTH)
    return Console(file=stream, width=width, highlight=False, soft_wrap=not terminal, emoji=False)


def cell(value: Any) -> Text:
    if isinstance(value, Text):
        return value
    if value is None or value == "":
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, list | tuple):
        return Text(", ".join(str(item) for item in value) or "-")
    return Text(str(value))


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None) -> Table:
    grid = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*(cell(value) for value in row))
    return grid


def pairs(items: Iterable[tuple[str, Any]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in items:
        grid.add_row(key, cell(value))
    return grid


STATE_STYLES = {
    "serving": "green",
    "completed": "green",
    "enabled": "green",
    "active": "green",
    "placing": "yellow",
    "replacing": "yellow",
    "listing": "yellow",
    "running": "cyan",
    "left-running": "yellow",
    "failed": "bold red",
    "cancelled": "magenta",
    "ready": "green",
    "idle": "green",
    "busy": "cyan",
    "launching": "yellow",
    "starting": "yellow",
    "terminating": "magenta",
}


def styled(state: Any) -> Text:
    text = cell(state)
    text.stylize(STATE_STYLES.get(str(state), ""))
    return text


# --- GET /status -------------------------------------------------------------------------------


def status_view(status: Mapping[str, Any], source: str) -> RenderableType:
    return pairs(
        [
            ("API", source),
            ("prefix", status.get("prefix")),
            ("version", status.get("version")),
            ("hub region", status.get("hub_region")),
            ("worker regions", status.get("worker_regions")),
            ("capacity fallback", status.get("capacity_fallback")),
            ("state table", status.get("state_table")),
        ]
    )


# --- GET /spot-instances -------------------------------------------------------------------------


def instances_view(data: Mapping[str, Any]) -> RenderableType:
    settings = data.get("settings") or {}
    head = Text.assemble(
        "provisioning ",
        styled(data.get("provisioning")),
        ", state ",
        styled(data.get("state")),
        f", endpoint {data.get('endpoint') or '-'}",
    )

    def listed(key: str, otherwise: str) -> str:
        return ", ".join(settings.get(key) or []) or otherwise

    wanted = Text(
        f"settings: replicas {settings.get('replicas') or 1}, instance types "
        f"{listed('instance_types', 'as deployed')}, allowed regions {listed('allowed_regions', 'all')}, "
        f"denied regions {listed('denied_regions', 'none')}, warm standby "
        f"{'on' if settings.get('warm_standby') else 'off'}",
        style="dim",
    )
    parts: list[RenderableType] = [head, wanted]
    replicas = data.get("replicas") or []
    instances = data.get("instances") or []
    parts.append(_replicas_table(replicas) if replicas else Text("replicas: none", style="dim"))
    parts.append(_instances_table(instances) if instances else Text("instances: none", style="dim"))
    standbys = data.get("standbys") or []
    if standbys:
        parts.append(_standbys_table(standbys))
    remediations = data.get("remediations") or []
    if remediations:
        parts.append(
            table(
                ("AT", "INSTANCE", "REGION", "ALARM", "REASON"),
                (
                    (m.get("at"), m.get("instance_id"), m.get("region"), m.get("alarm_name"), m.get("reason"))
                    for m in remediations
                ),
                title=f"remediations ({len(remediations)}, oldest first)",
            )
        )
    return Group(*parts)


def _replicas_table(replicas: Sequence[Mapping[str, Any]]) -> Table:
    return table(
        ("REPLICA", "STATUS", "REGION", "INSTANCE", "CAPACITY", "PLACED", "ENDPOINT", "WHY"),
        (
            (
                r.get("replica_id"),
                styled(r.get("status")),
                r.get("region") or (f"→ {r['target_region']}" if r.get("target_region") else None),
                r.get("instance_id"),
                r.get("capacity_type"),
                r.get("placed_at"),
                r.get("endpoint"),
                r.get("error") or r.get("reason"),
            )
            for r in replicas
        ),
        title=f"replicas ({len(replicas)})",
    )


def _instances_table(instances: Sequence[Mapping[str, Any]]) -> Table:
    return table(
        ("INSTANCE", "REGION", "ZONE", "TYPE", "CAPACITY", "STATUS", "REPLICA", "READY", "LAST SEEN", "ENDPOINT"),
        (
            (
                i.get("instance_id"),
                i.get("region"),
                i.get("availability_zone"),
                i.get("instance_type"),
                i.get("capacity_type"),
                styled(i.get("status")),
                i.get("replica_id"),
                i.get("ready"),
                i.get("last_seen"),
                i.get("endpoint"),
            )
            for i in instances
        ),
        title=f"instances ({len(instances)})",
    )


def _standbys_table(standbys: Sequence[Mapping[str, Any]]) -> Table:
    return table(
        ("REPLICA", "STATUS", "REGION", "ZONE", "CAPACITY", "INSTANCE", "LAUNCHED", "READY", "REPLACES"),
        (
            (
                s.get("replica_id"),
                styled(s.get("status")),
                s.get("region"),
                s.get("zone") or "-",
                s.get("capacity_type"),
                s.get("instance_id"),
                s.get("launched_at"),
                s.get("ready_at"),
                s.get("replaces"),
            )
            for s in standbys
        ),
        title=f"warm standbys ({len(standbys)})",
    )


def replica_phase(replica: Mapping[str, Any]) -> str:
    """One replica in the words of `enable --wait`: placing -> launching -> healthy."""
    status = replica.get("status")
    where = replica.get("region") or replica.get("target_region")
    if status == "serving":
        return f"healthy in {where} ({replica.get('instance_id')}, {replica.get('capacity_type')})"
    if status == "failed":
        return f"failed: {replica.get('error') or 'no reason given'}"
    if status == "replacing":
        return f"replacing (still serving in {replica.get('region')}, moving to {replica.get('target_region')})"
    if status == "placing" and replica.get("instance_id"):
        return f"launching in {where} ({replica.get('instance_id')}), waiting for it to be healthy"
    if status == "placing" and replica.get("target_region"):
        return f"launching in {replica.get('target_region')}"
    return str(status or "unknown")


def provisioning_progress(data: Mapping[str, Any]) -> str:
    live = [r for r in data.get("replicas") or [] if r.get("status") != "stopped"]
    if not live:
        return f"{data.get('state')}: no replica yet"
    return f"{data.get('state')}: " + "; ".join(f"{r.get('replica_id')} {replica_phase(r)}" for r in live)


# --- jobs ------------------------------------------------------------------------------------------


def batch_total(counts: Mapping[str, Any]) -> int:
    return sum(int(counts.get(state) or 0) for state in BATCH_STATES)


def active_workers(view: Mapping[str, Any]) -> int:
    return sum(1 for w in view.get("workers") or [] if w.get("status") == "active")


def job_progress(view: Mapping[str, Any]) -> str:
    """One line: `job-… running: 200 files, batches 12/20 completed (1 failed), 3 in flight, 3 workers`."""
    counts = view.get("batches") or {}
    total = batch_total(counts)
    line = f"{view.get('job_id')} {view.get('status')}: {view.get('files', 0)} files, batches "
    line += f"{counts.get('completed', 0)}/{total} completed"
    if counts.get("failed"):
        line += f" ({counts['failed']} failed)"
    in_flight = int(counts.get("assigned") or 0) + int(counts.get("processing") or 0)
    if in_flight:
        line += f", {in_flight} in flight"
    workers = active_workers(view)
    line += f", {workers} worker" + ("" if workers == 1 else "s")
    if view.get("reason"):
        line += f"; {view['reason']}"
    return line


def job_view(view: Mapping[str, Any]) -> RenderableType:
    counts = view.get("batches") or {}
    input_uri = f"s3://{view.get('input_bucket')}/{view.get('input_prefix') or ''}"
    output_uri = f"s3://{view.get('output_bucket')}/{view.get('output_prefix') or ''}"
    parts: list[RenderableType] = [
        Text.assemble(Text(str(view.get("job_id")), style="bold"), " ", styled(view.get("status"))),
        pairs(
            [
                ("reason", view.get("reason")),
                ("input", input_uri),
                ("output", output_uri),
                ("image", view.get("image")),
                ("files", view.get("files")),
                (
                    "batches",
                    f"{batch_total(counts)}: " + ", ".join(f"{counts.get(state, 0)} {state}" for state in BATCH_STATES),
                ),
                ("workers", f"{active_workers(view)} active (at most {view.get('max_workers')})"),
                ("created", view.get("created_at")),
                ("started", view.get("started_at")),
                ("finished", view.get("finished_at")),
            ]
        ),
    ]
    workers = view.get("workers") or []
    if workers:
        parts.append(
            table(
                ("WORKER", "REGION", "TYPE", "CAPACITY", "STATUS", "BATCH", "LAST SEEN"),
                (
                    (
                        w.get("worker_id"),
                        w.get("region"),
                        w.get("instance_type"),
                        w.get("capacity_type"),
                        styled(w.get("status")),
                        w.get("batch_id"),
                        w.get("last_seen"),
                    )
                    for w in workers
                ),
                title=f"workers ({len(workers)})",
            )
        )
    fleet = view.get("fleet") or []
    if fleet:
        parts.append(
            table(
                ("REGION", "DESIRED", "IN SERVICE", "CAPACITY", "ERROR", "EXCLUDED UNTIL"),
                (
                    (
                        f.get("region"),
                        f.get("desired"),
                        f.get("in_service"),
                        f.get("capacity_type"),
                        f.get("error"),
                        f.get("excluded_until"),
                    )
                    for f in fleet
                ),
                title="capacity by region",
            )
        )
    errors = view.get("errors") or []
    if errors:
        parts.append(
            table(
                ("AT", "BATCH", "WORKER", "ERROR"),
                ((e.get("at"), e.get("batch_id"), e.get("worker_id"), e.get("error")) for e in errors),
                title=f"errors ({len(errors)}, newest first)",
            )
        )
    return Group(*parts)


def jobs_table(jobs: Sequence[Mapping[str, Any]]) -> RenderableType:
    return table(
        ("JOB", "STATUS", "FILES", "IMAGE", "CREATED", "FINISHED"),
        (
            (
                j.get("job_id"),
                j.get("status"),
                j.get("files"),
                j.get("image"),
                j.get("created_at"),
                j.get("finished_at"),
            )
            for j in jobs
        ),
    )

"""`spothub search`: query the semantic search service, and bring its one instance up or down (the /search routes)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import click
from rich.console import Group, RenderableType

from spothub import cli_render
from spothub.api_client import ApiError, CliError
from spothub.cli_api import EXIT_ERROR, Api, api_command, api_options, wait_options, watch

ROUTABLE = {"ready", "busy", "idle"}
# `--wait` asks again after each 503 (every --interval) rather than asking the API to hold the call open (wait_s):
# a held call is capped by API Gateway's integration timeout anyway, and in the sandbox, which runs one invocation
# at a time, it would hold up the very launch it waits for.


@click.group(help="semantic search on one GPU instance bound to the index volume (the /search routes)")
@api_options
def search() -> None:
    pass


def instances_table(instances: Sequence[Mapping[str, Any]]) -> RenderableType:
    return cli_render.table(
        ("INSTANCE", "STATUS", "CAPACITY", "TYPE", "ZONE", "PRIVATE IP", "IN FLIGHT", "CREATED", "LAST USED"),
        (
            (
                i.get("instance_id") or f"({i.get('launch_id')})",
                cli_render.styled(i.get("status")),
                i.get("capacity_type"),
                i.get("instance_type"),
                i.get("availability_zone"),
                i.get("private_ip"),
                i.get("current_requests"),
                i.get("created_at"),
                i.get("last_used"),
            )
            for i in instances
        ),
    )


def status_view(data: Mapping[str, Any]) -> RenderableType:
    summary = cli_render.pairs(
        (key.replace("_", " "), data.get(key))
        for key in ("total_instances", "ready_instances", "busy_instances", "launching_instances")
    )
    instances = data.get("instances") or []
    if not instances:
        return Group(summary, cli_render.cell("no instance: the next query starts one (or `spothub search up`)"))
    return Group(summary, instances_table(instances))


def results_view(answer: Mapping[str, Any]) -> RenderableType:
    timings = answer.get("timings") or {}
    hits = answer.get("results") or []
    grid = cli_render.table(
        ("#", "SCORE", "ID", "TITLE", "SNIPPET"),
        (
            (n, f"{float(h.get('score') or 0):.3f}", h.get("id"), h.get("title"), h.get("snippet"))
            for n, h in enumerate(hits, 1)
        ),
        title=f"{len(hits)} results from {answer.get('instance_id')} "
        f"(service {timings.get('service_ms', '-')} ms, total {timings.get('total_ms', '-')} ms)",
    )
    return grid


def progress(data: Mapping[str, Any]) -> str:
    instances = data.get("instances") or []
    if not instances:
        return "no instance"
    return ", ".join(f"{i.get('instance_id') or i.get('launch_id')} {i.get('status')}" for i in instances)


def ready(data: Mapping[str, Any]) -> bool:
    return any(i.get("status") in ROUTABLE for i in data.get("instances") or [])


@api_command(search, "query", help="search the index; from zero, starts the instance (POST /search/query)")
@click.argument("text")
@click.option("--top-k", type=click.IntRange(1, 100), default=10, show_default=True, help="results to return")
@click.option("--wait", is_flag=True, help="while the instance starts, ask again until it answers")
@wait_options
def query(  # noqa: PLR0917 (one parameter per option)
    api: Api, text: str, top_k: int, wait: bool, interval: float, timeout: float | None
) -> int:
    started = time.monotonic()
    body = {"query": text, "top_k": top_k}
    while True:
        try:
            answer = api.client.search_query(body)
            break
        except ApiError as exc:
            unavailable = exc.status == HTTPStatus.SERVICE_UNAVAILABLE
            waited = time.monotonic() - started
            if not (wait and unavailable) or (timeout is not None and waited >= timeout):
                raise
            status = exc.body.get("status") if isinstance(exc.body, Mapping) else None
            click.echo(f"(search instance {status or 'not ready'}; asking again)", err=True)
            time.sleep(interval)
    if api.as_json:
        api.out(answer)
    else:
        api.show(results_view(answer))
    return 0


@api_command(search, "status", help="the search instance: status, address, queries in flight (GET /search/status)")
def status(api: Api) -> None:
    data = api.client.search_status()
    if api.as_json:
        api.out(data)
    else:
        api.show(status_view(data))


@api_command(search, "up", help="launch the search instance now (POST /search/scale-up)")
@click.option("--wait", is_flag=True, help="follow the launch until the instance is ready (exit 1 if it fails)")
@wait_options
def up(api: Api, wait: bool, interval: float, timeout: float | None) -> int:
    try:
        answer = api.client.search_scale("up")
    except ApiError as exc:
        if exc.status != HTTPStatus.CONFLICT or not isinstance(exc.body, Mapping):
            raise
        click.echo(f"{api.command_path}: {exc.body.get('error')}", err=True)
        if not wait:
            return 0
    else:
        if api.as_json and not wait:
            api.out(answer)
            return 0
        if not api.as_json:
            click.echo(answer.get("message", "launch started"))
    if not wait:
        return 0
    data = watch(
        api.client.search_status,
        line=progress,
        done=lambda d: ready(d) or not d.get("instances"),
        interval_s=interval,
        timeout_s=timeout,
    )
    if api.as_json:
        api.out(data)
    else:
        api.show(status_view(data))
    if not ready(data):
        raise CliError("the search instance did not become ready (see `spothub search status`)")
    return 0


@api_command(search, "down", help="terminate the search instance unless it is busy (POST /search/scale-down)")
def down(api: Api) -> int:
    answer = api.client.search_scale("down")
    if api.as_json:
        api.out(answer)
        return 0
    terminated = answer.get("terminated_instances") or []
    click.echo(f"{answer.get('message')}: {', '.join(terminated) if terminated else 'nothing was running'}")
    return 0


@api_command(search, "terminate", help="terminate one search instance (DELETE /search/instances/{instance_id})")
@click.argument("instance_id")
def terminate(api: Api, instance_id: str) -> int:
    answer = api.client.search_terminate(instance_id)
    if api.as_json:
        api.out(answer)
        return 0
    click.echo(f"{answer.get('instance_id')}: {answer.get('message')} ({answer.get('status')})")
    return 0 if answer.get("status") in {"terminating", "terminated"} else EXIT_ERROR

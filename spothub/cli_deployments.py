"""`spothub deployments`, `spothub nodes`, `resources`, `gpu-utilization`, `scaling-events`, `health`: model
deployments on the GPU nodes (the routes of lambdas/spothub_core/models/deployment_api.py).

Request bodies are built from the API's own models (DeploymentRequest, ScaleRequest, NodeOperation), so what the
CLI sends is what the API validates; a value those models refuse is a usage error before anything is sent.
Answers are read as the JSON they are (with .get), as every other command reads them. The models are imported
where they are used: pydantic would slow `spothub --help` down.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click
from rich.console import Group, RenderableType
from rich.text import Text

from spothub import cli_render
from spothub.api_client import ApiError
from spothub.cli_api import EXIT_ERROR, Api, api_command, api_options, wait_options, watch

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

DEFAULT_PAGE = 20
STYLES = {
    "creating": "yellow",
    "running": "green",
    "degraded": "bold yellow",
    "failed": "bold red",
    "deleting": "magenta",
    "deleted": "dim",
    "pending": "yellow",
    "starting": "yellow",
    "unhealthy": "bold red",
    "stopping": "magenta",
    "stopped": "dim",
    "ready": "green",
    "cordoned": "yellow",
    "draining": "magenta",
    "interrupted": "bold red",
    "gone": "dim",
    "applied": "green",
    "capped": "yellow",
    "refused": "magenta",
    "gave-up": "bold red",
}


def styled(state: Any) -> Text:
    text = cli_render.cell(state)
    text.stylize(STYLES.get(str(state), ""))
    return text


def path_part(value: str) -> str:
    return quote(value, safe="")


# --- building requests from the API's models ------------------------------------------------------------


def build(request_model: type[BaseModel], /, **given: Any) -> dict[str, Any]:
    """The body `request_model` validates, with only the fields given (the API fills the defaults); a value the model
    refuses is a usage error naming the field."""
    from pydantic import ValidationError  # noqa: PLC0415

    try:
        request = request_model(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as exc:
        raise click.UsageError(refusal(exc)) from None
    return request.model_dump(mode="json", exclude_unset=True)


def refusal(exc: ValidationError) -> str:
    """A pydantic refusal as one line: `tenant: String should match pattern ...; gpus: ...`."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error.get("loc") or ())
        message = str(error.get("msg") or "invalid").removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def env_pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str] | None:
    """`--env A=1 --env B=two` -> {"A": "1", "B": "two"}; None when none."""
    found: dict[str, str] = {}
    for value in values:
        name, equals, text = value.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"expected NAME=VALUE, not {value!r}", ctx=ctx, param=param)
        found[name] = text
    return found or None


def deployment_status(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from spothub_core.models.deployment_records import DeploymentStatus  # noqa: PLC0415

    try:
        return DeploymentStatus(value.lower()).value
    except ValueError:
        allowed = ", ".join(status.value for status in DeploymentStatus)
        raise click.BadParameter(f"{value!r} is not one of {allowed}", ctx=ctx, param=param) from None


# --- how answers look -----------------------------------------------------------------------------------


def replicas_line(view: Mapping[str, Any]) -> str:
    counts = view.get("replicas") or {}
    return f"{counts.get('healthy', 0)}/{counts.get('desired', 0)} healthy, {counts.get('running', 0)} running"


def task_phase(task: Mapping[str, Any]) -> str:
    where = task.get("instance_id")
    if where and task.get("region"):
        where = f"{where} in {task['region']}"
    text = f"slot {task.get('slot')} {task.get('status')}"
    if where:
        text += f" on {where}"
    if task.get("restarts"):
        text += f" (restarts {task['restarts']})"
    return text


def deployment_progress(view: Mapping[str, Any]) -> str:
    """One line per change while waiting: `d-… creating: 1/2 healthy, 2 running; slot 0 running on i-… in …`."""
    line = f"{view.get('deployment_id')} {view.get('status')}: {replicas_line(view)}"
    live = [t for t in view.get("tasks") or [] if t.get("status") not in {"stopped", "failed"}]
    if live:
        line += "; " + ", ".join(task_phase(t) for t in live)
    if view.get("last_error"):
        line += f"; {view['last_error']}"
    return line


def autoscale_text(autoscale: Mapping[str, Any] | None) -> str | None:
    if not autoscale:
        return None
    return f"target {autoscale.get('target_gpu_utilization')}% GPU utilization, cooldown {autoscale.get('cooldown_s')}s"


def deployment_view(view: Mapping[str, Any]) -> RenderableType:
    head = Text.assemble(Text(str(view.get("deployment_id")), style="bold"), " ", styled(view.get("status")))
    details = cli_render.pairs(
        [
            ("model", view.get("model")),
            ("tenant", view.get("tenant")),
            ("image", view.get("image")),
            ("GPUs per replica", view.get("gpus")),
            ("replicas", f"{replicas_line(view)} (min {view.get('min_replicas')}, max {view.get('max_replicas')})"),
            ("autoscale", autoscale_text(view.get("autoscale")) or "off"),
            ("endpoints", view.get("endpoints") or None),
            ("created", view.get("created_at")),
            ("last error", view.get("last_error")),
        ]
    )
    parts: list[RenderableType] = [head, details]
    tasks = view.get("tasks") or []
    if tasks:
        parts.append(
            cli_render.table(
                ("TASK", "SLOT", "STATUS", "INSTANCE", "REGION", "ENDPOINT", "STARTED", "RESTARTS", "ERROR"),
                (
                    (
                        t.get("task_id"),
                        t.get("slot"),
                        styled(t.get("status")),
                        t.get("instance_id"),
                        t.get("region"),
                        t.get("endpoint"),
                        t.get("started_at"),
                        t.get("restarts"),
                        t.get("last_error"),
                    )
                    for t in tasks
                ),
                title=f"tasks ({len(tasks)})",
            )
        )
    else:
        parts.append(Text("tasks: none", style="dim"))
    return Group(*parts)


def deployments_table(found: Sequence[Mapping[str, Any]]) -> RenderableType:
    return cli_render.table(
        ("DEPLOYMENT", "STATUS", "MODEL", "TENANT", "GPUS", "REPLICAS", "CREATED"),
        (
            (
                d.get("deployment_id"),
                styled(d.get("status")),
                d.get("model"),
                d.get("tenant"),
                d.get("gpus"),
                d.get("replicas"),
                d.get("created_at"),
            )
            for d in found
        ),
    )


def gpus_text(node: Mapping[str, Any]) -> str:
    return f"{node.get('gpus_allocated')}/{node.get('gpus_total')} allocated, {node.get('gpus_free')} free"


def utilization(value: Any) -> str | None:
    return None if value is None else f"{float(value):.0f}%"


def nodes_table(nodes: Sequence[Mapping[str, Any]]) -> RenderableType:
    return cli_render.table(
        (
            "NODE",
            "STATUS",
            "REGION",
            "TYPE",
            "CLASS",
            "CAPACITY",
            "GPUS USED",
            "FREE",
            "UTIL",
            "TASKS",
            "HEARTBEAT",
            "WHY",
        ),
        (
            (
                n.get("instance_id"),
                styled(n.get("status")),
                n.get("region"),
                n.get("instance_type"),
                n.get("node_class"),
                n.get("capacity_type"),
                f"{n.get('gpus_allocated')}/{n.get('gpus_total')}",
                n.get("gpus_free"),
                utilization(n.get("gpu_utilization_pct")),
                len(n.get("tasks") or []),
                n.get("last_heartbeat"),
                n.get("status_reason"),
            )
            for n in nodes
        ),
    )


def node_view(node: Mapping[str, Any]) -> RenderableType:
    head = Text.assemble(Text(str(node.get("instance_id")), style="bold"), " ", styled(node.get("status")))
    details = cli_render.pairs(
        [
            ("why", node.get("status_reason")),
            ("region", node.get("region")),
            ("instance type", node.get("instance_type")),
            ("node class", node.get("node_class")),
            ("capacity", node.get("capacity_type")),
            ("GPUs", gpus_text(node)),
            ("GPU utilization", utilization(node.get("gpu_utilization_pct"))),
            ("last heartbeat", node.get("last_heartbeat")),
        ]
    )
    tasks = node.get("tasks") or []
    if not tasks:
        return Group(head, details, Text("tasks: none", style="dim"))
    grid = cli_render.table(
        ("DEPLOYMENT", "TASK", "GPUS", "STATUS"),
        ((t.get("deployment_id"), t.get("task_id"), t.get("gpus"), styled(t.get("status"))) for t in tasks),
        title=f"tasks ({len(tasks)})",
    )
    return Group(head, details, grid)


def resources_view(data: Mapping[str, Any]) -> RenderableType:
    head = Text(
        f"GPUs: {data.get('total', 0)} total, {data.get('allocated', 0)} allocated, {data.get('free', 0)} free "
        "(free counts schedulable nodes only)"
    )
    rows = data.get("resources") or []
    if not rows:
        return Group(head, Text("no GPU node: capacity is asked for when a deployment needs it", style="dim"))
    grid = cli_render.table(
        ("REGION", "INSTANCE TYPE", "NODES", "TOTAL", "ALLOCATED", "FREE"),
        (
            (r.get("region"), r.get("instance_type"), r.get("nodes"), r.get("total"), r.get("allocated"), r.get("free"))
            for r in rows
        ),
    )
    return Group(head, grid)


def utilization_view(data: Mapping[str, Any]) -> RenderableType:
    parts: list[RenderableType] = []
    deployments = data.get("deployments") or []
    if deployments:
        parts.append(
            cli_render.table(
                ("DEPLOYMENT", "GPUS", "UTIL", "TARGET"),
                (
                    (
                        d.get("deployment_id"),
                        d.get("gpus"),
                        utilization(d.get("utilization_pct")),
                        utilization(d.get("target_pct")),
                    )
                    for d in deployments
                ),
                title="deployments",
            )
        )
    gpus = [(n, g) for n in data.get("nodes") or [] for g in n.get("gpus") or []]
    nodes = data.get("nodes") or []
    if gpus:
        parts.append(
            cli_render.table(
                ("NODE", "REGION", "GPU", "UTIL", "MEMORY MiB", "DEPLOYMENT", "UUID", "HEARTBEAT"),
                (
                    (
                        n.get("instance_id"),
                        n.get("region"),
                        g.get("index"),
                        utilization(g.get("utilization_pct")),
                        memory(g),
                        g.get("deployment_id"),
                        g.get("uuid"),
                        n.get("last_heartbeat"),
                    )
                    for n, g in gpus
                ),
                title="GPUs",
            )
        )
    elif nodes:
        parts.append(
            cli_render.table(
                ("NODE", "REGION", "UTIL", "HEARTBEAT"),
                (
                    (
                        n.get("instance_id"),
                        n.get("region"),
                        utilization(n.get("utilization_pct")),
                        n.get("last_heartbeat"),
                    )
                    for n in nodes
                ),
                title="nodes (no GPU sample yet)",
            )
        )
    return Group(*parts) if parts else Text("no GPU node, no deployment", style="dim")


def memory(gpu: Mapping[str, Any]) -> str | None:
    used, total = gpu.get("memory_used_mib"), gpu.get("memory_total_mib")
    if used is None and total is None:
        return None
    return f"{'-' if used is None else used}/{'-' if total is None else total}"


def events_table(events: Sequence[Mapping[str, Any]]) -> RenderableType:
    return cli_render.table(
        ("AT", "DEPLOYMENT", "TRIGGER", "REPLICAS", "RESULT", "REASON"),
        (
            (
                e.get("at"),
                e.get("deployment_id"),
                e.get("trigger"),
                f"{e.get('before')} -> {e.get('after')}",
                styled(e.get("result")),
                e.get("reason"),
            )
            for e in events
        ),
    )


def health_view(data: Mapping[str, Any]) -> RenderableType:
    healthy = bool(data.get("healthy"))
    head = Text("healthy", style="green") if healthy else Text("unhealthy", style="bold red")
    details = cli_render.pairs(
        [
            ("nodes ready", f"{data.get('nodes_ready', 0)}/{data.get('nodes_total', 0)}"),
            ("stuck deployments", data.get("stuck_deployments") or None),
            ("alarms in alarm", data.get("alarms_in_alarm") or None),
        ]
    )
    checks = data.get("checks") or []
    if not checks:
        return Group(head, details)
    grid = cli_render.table(
        ("CHECK", "OK", "DETAIL"),
        ((c.get("name"), check_mark(c.get("ok")), c.get("detail")) for c in checks),
    )
    return Group(head, details, grid)


def check_mark(ok: Any) -> Text:
    return Text("ok", style="green") if ok else Text("FAILING", style="bold red")


# --- waiting --------------------------------------------------------------------------------------------


def settled(view: Mapping[str, Any]) -> bool:
    """Where `--wait` stops: running, or a state it will not leave by itself: failed, deleting, deleted, or degraded
    with a slot that gave up (its restarts exhausted: only a rolling restart retries it)."""
    from spothub_core.models.deployment_records import DeploymentStatus  # noqa: PLC0415

    status = view.get("status")
    if status in {
        DeploymentStatus.RUNNING,
        DeploymentStatus.FAILED,
        DeploymentStatus.DELETING,
        DeploymentStatus.DELETED,
    }:
        return True
    return status == DeploymentStatus.DEGRADED and bool(gave_up_slots(view))


def gave_up_slots(view: Mapping[str, Any]) -> list[int]:
    """Slots whose task the view shows failed (given up), with no other task of theirs coming."""
    from spothub_core.models.deployment_records import TaskStatus  # noqa: PLC0415

    tasks = view.get("tasks") or []
    coming = {t.get("slot") for t in tasks if t.get("status") not in {TaskStatus.STOPPED, TaskStatus.FAILED}}
    return sorted({t.get("slot") for t in tasks if t.get("status") == TaskStatus.FAILED} - coming)


def running(view: Mapping[str, Any]) -> bool:
    from spothub_core.models.deployment_records import DeploymentStatus  # noqa: PLC0415

    return view.get("status") == DeploymentStatus.RUNNING


def show_deployment(api: Api, view: Mapping[str, Any]) -> None:
    if api.as_json:
        api.out(view)
    else:
        api.show(deployment_view(view))


def wait_until_running(
    api: Api, deployment_id: str, *, interval: float, timeout: float | None, first: dict[str, Any] | None
) -> int:
    """Follow the deployment until it settles; show it; exit 1 unless it is running."""
    view = watch(
        lambda: api.client.request("GET", f"deployments/{path_part(deployment_id)}/status"),
        line=deployment_progress,
        done=settled,
        interval_s=interval,
        timeout_s=timeout,
        first=first,
    )
    show_deployment(api, view)
    if not running(view):
        why = f": {view['last_error']}" if view.get("last_error") else ""
        click.echo(f"{api.command_path}: deployment {deployment_id} {view.get('status')}{why}", err=True)
        return EXIT_ERROR
    return 0


# --- spothub deployments ----------------------------------------------------------------------------------


@click.group(help="model deployments: inference servers for many tenants on spot GPU nodes (the /deployments routes)")
@api_options
def deployments() -> None:
    pass


@api_command(
    deployments,
    "create",
    help="deploy MODEL: replicas of an OpenAI-compatible server, GPUs each, for a tenant (POST /deployments)",
    epilog="Unset options take the API's defaults: the pinned vLLM image, 1 GPU, 1 replica, min and max = replicas, "
    "no autoscaling. The tenant's quota must hold gpus x replicas (x max when autoscaled).",
)
@click.argument("model")
@click.option("--tenant", required=True, help="who it is for: quotas are per tenant (a-z, 0-9, -)")
@click.option("--image", help="the inference server image (default: the deployment's pinned vLLM OpenAI server)")
@click.option("--gpus", type=int, help="GPUs per replica (1-8; default 1): the server's tensor parallelism")
@click.option("--replicas", type=int, help="replicas to run (default 1)")
@click.option(
    "--min", "min_replicas", type=int, metavar="N", help="fewest replicas autoscaling keeps (default: replicas)"
)
@click.option("--max", "max_replicas", type=int, metavar="N", help="most replicas autoscaling adds (default: replicas)")
@click.option(
    "--autoscale-target",
    type=float,
    metavar="PCT",
    help="scale between --min and --max on the replicas' mean GPU utilization, to this percent",
)
@click.option("--cooldown", type=int, metavar="SECONDS", help="seconds between two autoscaling decisions (300)")
@click.option("--max-model-len", type=int, metavar="TOKENS", help="the server's --max-model-len")
@click.option(
    "--env", multiple=True, callback=env_pairs, metavar="NAME=VALUE", help="environment of the server (repeated)"
)
@click.option("--wait", is_flag=True, help="follow it until it is running (exit 1 if it fails)")
@wait_options
def create(  # noqa: PLR0917 (one parameter per option)
    api: Api,
    model: str,
    tenant: str,
    image: str | None,
    gpus: int | None,
    replicas: int | None,
    min_replicas: int | None,
    max_replicas: int | None,
    autoscale_target: float | None,
    cooldown: int | None,
    max_model_len: int | None,
    env: dict[str, str] | None,
    wait: bool,
    interval: float,
    timeout: float | None,
) -> int:
    from spothub_core.models.deployment_api import DeploymentRequest  # noqa: PLC0415

    if cooldown is not None and autoscale_target is None:
        raise click.UsageError("--cooldown needs --autoscale-target (the GPU utilization to scale on)")
    autoscale = None
    if autoscale_target is not None:
        autoscale = {"target_gpu_utilization": autoscale_target}
        if cooldown is not None:
            autoscale["cooldown_s"] = cooldown
    body = build(
        DeploymentRequest,
        model=model,
        tenant=tenant,
        image=image,
        gpus=gpus,
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        autoscale=autoscale,
        max_model_len=max_model_len,
        env=env,
    )
    accepted = api.client.request("POST", "deployments", body=body)
    deployment_id = str(accepted.get("deployment_id"))
    if not wait:
        if api.as_json:
            api.out(accepted)
        else:
            click.echo(
                f"{deployment_id} {accepted.get('status')}: follow it with "
                f"`spothub deployments status {deployment_id} --wait`"
            )
        return 0
    if not api.as_json:
        click.echo(f"{deployment_id} {accepted.get('status')}")
    return wait_until_running(api, deployment_id, interval=interval, timeout=timeout, first=None)


@api_command(deployments, "list", help="deployments, newest first (GET /deployments)")
@click.option("--tenant", help="only this tenant's")
@click.option("--status", callback=deployment_status, help="only those in this status (creating, running, ...)")
@click.option("--model", help="only those serving this model")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_PAGE, show_default=True, help="per page")
@click.option("--all", "every", is_flag=True, help="every deployment: follow the pages to the end")
def list_deployments(  # noqa: PLR0917 (one parameter per option)
    api: Api, tenant: str | None, status: str | None, model: str | None, limit: int, every: bool
) -> None:
    query = {"tenant": tenant, "status": status, "model": model, "limit": limit}
    page = api.client.request("GET", "deployments", query=query)
    found = list(page.get("deployments") or [])
    next_token = page.get("next_token")
    while every and next_token:
        page = api.client.request("GET", "deployments", query={**query, "next_token": next_token})
        found += page.get("deployments") or []
        next_token = page.get("next_token")
    if api.as_json:
        api.out({"deployments": found, "next_token": next_token})
        return
    if not found:
        click.echo("no deployments")
        return
    api.show(deployments_table(found))
    if next_token:
        click.echo("more: spothub deployments list --all", err=True)


@api_command(
    deployments, "status", help="a deployment: replicas, tasks, endpoints, last error (GET /deployments/{id}/status)"
)
@click.argument("deployment_id")
@click.option("--wait", is_flag=True, help="follow it until it is running (exit 1 if it fails)")
@wait_options
def status(api: Api, deployment_id: str, wait: bool, interval: float, timeout: float | None) -> int:
    view = api.client.request("GET", f"deployments/{path_part(deployment_id)}/status")
    if wait and not settled(view):
        return wait_until_running(api, deployment_id, interval=interval, timeout=timeout, first=view)
    show_deployment(api, view)
    if wait and not running(view):
        why = f": {view['last_error']}" if view.get("last_error") else ""
        click.echo(f"{api.command_path}: deployment {deployment_id} {view.get('status')}{why}", err=True)
        return EXIT_ERROR
    return 0


@api_command(deployments, "scale", help="set a deployment's replicas (POST /deployments/{id}/scale)")
@click.argument("deployment_id")
@click.argument("replicas", type=int)
def scale(api: Api, deployment_id: str, replicas: int) -> None:
    from spothub_core.models.deployment_api import ScaleRequest  # noqa: PLC0415

    body = build(ScaleRequest, replicas=replicas)
    view = api.client.request("POST", f"deployments/{path_part(deployment_id)}/scale", body=body)
    if api.as_json:
        api.out(view)
        return
    click.echo(f"{deployment_id} {view.get('status')}: {replicas_line(view)}")


@api_command(
    deployments,
    "restart",
    help="restart a deployment's replicas one at a time, each replacement healthy before the old one stops "
    "(POST /deployments/{id}/restart)",
)
@click.argument("deployment_id")
def restart(api: Api, deployment_id: str) -> None:
    view = api.client.request("POST", f"deployments/{path_part(deployment_id)}/restart")
    if api.as_json:
        api.out(view)
        return
    click.echo(
        f"{deployment_id}: rolling restart asked; each replica's replacement starts first and the old one stops once "
        f"it is healthy ({replicas_line(view)})"
    )


@api_command(deployments, "delete", help="delete a deployment: its tasks stop, its GPUs are given back (DELETE)")
@click.argument("deployment_id")
@click.option("--wait", is_flag=True, help="wait until every task stopped and the deployment is deleted")
@wait_options
def delete(api: Api, deployment_id: str, wait: bool, interval: float, timeout: float | None) -> int:
    from spothub_core.models.deployment_records import DeploymentStatus  # noqa: PLC0415

    view = api.client.request("DELETE", f"deployments/{path_part(deployment_id)}")
    if not wait:
        if api.as_json:
            api.out(view)
        else:
            click.echo(f"{deployment_id} {view.get('status')}: its tasks stop and its GPUs are given back")
        return 0
    if not api.as_json:
        click.echo(f"{deployment_id} {view.get('status')}")

    def current() -> dict[str, Any]:
        try:
            return api.client.request("GET", f"deployments/{path_part(deployment_id)}/status")
        except ApiError as exc:
            if exc.status != HTTPStatus.NOT_FOUND:
                raise
            # Gone from the table (or never there): as deleted as it gets.
            return {"deployment_id": deployment_id, "status": DeploymentStatus.DELETED.value, "tasks": []}

    final = watch(
        current,
        line=deployment_progress,
        done=lambda data: data.get("status") == DeploymentStatus.DELETED,
        interval_s=interval,
        timeout_s=timeout,
    )
    if api.as_json:
        api.out(final)
    else:
        click.echo(f"{deployment_id} deleted")
    return 0


# --- spothub nodes ----------------------------------------------------------------------------------------


@click.group(
    invoke_without_command=True,
    help="the GPU nodes deployments run on: list, show, cordon, uncordon, drain (the /nodes routes); "
    "`spothub nodes` alone lists them",
)
@api_options
@click.pass_context
def nodes(ctx: click.Context) -> Any:
    if ctx.invoked_subcommand is None:
        return ctx.invoke(list_nodes)
    return None


@api_command(nodes, "list", help="every GPU node: status, GPUs allocated and free, utilization (GET /nodes)")
def list_nodes(api: Api) -> None:
    data = api.client.request("GET", "nodes")
    if api.as_json:
        api.out(data)
        return
    found = data.get("nodes") or []
    if not found:
        click.echo("no GPU node: nodes are started when a deployment needs GPUs")
        return
    api.show(nodes_table(found))


@api_command(nodes, "show", help="one node: its GPU accounting and the tasks on it (GET /nodes/{instance_id})")
@click.argument("instance_id")
def show_node(api: Api, instance_id: str) -> None:
    node = api.client.request("GET", f"nodes/{path_part(instance_id)}")
    if api.as_json:
        api.out(node)
    else:
        api.show(node_view(node))


def node_operation(name: str, summary: str, outcome: str) -> Any:
    """`spothub nodes <name> ID [--reason]`: POST /nodes/{instance_id}/<name>."""

    @api_command(nodes, name, help=f"{summary} (POST /nodes/{{instance_id}}/{name})")
    @click.argument("instance_id")
    @click.option("--reason", help="why (kept on the node, shown by `spothub nodes`)")
    def operate(api: Api, instance_id: str, reason: str | None) -> None:
        from spothub_core.models.deployment_api import NodeOperation  # noqa: PLC0415

        body = build(NodeOperation, reason=reason)
        node = api.client.request("POST", f"nodes/{path_part(instance_id)}/{name}", body=body)
        if api.as_json:
            api.out(node)
            return
        tasks = len(node.get("tasks") or [])
        click.echo(f"{instance_id} {node.get('status')}: {outcome} ({gpus_text(node)}, {tasks} task(s))")

    return operate


cordon = node_operation("cordon", "no new placements on a node; what runs there stays", "takes no new placements")
uncordon = node_operation("uncordon", "let a cordoned or drained node take placements again", "takes placements again")
drain = node_operation(
    "drain",
    "drain a node: no new placements, its tasks replaced elsewhere first, then stopped",
    "takes no new placements; its tasks are replaced elsewhere, then stopped",
)


# --- resources, gpu-utilization, scaling-events, health -----------------------------------------------------


def fleet_commands(cli: click.Group) -> None:
    """The deployments' fleet-wide commands, on the root group."""

    @api_command(
        cli, "resources", help="GPUs per region and instance type: total, allocated, free (GET /resources/available)"
    )
    def resources(api: Api) -> None:
        data = api.client.request("GET", "resources/available")
        if api.as_json:
            api.out(data)
        else:
            api.show(resources_view(data))

    @api_command(
        cli,
        "gpu-utilization",
        help="GPU utilization per deployment and per GPU, from the node agents (GET /gpu-utilization)",
    )
    def gpu_utilization(api: Api) -> None:
        data = api.client.request("GET", "gpu-utilization")
        if api.as_json:
            api.out(data)
        else:
            api.show(utilization_view(data))

    @api_command(
        cli,
        "scaling-events",
        help="the deployments' scaling decisions, newest first: manual, autoscale, recovery, drain "
        "(GET /scaling/events)",
    )
    @click.option("--deployment", "deployment_id", metavar="ID", help="only this deployment's")
    @click.option("--limit", type=click.IntRange(min=1), help="at most this many (default: the API's)")
    def scaling_events(api: Api, deployment_id: str | None, limit: int | None) -> None:
        data = api.client.request("GET", "scaling/events", query={"deployment_id": deployment_id, "limit": limit})
        if api.as_json:
            api.out(data)
            return
        events = data.get("events") or []
        if not events:
            click.echo("no scaling events")
            return
        api.show(events_table(events))

    @api_command(
        cli,
        "health",
        help="the deployments' infrastructure: nodes ready, stuck deployments, alarms; exit 1 when unhealthy "
        "(GET /health)",
    )
    def health(api: Api) -> int:
        data = api.client.request("GET", "health")
        if api.as_json:
            api.out(data)
        else:
            api.show(health_view(data))
        if data.get("healthy"):
            return 0
        failing = [str(c.get("name")) for c in data.get("checks") or [] if not c.get("ok")]
        click.echo(f"{api.command_path}: unhealthy" + (f" ({', '.join(failing)})" if failing else ""), err=True)
        return EXIT_ERROR


def register(cli: click.Group) -> None:
    cli.add_command(deployments)
    cli.add_command(nodes)
    fleet_commands(cli)

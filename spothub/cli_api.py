"""The `spothub` commands that call the deployed API: how they find it and sign for it, how they show
its answers and errors, and the spot provisioning commands (status, instances, enable, disable).

Every such command takes the connection options (`--url`, `--sandbox`, `--state-dir`, `--profile`,
`--region`, `--prefix`) and `--json`, before the command (`spothub --sandbox status`) or after it
(`spothub status --sandbox`); the command's own win. Exit codes: 0 done, 1 an error (the API refused,
no answer, no credentials, a failure waited for), 2 a usage error, 130 interrupted while waiting.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from spothub import cli_render
from spothub.api_client import (
    DEFAULT_PREFIX,
    ApiClient,
    ApiError,
    ApiUnreachable,
    CliError,
    Connection,
    resolve_target,
)
from stacks.paths import REPO_ROOT

STATE_DIR = REPO_ROOT / ".spothub"
META_KEY = "spothub.api_options"
API_OPTION_NAMES = frozenset({"url", "sandbox", "state_dir", "profile", "region", "prefix", "as_json"})
POLL_INTERVAL_S = 5.0
# Consecutive failed polls (no answer, 5xx) a wait rides out before it gives up.
MAX_POLL_FAILURES = 3
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

# --- the connection options ------------------------------------------------------------------------


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Keep what was given (on the command line or in the environment) where every nested command sees it:
    ctx.meta is shared by the root's context and its sub-commands'."""
    source = ctx.get_parameter_source(param.name or "")
    if source in {ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT}:
        ctx.meta.setdefault(META_KEY, {})[param.name] = (value, source)
    return value


def api_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The connection options and --json, on the root group and on every API command."""
    kept = {"expose_value": False, "callback": _remember}
    options = [
        click.option(
            "--url",
            envvar="SPOTHUB_API_URL",
            metavar="URL",
            help="the API's URL (the hub's ApiUrl output; env SPOTHUB_API_URL); default: read from SSM",
            **kept,
        ),
        click.option(
            "--sandbox", is_flag=True, default=None, help="the running local sandbox (its sandbox.json)", **kept
        ),
        click.option(
            "--state-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help=f"where the sandbox's sandbox.json is (default: {STATE_DIR})",
            **kept,
        ),
        click.option("--profile", metavar="NAME", help="the AWS profile (default: the standard chain)", **kept),
        click.option(
            "--region", metavar="REGION", help="the hub region (default: AWS_REGION or the profile's)", **kept
        ),
        click.option(
            "--prefix",
            metavar="PREFIX",
            help=f"the deployment's prefix: the URL is SSM /spothub/<prefix>/api-url (default: {DEFAULT_PREFIX})",
            **kept,
        ),
        click.option("--json", "as_json", is_flag=True, default=None, help="print JSON instead of tables", **kept),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@dataclass
class Api:
    """What an API command works with: the connection asked for, and --json."""

    connection: Connection
    as_json: bool
    command_path: str
    state_dir: Path
    _client: ApiClient | None = None

    @property
    def client(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(resolve_target(self.connection, default_state_dir=self.state_dir))
        return self._client

    def out(self, data: Any) -> None:
        """One JSON object on one line."""
        click.echo(json.dumps(data))

    def show(self, *renderables: Any) -> None:
        cli_render.console().print(*renderables)


def current_api(ctx: click.Context) -> Api:
    given: dict[str, tuple[Any, ParameterSource]] = ctx.meta.get(META_KEY, {})

    def value(name: str, default: Any = None) -> Any:
        return given[name][0] if name in given else default

    url = value("url")
    # An explicit --sandbox beats a URL from the environment.
    if value("sandbox") and "url" in given and given["url"][1] == ParameterSource.ENVIRONMENT:
        url = None
    state_dir = value("state_dir") or STATE_DIR
    if value("sandbox") and (value("profile") or value("region")):
        raise click.UsageError(
            "--sandbox signs with the sandbox's credentials and region: leave out --profile/--region"
        )
    connection = Connection(
        url=url,
        sandbox=bool(value("sandbox")),
        state_dir=state_dir,
        profile=value("profile"),
        region=value("region"),
        prefix=value("prefix") or DEFAULT_PREFIX,
    )
    return Api(
        connection=connection, as_json=bool(value("as_json")), command_path=ctx.command_path, state_dir=state_dir
    )


def api_command(group: click.Group, name: str, **settings: Any) -> Callable[[Callable[..., int | None]], Any]:
    """A command of `group` that gets an Api first and answers any CliError with one line and exit 1."""

    def decorate(body: Callable[..., int | None]) -> Any:
        @functools.wraps(body)
        @click.pass_context
        def run(ctx: click.Context, **kwargs: Any) -> int:
            api = current_api(ctx)
            try:
                return body(api, **kwargs) or 0
            except CliError as exc:
                click.echo(f"{api.command_path}: {exc}", err=True)
                return EXIT_ERROR
            except KeyboardInterrupt:
                click.echo(f"\n{api.command_path}: stopped watching (nothing was cancelled)", err=True)
                return EXIT_INTERRUPTED

        command = group.command(name, **settings)(api_options(run))
        # The command's own options first in its --help, the connection options after them.
        command.params.sort(key=lambda param: param.name in API_OPTION_NAMES)
        return command

    return decorate


def names(values: Iterable[str]) -> list[str] | None:
    """Repeated and comma-separated values as one list: `--allow a --allow b,c` -> [a, b, c]; None when none."""
    found = [item.strip() for value in values for item in value.split(",") if item.strip()]
    return found or None


# --- waiting ------------------------------------------------------------------------------------------


def watch(
    fetch: Callable[[], dict[str, Any]],
    *,
    line: Callable[[dict[str, Any]], str],
    done: Callable[[dict[str, Any]], bool],
    interval_s: float,
    timeout_s: float | None,
    first: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Poll until done, showing one progress line per change on stderr (with a spinner on a terminal).
    Rides out MAX_POLL_FAILURES failed polls in a row (no answer, 5xx); a timeout is a CliError."""
    err = cli_render.console(stderr=True)
    started = time.monotonic()
    shown = ""
    failures = 0
    data = first
    spinner = err.status("waiting...") if err.is_terminal else nullcontext()
    with spinner as status:
        while True:
            if data is None:
                try:
                    data = fetch()
                    failures = 0
                except (ApiUnreachable, ApiError) as exc:
                    transient = not isinstance(exc, ApiError) or exc.status >= HTTPStatus.INTERNAL_SERVER_ERROR
                    failures += 1
                    if not transient or failures >= MAX_POLL_FAILURES:
                        raise
                    err.print(f"(retrying: {exc})", style="dim", markup=False)
            if data is not None:
                text = line(data)
                if text != shown:
                    err.print(text, markup=False)
                    shown = text
                if status is not None:
                    status.update(text)
                if done(data):
                    return data
            if timeout_s is not None and time.monotonic() - started >= timeout_s:
                raise CliError(f"gave up waiting after {timeout_s:g}s: {shown or 'no answer'}")
            time.sleep(interval_s)
            data = None


def wait_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--interval",
        type=click.FloatRange(min=0.0),
        metavar="SECONDS",
        default=POLL_INTERVAL_S,
        show_default=True,
        help="seconds between polls while waiting",
    )(command)
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0.0),
        metavar="SECONDS",
        default=None,
        help="stop waiting after this many seconds (exit 1)",
    )(command)


# --- the spot provisioning commands ------------------------------------------------------------------


def register(cli: click.Group) -> None:
    """Add the API commands to the root group."""
    from spothub import cli_deployments  # noqa: PLC0415 (one module per capability)
    from spothub.cli_dashboard import dashboard_command  # noqa: PLC0415
    from spothub.cli_events import events_command  # noqa: PLC0415
    from spothub.cli_jobs import jobs  # noqa: PLC0415
    from spothub.cli_regions import regions_command  # noqa: PLC0415
    from spothub.cli_search import search  # noqa: PLC0415

    _provisioning_commands(cli)
    regions_command(cli)
    events_command(cli)
    dashboard_command(cli)
    cli.add_command(jobs)
    cli.add_command(search)
    cli_deployments.register(cli)


def _provisioning_commands(cli: click.Group) -> None:
    @api_command(cli, "status", help="the deployment's shape, and that its control plane answers (GET /status)")
    def status(api: Api) -> None:
        answer = api.client.status()
        if api.as_json:
            api.out(answer)
        else:
            api.show(cli_render.status_view(answer, f"{api.client.target.url} ({api.client.target.source})"))

    @api_command(
        cli, "instances", help="replicas, the instances they run on and recent remediations (GET /spot-instances)"
    )
    def instances(api: Api) -> None:
        answer = api.client.spot_instances()
        if api.as_json:
            api.out(answer)
        else:
            api.show(cli_render.instances_view(answer))

    @api_command(cli, "enable", help="enable spot provisioning: place the serving replicas (POST /spot-provisioning)")
    @click.option("--replicas", type=int, help="serving replicas to keep (1-10; default: the deployment's, 1)")
    @click.option(
        "--instance-types",
        "--instance-type",
        "instance_types",
        multiple=True,
        metavar="TYPES",
        help="instance types to use, repeated or comma-separated (default: the deployment's instanceTypes)",
    )
    @click.option("--allow", multiple=True, metavar="REGIONS", help="only these regions (repeated or comma-separated)")
    @click.option("--deny", multiple=True, metavar="REGIONS", help="never these regions (repeated or comma-separated)")
    @click.option(
        "--warm-standby/--no-warm-standby",
        default=None,
        help="keep a warm spot standby in another zone while a replica's risk of preemption is high (default: as is)",
    )
    @click.option("--wait", is_flag=True, help="wait until every replica is healthy (exit 1 if one fails)")
    @wait_options
    def enable(  # noqa: PLR0917 (one parameter per option)
        api: Api,
        replicas: int | None,
        instance_types: tuple[str, ...],
        allow: tuple[str, ...],
        deny: tuple[str, ...],
        warm_standby: bool | None,
        wait: bool,
        interval: float,
        timeout: float | None,
    ) -> int:
        body: dict[str, Any] = {"action": "enable"}
        for key, value in (
            ("replicas", replicas),
            ("instance_types", names(instance_types)),
            ("allowed_regions", names(allow)),
            ("denied_regions", names(deny)),
            ("warm_standby", warm_standby),
        ):
            if value is not None:
                body[key] = value
        answer = api.client.spot_provisioning(body)
        if not wait:
            if api.as_json:
                api.out(answer)
            else:
                click.echo(answer.get("message", "enabled"))
            return 0
        if not api.as_json:
            click.echo(answer.get("message", "enabled"))
        final = watch(
            api.client.spot_instances,
            line=cli_render.provisioning_progress,
            done=_placed,
            interval_s=interval,
            timeout_s=timeout,
        )
        if api.as_json:
            api.out(final)
        else:
            api.show(cli_render.instances_view(final))
        failed = [r for r in final.get("replicas") or [] if r.get("status") == "failed"]
        if failed:
            click.echo(f"{api.command_path}: {len(failed)} replica(s) failed to place", err=True)
            return EXIT_ERROR
        return 0

    @api_command(cli, "disable", help="disable spot provisioning; stops the instances unless --keep-instances")
    @click.option(
        "--teardown/--keep-instances",
        default=True,
        show_default=True,
        help="stop the tasks and terminate the instances, or keep them serving (and billing)",
    )
    @click.option("--wait", is_flag=True, help="wait until no instance is left running")
    @wait_options
    def disable(api: Api, teardown: bool, wait: bool, interval: float, timeout: float | None) -> int:
        answer = api.client.spot_provisioning({"action": "disable", "teardown": teardown})
        if not api.as_json:
            click.echo(answer.get("message", "disabled"))
            if answer.get("instances_running"):
                click.echo(
                    f"{answer['instances_running']} instance(s) keep running, serving and billing: "
                    "`spothub disable` (without --keep-instances) terminates them"
                )
        if not wait or not teardown:
            if api.as_json:
                api.out(answer)
            elif wait:
                click.echo("nothing to wait for: --keep-instances leaves the instances running")
            return 0
        final = watch(
            api.client.spot_instances,
            line=lambda data: f"{data.get('state')}: {len(data.get('instances') or [])} instance(s) still running",
            done=lambda data: not data.get("instances"),
            interval_s=interval,
            timeout_s=timeout,
        )
        if api.as_json:
            api.out(final)
        else:
            click.echo("no instance left running")
        return 0


def _placed(data: dict[str, Any]) -> bool:
    replicas = [r for r in data.get("replicas") or [] if r.get("status") != "stopped"]
    if any(r.get("status") == "failed" for r in replicas):
        return True
    wanted = (data.get("settings") or {}).get("replicas") or 1
    serving = sum(1 for r in replicas if r.get("status") == "serving")
    return data.get("state") == "serving" and serving >= wanted

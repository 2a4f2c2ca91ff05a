"""The `spothub` command. Sub-commands arrive with the capabilities they drive: the local ones here, the
ones that call the deployed API in cli_api.py (and a module per capability beside it, like cli_jobs.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import click

from spothub import __version__
from spothub.cli_api import META_KEY, STATE_DIR, api_options, register
from spothub.replay.pareto import COST_FACTOR, DEFAULT_CANDIDATE
from spothub.replay.traces import DEFAULT_PRICES, DEFAULT_SHAPE, DEFAULT_TRACES

if TYPE_CHECKING:
    from spothub.sandbox.sandbox import SandboxOptions

__all__ = ["STATE_DIR", "cli", "main"]

# `sandbox up` and `sandbox demo` write the functions' own output (JSON logs, metrics) here, under the state
# directory, so that the terminal shows the narration and the timeline alone.
FUNCTION_LOG = "functions.log"
# How often `sandbox up` prints the timeline's new entries.
TIMELINE_POLL_S = 0.5


def _summary(args: SimpleNamespace) -> int:
    from spothub.assembly_summary import render, summarize  # noqa: PLC0415 (keeps --help fast)

    try:
        print(render(summarize(Path(args.cdk_out))), end="")
    except FileNotFoundError as exc:
        print(f"spothub: {exc}", file=sys.stderr)
        return 2
    return 0


def _sandbox_options(args: SimpleNamespace) -> SandboxOptions:
    from spothub.sandbox.sandbox import SandboxOptions  # noqa: PLC0415

    state_dir = Path(args.state_dir)
    return SandboxOptions(
        state_dir=state_dir,
        function_log=state_dir / FUNCTION_LOG,
        port=args.port,
        cdk_out=Path(args.cdk_out) if args.cdk_out else None,
        speed=args.speed,
        traces=Path(args.traces) if args.traces else None,
        shape=args.shape,
    )


def _traces_problem(options: SandboxOptions) -> str | None:
    """Why the sandbox's market cannot replay --traces (said before anything starts), or None."""
    from spothub.sandbox.market import load_prices, load_traces  # noqa: PLC0415

    if options.traces is None:
        return None
    try:
        shapes = load_prices(options.prices)[0] if options.prices else {}
        load_traces(options.traces, shapes, options.shape)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"--traces {options.traces}: {exc}"
    return None


def _port_taken(host: str, port: int) -> str | None:
    """Why `port` cannot be listened on (another process holds it), or None when it is free."""
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _print_timeline(sandbox: Any, shown: int) -> int:
    """Print the timeline's entries from `shown` on; returns how many are shown now."""
    entries = sandbox.timeline[shown:]
    for entry in entries:
        print("  " + entry.line(sandbox.origin), flush=True)
    return shown + len(entries)


def _sandbox_up(args: SimpleNamespace) -> int:
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from spothub.sandbox.sandbox import Sandbox, SandboxError  # noqa: PLC0415

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    options = _sandbox_options(args)
    problem = _traces_problem(options)
    if problem:
        print(f"spothub: {problem}", file=sys.stderr)
        return 2
    taken = _port_taken(options.host, options.port)
    if taken:
        print(
            f"spothub: the sandbox's API port {options.host}:{options.port} is taken ({taken}): is a sandbox already "
            f"running? Stop it, or choose another port: spothub sandbox up --port {options.port + 1}",
            file=sys.stderr,
        )
        return 1
    sandbox = Sandbox(options)
    try:
        sandbox.start()
    except (SandboxError, OSError) as exc:
        print(f"spothub: the sandbox did not start: {exc}", file=sys.stderr)
        sandbox.stop()
        return 1
    try:
        for deployment in sandbox.deployments:
            print(deployment.report())
        state = sandbox.state()
        print(f"\nsandbox up in {sandbox.started_in_s:.1f}s (synthesis {sandbox.synth_s:.1f}s)")
        print(f"  API             {state['api_url']}  (SigV4, service execute-api, region {state['hub_region']})")
        print(f"  control         {state['control_url']}")
        print(f"  API docs        {state['control_url']}docs  (Swagger UI; its requests are unsigned: 403)")
        print(f"  AWS endpoint    {state['aws_endpoint_url']}")
        print(f"  credentials     {state['aws_access_key_id']} / {state['aws_secret_access_key']}")
        print(f"  regions         hub {state['hub_region']}, workers {', '.join(state['worker_regions'])}")
        print(f"  state file      {sandbox.options.state_dir / 'sandbox.json'}")
        print(f"  function logs   {sandbox.options.function_log}")
        if state.get("endpoint_name"):
            print(
                f"  model endpoint  http://{state['endpoint_name']}:{sandbox.serving_port()} once enabled, from "
                f"{state['client_address']} (Sandbox.model_request); its key: spothub api-key --sandbox"
            )
        for name, stack in state["stacks"].items():
            outputs = ", ".join(f"{key}={value}" for key, value in stack["outputs"].items())
            print(f"  {name:<15} {outputs}")
        print("Ctrl-C or SIGTERM stops it. The timeline (simulated time) follows:", flush=True)
        shown = _print_timeline(sandbox, 0)
        while not stop.wait(TIMELINE_POLL_S):
            shown = _print_timeline(sandbox, shown)
        _print_timeline(sandbox, shown)
        print("\n" + sandbox.iam.report(sandbox.deployed_roles()))
    finally:
        sandbox.stop()
    print("sandbox stopped")
    return 0


def _sandbox_demo(args: SimpleNamespace) -> int:
    from spothub.sandbox.demo import run_demo  # noqa: PLC0415
    from spothub.sandbox.sandbox import Sandbox, SandboxError, free_port  # noqa: PLC0415

    options = _sandbox_options(args)
    problem = _traces_problem(options)
    if problem:
        print(f"spothub: {problem}", file=sys.stderr)
        return 2
    options.port = args.port or free_port()
    options.write_state_file = False
    sandbox = Sandbox(options)
    try:
        sandbox.start()
        print(f"sandbox up in {sandbox.started_in_s:.1f}s (synthesis {sandbox.synth_s:.1f}s), API {sandbox.api_url}")
        print(f"the functions' logs: {options.function_log}")
        failures = run_demo(sandbox)
        print("\n" + sandbox.iam.report(sandbox.deployed_roles()))
        failures += [denial.line() for denial in sandbox.iam.denials]
    except SandboxError as exc:
        print(f"spothub: {exc}", file=sys.stderr)
        return 1
    finally:
        sandbox.stop()
    return 1 if failures else 0


def _api_key(args: SimpleNamespace) -> int:
    """Print the model endpoint's key: the secret named in /spothub/<prefix>/model-api-key-secret, read with
    the caller's AWS credentials (in the sandbox, the running sandbox's, from its state file)."""
    import json  # noqa: PLC0415

    import boto3  # noqa: PLC0415
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    session_args: dict[str, str] = {}
    prefix, region = args.prefix, args.region
    if args.sandbox:
        state_file = Path(args.state_dir) / "sandbox.json"
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError) as exc:
            print(
                f"spothub api-key: no running sandbox ({state_file}: {exc}); start one with `spothub sandbox up`",
                file=sys.stderr,
            )
            return 1
        session_args = {
            "endpoint_url": state["aws_endpoint_url"],
            "aws_access_key_id": state["aws_access_key_id"],
            "aws_secret_access_key": state["aws_secret_access_key"],
        }
        prefix, region = state.get("prefix") or prefix, state["hub_region"]
    if not region:
        print("spothub api-key: --region (the hub region) is required outside the sandbox", file=sys.stderr)
        return 2
    parameter = f"/spothub/{prefix}/model-api-key-secret"
    try:
        ssm = boto3.client("ssm", region_name=region, **session_args)
        name = ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
        secrets = boto3.client("secretsmanager", region_name=region, **session_args)
        print(secrets.get_secret_value(SecretId=name)["SecretString"])
    except (ClientError, BotoCoreError) as exc:
        print(f"spothub api-key: could not read the key ({parameter} in {region}): {exc}", file=sys.stderr)
        return 1
    return 0


def _replay(args: SimpleNamespace) -> int:
    """One trace folder: a table (or one JSON object). A parent of trace folders (like data/traces, the default):
    the folders it holds are listed, then each is replayed in turn (a table each; --json: one object a line); a
    folder the options do not fit (no file of --shape, fewer regions than --replicas) is skipped with a note.
    Each table is followed by the Pareto check of --pareto against hedge; --plot draws every folder replayed."""
    from spothub.replay.traces import ReplayInputError, holds_traces, trace_folders  # noqa: PLC0415

    directory = Path(args.traces)
    try:
        if args.replicas < 1:
            raise ReplayInputError(f"--replicas must be at least 1, not {args.replicas}")
        if args.cold_start < 0:
            raise ReplayInputError(f"--cold-start cannot be negative, not {args.cold_start:g}")
        _check_pareto_and_plot(args)
        if not directory.is_dir():
            raise ReplayInputError(f"no trace directory {directory}")
        folders = [] if holds_traces(directory) else trace_folders(directory)
        if not folders:
            result = _replay_folder(args, directory)
            return 2 if result is None else _plot([result], args)
    except ReplayInputError as exc:
        print(f"spothub replay: {exc}", file=sys.stderr)
        return 2
    notes = sys.stderr if args.json else sys.stdout
    print(
        f"{directory} holds {len(folders)} trace folders: {', '.join(f.name for f in folders)}; replaying each "
        f"(--traces {directory / folders[0].name} replays one)",
        file=notes,
    )
    results = []
    for folder in folders:
        if not holds_traces(folder, args.shape):
            print(f"spothub replay: skipped {folder.name}: no trace files for shape {args.shape}", file=sys.stderr)
            continue
        try:
            result = _replay_folder(args, folder, skip_unfit=True)
        except ReplayInputError as exc:
            print(f"spothub replay: {folder.name}: {exc}", file=sys.stderr)
            return 2
        if result is not None:
            results.append(result)
    if not results:
        print(f"spothub replay: none of the folders of {directory} fits these options", file=sys.stderr)
        return 2
    if len(results) > 1:
        from spothub.replay.pareto import pareto_check, summary_line  # noqa: PLC0415

        print("", summary_line([pareto_check(r, args.pareto) for r in results]), sep="\n", file=notes, flush=True)
    return _plot(results, args)


def _check_pareto_and_plot(args: SimpleNamespace) -> None:
    """Refuse an unknown --pareto policy and a --plot file that cannot be written, before anything is replayed."""
    from spothub.replay.policies import POLICIES  # noqa: PLC0415
    from spothub.replay.traces import ReplayInputError  # noqa: PLC0415

    if args.pareto not in POLICIES:
        raise ReplayInputError(f"--pareto: unknown policy {args.pareto!r}; the policies are {', '.join(POLICIES)}")
    if args.plot is None:
        return
    from spothub.replay.plot import FORMATS  # noqa: PLC0415 (matplotlib is imported when the figure is drawn)

    plot = Path(args.plot)
    if plot.suffix.lower() not in FORMATS:
        raise ReplayInputError(f"--plot {plot}: name a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} file")
    if not plot.parent.is_dir():
        raise ReplayInputError(f"--plot {plot}: no folder {plot.parent} to write it in")
    if plot.is_dir():
        raise ReplayInputError(f"--plot {plot} is a folder; name a file")


def _plot(results: list[dict[str, Any]], args: SimpleNamespace) -> int:
    """Draw the results into --plot (when given); 2 with a line on stderr when the file cannot be written."""
    if args.plot is None:
        return 0
    from spothub.replay.plot import write_plot  # noqa: PLC0415

    try:
        write_plot(results, Path(args.plot), candidate=args.pareto)
    except OSError as exc:
        print(f"spothub replay: --plot {args.plot}: cannot write it ({exc.strerror or exc})", file=sys.stderr)
        return 2
    notes = sys.stderr if args.json else sys.stdout
    print(f"plot: {args.plot} ({len(results)} {'panel' if len(results) == 1 else 'panels'})", file=notes)
    return 0


def _replay_folder(args: SimpleNamespace, folder: Path, *, skip_unfit: bool = False) -> dict[str, Any] | None:
    """Replay one trace folder, print its result and the Pareto check, and return the result; None (with a line on
    stderr) when it cannot be replayed with these options. ReplayInputError escapes for a parent's folder
    (skip_unfit), to be reported with the folder's name."""
    import json  # noqa: PLC0415

    from spothub.replay.pareto import pareto_check  # noqa: PLC0415
    from spothub.replay.report import render_table, replay  # noqa: PLC0415
    from spothub.replay.traces import ReplayInputError, load_trace_set, replica_limit  # noqa: PLC0415

    try:
        traces = load_trace_set(folder, shape=args.shape, prices=Path(args.prices))
    except ReplayInputError as exc:
        if skip_unfit:
            raise
        print(f"spothub replay: {exc}", file=sys.stderr)
        return None
    refused = replica_limit(traces, args.replicas)
    if refused:
        print(f"spothub replay: {'skipped ' + folder.name + ': ' if skip_unfit else ''}{refused}", file=sys.stderr)
        return None
    cold_start = int(args.cold_start) if args.cold_start.is_integer() else args.cold_start
    result = replay(traces, replicas=args.replicas, cold_start_s=cold_start)
    check = pareto_check(result, args.pareto).line()
    if args.json:
        print(json.dumps(result), flush=True)
        print(f"{result['trace']}: {check}", file=sys.stderr, flush=True)
    else:
        if skip_unfit:
            print()  # a blank line between the tables of a parent's folders
        print(render_table(result, traces), "", check, sep="\n", flush=True)
    return result


# --- the command line -------------------------------------------------------------------------------


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
    help="spothub: keep GPU work on the cheapest spot capacity across AWS regions.",
    epilog="The API commands (status, instances, regions, enable, disable, jobs) sign with your AWS credentials and "
    "find the API in SSM (/spothub/<prefix>/api-url in --region), or take --url, or --sandbox for the local sandbox; "
    "these options go before or after the command.",
)
@click.version_option(__version__, "--version", prog_name="spothub", message="%(prog)s %(version)s")
@api_options
@click.pass_context
def cli(ctx: click.Context) -> None:
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command(help="summarize a synthesized cloud assembly: stacks, regions, resources, API routes")
@click.option("--cdk-out", default="cdk.out", help="the cloud assembly directory (default: cdk.out)")
def summary(cdk_out: str) -> int:
    return _summary(SimpleNamespace(cdk_out=cdk_out))


@cli.command(help="write the API's OpenAPI document, generated from the API functions' routes and models")
@click.option("--output", help="the file to write (default: print it)")
def openapi(output: str | None) -> int:
    from spothub.openapi import OpenApiError, document, render  # noqa: PLC0415 (imports every handler)

    try:
        text = render(document())
    except OpenApiError as exc:
        click.echo(f"spothub openapi: {exc}", err=True)
        return 1
    if output:
        Path(output).write_text(text)
    else:
        click.echo(text, nl=False)
    return 0


@cli.group(help="run the synthesized stacks on an embedded AWS emulator")
def sandbox() -> None:
    pass


def _sandbox_command(name: str, handler: Any, port: int, helptext: str) -> None:
    @sandbox.command(name, help=helptext)
    @click.option("--port", type=int, default=port, help=f"API port (default: {port or 'a free one'})")
    @click.option("--cdk-out", help="reuse this synthesized assembly instead of synthesizing")
    @click.option("--speed", type=float, default=1.0, help="simulated seconds per real second")
    @click.option(
        "--traces", help="replay spot capacity from this trace folder (e.g. data/traces/aws-04-22-2023-preemption)"
    )
    @click.option("--shape", help="the trace shape to replay (e.g. v100_1)")
    @click.option(
        "--state-dir", default=str(STATE_DIR), help=f"where sandbox.json and work files go (default: {STATE_DIR})"
    )
    def run(**options: Any) -> int:
        return handler(SimpleNamespace(**options))


_sandbox_command("up", _sandbox_up, 8080, "start the sandbox and run until interrupted")
_sandbox_command("demo", _sandbox_demo, 0, "start a sandbox, play the narrated scenario, check every expectation")


@cli.command(
    "api-key",
    help="print the model endpoint's API key (Authorization: Bearer <key>), from Secrets Manager. Reads the "
    "secret named in /spothub/<prefix>/model-api-key-secret in the hub region with your AWS credentials "
    "(secretsmanager:GetSecretValue, ssm:GetParameter), or the running sandbox's.",
)
@click.option("--sandbox", "in_sandbox", is_flag=True, help="the running sandbox's key (its sandbox.json)")
@click.option("--region", help="the hub region of the deployment")
@click.option("--prefix", help="the deployment's prefix (default: spothub)")
@click.option("--state-dir", help=f"where the sandbox's sandbox.json is (default: {STATE_DIR})")
@click.pass_context
def api_key(ctx: click.Context, in_sandbox: bool, region: str | None, prefix: str | None, state_dir: str | None) -> int:
    # The root's options (`spothub --sandbox api-key`) stand in for the command's own.
    given = {name: value for name, (value, _source) in ctx.meta.get(META_KEY, {}).items()}
    in_sandbox = in_sandbox or bool(given.get("sandbox"))
    region = region or given.get("region")
    if in_sandbox and region:
        raise click.UsageError("--region cannot be used with --sandbox (the sandbox's region is used)")
    return _api_key(
        SimpleNamespace(
            sandbox=in_sandbox,
            region=region,
            prefix=prefix or given.get("prefix") or "spothub",
            state_dir=state_dir or given.get("state_dir") or str(STATE_DIR),
        )
    )


@cli.command(
    help="replay spot capacity traces through production's policy and the baselines. --traces names a folder of "
    "<zone>_<shape>.json trace files, or a folder of such folders: then each is replayed in turn (a table each; "
    "--json: one object a line)."
)
@click.option(
    "--traces",
    default=str(DEFAULT_TRACES),
    help="a trace folder, or a folder of trace folders (default: data/traces, the repository's three)",
)
@click.option("--shape", default=DEFAULT_SHAPE, help=f"the shape to replay (default: {DEFAULT_SHAPE})")
@click.option("--replicas", type=int, default=1, help="ready replicas wanted (default: 1)")
@click.option("--cold-start", type=float, default=300.0, help="seconds from launch to ready: boot and model load (300)")
@click.option("--prices", default=str(DEFAULT_PRICES), help="prices file (default: data/prices.json)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of the table (one a folder)")
@click.option(
    "--pareto",
    metavar="POLICY",
    default=DEFAULT_CANDIDATE,
    help=f"the policy checked against hedge on every folder: at least its availability for at most "
    f"{COST_FACTOR:g} x its cost (default: {DEFAULT_CANDIDATE})",
)
@click.option(
    "--plot",
    metavar="FILE.png",
    help="draw cost against availability for every policy, a panel per trace folder, into this file (.png, .svg, .pdf)",
)
def replay(**options: Any) -> int:
    options["json"] = options.pop("as_json")
    return _replay(SimpleNamespace(**options))


register(cli)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the exit status is returned, not raised (usage errors: 2)."""
    try:
        result = cli.main(args=argv, prog_name="spothub", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())

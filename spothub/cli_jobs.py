"""`spothub jobs`: submit, list, show and cancel batch jobs (the /jobs routes)."""

from __future__ import annotations

import json
import shlex
from typing import Any

import click

from spothub import cli_render
from spothub.api_client import CliError
from spothub.cli_api import EXIT_ERROR, Api, api_command, api_options, names, wait_options, watch

FINISHED = {"completed", "failed", "cancelled"}
DEFAULT_PAGE = 20


@click.group(help="batch jobs: S3 files through a container on spot workers (the /jobs routes)")
@api_options
def jobs() -> None:
    pass


def s3_location(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, str] | None:
    """s3://bucket/prefix -> (bucket, prefix); the prefix may be empty."""
    if value is None:
        return None
    if not value.startswith("s3://") or not value[5:].split("/", 1)[0]:
        raise click.BadParameter(f"expected s3://bucket/prefix, not {value!r}", ctx=ctx, param=param)
    bucket, _, prefix = value[5:].partition("/")
    return bucket, prefix


def container_command(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """`--command 'python run.py --fast'` (split as a shell would) or a JSON list `'["python", "run.py"]'`."""
    if value is None:
        return None
    try:
        words = json.loads(value) if value.lstrip().startswith("[") else shlex.split(value)
    except ValueError as exc:
        raise click.BadParameter(f"not a command line or a JSON list: {exc}", ctx=ctx, param=param) from None
    if not isinstance(words, list) or not words or not all(isinstance(word, str) for word in words):
        raise click.BadParameter("give the command as words, or as a JSON list of strings", ctx=ctx, param=param)
    return words


def finished(view: dict[str, Any]) -> bool:
    return view.get("status") in FINISHED


def wait_for(api: Api, job_id: str, *, interval: float, timeout: float | None, first: dict[str, Any] | None) -> int:
    """Poll the job until it finishes; show it; exit 1 unless it completed."""
    view = watch(
        lambda: api.client.job(job_id),
        line=cli_render.job_progress,
        done=finished,
        interval_s=interval,
        timeout_s=timeout,
        first=first,
    )
    if api.as_json:
        api.out(view)
    else:
        api.show(cli_render.job_view(view))
    if view.get("status") != "completed":
        reason = f": {view['reason']}" if view.get("reason") else ""
        click.echo(f"{api.command_path}: job {job_id} {view.get('status')}{reason}", err=True)
        return EXIT_ERROR
    return 0


@api_command(
    jobs,
    "submit",
    help="submit a job: every file under --input through --image, results under --output (POST /jobs)",
    epilog="Either --input, --output and --image, or --config naming a config file that holds them (the "
    "classic configuration/config.json); options given beside --config override the file's.",
)
@click.option("--input", "input_", callback=s3_location, metavar="S3_URI", help="s3://bucket/prefix of the input files")
@click.option("--output", callback=s3_location, metavar="S3_URI", help="s3://bucket/prefix for the outputs")
@click.option("--image", help="the container image each batch runs in")
@click.option(
    "--command", callback=container_command, help="the container's command: a command line, or a JSON list of words"
)
@click.option("--batch-size", type=int, help="files per batch (default 10)")
@click.option("--max-workers", type=int, help="most workers at once (default 10)")
@click.option("--max-attempts", type=int, help="tries per batch before it fails (default 3)")
@click.option("--ack-timeout", type=int, metavar="SECONDS", help="for a worker to acknowledge a batch (default 300)")
@click.option("--processing-timeout", type=int, metavar="SECONDS", help="for a worker to finish a batch (default 3600)")
@click.option(
    "--instance-type",
    "--instance-types",
    "instance_types",
    multiple=True,
    metavar="TYPES",
    help="instance types for the workers, repeated or comma-separated (default: the deployment's)",
)
@click.option("--notify", metavar="EMAIL", help="an e-mail address told when the job finishes")
@click.option("--config", metavar="S3_URI", help="s3://bucket/key of a JSON config file holding the job's fields")
@click.option("--wait", is_flag=True, help="follow the job until it finishes (exit 1 unless it completes)")
@wait_options
def submit(  # noqa: PLR0917 (one parameter per option)
    api: Api,
    input_: tuple[str, str] | None,
    output: tuple[str, str] | None,
    image: str | None,
    command: list[str] | None,
    batch_size: int | None,
    max_workers: int | None,
    max_attempts: int | None,
    ack_timeout: int | None,
    processing_timeout: int | None,
    instance_types: tuple[str, ...],
    notify: str | None,
    config: str | None,
    wait: bool,
    interval: float,
    timeout: float | None,
) -> int:
    if config is None:
        missing = [flag for flag, value in (("--input", input_), ("--output", output), ("--image", image)) if not value]
        if missing:
            raise click.UsageError(f"{', '.join(missing)} required (or --config naming a config file)")
    body: dict[str, Any] = {}
    if input_:
        body["input_bucket"], body["input_prefix"] = input_
    if output:
        body["output_bucket"], body["output_prefix"] = output
    for key, value in (
        ("config_uri", config),
        ("image", image),
        ("command", command),
        ("batch_size", batch_size),
        ("max_workers", max_workers),
        ("max_attempts", max_attempts),
        ("ack_timeout_s", ack_timeout),
        ("processing_timeout_s", processing_timeout),
        ("instance_types", names(instance_types)),
        ("notify_email", notify),
    ):
        if value is not None:
            body[key] = value
    accepted = api.client.submit_job(body)
    job_id = str(accepted.get("job_id"))
    if not wait:
        if api.as_json:
            api.out(accepted)
        else:
            click.echo(f"{job_id} {accepted.get('status')}: follow it with `spothub jobs show {job_id} --watch`")
        return 0
    if not api.as_json:
        click.echo(f"{job_id} {accepted.get('status')}")
    return wait_for(api, job_id, interval=interval, timeout=timeout, first=None)


@api_command(jobs, "list", help="jobs, newest first (GET /jobs)")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_PAGE, show_default=True, help="jobs per page")
@click.option("--all", "every", is_flag=True, help="every job: follow the pages to the end")
def list_jobs(api: Api, limit: int, every: bool) -> None:
    page = api.client.jobs(limit=limit)
    found = list(page.get("jobs") or [])
    next_token = page.get("next_token")
    while every and next_token:
        page = api.client.jobs(limit=limit, next_token=next_token)
        found += page.get("jobs") or []
        next_token = page.get("next_token")
    if api.as_json:
        api.out({"jobs": found, "next_token": next_token})
        return
    if not found:
        click.echo("no jobs")
        return
    api.show(cli_render.jobs_table(found))
    if next_token:
        click.echo(f"more: spothub jobs list --all (or --limit {limit * 2})", err=True)


@api_command(jobs, "show", help="a job: its batches, workers, capacity and errors (GET /jobs/{job_id})")
@click.argument("job_id")
@click.option("--watch", "follow", is_flag=True, help="follow it until it finishes (exit 1 unless it completes)")
@wait_options
def show(api: Api, job_id: str, follow: bool, interval: float, timeout: float | None) -> int:
    view = api.client.job(job_id)
    if follow and not finished(view):
        return wait_for(api, job_id, interval=interval, timeout=timeout, first=view)
    if api.as_json:
        api.out(view)
    else:
        api.show(cli_render.job_view(view))
    if follow and view.get("status") != "completed":
        return EXIT_ERROR
    return 0


@api_command(jobs, "cancel", help="cancel a job: its workers shut down, its capacity is released (DELETE /jobs/{id})")
@click.argument("job_id")
def cancel(api: Api, job_id: str) -> None:
    view = api.client.cancel_job(job_id)
    if api.as_json:
        api.out(view)
        return
    status = view.get("status")
    if status == "cancelled":
        click.echo(f"{job_id} cancelled: its workers shut down at their next poll and its capacity is released")
    elif status in FINISHED:
        click.echo(f"{job_id} had already {status}: nothing to cancel")
    else:
        raise CliError(f"{job_id} is still {status} after the cancel")

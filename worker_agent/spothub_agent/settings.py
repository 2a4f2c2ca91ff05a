"""What the agent does and how often: defaults, then `/spothub/<prefix>/agent-config` (optional JSON in
SSM, hub region), then environment variables (local runs and the sandbox). Invalid values are named.

The drain must fit in the two minutes between a spot interruption warning and the reclaim, so the
grace period given to the workload is clamped (and the clamp logged) to what is left of 120 s after
the detection delay (one poll), the drain command's time limit and the final report's time limit.
The capacity notice is published concurrently with the drain, so it takes nothing from that budget.
The defaults and the window's parts are in spothub_core.timings, with why each has its value.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from spothub_agent.logs import warn
from spothub_core.contracts import ECS_CONTAINER_NAME_LABEL, SERVING_CONTAINER_NAME
from spothub_core.timings import (
    AGENT_BACKOFF_BASE_SECONDS,
    AGENT_BACKOFF_CAP_SECONDS,
    AGENT_BATCH_POLL_SECONDS,
    AGENT_CONFIG_RETRY_SECONDS,
    AGENT_DRAIN_COMMAND_SECONDS,
    AGENT_DRAIN_MARGIN_SECONDS,
    AGENT_DRAIN_REPORT_SECONDS,
    AGENT_GRACE_SECONDS,
    AGENT_HEALTHY_WITHIN_SECONDS,
    AGENT_HEARTBEAT_SECONDS,
    AGENT_LIFECYCLE_HEARTBEAT_SECONDS,
    AGENT_MAX_POLL_SECONDS,
    AGENT_MIN_GRACE_SECONDS,
    AGENT_POLL_SECONDS,
    SPOT_NOTICE_WINDOW_SECONDS,
)

# The default preset's (vLLM: port 8000). The hub publishes the deployment's own (servingPort, servingHealthPath)
# in agent-config, which replaces this.
DEFAULT_HEALTH_URL = "http://127.0.0.1:8000/health"
# The serving container ECS started, by the label the ECS agent puts on it.
DEFAULT_CONTAINER_FILTER = f"label={ECS_CONTAINER_NAME_LABEL}={SERVING_CONTAINER_NAME}"
DEFAULT_STATE_DIR = Path("/var/lib/spothub-agent")
MAX_LAST_LINES = 50  # what the control plane keeps of a heartbeat's output

Runner = Literal["docker-attach", "docker", "process"]
RUNNERS: tuple[str, ...] = ("docker-attach", "docker", "process")
# Batch mode's runner of a batch's container: `docker run` (instances), or a local process (the sandbox).
BatchRunnerKind = Literal["docker", "process"]
BATCH_RUNNERS: tuple[str, ...] = ("docker", "process")


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class WorkloadSpec:
    """How the workload runs: `docker-attach` watches a container ECS started (never starts one),
    `docker` runs `image` with `args` itself, `process` runs `command` (the sandbox)."""

    runner: Runner = "docker-attach"
    container_filter: str = DEFAULT_CONTAINER_FILTER
    image: str = ""
    args: tuple[str, ...] = ()
    run_args: tuple[str, ...] = ("--network", "host", "--gpus", "all")
    container_name: str = "spothub-workload"
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    health_url: str = DEFAULT_HEALTH_URL  # "" means: healthy while the workload runs
    healthy_within_s: float = float(AGENT_HEALTHY_WITHIN_SECONDS)
    drain_command: tuple[str, ...] = ()  # a string in the JSON runs through /bin/sh -c
    drain_timeout_s: float = float(AGENT_DRAIN_COMMAND_SECONDS)
    grace_s: float = float(AGENT_GRACE_SECONDS)
    heartbeat_s: float = float(AGENT_HEARTBEAT_SECONDS)
    poll_s: float = float(AGENT_POLL_SECONDS)
    lifecycle_heartbeat_s: float = float(AGENT_LIFECYCLE_HEARTBEAT_SECONDS)
    backoff_base_s: float = float(AGENT_BACKOFF_BASE_SECONDS)
    backoff_cap_s: float = float(AGENT_BACKOFF_CAP_SECONDS)
    last_lines: int = 20
    state_dir: Path = DEFAULT_STATE_DIR
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    # Batch mode (the spothub:job-id tag): how a batch's container runs, and the pause before asking for work
    # again after an error or a `wait` without retry_after_s.
    batch_runner: BatchRunnerKind = "docker"
    batch_command: tuple[str, ...] = ()  # the process runner's command (the sandbox's stand-in job)
    batch_poll_s: float = float(AGENT_BATCH_POLL_SECONDS)

    def describe(self) -> dict[str, Any]:
        described = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "workload"}
        described["state_dir"] = str(self.state_dir)
        described["workload"] = {f.name: getattr(self.workload, f.name) for f in fields(self.workload)}
        return described


_SECONDS_KEYS = (
    "healthy_within_s",
    "drain_timeout_s",
    "grace_s",
    "heartbeat_s",
    "poll_s",
    "lifecycle_heartbeat_s",
    "backoff_base_s",
    "backoff_cap_s",
    "batch_poll_s",
)

ENVIRONMENT: dict[str, str] = {
    "SPOTHUB_AGENT_HEARTBEAT_SECONDS": "heartbeat_s",
    "SPOTHUB_AGENT_POLL_SECONDS": "poll_s",
    "SPOTHUB_AGENT_HEALTH_URL": "health_url",
    "SPOTHUB_AGENT_HEALTHY_WITHIN_SECONDS": "healthy_within_s",
    "SPOTHUB_AGENT_GRACE_SECONDS": "grace_s",
    "SPOTHUB_AGENT_LIFECYCLE_HEARTBEAT_SECONDS": "lifecycle_heartbeat_s",
    "SPOTHUB_AGENT_BACKOFF_BASE_SECONDS": "backoff_base_s",
    "SPOTHUB_AGENT_BACKOFF_CAP_SECONDS": "backoff_cap_s",
    "SPOTHUB_AGENT_DRAIN_COMMAND": "drain_command",
    "SPOTHUB_AGENT_WORKLOAD_COMMAND": "workload_command",
    "SPOTHUB_AGENT_STATE_DIR": "state_dir",
    "SPOTHUB_AGENT_BATCH_RUNNER": "batch_runner",
    "SPOTHUB_AGENT_BATCH_COMMAND": "batch_command",
    "SPOTHUB_AGENT_BATCH_POLL_SECONDS": "batch_poll_s",
}


def build_settings(agent_config: str | None, environ: Mapping[str, str]) -> Settings:
    """Settings from the agent-config parameter's JSON (None: not published) and the environment."""
    settings = Settings()
    if agent_config:
        try:
            document = json.loads(agent_config)
        except ValueError as exc:
            raise SettingsError(f"agent-config is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise SettingsError("agent-config must be a JSON object")
        settings = _apply(settings, document, "agent-config")
    overrides: dict[str, Any] = {}
    for variable, key in ENVIRONMENT.items():
        if environ.get(variable, "") != "":
            overrides[key] = _env_value(variable, environ[variable])
    settings = _apply(settings, overrides, "environment")
    if settings.batch_runner == "process" and not settings.batch_command:
        raise SettingsError("the batch process runner needs a command (SPOTHUB_AGENT_BATCH_COMMAND, a JSON list)")
    return fit_notice_window(settings)


def fit_notice_window(settings: Settings) -> Settings:
    """Clamp intervals so a drain (detection, drain command, grace period, report) fits in 120 s."""
    changes: dict[str, float] = {}
    poll_s = min(settings.poll_s, float(AGENT_MAX_POLL_SECONDS))
    if poll_s != settings.poll_s:
        changes["poll_s"] = poll_s
    available = SPOT_NOTICE_WINDOW_SECONDS - poll_s - AGENT_DRAIN_REPORT_SECONDS - AGENT_DRAIN_MARGIN_SECONDS
    drain_timeout_s = settings.drain_timeout_s if settings.drain_command else 0.0
    if drain_timeout_s > available - AGENT_MIN_GRACE_SECONDS:
        drain_timeout_s = available - AGENT_MIN_GRACE_SECONDS
        changes["drain_timeout_s"] = drain_timeout_s
    grace_s = min(settings.grace_s, available - drain_timeout_s)
    if grace_s != settings.grace_s:
        changes["grace_s"] = grace_s
    for key, value in changes.items():
        warn(
            "setting_clamped",
            setting=key,
            configured=getattr(settings, key),
            used=value,
            window_s=float(SPOT_NOTICE_WINDOW_SECONDS),
        )
    return replace(settings, **changes)


def _env_value(variable: str, value: str) -> Any:
    key = ENVIRONMENT[variable]
    if key in ("drain_command", "workload_command", "batch_command"):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise SettingsError(f"{variable} must be a JSON list of strings: {exc}") from exc
    return value


def _apply(settings: Settings, document: Mapping[str, Any], origin: str) -> Settings:
    changes: dict[str, Any] = {}
    workload = settings.workload
    for key, value in document.items():
        where = f"{origin} {key}"
        if key in _SECONDS_KEYS:
            changes[key] = _positive_number(value, where)
        elif key == "health_url":
            if not isinstance(value, str) or (value and not value.startswith(("http://", "https://"))):
                raise SettingsError(f"{where} must be an http(s) URL or empty")
            changes[key] = value
        elif key == "drain_command":
            changes[key] = _command(value, where, allow_none=True)
        elif key == "last_lines":
            changes[key] = min(int(_positive_number(value, where)), MAX_LAST_LINES)
        elif key == "state_dir":
            changes[key] = Path(str(value))
        elif key == "workload":
            workload = _workload(value, workload, where)
        elif key in ("batch_runner", "batch_command"):
            changes[key] = _batch_setting(key, value, where)
        elif key == "workload_command":  # the environment's shortcut: a process runner with this command
            workload = replace(workload, runner="process", command=_command(value, where))
        else:
            warn("setting_unknown", key=key, origin=origin)
    return replace(settings, **changes, workload=workload)


def _batch_setting(key: str, value: Any, where: str) -> Any:
    if key == "batch_command":
        return _command(value, where)
    if value not in BATCH_RUNNERS:
        raise SettingsError(f"{where} must be one of {', '.join(BATCH_RUNNERS)}, got {value!r}")
    return value


def _workload(value: Any, current: WorkloadSpec, where: str) -> WorkloadSpec:
    if not isinstance(value, dict):
        raise SettingsError(f"{where} must be an object")
    spec = WorkloadSpec()  # a workload object replaces the defaults' runner as a whole
    runner = value.get("runner", current.runner)
    if runner not in RUNNERS:
        raise SettingsError(f"{where}.runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
    changes: dict[str, Any] = {"runner": runner}
    for key in ("container_filter", "image", "container_name"):
        if key in value:
            if not isinstance(value[key], str):
                raise SettingsError(f"{where}.{key} must be a string")
            changes[key] = value[key]
    for key in ("args", "run_args", "command"):
        if key in value:
            changes[key] = _command(value[key], f"{where}.{key}", allow_empty=key != "command")
    spec = replace(spec, **changes)
    if spec.runner == "docker" and not spec.image:
        raise SettingsError(f"{where}: the docker runner needs an image")
    if spec.runner == "process" and not spec.command:
        raise SettingsError(f"{where}: the process runner needs a command")
    return spec


def _command(value: Any, where: str, *, allow_none: bool = False, allow_empty: bool = False) -> tuple[str, ...]:
    if value is None and allow_none:
        return ()
    if isinstance(value, str) and value.strip():
        return ("/bin/sh", "-c", value)
    if isinstance(value, list) and all(isinstance(part, str) for part in value) and (value or allow_empty):
        return tuple(value)
    raise SettingsError(f"{where} must be a non-empty list of strings or a shell command string")


def _positive_number(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{where} must be a number, got {value!r}") from exc
    if not number > 0:
        raise SettingsError(f"{where} must be positive, got {value!r}")
    return number


def load_settings(
    read_agent_config: Callable[[], str | None],
    environ: Mapping[str, str],
    stop: threading.Event,
    attempts: int = 3,
) -> Settings:
    """Settings from SSM and the environment. An agent-config that cannot be read (after a few tries)
    or is invalid is logged and replaced by the defaults: the interruption watch must run regardless.
    An invalid environment raises SettingsError (a local mistake, fixed locally)."""
    document: str | None = None
    for attempt in range(attempts):
        try:
            document = read_agent_config()
            break
        except (BotoCoreError, ClientError) as exc:
            warn("agent_config_unreadable", attempt=attempt + 1, reason=str(exc)[:300])
            if attempt + 1 < attempts and stop.wait(AGENT_CONFIG_RETRY_SECONDS * 2**attempt):
                break
    try:
        return build_settings(document, environ)
    except SettingsError as exc:
        if document is None:
            raise
        warn("agent_config_invalid", reason=str(exc), using="defaults and the environment")
        return build_settings(None, environ)

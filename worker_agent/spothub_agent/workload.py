"""The instance's workload behind one interface, whatever runs it: start it (or find it), say how it is
(state, exit code, last lines of output), whether it answers its health check, and stop it
(SIGTERM, then SIGKILL after a grace period).

Runners: `docker_runner.DockerWorkload` (the Docker CLI: a container ECS started, or one the agent
runs itself) and `process_runner.ProcessWorkload` (a local process: the sandbox).
The agent does not restart a workload that exited: it reports it (heartbeat, AgentReady 0) and the
control plane decides.
"""

from __future__ import annotations

import abc
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spothub_agent.settings import Settings
from spothub_core.models.agent import WorkloadHealth
from spothub_core.timings import AGENT_HEALTH_CHECK_TIMEOUT_SECONDS

if TYPE_CHECKING:
    from spothub_agent.state import AgentState

HTTP_OK = 200
MAX_LINE_CHARS = 500


@dataclass(frozen=True)
class WorkloadStatus:
    # waiting: not there yet (ECS has not started the container); running; exited: ended by itself;
    # stopped: ended by the agent (drain); unavailable: cannot be run or seen (no Docker, bad command).
    state: str
    exit_code: int | None = None
    last_lines: tuple[str, ...] = ()
    detail: str = ""

    @property
    def ended(self) -> bool:
        return self.state in ("exited", "stopped")

    def report(self) -> WorkloadHealth:
        """What the heartbeat says of the workload."""
        return WorkloadHealth(state=self.state, exit_code=self.exit_code, last_lines=list(self.last_lines))


@dataclass(frozen=True)
class StopResult:
    exit_code: int | None
    forced: bool  # the grace period ran out and it was killed
    error: str = ""


class Workload(abc.ABC):
    # True where something else restarts it (ECS restarts its task): an exit is then not the end.
    restarts_itself = False

    def __init__(self, health_url: str, last_lines: int) -> None:
        self.health_url = health_url
        self.max_lines = last_lines

    @abc.abstractmethod
    def start(self, launch: bool = True) -> None:
        """Adopt the workload already running (after a restart of the agent), else start it; with
        launch False (a drain is under way) only adopt: a drained instance never starts it again."""

    @abc.abstractmethod
    def status(self) -> WorkloadStatus: ...

    @abc.abstractmethod
    def stop(self, grace_s: float) -> StopResult:
        """SIGTERM, wait up to grace_s, then SIGKILL; returns the exit code."""

    def release(self) -> None:  # noqa: B027 (a no-op by default, on purpose)
        """The agent itself is stopping (not a drain). Containers outlive the agent; a process does not."""

    def healthy(self) -> bool:
        """The health URL answers 200; without a health URL, healthy while running."""
        if not self.health_url:
            return self.status().state == "running"
        return http_ok(self.health_url)


def http_ok(url: str, timeout: float = AGENT_HEALTH_CHECK_TIMEOUT_SECONDS) -> bool:
    request = urllib.request.Request(url, method="GET")  # noqa: S310 (http(s) checked in settings)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return bool(response.status == HTTP_OK)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def clip_lines(lines: list[str], count: int) -> tuple[str, ...]:
    return tuple(line[:MAX_LINE_CHARS] for line in lines[-count:]) if count > 0 else ()


def make_workload(settings: Settings, state: AgentState) -> Workload:
    spec = settings.workload
    if spec.runner == "process":
        from spothub_agent.process_runner import ProcessWorkload  # noqa: PLC0415

        return ProcessWorkload(
            spec.command, state, settings.state_dir / "workload.log", settings.health_url, settings.last_lines
        )
    from spothub_agent.docker_runner import DockerWorkload  # noqa: PLC0415

    return DockerWorkload(spec, settings.health_url, settings.last_lines)

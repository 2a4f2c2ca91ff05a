"""Batch mode's runner of one batch's container, behind one interface: start it with the batch's Inputs and
Outputs directories, see whether it ended (exit code, last lines of output), stop it (SIGTERM, then SIGKILL
after a grace period), and clean up after a run an earlier agent left behind (the agent was killed mid-batch).

`docker` (instances): `docker run --rm --name spothub-batch-<batch_id> [--gpus all] -v <Inputs>:/app/Inputs
-v <Outputs>:/app/Outputs <image> <command...>` in the foreground, `--gpus all` only where the instance has an
NVIDIA GPU. The name lets a stop, and a restarted agent, find the container.
`process` (the sandbox, where containers cannot run): SPOTHUB_AGENT_BATCH_COMMAND as a local process in its own
session, told the batch by its environment: SPOTHUB_BATCH_INPUT_DIR, SPOTHUB_BATCH_OUTPUT_DIR,
SPOTHUB_BATCH_IMAGE and SPOTHUB_BATCH_JOB_COMMAND (the job's command, a JSON list).

Either way the output goes to `batch.log` in the state directory (the previous batch's kept as `batch.log.1`),
and the run is recorded in the state file before it starts. `docker run` exits 125 when the daemon cannot
create the container; with "pull access denied", "manifest unknown" or "not found" in its output the image
cannot be pulled: `image_failed`, fatal to the worker (no batch can run here).
"""

from __future__ import annotations

import abc
import json
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spothub_agent.logs import log_event, warn
from spothub_agent.process_runner import boot_id, process_start_ticks
from spothub_agent.settings import Settings
from spothub_agent.state import AgentState
from spothub_agent.workload import clip_lines
from spothub_core.models.batch_workers import BatchAssignment
from spothub_core.timings import AGENT_DOCKER_CALL_TIMEOUT_SECONDS, AGENT_PROCESS_EXIT_SECONDS

CONTAINER_INPUTS = "/app/Inputs"
CONTAINER_OUTPUTS = "/app/Outputs"
DOCKER_RUN_FAILED = 125  # `docker run`'s own failure: the container was not created
IMAGE_FAILURE_MARKERS = ("pull access denied", "manifest unknown", "not found")
LOG_FILE = "batch.log"
TAIL_BYTES = 64 * 1024
EXIT_CHECK_S = 0.05


def container_name(batch_id: str) -> str:
    return f"spothub-batch-{batch_id}"


def image_failure(exit_code: int | None, lines: tuple[str, ...] | list[str]) -> bool:
    """The image cannot be pulled: `docker run` exited 125 saying so."""
    if exit_code != DOCKER_RUN_FAILED:
        return False
    text = "\n".join(lines).lower()
    return any(marker in text for marker in IMAGE_FAILURE_MARKERS)


class RunnerUnavailable(RuntimeError):
    """The container cannot be started on this instance at all (no docker CLI, the command is missing)."""


@dataclass(frozen=True)
class BatchRun:
    exit_code: int | None  # None: unknown (it could not be waited for)
    last_lines: tuple[str, ...]
    stopped: bool  # stopped by the agent (interruption, timeout, the agent's own stop)

    @property
    def image_failed(self) -> bool:
        return image_failure(self.exit_code, self.last_lines)


class BatchRunner(abc.ABC):
    kind = ""

    def __init__(self, state: AgentState, log_dir: Path, last_lines: int) -> None:
        self._state = state
        self.log_path = log_dir / LOG_FILE
        self._last_lines = last_lines
        self._child: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def start(self, batch: BatchAssignment, inputs: Path, outputs: Path) -> None:
        """Start the batch's container; RunnerUnavailable when it cannot be started at all."""
        self._stopped = False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists():
            self.log_path.replace(self.log_path.with_name(LOG_FILE + ".1"))
        argv, environment = self._command(batch, inputs, outputs)
        try:
            with self.log_path.open("wb") as output:
                self._child = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # the agent's own signals do not reach it; a stop does, to all of it
                    close_fds=True,
                    env=environment,
                )
        except OSError as exc:
            raise RunnerUnavailable(f"cannot start {argv[0]!r}: {exc}") from exc
        self._state.update_batch(run=self._record(batch))
        log_event("batch_started", runner=self.kind, batch_id=batch.batch_id, pid=self._child.pid, command=argv)

    def poll(self) -> int | None:
        """The exit code once it ended, else None."""
        return self._child.poll() if self._child is not None else None

    def stop(self, grace_s: float) -> None:
        """SIGTERM (docker stop), wait up to grace_s, then SIGKILL; returns once it ended."""
        if self._child is None or self._child.poll() is not None:
            return
        self._stopped = True
        log_event("batch_stopping", runner=self.kind, pid=self._child.pid, grace_s=grace_s)
        self._terminate(grace_s)
        if not self._wait(self._exit_wait(grace_s)):
            warn("batch_killed", runner=self.kind, pid=self._child.pid)
            self._kill()
            self._wait(AGENT_PROCESS_EXIT_SECONDS)

    def result(self) -> BatchRun:
        return BatchRun(self.poll(), self.last_lines(), self._stopped)

    def last_lines(self) -> tuple[str, ...]:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - TAIL_BYTES))
                text = handle.read().decode(errors="replace")
        except OSError:
            return ()
        ring: deque[str] = deque(text.splitlines(), maxlen=self._last_lines)
        return clip_lines(list(ring), self._last_lines)

    @abc.abstractmethod
    def clean_up(self, record: dict[str, Any]) -> None:
        """Stop what an earlier agent started for a batch (its state record's `run`), if it still runs."""

    @abc.abstractmethod
    def _command(self, batch: BatchAssignment, inputs: Path, outputs: Path) -> tuple[list[str], dict[str, str]]: ...

    @abc.abstractmethod
    def _record(self, batch: BatchAssignment) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _terminate(self, grace_s: float) -> None: ...

    def _exit_wait(self, grace_s: float) -> float:
        """How long to wait for the end after _terminate, before SIGKILL."""
        return grace_s

    def _kill(self) -> None:
        assert self._child is not None  # noqa: S101
        _signal_group(self._child.pid, signal.SIGKILL)

    def _wait(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.poll() is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(EXIT_CHECK_S)
        return True


class ProcessBatchRunner(BatchRunner):
    kind = "process"

    def __init__(self, command: tuple[str, ...], state: AgentState, log_dir: Path, last_lines: int) -> None:
        super().__init__(state, log_dir, last_lines)
        self.command = command

    def _command(self, batch: BatchAssignment, inputs: Path, outputs: Path) -> tuple[list[str], dict[str, str]]:
        environment = {
            **os.environ,
            "SPOTHUB_BATCH_INPUT_DIR": str(inputs),
            "SPOTHUB_BATCH_OUTPUT_DIR": str(outputs),
            "SPOTHUB_BATCH_IMAGE": batch.image,
            "SPOTHUB_BATCH_JOB_COMMAND": json.dumps(batch.command),
        }
        return list(self.command), environment

    def _record(self, batch: BatchAssignment) -> dict[str, Any]:
        assert self._child is not None  # noqa: S101
        pid = self._child.pid
        return {"runner": self.kind, "pid": pid, "start_ticks": process_start_ticks(pid), "boot_id": boot_id()}

    def _terminate(self, grace_s: float) -> None:
        assert self._child is not None  # noqa: S101
        _signal_group(self._child.pid, signal.SIGTERM)

    def clean_up(self, record: dict[str, Any]) -> None:
        pid, ticks = record.get("pid"), record.get("start_ticks")
        if record.get("runner") != self.kind or not pid or record.get("boot_id") != boot_id():
            return
        if process_start_ticks(pid) != ticks:
            return  # it ended (or the pid is another process's now)
        log_event("batch_leftover_stopped", runner=self.kind, pid=pid)
        _signal_group(pid, signal.SIGKILL)  # its batch is processed again from the start: nothing to save
        deadline = time.monotonic() + AGENT_PROCESS_EXIT_SECONDS
        while process_start_ticks(pid) == ticks and time.monotonic() < deadline:  # gone before the dirs are cleared
            time.sleep(EXIT_CHECK_S)


class DockerBatchRunner(BatchRunner):
    kind = "docker"

    def __init__(
        self,
        state: AgentState,
        log_dir: Path,
        last_lines: int,
        gpus: Callable[[], bool],
        docker: str = "docker",
    ) -> None:
        super().__init__(state, log_dir, last_lines)
        self._gpus = gpus
        self._docker = docker
        self._name = ""

    def run_command(self, batch: BatchAssignment, inputs: Path, outputs: Path) -> list[str]:
        gpus = ["--gpus", "all"] if self._gpus() else []
        return [
            self._docker,
            "run",
            "--rm",
            "--name",
            container_name(batch.batch_id),
            *gpus,
            "-v",
            f"{inputs}:{CONTAINER_INPUTS}",
            "-v",
            f"{outputs}:{CONTAINER_OUTPUTS}",
            batch.image,
            *batch.command,
        ]

    def _command(self, batch: BatchAssignment, inputs: Path, outputs: Path) -> tuple[list[str], dict[str, str]]:
        self._name = container_name(batch.batch_id)
        return self.run_command(batch, inputs, outputs), dict(os.environ)

    def _record(self, batch: BatchAssignment) -> dict[str, Any]:
        return {"runner": self.kind, "container": container_name(batch.batch_id)}

    def _terminate(self, grace_s: float) -> None:
        seconds = max(1, int(grace_s))
        if not self._docker_call("stop", "--time", str(seconds), self._name, timeout=seconds):
            # Not created yet (still pulling): end the client, which abandons the run.
            assert self._child is not None  # noqa: S101
            _signal_group(self._child.pid, signal.SIGTERM)

    def _exit_wait(self, grace_s: float) -> float:
        return AGENT_PROCESS_EXIT_SECONDS  # docker stop itself waited grace_s, then killed the container

    def _kill(self) -> None:
        self._docker_call("rm", "-f", self._name)
        super()._kill()

    def clean_up(self, record: dict[str, Any]) -> None:
        name = record.get("container")
        if record.get("runner") == self.kind and name and self._docker_call("rm", "-f", str(name)):
            log_event("batch_leftover_stopped", runner=self.kind, container=name)

    def _docker_call(self, *args: str, timeout: float = 0) -> bool:
        """A docker command that may fail (no such container): True when it succeeded."""
        try:
            done = subprocess.run(
                [self._docker, *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout + AGENT_DOCKER_CALL_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            warn("docker_call_failed", command=args[0], reason=str(exc)[:300])
            return False
        return done.returncode == 0


def _signal_group(pid: int, signum: signal.Signals) -> None:
    try:
        os.killpg(pid, signum)  # its own session: pgid == pid, so this reaches what it started too
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        warn("batch_signal_failed", pid=pid, signal=signum.name, reason=str(exc))


def make_batch_runner(settings: Settings, state: AgentState, gpus: Callable[[], bool]) -> BatchRunner:
    directory = settings.state_dir
    if settings.batch_runner == "process":
        return ProcessBatchRunner(settings.batch_command, state, directory, settings.last_lines)
    return DockerBatchRunner(state, directory, settings.last_lines, gpus)

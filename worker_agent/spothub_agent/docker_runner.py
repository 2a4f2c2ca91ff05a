"""The workload as a container, through the Docker CLI (real instances).

`docker-attach` (the default): ECS started the container; the agent finds it with a `docker ps`
filter (newest running first) and only watches it and, on a drain, stops it. It never starts one.
`docker`: the agent runs `image` itself (`docker run -d --name <container_name> ...`), or adopts the
container of that name left by an earlier run of the agent.
Containers outlive the agent, so a restart of the agent leaves the workload alone.
"""

from __future__ import annotations

import json
import math
import subprocess
import threading

from spothub_agent.logs import log_event, warn
from spothub_agent.settings import WorkloadSpec
from spothub_agent.workload import StopResult, Workload, WorkloadStatus, clip_lines
from spothub_core.timings import AGENT_DOCKER_CALL_TIMEOUT_SECONDS, AGENT_DOCKER_RUN_TIMEOUT_SECONDS

KILLED_EXIT_CODE = 137  # 128 + SIGKILL: docker stop ran out of time


class DockerError(RuntimeError):
    pass


class DockerWorkload(Workload):
    def __init__(self, spec: WorkloadSpec, health_url: str, last_lines: int, docker: str = "docker") -> None:
        super().__init__(health_url, last_lines)
        self.spec = spec
        self.attach = spec.runner == "docker-attach"
        self.restarts_itself = self.attach
        self._docker = docker
        self._lock = threading.Lock()
        self._container: str | None = None
        self._stopped_by_agent = False

    def start(self, launch: bool = True) -> None:
        if self.attach:
            log_event("workload_watched", runner="docker-attach", filter=self.spec.container_filter)
            return
        try:
            existing = self._run("ps", "-a", "-q", "--filter", f"name=^/{self.spec.container_name}$").split()
            if existing:
                self._container = existing[0]
                log_event("workload_adopted", runner="docker", container=self._container)
                return
            if not launch:
                return
            self._container = self._run(
                "run",
                "-d",
                "--name",
                self.spec.container_name,
                *self.spec.run_args,
                self.spec.image,
                *self.spec.args,
                timeout=AGENT_DOCKER_RUN_TIMEOUT_SECONDS,  # may pull the image
            ).strip()
            log_event("workload_started", runner="docker", container=self._container, image=self.spec.image)
        except DockerError as exc:
            warn("workload_start_failed", runner="docker", reason=str(exc))

    def status(self) -> WorkloadStatus:
        try:
            container = self._find()
            if container is None:
                return WorkloadStatus("waiting", detail=f"no container matches {self._selector()}")
            state = json.loads(self._run("inspect", "--format", "{{json .State}}", container))
            lines = self._run("logs", "--tail", str(self.max_lines), container, merge_stderr=True).splitlines()
        except (DockerError, ValueError) as exc:
            return WorkloadStatus("unavailable", detail=str(exc)[:300])
        if state.get("Running"):
            return WorkloadStatus("running", None, clip_lines(lines, self.max_lines))
        exit_code = state.get("ExitCode")
        ended = "stopped" if self._stopped_by_agent else "exited"
        if state.get("Status") == "created":
            ended = "waiting"
        return WorkloadStatus(ended, exit_code, clip_lines(lines, self.max_lines), str(state.get("Error", "")))

    def stop(self, grace_s: float) -> StopResult:
        seconds = max(1, math.ceil(grace_s))
        try:
            container = self._find()
            if container is None:
                log_event("workload_stop_skipped", reason=f"no container matches {self._selector()}")
                return StopResult(None, forced=False)
            self._stopped_by_agent = True
            log_event("workload_sigterm", container=container, grace_s=seconds)
            self._run("stop", "--time", str(seconds), container, timeout=seconds + AGENT_DOCKER_CALL_TIMEOUT_SECONDS)
            exit_code = int(self._run("inspect", "--format", "{{.State.ExitCode}}", container).strip())
        except (DockerError, ValueError) as exc:
            return StopResult(None, forced=False, error=str(exc)[:300])
        return StopResult(exit_code, forced=exit_code == KILLED_EXIT_CODE)

    def _selector(self) -> str:
        return self.spec.container_filter if self.attach else f"name={self.spec.container_name}"

    def _find(self) -> str | None:
        with self._lock:
            if self.attach:
                # Newest first (docker ps order); a running one before any that exited.
                rows = [
                    row.split("\t")
                    for row in self._run(
                        "ps", "-a", "--filter", self.spec.container_filter, "--format", "{{.ID}}\t{{.State}}"
                    ).splitlines()
                    if row
                ]
                running = [row[0] for row in rows if len(row) > 1 and row[1] == "running"]
                self._container = (running or [row[0] for row in rows] or [None])[0]
            return self._container

    def _run(self, *args: str, timeout: float = AGENT_DOCKER_CALL_TIMEOUT_SECONDS, merge_stderr: bool = False) -> str:
        try:
            done = subprocess.run(
                [self._docker, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise DockerError(f"the {self._docker} CLI is not installed") from exc
        except subprocess.TimeoutExpired as exc:
            raise DockerError(f"docker {args[0]} did not finish in {timeout:.0f}s") from exc
        if done.returncode != 0:
            error = (done.stderr or b"").decode(errors="replace").strip()
            raise DockerError(f"docker {args[0]} failed ({done.returncode}): {error[:300]}")
        return done.stdout.decode(errors="replace")

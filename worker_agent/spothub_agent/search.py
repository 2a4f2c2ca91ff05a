"""The agent in search mode (an instance tagged Service=semantic-search, launched by the hub's search launcher):
it serves the search index on the volume the launcher attaches, and nothing else. No control plane, no group, no
heartbeat: the hub checks the service's health itself, through the router in the VPC.

  1. SearchAgentConfig, JSON in SSM `/spothub/<prefix>/search-config` of the instance's own region (the search
     region): retried with the agent's backoff until it is published and valid.
  2. The volume (the EBSVolumeId tag): its device awaited, then mounted at the config's mount_path (search_volume.py).
  3. The API key: Secrets Manager GetSecretValue of api_key_secret_name (in the instance's region), when set.
  4. The service, in the foreground: `docker run --rm --name spothub-search [--gpus all] -p <port>:<port>
     -v <mount>:/data:ro -e SEARCH_API_KEY -e SEARCH_DATA_DIR=/data -e SEARCH_PORT=<port> <image>` (the key goes
     through the docker client's environment, never its arguments); or SPOTHUB_AGENT_SEARCH_COMMAND (the
     sandbox), a JSON argv template with {port} and {data}, run with SEARCH_API_KEY, SEARCH_DATA_DIR (the mount
     point itself) and SEARCH_PORT in its environment. Its output goes to `search.log` in the state directory.
     When it exits it is started again after the agent's backoff (jittered, doubling to backoff_cap_s; back to
     the start once a run answered its health check or ran SERVICE_STABLE_SECONDS).
On the agent's stop (SIGTERM: the instance is terminated, idle, replaced or interrupted) the service is stopped
(SIGTERM, SIGKILL after SERVICE_STOP_GRACE_SECONDS) and the volume unmounted, so that it detaches cleanly.
An agent restarted while its service still ran (it was killed) stops that one first: the state file records it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from spothub_agent.aws import AwsClients, error_code, read_parameter
from spothub_agent.backoff import Backoff
from spothub_agent.batch import NVIDIA_DEVICE
from spothub_agent.config import AgentConfig
from spothub_agent.logs import log_event, warn
from spothub_agent.process_runner import boot_id, process_start_ticks
from spothub_agent.search_volume import MountError, SearchOptions, SearchVolume, fill, load_search_options
from spothub_agent.settings import Settings
from spothub_agent.state import AgentState
from spothub_agent.workload import clip_lines, http_ok
from spothub_core.models.search_records import SearchAgentConfig
from spothub_core.timings import AGENT_DOCKER_CALL_TIMEOUT_SECONDS, AGENT_PROCESS_EXIT_SECONDS

CONTAINER_NAME = "spothub-search"
CONTAINER_DATA = "/data"
LOG_FILE = "search.log"
ROTATE_BYTES = 8 * 1024 * 1024
TAIL_BYTES = 64 * 1024
# The service gets this long to exit on SIGTERM (docker stop's own default): a search service has nothing to save.
SERVICE_STOP_GRACE_SECONDS = 10
# A run this long (or one that answered its health check) was not a crash loop: the next restart waits little.
SERVICE_STABLE_SECONDS = 60
EXIT_CHECK_S = 0.05
MAX_REASON_CHARS = 300


def search_config_parameter(prefix: str) -> str:
    return f"/spothub/{prefix}/search-config"


class ServiceRun:
    """One run of the service: `docker run` in the foreground or the sandbox's command, in its own session (the
    agent's signals do not reach it; a stop reaches all of it), its output appended to the log file."""

    def __init__(self, argv: list[str], environment: dict[str, str], log_path: Path, docker: str | None) -> None:
        self.argv = argv
        self.log_path = log_path
        self._docker = docker  # the docker CLI when the run is a container, else None
        self.started = time.monotonic()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if log_path.exists() and log_path.stat().st_size > ROTATE_BYTES:
            log_path.replace(log_path.with_name(LOG_FILE + ".1"))
        with log_path.open("ab") as output:
            self.child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=environment,
            )
        self.pid = self.child.pid

    def poll(self) -> int | None:
        return self.child.poll()

    def stop(self, grace_s: float) -> int | None:
        """SIGTERM (`docker stop` for a container), up to grace_s, then SIGKILL; the exit code."""
        if self.poll() is not None:
            return self.poll()
        log_event("search_service_stopping", pid=self.pid, grace_s=grace_s)
        if self._docker is None:
            _signal_group(self.pid, signal.SIGTERM)
            exit_wait = grace_s
        else:
            seconds = max(1, int(grace_s))
            if not docker_call(self._docker, "stop", "--time", str(seconds), CONTAINER_NAME, timeout=seconds):
                _signal_group(self.pid, signal.SIGTERM)  # no container yet (still pulling): end the client
            exit_wait = AGENT_PROCESS_EXIT_SECONDS  # docker stop waited, then killed the container
        if not self._wait(exit_wait):
            warn("search_service_killed", pid=self.pid, grace_s=grace_s)
            if self._docker is not None:
                docker_call(self._docker, "rm", "-f", CONTAINER_NAME)
            _signal_group(self.pid, signal.SIGKILL)
            self._wait(AGENT_PROCESS_EXIT_SECONDS)
        return self.poll()

    def last_lines(self, count: int) -> tuple[str, ...]:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - TAIL_BYTES))
                text = handle.read().decode(errors="replace")
        except OSError:
            return ()
        return clip_lines(list(deque(text.splitlines(), maxlen=count)), count)

    def _wait(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.poll() is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(EXIT_CHECK_S)
        return True


class SearchService:
    def __init__(
        self,
        config: AgentConfig,
        settings: Settings,
        aws: AwsClients,
        *,
        options: SearchOptions | None = None,
        state: AgentState | None = None,
        has_gpus: Callable[[], bool] | None = None,
        docker: str = "docker",
    ) -> None:
        self.config = config
        self.settings = settings
        self.options = options if options is not None else load_search_options(os.environ)
        self.state = state or AgentState(settings.state_dir, config.instance_id)
        self.parameter = search_config_parameter(config.prefix)
        self.log_path = settings.state_dir / LOG_FILE
        self.service_config: SearchAgentConfig | None = None
        self.volume: SearchVolume | None = None
        self.current: ServiceRun | None = None
        self.starts = 0
        self._aws = aws
        self._has_gpus = has_gpus or NVIDIA_DEVICE.exists
        self._docker = docker

    # --- the whole ------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until stopped; then the service is stopped and the volume unmounted."""
        log_event(
            "search_mode_started",
            instance_id=self.config.instance_id,
            volume_id=self.config.volume_id,
            parameter=self.parameter,
            **self.options.describe(),
        )
        try:
            self._stop_leftover()
            config = self._read_config(stop)
            if config is None:
                return
            self.service_config = config
            mount_path = self.options.mount_path or Path(config.mount_path)
            self.volume = SearchVolume(self.config.volume_id, mount_path, self.options, self.settings.poll_s)
            if not self.volume.wait_for_device(stop) or not self._mount(stop):
                return
            api_key = self._api_key(config, stop)
            if api_key is None:
                return
            self._serve(config, api_key, stop)
        finally:
            self._stop_service()
            if self.volume is not None:
                self.volume.unmount()
            log_event("search_mode_stopped", instance_id=self.config.instance_id, starts=self.starts)

    # --- the steps ------------------------------------------------------------------------------------

    def _read_config(self, stop: threading.Event) -> SearchAgentConfig | None:
        """search-config, retried until published and valid; None when stopped first."""
        backoff = self._backoff()
        ssm = self._aws.client("ssm", self.config.region)
        while not stop.is_set():
            try:
                document = read_parameter(ssm, self.parameter)
                if document is not None:
                    config = SearchAgentConfig.model_validate_json(document)
                    log_event("search_config_read", parameter=self.parameter, **config.model_dump(mode="json"))
                    return config
                reason = "not published (yet)"
            except (BotoCoreError, ClientError) as exc:
                reason = f"{error_code(exc)}: {str(exc)[:MAX_REASON_CHARS]}"
            except ValidationError as exc:
                reason = f"invalid: {str(exc)[:MAX_REASON_CHARS]}"
            delay = backoff.next_delay()
            warn("search_config_unavailable", parameter=self.parameter, reason=reason, retry_in_s=round(delay, 2))
            stop.wait(delay)
        return None

    def _mount(self, stop: threading.Event) -> bool:
        """The volume mounted (True), retried while the mount fails; False when stopped first."""
        assert self.volume is not None  # noqa: S101
        backoff = self._backoff()
        while not stop.is_set():
            try:
                self.volume.mount()
                return True
            except MountError as exc:
                delay = backoff.next_delay()
                warn(
                    "search_mount_failed", path=str(self.volume.mount_path), reason=str(exc), retry_in_s=round(delay, 2)
                )
                stop.wait(delay)
        return False

    def _api_key(self, config: SearchAgentConfig, stop: threading.Event) -> str | None:
        """The service's API key ("" when it needs none), retried until read; None when stopped first."""
        name = config.api_key_secret_name
        if not name:
            return ""
        backoff = self._backoff()
        secrets = self._aws.client("secretsmanager", self.config.region)
        while not stop.is_set():
            try:
                value = secrets.get_secret_value(SecretId=name).get("SecretString")
                if value is not None:
                    log_event("search_secret_read", secret=name)
                    return str(value)
                reason = "the secret has no string value"
            except (BotoCoreError, ClientError) as exc:
                reason = f"{error_code(exc)}: {str(exc)[:MAX_REASON_CHARS]}"
            delay = backoff.next_delay()
            warn("search_secret_unavailable", secret=name, reason=reason, retry_in_s=round(delay, 2))
            stop.wait(delay)
        return None

    def _serve(self, config: SearchAgentConfig, api_key: str, stop: threading.Event) -> None:
        """Run the service; start it again (after the backoff) whenever it exits, until the stop."""
        backoff = self._backoff()
        health_url = self.options.health_url or f"http://127.0.0.1:{config.port}{config.health_path}"
        while not stop.is_set():
            healthy = False
            try:
                run = self._start(config, api_key)
            except OSError as exc:
                delay = backoff.next_delay()
                warn("search_service_start_failed", reason=str(exc)[:MAX_REASON_CHARS], retry_in_s=round(delay, 2))
                stop.wait(delay)
                continue
            while run.poll() is None and not stop.is_set():
                if not healthy and http_ok(health_url):
                    healthy = True
                    log_event("search_service_healthy", pid=run.pid, after_s=round(time.monotonic() - run.started, 1))
                stop.wait(self.settings.poll_s)
            if stop.is_set():
                return
            ran_s = time.monotonic() - run.started
            if healthy or ran_s >= SERVICE_STABLE_SECONDS:
                backoff.reset()
            delay = backoff.next_delay()
            warn(
                "search_service_exited",
                pid=run.pid,
                exit_code=run.poll(),
                ran_s=round(ran_s, 1),
                last_lines=list(run.last_lines(self.settings.last_lines)),
                restart_in_s=round(delay, 2),
            )
            self.current = None
            stop.wait(delay)

    # --- the service ----------------------------------------------------------------------------------

    def command(self, config: SearchAgentConfig, api_key: str) -> tuple[list[str], dict[str, str]]:
        """The service's argv and environment: the sandbox's command, or `docker run` of the image."""
        assert self.volume is not None  # noqa: S101
        port = str(config.port)
        mount = str(self.volume.mount_path)
        environment = {**os.environ, "SEARCH_API_KEY": api_key, "SEARCH_PORT": port}
        if self.options.search_command:
            environment["SEARCH_DATA_DIR"] = mount
            return fill(self.options.search_command, port=port, data=mount), environment
        environment["SEARCH_DATA_DIR"] = CONTAINER_DATA
        gpus = ["--gpus", "all"] if self._has_gpus() else []
        argv = [
            self._docker,
            "run",
            "--rm",
            "--name",
            CONTAINER_NAME,
            *gpus,
            "-p",
            f"{port}:{port}",
            "-v",
            f"{mount}:{CONTAINER_DATA}:ro",
            "-e",
            "SEARCH_API_KEY",  # from the client's environment: the key is in no process's arguments
            "-e",
            f"SEARCH_DATA_DIR={CONTAINER_DATA}",
            "-e",
            f"SEARCH_PORT={port}",
            config.image,
        ]
        return argv, environment

    def _start(self, config: SearchAgentConfig, api_key: str) -> ServiceRun:
        argv, environment = self.command(config, api_key)
        docker = None if self.options.search_command else self._docker
        if docker is not None:
            docker_call(docker, "rm", "-f", CONTAINER_NAME)  # one left by a killed client or an earlier agent
        run = ServiceRun(argv, environment, self.log_path, docker)
        self.current = run
        self.starts += 1
        self.state.set_workload(
            {
                "runner": "search",
                "pid": run.pid,
                "start_ticks": process_start_ticks(run.pid),
                "boot_id": boot_id(),
                "container": CONTAINER_NAME if docker else None,
            }
        )
        log_event("search_service_started", pid=run.pid, command=argv, start=self.starts, port=config.port)
        return run

    def _stop_service(self) -> None:
        run, self.current = self.current, None
        if run is None:
            return
        exit_code = run.stop(SERVICE_STOP_GRACE_SECONDS)
        self.state.set_workload(None)
        log_event("search_service_stopped", pid=run.pid, exit_code=exit_code)

    def _stop_leftover(self) -> None:
        """The service an earlier agent started and did not stop (it was killed): the port must be free."""
        record = self.state.workload or {}
        if record.get("runner") != "search":
            return
        if record.get("container") and docker_call(self._docker, "rm", "-f", str(record["container"])):
            log_event("search_leftover_stopped", container=record["container"])
        pid, ticks = record.get("pid"), record.get("start_ticks")
        if pid and record.get("boot_id") == boot_id() and process_start_ticks(pid) == ticks:
            log_event("search_leftover_stopped", pid=pid)
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + AGENT_PROCESS_EXIT_SECONDS
            while process_start_ticks(pid) == ticks and time.monotonic() < deadline:
                time.sleep(EXIT_CHECK_S)
        self.state.set_workload(None)

    def _backoff(self) -> Backoff:
        return Backoff(self.settings.backoff_base_s, self.settings.backoff_cap_s)


def docker_call(docker: str, *args: str, timeout: float = 0) -> bool:
    """A docker command that may fail (no such container): True when it succeeded."""
    try:
        done = subprocess.run(
            [docker, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout + AGENT_DOCKER_CALL_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        warn("docker_call_failed", command=args[0], reason=str(exc)[:MAX_REASON_CHARS])
        return False
    return done.returncode == 0


def _signal_group(pid: int, signum: signal.Signals) -> None:
    try:
        os.killpg(pid, signum)  # its own session: pgid == pid, so this reaches what it started too
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        warn("search_signal_failed", pid=pid, signal=signum.name, reason=str(exc))

"""Model deployments' ECS tasks, run on simulated nodes as the ECS agent would run their containers.

A node is a simulated instance tagged Service=model-node (a member of a node group `<prefix>-nodes-<class>`); the
fleet registers it in the GPU cluster with its GPU ids (ecs_placement) and runs its agent in node mode with a
stand-in NVML (stand_in_nvml/, gpu_files.py). This runtime hears of ECS tasks through ecs_placement's listener:

- StartTask or RunTask of a task startedBy DEPLOYMENT_STARTED_BY, or of any task on a node: its essential container
  runs as the stand-in inference server (model_server.py) in a process of its own, inside the container's
  environment (container_entry.py: the task definition's environment, the overrides', resolved secrets), on a free
  port of this machine. The model is the command's (`--served-model-name`, `--model`); the GPUs are the ids ECS took
  from the container instance for the task (its container's `gpuIds`). DescribeTasks then shows what ECS shows:
  lastStatus RUNNING, startedAt, the container's `networkBindings` (containerPort of the mapping, hostPort = the port
  it listens on: with `hostPort: 0` ECS picks a free one, as here), `gpuIds`, and `healthStatus` (task and
  container) UNKNOWN until the server answers the task definition's health check path with 200, then HEALTHY;
  after that, `retries` (default 3) failed checks in a row make it UNHEALTHY (failures inside `startPeriod`, on the
  sandbox clock, do not count before the first success). A container without a health check stays UNKNOWN, as on
  ECS. Checks run every TICK_SECONDS real seconds, whatever the task definition's interval.
- StopTask: the server gets SIGTERM (SIGKILL after STOP_GRACE_SECONDS), the task is STOPPED with the reason given
  (default "Task stopped by user"), stopCode UserInitiated and the container's exit code; its GPUs were given back by
  the stop (ecs_placement, exactly its own, once).
- The server exiting by itself (killed, crashed): STOPPED, stopCode EssentialContainerExited, "Essential container in
  task exited", its exit code (128 + the signal for a signal, as Docker reports), GPUs given back.
- A container that cannot be created (a secret the execution role may not read, a command that does not start):
  STOPPED, stopCode TaskFailedToStart, the reason (at the next check, as ECS: StartTask itself succeeds).
- The node terminated: its tasks STOPPED, "Host EC2 instance terminated", stopCode TerminationNotice, no exit code.

Every change of lastStatus puts an `ECS Task State Change` (source aws.ecs, the detail as AWS sends it: taskArn,
clusterArn, containerInstanceArn, lastStatus, desiredStatus, startedBy, stoppedReason, stopCode, containers with
name, exitCode, lastStatus, networkBindings, gpuIds, ...) on the region's default bus, where the worker stack's rule
forwards deployment tasks' to the hub. As on AWS, the detail carries no health: health is DescribeTasks'.

An endpoint `http://<node private ip>:<host port>` is reachable from the test process through `reach(url)` (the local
URL it maps to) and from functions in the node's VPC through the network model (instance_network.py: the node's
`task_ports`). The GPUs' figures while a task runs: memory MODEL_MEMORY_SHARE of each of its GPUs once its model
loaded (its first healthy check), utilization 0 until a test sets it (`set_utilization`, or the server's own POST
/_sandbox/utilization); both back to 0 when it stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spothub.sandbox import gpu_files
from spothub.sandbox.clock import SandboxClock, Ticker
from spothub.sandbox.ports import free_port
from spothub.sandbox.serving_container import (
    ContainerStartError,
    model_of,
    port_and_health_path,
    resolve_secret,
)
from spothub.sandbox.shared_clock import child_environment
from spothub_core.contracts import (
    AWS_EVENT_SOURCES,
    DEPLOYMENT_STARTED_BY,
    MODEL_NODE_SERVICE,
    AwsEvent,
    InstanceTag,
    deployment_task_family,
)

if TYPE_CHECKING:
    from spothub.sandbox.fleet import Fleet, SimulatedInstance
    from spothub.sandbox.iam.enforcer import Enforcer

MODEL_SERVER = Path(__file__).with_name("model_server.py")
CONTAINER_ENTRY = Path(__file__).with_name("container_entry.py")
# How long the stand-in "loads the model" before its health check passes, in real seconds.
MODEL_LOAD_SECONDS = 1.0
TICK_SECONDS = 0.2
HEALTH_CHECK_TIMEOUT_SECONDS = 1.0
# ECS waits the container's stopTimeout (30 s by default) between SIGTERM and SIGKILL; the sandbox waits this long
# at most (real seconds): the stand-in stops at once on SIGTERM.
STOP_GRACE_SECONDS = 5.0
DEFAULT_HEALTH_RETRIES = 3

STOPPED = "STOPPED"
RUNNING = "RUNNING"
USER_INITIATED = "UserInitiated"
ESSENTIAL_CONTAINER_EXITED = "EssentialContainerExited"
TASK_FAILED_TO_START = "TaskFailedToStart"
TERMINATION_NOTICE = "TerminationNotice"
DEFAULT_STOP_REASON = "Task stopped by user"
CONTAINER_EXITED_REASON = "Essential container in task exited"
HOST_TERMINATED_REASON = "Host EC2 instance terminated"

Recorder = Callable[[str, str, dict[str, Any]], Any]


class TaskNotFound(KeyError):
    """No deployment task the runtime runs (or ran) matches."""


class Unreachable(ConnectionError):
    """No running deployment task serves this address."""


@dataclass
class TaskRun:
    """One task the runtime runs (or ran): where, what, and how it is now."""

    task_arn: str
    region: str
    cluster: str  # the cluster's name
    cluster_arn: str
    container_instance_arn: str
    instance_id: str
    private_ip: str | None
    family: str
    deployment_id: str | None
    started_by: str
    container: str  # the essential container's name
    container_port: int | None
    host_port: int | None
    local_port: int
    gpu_ids: list[str]
    gpu_dir: Path
    health_path: str | None  # None: the container has no health check
    start_period_s: float
    retries: int
    stop_grace_s: float
    log_path: Path
    spec_path: Path
    started_at: float  # epoch seconds (real time, as the hub's functions see it)
    started_on_clock: float  # the sandbox clock's time at start: the health check's start period follows it
    model: str | None = None
    process: subprocess.Popen[bytes] | None = None
    start_error: str | None = None
    health: str = "UNKNOWN"
    healthy_at: float | None = None
    failures: int = 0
    last_status: str = RUNNING
    desired_status: str = RUNNING
    stopped_at: float | None = None
    stopped_reason: str = ""
    stop_code: str = ""
    exit_code: int | None = None
    ending: bool = False  # being stopped: the StopTask this runtime itself calls is not heard twice
    events: list[str] = field(default_factory=list)  # lastStatus of each ECS Task State Change put

    @property
    def endpoint(self) -> str | None:
        if self.private_ip is None or self.host_port is None:
            return None
        return f"http://{self.private_ip}:{self.host_port}"

    def describe(self) -> dict[str, Any]:
        return {
            "task_arn": self.task_arn,
            "region": self.region,
            "cluster": self.cluster,
            "instance_id": self.instance_id,
            "container_instance_arn": self.container_instance_arn,
            "deployment_id": self.deployment_id,
            "family": self.family,
            "started_by": self.started_by,
            "model": self.model,
            "endpoint": self.endpoint,
            "local_url": f"http://127.0.0.1:{self.local_port}",
            "host_port": self.host_port,
            "gpu_ids": list(self.gpu_ids),
            "health": self.health,
            "last_status": self.last_status,
            "desired_status": self.desired_status,
            "started_at": _iso(self.started_at),
            "healthy_at": _iso(self.healthy_at) if self.healthy_at else None,
            "stopped_at": _iso(self.stopped_at) if self.stopped_at else None,
            "stopped_reason": self.stopped_reason or None,
            "stop_code": self.stop_code or None,
            "exit_code": self.exit_code,
            "pid": self.process.pid if self.process else None,
            "log": str(self.log_path),
        }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def exit_code_of(returncode: int | None) -> int | None:
    """Docker's exit code of a container's process: 128 + the signal that ended it."""
    if returncode is None:
        return None
    return 128 - returncode if returncode < 0 else returncode


class DeploymentTasks:
    """The runtime: ecs_placement's TaskListener, ticked by its own thread; see the module docstring."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        account: str,
        clock: SandboxClock,
        record: Recorder,
        work_dir: Path,
        environment: dict[str, str],
        iam: Enforcer | None = None,
    ) -> None:
        self._fleet = fleet
        self._account = account
        self._clock = clock
        self._record = record
        self._work_dir = work_dir
        self._environment = environment  # the emulator's endpoint and the administrator's key (secrets)
        self._iam = iam
        self._lock = threading.RLock()
        self._runs: dict[str, TaskRun] = {}
        self._ticker = Ticker(
            "sandbox-deployment-tasks",
            self.tick,
            TICK_SECONDS,
            lambda exc: record("failure", f"deployment tasks: {exc}", {"error": repr(exc)}),
        )

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        """The sandbox stops: every task's process goes (the tasks are not reported stopped: ECS is gone too)."""
        self._ticker.stop()
        with self._lock:
            runs = [r for r in self._runs.values() if r.last_status != STOPPED]
        for run in runs:
            _terminate(run, 0.0)

    def forget(self) -> None:
        """A sandbox reset: the stopped tasks are forgotten (the running ones went with their nodes)."""
        with self._lock:
            self._runs = {arn: run for arn, run in self._runs.items() if run.last_status != STOPPED}

    # --- what ECS tells (ecs_placement.TaskListener) ----------------------------------------------------

    def started(self, backend: Any, tasks: list[Any]) -> None:
        if getattr(backend, "account_id", None) != self._account:
            return  # another account's emulator state (a test's own): not the sandbox's fleet
        for task in tasks:
            instance = self._instance_of(backend, task)
            if instance is None:
                continue
            if task.started_by != DEPLOYMENT_STARTED_BY and instance.service != MODEL_NODE_SERVICE:
                continue
            self._start(backend, task, instance)

    def stopped(self, backend: Any, task: Any, reason: str | None) -> None:
        """A StopTask (the controller's, or a test's): the container is stopped, the task reported stopped."""
        with self._lock:
            run = self._runs.get(task.task_arn)
            if run is None or run.ending or run.last_status == STOPPED:
                return
            run.ending = True
        run.desired_status = STOPPED
        exit_code = _terminate(run, run.stop_grace_s)
        self._ended(task, run, USER_INITIATED, reason or DEFAULT_STOP_REASON, exit_code)

    # --- what the fleet tells ---------------------------------------------------------------------------

    def host_terminated(self, instance: SimulatedInstance) -> None:
        """The node is gone: its tasks' containers with it (killed, no exit code), the tasks stopped."""
        with self._lock:
            runs = [
                r
                for r in self._runs.values()
                if r.instance_id == instance.instance_id and r.last_status != STOPPED and not r.ending
            ]
            for run in runs:
                run.ending = True
        from moto.ecs.models import ecs_backends  # noqa: PLC0415

        for run in runs:
            _terminate(run, 0.0)
            backend = ecs_backends[self._account][run.region]
            task = backend.tasks.get(run.cluster, {}).get(run.task_arn)
            run.desired_status = STOPPED
            if task is not None:
                task.last_status = STOPPED
                task.desired_status = STOPPED
            self._ended(task, run, TERMINATION_NOTICE, HOST_TERMINATED_REASON, None)

    # --- the checks ---------------------------------------------------------------------------------------

    def tick(self) -> None:
        from moto.ecs.models import ecs_backends  # noqa: PLC0415

        with self._lock:
            live = [r for r in self._runs.values() if r.last_status != STOPPED and not r.ending]
        for run in live:
            backend = ecs_backends[self._account][run.region]
            task = backend.tasks.get(run.cluster, {}).get(run.task_arn)
            if run.start_error is not None:
                self._stop_task(backend, run, TASK_FAILED_TO_START, run.start_error, None)
            elif run.process is not None and run.process.poll() is not None:
                code = exit_code_of(run.process.poll())
                self._stop_task(backend, run, ESSENTIAL_CONTAINER_EXITED, CONTAINER_EXITED_REASON, code)
            elif task is not None and run.health_path is not None:
                self._check_health(run, task)

    def _check_health(self, run: TaskRun, task: Any) -> None:
        answered = _http_ok(f"http://127.0.0.1:{run.local_port}{run.health_path}")
        with self._lock:
            if run.ending or run.last_status == STOPPED:
                return
            if answered:
                run.failures = 0
                if run.health != "HEALTHY":
                    first = run.healthy_at is None
                    run.health, run.healthy_at = "HEALTHY", run.healthy_at or time.time()
                    _set_health(task, "HEALTHY")
                    if first:
                        for uuid in run.gpu_ids:
                            total = gpu_files.memory_total_mib(run.gpu_dir, uuid)
                            memory = int(total * gpu_files.MODEL_MEMORY_SHARE)
                            gpu_files.set_figures(run.gpu_dir, uuid, memory_used_mib=memory)
                    self._record(
                        "task-healthy",
                        f"{run.instance_id}: {_short(run.task_arn)} ({run.deployment_id or run.family}) healthy",
                        {"task_arn": run.task_arn},
                    )
                return
            in_start_period = self._clock.now() - run.started_on_clock < run.start_period_s
            if run.healthy_at is None and in_start_period:
                return
            run.failures += 1
            if run.failures >= run.retries and run.health != "UNHEALTHY":
                run.health = "UNHEALTHY"
                _set_health(task, "UNHEALTHY")
                self._record(
                    "task-unhealthy",
                    f"{run.instance_id}: {_short(run.task_arn)} fails its health check",
                    {"task_arn": run.task_arn},
                )

    # --- control: what the tests and the demo do ----------------------------------------------------------

    def runs(self, deployment_id: str | None = None) -> list[TaskRun]:
        with self._lock:
            found = list(self._runs.values())
        return [r for r in found if deployment_id is None or r.deployment_id == deployment_id]

    def describe(self, deployment_id: str | None = None) -> list[dict[str, Any]]:
        return [run.describe() for run in self.runs(deployment_id)]

    def run(self, task_arn: str) -> TaskRun:
        with self._lock:
            found = self._runs.get(task_arn) or next(
                (r for arn, r in self._runs.items() if arn.rsplit("/", 1)[-1] == task_arn), None
            )
        if found is None:
            raise TaskNotFound(f"no deployment task {task_arn} runs or ran in the sandbox")
        return found

    def kill(self, task_arn: str, sig: int = signal.SIGKILL, *, wait_s: float = 10.0) -> dict[str, Any]:
        """Kill the task's container process (SIGKILL: exit code 137), as a crash would; returns the task once ECS
        reported it stopped (EssentialContainerExited), or as it is after wait_s."""
        run = self.run(task_arn)
        if run.last_status == STOPPED or run.process is None:
            raise ValueError(f"{task_arn} is not running ({run.last_status})")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.process.pid, sig)
        self._record("task-killed", f"{run.instance_id}: {_short(run.task_arn)} killed ({sig})", run.describe())
        deadline = time.monotonic() + wait_s
        while run.last_status != STOPPED and time.monotonic() < deadline:
            time.sleep(0.05)
        return run.describe()

    def set_utilization(
        self,
        utilization_pct: float,
        *,
        task_arn: str | None = None,
        instance_id: str | None = None,
        gpu_index: int | None = None,
    ) -> list[str]:
        """Set the GPU utilization NVML reports: of a task's GPUs, or of a node's (all, or the one at gpu_index);
        returns the UUIDs set."""
        if not 0 <= utilization_pct <= 100:  # noqa: PLR2004
            raise ValueError(f"utilization_pct must be 0 to 100, got {utilization_pct}")
        if (task_arn is None) == (instance_id is None):
            raise ValueError("name a task_arn or an instance_id")
        if task_arn is not None:
            run = self.run(task_arn)
            directory, uuids = run.gpu_dir, list(run.gpu_ids)
        else:
            instance = self._fleet.instances.get(str(instance_id))
            if instance is None or instance.service != MODEL_NODE_SERVICE:
                raise ValueError(f"{instance_id} is not a deployment node of the sandbox")
            directory = self.gpu_dir(instance)
            uuids = [str(g["uuid"]) for g in gpu_files.inventory(directory)]
        if gpu_index is not None:
            if not 0 <= gpu_index < len(uuids):
                raise ValueError(f"gpu_index {gpu_index} is not one of the {len(uuids)} GPUs")
            uuids = [uuids[gpu_index]]
        for uuid in uuids:
            gpu_files.set_figures(directory, uuid, utilization_pct=utilization_pct)
        self._record(
            "gpu-utilization",
            f"{task_arn or instance_id}: {utilization_pct:g}% on {len(uuids)} GPU(s)",
            {"task_arn": task_arn, "instance_id": instance_id, "gpu_ids": uuids, "utilization_pct": utilization_pct},
        )
        return uuids

    def reach(self, url: str) -> str:
        """The local URL that an endpoint URL (`http://<node private ip>:<host port>/...`) reaches on this machine;
        Unreachable when no running task of the sandbox serves there."""
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        with self._lock:
            run = next(
                (
                    r
                    for r in self._runs.values()
                    if r.last_status != STOPPED and r.private_ip == parts.hostname and r.host_port == parts.port
                ),
                None,
            )
        if run is None:
            raise Unreachable(f"{parts.hostname}:{parts.port}: no running deployment task listens there")
        return urllib.parse.urlunsplit(("http", f"127.0.0.1:{run.local_port}", parts.path, parts.query, ""))

    @staticmethod
    def gpu_dir(instance: SimulatedInstance) -> Path:
        """Where a node's GPU files are (its stand-in NVML's SPOTHUB_SANDBOX_GPU_DIR)."""
        assert instance.root_dir is not None  # noqa: S101 (every simulated instance has one)
        return instance.root_dir.parent / "gpus"

    # --- internals ----------------------------------------------------------------------------------------

    def _instance_of(self, backend: Any, task: Any) -> SimulatedInstance | None:
        reference = str(task.container_instance_arn or "").rsplit("/", 1)[-1]
        container_instance = backend.container_instances.get(task.cluster_name, {}).get(reference)
        if container_instance is None:
            return None
        instance = self._fleet.instances.get(container_instance.ec2_instance_id)
        if instance is None or instance.state == "terminated":
            return None
        return instance

    def _start(self, backend: Any, task: Any, instance: SimulatedInstance) -> None:
        definition = backend.describe_task_definition(task.task_definition_arn)
        containers = list(definition.container_definitions or [])
        container = next((c for c in containers if c.get("essential", True)), containers[0] if containers else {})
        name = str(container.get("name", ""))
        override = next((o for o in (task.overrides or {}).get("containerOverrides", []) if o.get("name") == name), {})
        command = [str(part) for part in (override.get("command") or container.get("command") or [])]
        mappings = [m for m in container.get("portMappings") or [] if (m.get("protocol") or "tcp") == "tcp"]
        container_port, health_path = port_and_health_path(container)
        local_port = free_port()
        host_port: int | None = None
        if mappings:
            host_port = int(mappings[0].get("hostPort") or 0) or local_port
            container_port = int(mappings[0].get("containerPort") or container_port or 0) or None
        health = container.get("healthCheck") or None
        task_id = task.task_arn.rsplit("/", 1)[-1]
        tasks_dir = self._work_dir / "instances" / instance.instance_id / "tasks"
        tasks_dir.mkdir(parents=True, exist_ok=True)
        gpu_ids = list(getattr(task.containers[0], "gpu_ids", []) if task.containers else [])
        prefix = instance.imds.tags.get(InstanceTag.PREFIX, "")
        family_start = deployment_task_family(prefix, "")
        run = TaskRun(
            task_arn=task.task_arn,
            region=task.region_name,
            cluster=task.cluster_name,
            cluster_arn=task.cluster_arn,
            container_instance_arn=str(task.container_instance_arn),
            instance_id=instance.instance_id,
            private_ip=instance.private_ip,
            family=definition.family,
            deployment_id=definition.family.removeprefix(family_start)
            if prefix and definition.family.startswith(family_start)
            else None,
            started_by=task.started_by or "",
            container=name,
            container_port=container_port,
            host_port=host_port,
            local_port=local_port,
            gpu_ids=gpu_ids,
            gpu_dir=self.gpu_dir(instance),
            health_path=health_path if health else None,
            start_period_s=float((health or {}).get("startPeriod") or 0),
            retries=int((health or {}).get("retries") or DEFAULT_HEALTH_RETRIES),
            stop_grace_s=min(float(container.get("stopTimeout") or 30), STOP_GRACE_SECONDS),
            log_path=tasks_dir / f"{task_id}.log",
            spec_path=tasks_dir / f"{task_id}.container.json",
            started_at=time.time(),
            started_on_clock=self._clock.now(),
            model=model_of(command),
        )
        try:
            environment = self._container_environment(definition, container, override, instance)
            run.process = self._spawn(run, instance, environment)
        except (ContainerStartError, OSError) as exc:
            run.start_error = str(exc) if isinstance(exc, ContainerStartError) else f"CannotStartContainerError: {exc}"
        task.created_at = _when(run.started_at)
        task.launch_type = task.launch_type or "EC2"
        task.health_status = "UNKNOWN"
        status = RUNNING
        if run.start_error is not None:  # ECS stops it, with the reason, before it ever runs (see tick)
            status = run.last_status = task.last_status = "PENDING"
        else:
            task.started_at = _when(run.started_at)
            if host_port is not None:
                instance.task_ports[host_port] = local_port
        for moto_container in task.containers:
            moto_container.last_status = status
            moto_container.exitCode = None
            moto_container.health_status = "UNKNOWN"
            moto_container.network_bindings = [
                {
                    "bindIP": "0.0.0.0",  # noqa: S104 (what ECS reports for a bridge-mode binding)
                    "containerPort": int(m.get("containerPort") or 0),
                    "hostPort": host_port if index == 0 else int(m.get("hostPort") or 0),
                    "protocol": "tcp",
                }
                for index, m in enumerate(mappings)
            ]
        self._put_event(task, run)
        # Known to the checks only now: a container that exits at once is reported stopped after it was running.
        with self._lock:
            self._runs[run.task_arn] = run
        self._record(
            "task-started",
            f"{instance.instance_id}: {_short(run.task_arn)} ({run.deployment_id or run.family}) {run.model or ''} "
            f"on {len(gpu_ids)} GPU(s), port {host_port}"
            + (f": it cannot start: {run.start_error}" if run.start_error else ""),
            run.describe(),
        )

    def _container_environment(
        self, definition: Any, container: dict[str, Any], override: dict[str, Any], instance: SimulatedInstance
    ) -> dict[str, str]:
        """The container's environment as ECS hands it to Docker: the definition's, the override's, the secrets
        fetched as the task execution role (a refusal: ContainerStartError, the task's stoppedReason)."""
        environment = {str(e["name"]): str(e.get("value", "")) for e in container.get("environment") or []}
        environment.update({str(e["name"]): str(e.get("value", "")) for e in override.get("environment") or []})
        secrets = container.get("secrets") or []
        if secrets:
            execution_role = getattr(definition, "execution_role_arn", None)
            if not execution_role:
                raise ContainerStartError(
                    f"ClientException: {definition.arn} has container secrets and no task execution role to fetch them"
                )
            keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            credentials = {key: self._environment.get(key, "") for key in keys}
            if self._iam is not None:
                credentials = self._iam.principals.credentials_for(execution_role, instance.instance_id)
            endpoint = self._environment.get("AWS_ENDPOINT_URL", "")
            for secret in secrets:
                value = resolve_secret(str(secret["valueFrom"]), instance.region, endpoint, credentials)
                environment[str(secret["name"])] = value
        return environment

    def _spawn(self, run: TaskRun, instance: SimulatedInstance, environment: dict[str, str]) -> subprocess.Popen[bytes]:
        server = [sys.executable, str(MODEL_SERVER), "--port", str(run.local_port)]
        server += ["--load-seconds", str(MODEL_LOAD_SECONDS), "--instance-id", instance.instance_id]
        if run.model:
            server += ["--model", run.model]
        if run.health_path:
            server += ["--health-path", run.health_path]
        for uuid in run.gpu_ids:
            server += ["--gpu-file", str(run.gpu_dir / f"{uuid}.json")]
        spec = {
            "environment": child_environment(  # the host's clock, which is the sandbox's (shared_clock.py)
                {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "PYTHONUNBUFFERED": "1",
                    # The fleet finds an instance's processes by its IMDS endpoint (fleet._stop_instance_processes).
                    "SPOTHUB_IMDS_ENDPOINT": instance.imds.endpoint,
                    **environment,
                },
                self._environment,
            ),
            "command": server,
        }
        # It may hold the container's secrets: readable by this user only, removed when the task stops.
        with os.fdopen(os.open(run.spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as spec_file:
            json.dump(spec, spec_file)
        with run.log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, str(CONTAINER_ENTRY), str(run.spec_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )

    def _stop_task(self, backend: Any, run: TaskRun, stop_code: str, reason: str, exit_code: int | None) -> None:
        """Stop a task ECS saw end by itself: StopTask gives its resources back (once), then it is reported."""
        with self._lock:
            if run.ending or run.last_status == STOPPED:
                return
            run.ending = True
        _terminate(run, 0.0)
        run.desired_status = STOPPED
        task = None
        with contextlib.suppress(Exception):  # the cluster or the task gone (a test's own cleanup)
            task = backend.stop_task(run.cluster, run.task_arn, reason)
        self._ended(task, run, stop_code, reason, exit_code)

    def _ended(self, task: Any, run: TaskRun, stop_code: str, reason: str, exit_code: int | None) -> None:
        now = time.time()
        run.last_status, run.stopped_at = STOPPED, now
        run.stopped_reason, run.stop_code, run.exit_code = reason, stop_code, exit_code
        if task is not None:
            task.stopped_reason, task.stop_code = reason, stop_code
            task.stopping_at = task.execution_stopped_at = task.stopped_at = _when(now)
            for container in task.containers:
                container.last_status = STOPPED
                container.exitCode = exit_code
        for uuid in run.gpu_ids:
            gpu_files.set_figures(run.gpu_dir, uuid, utilization_pct=0, memory_used_mib=0)
        instance = self._fleet.instances.get(run.instance_id)
        if instance is not None and run.host_port is not None:
            instance.task_ports.pop(run.host_port, None)
        run.spec_path.unlink(missing_ok=True)
        if task is not None:
            self._put_event(task, run)
        self._record(
            "task-stopped",
            f"{run.instance_id}: {_short(run.task_arn)} ({run.deployment_id or run.family}) {stop_code}: {reason}"
            + (f" (exit code {exit_code})" if exit_code is not None else ""),
            run.describe(),
        )

    def _put_event(self, task: Any, run: TaskRun) -> None:
        from moto.events.models import events_backends  # noqa: PLC0415

        detail = task_state_change(task, run)
        run.events.append(run.last_status)
        events_backends[self._account][run.region].put_events(
            [
                {
                    "Source": AWS_EVENT_SOURCES[AwsEvent.ECS_TASK_STATE_CHANGE],
                    "DetailType": AwsEvent.ECS_TASK_STATE_CHANGE.value,
                    "Detail": json.dumps(detail),
                    "Resources": [run.task_arn],
                    "Time": self._clock.now(),
                }
            ]
        )


def task_state_change(task: Any, run: TaskRun) -> dict[str, Any]:
    """The detail of ECS Task State Change as ECS sends it (no health: DescribeTasks has it)."""
    containers = []
    for container in task.containers:
        entry: dict[str, Any] = {
            "containerArn": container.container_arn,
            "lastStatus": run.last_status,
            "name": container.name,
            "taskArn": run.task_arn,
            "networkBindings": list(getattr(container, "network_bindings", [])),
            "gpuIds": list(getattr(container, "gpu_ids", [])),
            "cpu": str(container.cpu or 0),
        }
        if run.last_status == STOPPED and run.exit_code is not None:
            entry["exitCode"] = run.exit_code
        containers.append(entry)
    detail: dict[str, Any] = {
        "clusterArn": run.cluster_arn,
        "containerInstanceArn": run.container_instance_arn,
        "containers": containers,
        "createdAt": _iso(run.started_at),
        "desiredStatus": run.desired_status,
        "group": task.group,
        "launchType": "EC2",
        "lastStatus": run.last_status,
        "overrides": task.overrides or {"containerOverrides": [{"name": run.container}]},
        "startedBy": run.started_by,
        "taskArn": run.task_arn,
        "taskDefinitionArn": task.task_definition_arn,
        "updatedAt": _iso(run.stopped_at or run.started_at),
        "version": len(run.events) + 1,
    }
    if run.start_error is None:
        detail["startedAt"] = _iso(run.started_at)
    if run.last_status == STOPPED:
        stopped_at = _iso(run.stopped_at or time.time())
        detail.update(
            stoppedReason=run.stopped_reason,
            stopCode=run.stop_code,
            stoppingAt=stopped_at,
            executionStoppedAt=stopped_at,
            stoppedAt=stopped_at,
        )
    return detail


def _terminate(run: TaskRun, grace_s: float) -> int | None:
    """SIGTERM to the container's process group, SIGKILL after grace_s (at once with 0); its exit code."""
    process = run.process
    if process is None:
        return None
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
        try:
            process.wait(timeout=grace_s or 5.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5.0)
    return exit_code_of(process.poll())


def _set_health(task: Any, health: str) -> None:
    task.health_status = health
    for container in task.containers:
        container.health_status = health


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_CHECK_TIMEOUT_SECONDS) as answer:  # noqa: S310 (local URL)
            return bool(answer.status == 200)  # noqa: PLR2004
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _short(task_arn: str) -> str:
    return "task/" + task_arn.rsplit("/", 1)[-1][:8]

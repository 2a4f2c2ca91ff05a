"""The agent in batch mode (an instance tagged spothub:job-id): a worker of one batch job. It registers, then
asks the worker API for work until it is told to leave:

  wait       sleep retry_after_s (or batch_poll_s), ask again
  shutdown   leave
  a batch    ack (409: it was taken back, drop it), download its files into Inputs, run the job's container
             with Inputs and Outputs mounted, upload what it wrote, clear both, report completed; a non-zero
             exit, an S3 error, or a run past processing_timeout_s: report failed with the error and the last
             lines of output, and ask again. A 409 on the report: the batch was taken back, drop it.
             The image cannot be pulled (docker run exits 125 saying so), or no container can start here:
             report failed, then leave (fatal: no batch can run on this instance).

A spot interruption notice (IMDS spot/instance-action, polled every poll_s on a thread of its own) stops the
container, reports shutting-down with the batch in hand (the hub puts it back at once, without counting a
failure), and leaves. Leaving: shutting-down reported, then TerminateInstanceInAutoScalingGroup on itself with
ShouldDecrementDesiredCapacity (the group's desired count is the hub's to raise), then the agent exits 0.
A restarted agent that had left only terminates itself again and waits for the instance to go.

The batch in hand is in the state file from the moment it is received. An agent restarted mid-batch (killed,
crashed) stops what its predecessor ran, clears the directories and asks again: the hub answers with the batch
it still holds for this worker, which is processed again from the start (its outputs overwrite the same keys).
The agent's own stop (SIGTERM) stops the container and keeps the batch for the next start.
The control plane going away is retried with the agent's backoff (jittered, capped), the URL re-read from SSM
and the worker registered again; it never ends the worker.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from spothub_agent import __version__
from spothub_agent.aws import AwsClients, error_code, read_parameter
from spothub_agent.backoff import Backoff
from spothub_agent.batch_runner import BatchRun, BatchRunner, RunnerUnavailable, make_batch_runner
from spothub_agent.batch_transfer import BatchTransfer, TransferError, TransferHalted, clear
from spothub_agent.config import AgentConfig
from spothub_agent.control_plane import ApiError, ApiUnavailable, Conflict, ControlPlaneClient, InstanceUnknown
from spothub_agent.gpu import GpuMonitor
from spothub_agent.imds import Imds, ImdsError
from spothub_agent.logs import log_event, warn
from spothub_agent.notices import NOTICE_PATHS, parse_notice
from spothub_agent.settings import Settings
from spothub_agent.state import AgentState
from spothub_core.contracts import NoticeKind
from spothub_core.models.batch_workers import (
    BatchAck,
    BatchAssignment,
    BatchStatusReport,
    WorkerBatchStatus,
    WorkerCommand,
    WorkerRegistration,
    worker_id_of,
)
from spothub_core.timings import AGENT_DRAIN_REPORT_SECONDS

T = TypeVar("T")
Outcome = Literal["next", "error", "leave", "stop"]

# A stopped batch's outputs are never uploaded: the container gets docker stop's own default to exit cleanly.
BATCH_STOP_GRACE_SECONDS = 10
# How often a running container is looked at (an interruption or the agent's stop wakes the wait at once).
RUN_CHECK_SECONDS = 0.2
TERMINATE_ATTEMPTS = 3
MAX_ERROR_CHARS = 4000  # BatchStatusReport.error's limit
# A device node of the NVIDIA driver: a GPU instance whose NVML bindings did not install still gets its GPUs.
NVIDIA_DEVICE = Path("/dev/nvidiactl")


class Halted(Exception):
    """Not an error: an interruption or the agent's stop came first."""


class BatchFailed(Exception):
    """The batch failed (its container exited non-zero, or ran past its time): reported, the worker goes on."""


class FatalRun(Exception):
    """No batch can run on this instance (the image cannot be pulled, no docker): reported, then the worker
    leaves."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(error)
        self.reason = reason


class BatchWorker:
    def __init__(
        self,
        config: AgentConfig,
        settings: Settings,
        imds: Imds,
        aws: AwsClients,
        *,
        state: AgentState | None = None,
        runner: BatchRunner | None = None,
        transfer: BatchTransfer | None = None,
        make_client: Callable[[str], ControlPlaneClient] | None = None,
        gpu: GpuMonitor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.settings = settings
        self.worker_id = worker_id_of(config.job_id, config.instance_id)
        self.state = state or AgentState(settings.state_dir, config.instance_id, clock=clock)
        self.gpu = gpu or GpuMonitor()
        self.runner = runner or make_batch_runner(settings, self.state, self._has_gpus)
        self.transfer = transfer or BatchTransfer(lambda: aws.s3)
        self.inputs = settings.state_dir / "batch" / "Inputs"
        self.outputs = settings.state_dir / "batch" / "Outputs"
        self.registration = WorkerRegistration(
            job_id=config.job_id,
            instance_id=config.instance_id,
            region=config.region,
            availability_zone=config.availability_zone,
            instance_type=config.instance_type,
            capacity_type=config.capacity_type,  # type: ignore[arg-type] (load_config keeps only the known ones)
            agent_version=__version__,
        )
        self._imds = imds
        self._aws = aws
        self._clock = clock
        self._read_api_url = lambda: read_parameter(aws.ssm, f"{config.ssm_prefix}/api-url")
        self._make_client = make_client or (lambda url: ControlPlaneClient(url, config.hub_region, aws.credentials))
        self._client: ControlPlaneClient | None = None
        self._registered = False
        self._backoff = Backoff(settings.backoff_base_s, settings.backoff_cap_s)
        self._halt = threading.Event()  # an interruption or the agent's stop: whatever waits, wakes
        self.interrupted = threading.Event()
        self._imds_failing = False
        self.batches_done = 0

    # --- the loops ------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Work until told to leave (then the instance is terminated and this returns) or stopped."""
        watcher = threading.Thread(target=self._watch, args=(stop,), name="interruption-watch", daemon=True)
        watcher.start()
        try:
            self._work(stop)
        finally:
            self._halt.set()
            self.gpu.close()

    def _watch(self, stop: threading.Event) -> None:
        """The spot interruption notice, every poll_s: sets `interrupted` and wakes whatever the worker waits on."""
        path = NOTICE_PATHS[NoticeKind.INTERRUPTION]
        while not self._halt.is_set():
            if stop.is_set():
                self._halt.set()
                return
            try:
                raw = self._imds.get(path)
            except (ImdsError, OSError) as exc:
                if not self._imds_failing:
                    warn("imds_unreachable", path=path, reason=str(exc))
                self._imds_failing = True
                raw = None
            if raw and raw.strip():
                notice = parse_notice(NoticeKind.INTERRUPTION, raw, self.config.instance_id)
                log_event("interruption_notice", notice_id=notice.notice_id, action=notice.action, time=notice.time)
                self.interrupted.set()
                self._halt.set()
                return
            stop.wait(self.settings.poll_s)

    def _work(self, stop: threading.Event) -> None:
        record = self.state.batch or {}
        if record.get("left"):
            log_event("worker_left_already", worker_id=self.worker_id, **record["left"])
            self._terminate_self()
            stop.wait()  # Restart=always: exiting again would only start the agent again
            return
        if record.get("run"):
            self.runner.clean_up(record["run"])
        if record.get("assignment"):
            log_event("batch_resumed", worker_id=self.worker_id, batch_id=record["assignment"].get("batch_id"))
        self._clear()
        log_event("batch_worker_started", worker_id=self.worker_id, runner=self.settings.batch_runner)
        while True:
            if self.interrupted.is_set():
                self._leave("spot interruption notice")
                return
            if self._halt.is_set():
                self._stopped()
                return
            try:
                answer = self._retrying(lambda client: client.assignment(self.worker_id))
            except Halted:
                continue
            if isinstance(answer, WorkerCommand):
                if answer.command == "shutdown":
                    self._leave(answer.reason or "the job needs no more workers", told=True)
                    return
                if (self.state.batch or {}).get("assignment"):  # from before a restart: the hub holds it no more
                    self.state.set_batch(None)
                self._halt.wait(answer.retry_after_s or self.settings.batch_poll_s)
                continue
            outcome = self._process(answer)
            if outcome in ("leave", "stop"):
                return
            if outcome == "error":
                self._halt.wait(self.settings.batch_poll_s)

    # --- one batch ----------------------------------------------------------------------------------

    def _process(self, batch: BatchAssignment) -> Outcome:
        self.state.set_batch(
            {"assignment": batch.model_dump(mode="json"), "worker_id": self.worker_id, "received_at": self._clock()}
        )
        log_event("batch_assigned", batch_id=batch.batch_id, files=len(batch.file_names), attempt=batch.attempt)
        ack = BatchAck(batch_id=batch.batch_id)
        try:
            self._retrying(lambda client: client.ack(self.worker_id, ack), within=batch.ack_timeout_s)
            deadline = time.monotonic() + batch.processing_timeout_s
            self._clear()
            self.transfer.download(batch, self.inputs, self._halt.is_set)
            self._execute(batch, deadline)
            self.transfer.upload(batch, self.outputs, self._halt.is_set)
        except (Conflict, ApiUnavailable) as exc:  # taken back, or past the ack timeout (the hub takes it back)
            return self._dropped(batch, "ack", exc)
        except (Halted, TransferHalted):
            return self._halted(batch)
        except (TransferError, BatchFailed) as exc:
            return self._report(batch, "failed", str(exc))
        except FatalRun as exc:
            return self._fatal(batch, str(exc), exc.reason)
        return self._report(batch, "completed")

    def _execute(self, batch: BatchAssignment, deadline: float) -> None:
        """Run the batch's container to its end; raises BatchFailed, FatalRun, or Halted when it was stopped."""
        try:
            self.runner.start(batch, self.inputs, self.outputs)
        except RunnerUnavailable as exc:
            raise FatalRun(str(exc), f"no container can start here: {exc}") from exc
        run, timed_out = self._wait_for(deadline)
        if self._halt.is_set() and run.stopped:
            raise Halted
        if timed_out:
            raise BatchFailed(_error(f"still running after {batch.processing_timeout_s}s", run))
        if run.image_failed:
            what = f"the image {batch.image} cannot be pulled"
            raise FatalRun(_error(what, run), what)
        if run.exit_code != 0:
            raise BatchFailed(_error(f"exit code {run.exit_code}", run))

    def _wait_for(self, deadline: float) -> tuple[BatchRun, bool]:
        """The container's end; stopped on an interruption, the agent's stop, or the processing deadline."""
        timed_out = False
        while self.runner.poll() is None:
            if self._halt.is_set():
                self.runner.stop(BATCH_STOP_GRACE_SECONDS)
                break
            if time.monotonic() >= deadline:
                timed_out = True
                self.runner.stop(BATCH_STOP_GRACE_SECONDS)
                break
            self._halt.wait(min(RUN_CHECK_SECONDS, max(0.0, deadline - time.monotonic())))
        return self.runner.result(), timed_out

    def _report(self, batch: BatchAssignment, status: WorkerBatchStatus, error: str | None = None) -> Outcome:
        """Completed or failed, to the hub; the directories cleared first (nothing of it is needed any more)."""
        self._clear()
        report = BatchStatusReport(
            batch_id=batch.batch_id, status=status, error=error[:MAX_ERROR_CHARS] if error else None
        )
        self.state.update_batch(report=report.model_dump(mode="json"))
        log_level = log_event if status == "completed" else warn
        log_level(f"batch_{status}", batch_id=batch.batch_id, error=error)
        try:
            self._retrying(lambda client: client.report(self.worker_id, report), within=batch.processing_timeout_s)
        except (Conflict, ApiUnavailable) as exc:  # taken back, or the hub away past the batch's own deadline
            return self._dropped(batch, status, exc)
        except Halted:
            return self._halted(batch, report)
        self.state.set_batch(None)
        self.batches_done += 1
        return "next" if status == "completed" else "error"

    def _fatal(self, batch: BatchAssignment, error: str, reason: str) -> Outcome:
        """No batch can run on this instance: this one failed, and the worker leaves."""
        outcome = self._report(batch, "failed", error)
        if outcome in ("leave", "stop"):
            return outcome
        self._leave(reason)
        return "leave"

    def _dropped(self, batch: BatchAssignment, call: str, exc: ApiError) -> Outcome:
        """The batch is not this worker's any more (409), or the hub could not be told in time."""
        warn("batch_dropped", batch_id=batch.batch_id, call=call, reason=str(exc)[:300])
        self._clear()
        self.state.set_batch(None)
        return "error"

    def _halted(self, batch: BatchAssignment, pending: BatchStatusReport | None = None) -> Outcome:
        """An interruption (leave, the batch handed back, or its result if it has one) or the agent's stop."""
        if self.interrupted.is_set():
            self._leave(
                "spot interruption notice", holding=batch.batch_id if pending is None else None, pending=pending
            )
            return "leave"
        self._stopped()
        return "stop"

    def _stopped(self) -> None:
        """The agent's own stop: the batch (if any) stays in the state file, processed again at the next start."""
        held = (self.state.batch or {}).get("assignment") or {}
        log_event("batch_worker_stopped", worker_id=self.worker_id, batch_id=held.get("batch_id"))

    # --- leaving --------------------------------------------------------------------------------------

    def _leave(
        self,
        reason: str,
        *,
        told: bool = False,
        holding: str | None = None,
        pending: BatchStatusReport | None = None,
    ) -> None:
        """Report shutting-down (a result first, when there is one), leave the group, record it. The reason goes
        with the report unless the hub itself said shutdown (`told`): it is not an error then."""
        log_event("worker_leaving", worker_id=self.worker_id, reason=reason, batch_id=holding)
        deadline = time.monotonic() + AGENT_DRAIN_REPORT_SECONDS
        error = None if told else reason[:MAX_ERROR_CHARS]
        for report in (pending, BatchStatusReport(batch_id=holding, status="shutting-down", error=error)):
            if report is None:
                continue
            try:
                self._until(lambda client, report=report: client.report(self.worker_id, report), deadline)
            except Conflict as exc:
                log_event("shutting_down_refused", batch_id=report.batch_id, reason=str(exc)[:300])
            except ApiError as exc:
                warn("shutting_down_unreported", batch_id=report.batch_id, reason=str(exc)[:300])
        self._clear()
        self.state.set_batch({"left": {"reason": reason, "at": self._clock()}})
        self._terminate_self()

    def _terminate_self(self) -> bool:
        backoff = Backoff(self.settings.backoff_base_s, self.settings.backoff_cap_s)
        for attempt in range(TERMINATE_ATTEMPTS):
            try:
                self._aws.autoscaling.terminate_instance_in_auto_scaling_group(
                    InstanceId=self.config.instance_id, ShouldDecrementDesiredCapacity=True
                )
            except ClientError as exc:
                message = str(exc.response.get("Error", {}).get("Message", ""))
                if error_code(exc) == "ValidationError":  # not (any more) in a group: terminating already
                    log_event("worker_not_in_group", instance_id=self.config.instance_id, reason=message[:300])
                    return False
                warn("terminate_failed", attempt=attempt + 1, error=error_code(exc), reason=message[:300])
            except BotoCoreError as exc:
                warn("terminate_failed", attempt=attempt + 1, error=error_code(exc), reason=str(exc)[:300])
            else:
                log_event("worker_left", instance_id=self.config.instance_id, decremented=True)
                return True
            time.sleep(backoff.next_delay())
        return False

    # --- the control plane --------------------------------------------------------------------------

    def _retrying(self, call: Callable[[ControlPlaneClient], T], within: float | None = None) -> T:
        """`call` until it gets through: ApiUnavailable when not within `within` seconds; Halted on an
        interruption or the agent's stop; Conflict as it comes."""
        deadline = None if within is None else time.monotonic() + within
        while True:
            if self._halt.is_set():
                raise Halted
            try:
                answer = self._call(call)
            except Conflict:
                raise
            except (ApiError, BotoCoreError, ClientError) as exc:
                delay = self._backoff.next_delay()
                warn(
                    "control_plane_unreachable",
                    error=error_code(exc),
                    reason=str(exc)[:300],
                    retry_in_s=round(delay, 2),
                )
                if deadline is not None and time.monotonic() + delay >= deadline:
                    raise ApiUnavailable(f"not through within {within}s: {exc}") from exc
                self._halt.wait(delay)
                continue
            if self._backoff.failures:
                log_event("control_plane_reconnected", api_url=self._client.api_url if self._client else None)
            self._backoff.reset()
            return answer

    def _until(self, call: Callable[[ControlPlaneClient], T], deadline: float) -> T:
        """`call` until it gets through or `deadline` (monotonic) passes, whatever the halt: the way out."""
        backoff = Backoff(self.settings.backoff_base_s, min(self.settings.backoff_cap_s, 2.0))
        while True:
            try:
                return self._call(call)
            except Conflict:
                raise
            except (ApiError, BotoCoreError, ClientError) as exc:
                delay = backoff.next_delay()
                if time.monotonic() + delay >= deadline:
                    raise ApiUnavailable(str(exc)) from exc
                time.sleep(delay)

    def _call(self, call: Callable[[ControlPlaneClient], T]) -> T:
        """One call, connecting and registering first where needed; a 404 registers again, once."""
        try:
            client = self._connect()
            if not self._registered:
                self._register(client)
            try:
                return call(client)
            except InstanceUnknown:
                log_event("control_plane_forgot_worker", worker_id=self.worker_id)
                self._register(client)
                return call(client)
        except Conflict:
            raise
        except (ApiError, BotoCoreError, ClientError):
            self._client, self._registered = None, False  # re-read the URL and register again next time
            raise

    def _connect(self) -> ControlPlaneClient:
        if self._client is None:
            url = self._read_api_url()
            if not url:
                raise ApiUnavailable("the api-url parameter is not published (yet)")
            self._client = self._make_client(url)
            self._registered = False
        return self._client

    def _register(self, client: ControlPlaneClient) -> None:
        try:
            answer = client.register_worker(self.registration)
        except InstanceUnknown as exc:  # a 404 on register: the URL points at no worker API
            raise ApiUnavailable(f"the worker registration route was not found: {exc}") from exc
        if answer.worker_id != self.worker_id:
            warn("worker_id_differs", expected=self.worker_id, answered=answer.worker_id)
        self._registered = True
        log_event("worker_registered", worker_id=self.worker_id, api_url=client.api_url, new=answer.registered)

    # --- helpers ------------------------------------------------------------------------------------

    def _clear(self) -> None:
        for directory in (self.inputs, self.outputs):
            try:
                clear(directory)
            except OSError as exc:
                warn("batch_directory_not_cleared", path=str(directory), reason=str(exc))

    @functools.cached_property
    def _gpu_present(self) -> bool:
        present = bool(self.gpu.sample().get("available")) or NVIDIA_DEVICE.exists()
        log_event("batch_gpus", present=present)
        return present

    def _has_gpus(self) -> bool:
        return self._gpu_present


def _error(what: str, run: BatchRun) -> str:
    lines = "\n".join(run.last_lines)
    return f"{what}; last lines:\n{lines}" if lines else what

"""The drain after a spot interruption warning, inside the two minutes before the instance is reclaimed:
run the workload's drain command (bounded by time), stop the workload (SIGTERM, SIGKILL after the
grace period), then publish `Spothub Drain Completed` with the outcome.

One drain per instance. Each step is recorded in the state file as it ends, so an agent restarted
in the middle resumes with the next step rather than starting over, and never drains twice.
The deadline is the notice's detection plus the window (less one poll of detection delay), or the
interruption's own action time when IMDS gives a sooner, plausible one; every step fits before it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_agent.aws import error_code
from spothub_agent.logs import log_event, warn
from spothub_agent.notices import Notice
from spothub_agent.publisher import Publisher, PublishError
from spothub_agent.settings import Settings
from spothub_agent.state import AgentState
from spothub_agent.workload import Workload, clip_lines
from spothub_core.contracts import DrainCompleted
from spothub_core.timings import (
    AGENT_DRAIN_MARGIN_SECONDS,
    AGENT_DRAIN_REPORT_RETRY_SECONDS,
    AGENT_DRAIN_REPORT_SECONDS,
    AGENT_DRAIN_STEP_FLOOR_SECONDS,
    AGENT_NOTICE_FIRST_SECONDS,
    SPOT_NOTICE_WINDOW_SECONDS,
)

COMMAND_OUTPUT_LINES = 5
# How often the report looks whether the capacity notice went out (a flag in the state file).
NOTICE_CHECK_S = 0.05


class Drain:
    def __init__(
        self,
        state: AgentState,
        workload: Workload,
        publisher: Publisher,
        settings: Settings,
        *,
        region: str,
        instance_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._workload = workload
        self._publisher = publisher
        self._settings = settings
        self._region = region
        self._instance_id = instance_id
        self._clock = clock
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def deadline_for(self, notice: Notice) -> float:
        now = self._clock()
        deadline = now + SPOT_NOTICE_WINDOW_SECONDS - self._settings.poll_s
        action = notice.action_epoch()
        # A sooner action time counts only when plausible: a skewed or simulated clock must not
        # shrink the drain to nothing.
        if action is not None and now < action < deadline:
            deadline = action
        return deadline

    def begin(self, notice: Notice) -> None:
        if self._state.begin_drain(notice.notice_id, self.deadline_for(notice)):
            log_event("drain_started", notice_id=notice.notice_id, action=notice.action, action_time=notice.time)
            self._spawn()

    def resume(self) -> None:
        """After a restart of the agent: finish a drain that was begun and not reported."""
        drain = self._state.drain
        if drain and not drain.get("reported"):
            log_event("drain_resumed", **drain)
            self._spawn()

    @property
    def active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _spawn(self) -> None:
        with self._lock:
            if not self.active:
                self._thread = threading.Thread(target=self._run, name="drain", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            self._steps()
        except Exception as exc:  # a thread that dies silently would leave the drain half done
            warn("drain_crashed", reason=repr(exc))

    def _steps(self) -> None:
        drain = self._state.drain or {}
        deadline = float(drain.get("deadline", self._clock() + SPOT_NOTICE_WINDOW_SECONDS))
        if "command" not in drain:
            self._state.update_drain(command=self._run_drain_command(deadline))
        if "stopped" not in drain:
            self._stop_workload(deadline)
        self._report(deadline)

    def _remaining(self, deadline: float) -> float:
        return deadline - self._clock() - AGENT_DRAIN_REPORT_SECONDS - AGENT_DRAIN_MARGIN_SECONDS

    def _run_drain_command(self, deadline: float) -> str:
        command = self._settings.drain_command
        if not command:
            return "none"
        floor = AGENT_DRAIN_STEP_FLOOR_SECONDS
        limit = min(self._settings.drain_timeout_s, max(floor, self._remaining(deadline) - floor))
        log_event("drain_command", command=list(command), timeout_s=limit)
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            warn("drain_command_failed", reason=str(exc))
            return "failed"
        try:
            output, _ = process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            warn("drain_command_timed_out", timeout_s=limit)
            return "timed_out"
        lines = list(clip_lines(output.decode(errors="replace").splitlines(), COMMAND_OUTPUT_LINES))
        if process.returncode != 0:
            warn("drain_command_failed", exit_code=process.returncode, last_lines=lines)
            return "failed"
        log_event("drain_command_done", last_lines=lines)
        return "ok"

    def _stop_workload(self, deadline: float) -> None:
        grace = max(AGENT_DRAIN_STEP_FLOOR_SECONDS, min(self._settings.grace_s, self._remaining(deadline)))
        result = self._workload.stop(grace)
        status = self._workload.status()
        self._state.update_drain(
            stopped=self._clock(),
            exit_code=result.exit_code,
            forced=result.forced,
            stop_error=result.error,
            last_lines=list(status.last_lines),
        )
        log_event("workload_stopped", exit_code=result.exit_code, forced=result.forced, error=result.error)

    def _report(self, deadline: float) -> None:
        drain = self._state.drain or {}
        if drain.get("reported"):
            return
        self._await_notice(drain["notice_id"], deadline)
        outcome = outcome_of(drain)
        detail = DrainCompleted(
            region=self._region,
            instance_id=self._instance_id,
            notice_id=drain["notice_id"],
            outcome=outcome,
            exit_code=drain.get("exit_code"),
            last_lines=drain.get("last_lines", []),
            seconds=round(float(drain.get("stopped", self._clock())) - float(drain["started_at"]), 3),
        )
        while True:
            try:
                event_id = self._publisher.publish(detail)
                break
            except (PublishError, BotoCoreError, ClientError) as exc:
                warn("drain_report_failed", error=error_code(exc), reason=str(exc)[:300])
                if self._clock() > deadline + AGENT_DRAIN_REPORT_SECONDS:
                    warn("drain_report_abandoned", notice_id=drain["notice_id"])
                    return
                time.sleep(AGENT_DRAIN_REPORT_RETRY_SECONDS)
        self._state.update_drain(reported=True, outcome=outcome, event_id=event_id)
        log_event("drain_completed", event_id=event_id, **detail.model_dump(mode="json"))

    def _await_notice(self, notice_id: str, deadline: float) -> None:
        """Give the capacity notice (published concurrently) a moment to go first, so the hub normally
        hears of the interruption before the drain's outcome; it must cope with either order anyway."""
        until = min(self._clock() + AGENT_NOTICE_FIRST_SECONDS, deadline)
        while not self._state.notice_published(notice_id) and self._clock() < until:
            time.sleep(NOTICE_CHECK_S)


def outcome_of(drain: dict[str, Any]) -> str:
    """One of DrainCompleted's outcomes."""
    if drain.get("command") == "failed" or drain.get("stop_error"):
        return "failed"
    if drain.get("command") == "timed_out" or drain.get("forced"):
        return "timed_out"
    return "drained"

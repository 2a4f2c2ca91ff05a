"""The workload as a local process (the sandbox's simulated instances): started in its own session so
the drain's SIGTERM and SIGKILL reach everything it started, its output appended to a log file in the
state directory.

The output goes to a file, not a pipe, so the workload outlives a crash of the agent (a pipe's reader
dying would kill it at its next write): the restarted agent finds the process by the pid and start
time it recorded in the state file and adopts it. The last lines come from the end of that file.
An orderly stop of the agent stops the process, as systemd would (it is in the unit's cgroup).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

from spothub_agent.logs import log_event, warn
from spothub_agent.state import AgentState
from spothub_agent.workload import StopResult, Workload, WorkloadStatus, clip_lines
from spothub_core.timings import AGENT_PROCESS_EXIT_SECONDS

TAIL_BYTES = 64 * 1024
ROTATE_BYTES = 8 * 1024 * 1024
# How often a stop looks whether the process ended.
EXIT_CHECK_S = 0.05


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22); None when it is
    gone or a zombie. With the pid it names one process: a pid reused later has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class ProcessWorkload(Workload):
    def __init__(
        self, command: tuple[str, ...], state: AgentState, log_path: Path, health_url: str, last_lines: int
    ) -> None:
        super().__init__(health_url, last_lines)
        self.command = command
        self.log_path = log_path
        self._state = state
        self._lock = threading.RLock()
        self._child: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._ticks: int | None = None
        self._exit_code: int | None = None
        self._stopped_by_agent = False
        self._error = ""

    @property
    def pid(self) -> int | None:
        return self._pid

    def start(self, launch: bool = True) -> None:
        with self._lock:
            record = self._state.workload or {}
            pid, ticks = record.get("pid"), record.get("start_ticks")
            ours = record.get("runner") == "process" and pid and record.get("boot_id") == boot_id()
            if ours and process_start_ticks(pid) == ticks:
                self._pid, self._ticks = pid, ticks
                log_event("workload_adopted", runner="process", pid=pid)
                return
            if ours:
                # It ended while the agent was down: keep what is known, do not start it again.
                self._pid, self._ticks = pid, ticks
                self._exit_code = record.get("exit_code")
                self._stopped_by_agent = bool(record.get("stopped_by_agent"))
                log_event("workload_gone", runner="process", pid=pid, exit_code=self._exit_code)
                return
            if launch:
                self._spawn()

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists() and self.log_path.stat().st_size > ROTATE_BYTES:
            self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
        try:
            with self.log_path.open("ab") as output:
                self._child = subprocess.Popen(
                    self.command,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            self._error = f"cannot start {self.command[0]!r}: {exc}"
            warn("workload_start_failed", runner="process", reason=self._error)
            return
        self._pid = self._child.pid
        self._ticks = process_start_ticks(self._pid)
        self._state.set_workload(
            {
                "runner": "process",
                "pid": self._pid,
                "start_ticks": self._ticks,
                "boot_id": boot_id(),
                "command": list(self.command),
            }
        )
        log_event("workload_started", runner="process", pid=self._pid, command=list(self.command))

    def _running(self) -> bool:
        if self._child is not None:
            code = self._child.poll()
            if code is not None and self._exit_code is None:
                self._exit_code = code
                self._remember_exit()
            return code is None
        return self._pid is not None and self._exit_code is None and process_start_ticks(self._pid) == self._ticks

    def _still_running(self) -> bool:
        with self._lock:
            return self._running()

    def _remember_exit(self) -> None:
        record = self._state.workload or {}
        record.update(exit_code=self._exit_code, stopped_by_agent=self._stopped_by_agent)
        self._state.set_workload(record)

    def status(self) -> WorkloadStatus:
        with self._lock:
            lines = self._tail()
            if self._pid is None:
                return WorkloadStatus("unavailable", None, lines, self._error or "not started")
            if self._running():
                return WorkloadStatus("running", None, lines)
            state = "stopped" if self._stopped_by_agent else "exited"
            detail = "" if self._exit_code is not None else "ended while the agent was not running: exit code unknown"
            return WorkloadStatus(state, self._exit_code, lines, detail)

    def stop(self, grace_s: float) -> StopResult:
        # The lock is held only to signal and to look: status() must answer during the grace period.
        with self._lock:
            if self._pid is None or not self._running():
                return StopResult(self._exit_code, forced=False)
            self._stopped_by_agent = True
            self._signal(signal.SIGTERM)
        log_event("workload_sigterm", pid=self._pid, grace_s=grace_s)
        forced = not self._wait(grace_s)
        if forced:
            with self._lock:
                self._signal(signal.SIGKILL)
            warn("workload_killed", pid=self._pid, grace_s=grace_s)
            self._wait(AGENT_PROCESS_EXIT_SECONDS)
        with self._lock:
            self._running()
            self._remember_exit()
            return StopResult(self._exit_code, forced=forced)

    def release(self) -> None:
        self.stop(AGENT_PROCESS_EXIT_SECONDS)

    def _signal(self, signum: signal.Signals) -> None:
        assert self._pid is not None  # noqa: S101
        try:
            os.killpg(self._pid, signum)  # its own session: pgid == pid; reaches what it started
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            warn("workload_signal_failed", pid=self._pid, signal=signum.name, reason=str(exc))

    def _wait(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self._still_running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(EXIT_CHECK_S)
        return True

    def _tail(self) -> tuple[str, ...]:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - TAIL_BYTES))
                text = handle.read().decode(errors="replace")
        except OSError:
            return ()
        ring: deque[str] = deque(text.splitlines(), maxlen=self.max_lines)
        return clip_lines(list(ring), self.max_lines)

"""One clock for the whole sandbox: this process and every process it starts read the sandbox clock as their
wall clock.

In this process, time-machine patches every wall-clock reading (time.time and time_ns, datetime.now and utcnow,
date.today, time.gmtime/localtime/strftime of "now", uuid1, clock_gettime(CLOCK_REALTIME)) in every thread, and
its traveller is made to follow the sandbox clock (its speed and its advances) instead of ticking in real seconds
from where it started. The monotonic clocks are left alone: timeouts and sleeps still count real seconds, and so
does the sandbox clock itself (it counts from time.monotonic), which is what keeps it out of its own travel.

For the process's whole life rather than one travel per Lambda invocation: time-machine's patch is process-wide
(while a handler ran, every other thread would see its time too), and moto stamps what it keeps from its own
request threads, outside any invocation: a message's visibility, an execution's history, a metric's datapoints,
the date of a signature the API checks. A wall clock that jumped between real and simulated time from one
invocation to the next would make these disagree with the handlers that read them.

The processes the sandbox starts (the agents, the stand-in containers, the batch jobs the agents start) get
`child_environment`: clock_startup/ on their PYTHONPATH, whose sitecustomize makes their wall clock follow the
clock file this process rewrites on every change of the clock ({anchor_sim, anchor_monotonic, speed}: one
CLOCK_MONOTONIC serves every process of the host). Nothing of this is in the agent's own code.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from spothub.sandbox.clock import ClockAnchors, SandboxClock

CLOCK_FILE_VARIABLE = "SPOTHUB_SANDBOX_CLOCK_FILE"
STARTUP_DIR = Path(__file__).resolve().parent / "clock_startup"
NANOSECONDS = 1_000_000_000


def _time_machine() -> Any:
    """time-machine, imported without pytest: it registers a pytest plugin when pytest is importable, which costs
    every process started with the clock a tenth of a second and brings it nothing."""
    if "time_machine" in sys.modules or "pytest" in sys.modules:
        import time_machine  # noqa: PLC0415

        return time_machine
    sys.modules["pytest"] = None  # type: ignore[assignment]  # import pytest raises ImportError meanwhile
    try:
        import time_machine  # noqa: PLC0415
    finally:
        del sys.modules["pytest"]
    return time_machine


def real_time_ns() -> int:
    """The host's real wall clock, whatever this process's follows."""
    escape_hatch = _time_machine().escape_hatch
    return int(escape_hatch.time.time_ns()) if escape_hatch.is_travelling() else time.time_ns()


def real_time() -> float:
    return real_time_ns() / NANOSECONDS


# --- the clock file ---------------------------------------------------------------------------------------------------


def write_clock_file(path: Path, anchors: ClockAnchors) -> None:
    """Replace the file at once (a reader never sees half of it)."""
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(
        json.dumps({"anchor_sim": anchors.sim, "anchor_monotonic": anchors.monotonic, "speed": anchors.speed})
    )
    staging.replace(path)


def read_clock_file(path: Path) -> ClockAnchors:
    """The anchors in the file; ValueError when it does not hold three numbers and a positive speed."""
    document = json.loads(path.read_text())
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a clock file")
    values = [document.get(key) for key in ("anchor_sim", "anchor_monotonic", "speed")]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{path}: anchor_sim, anchor_monotonic and speed must be numbers")
    sim, monotonic, speed = (float(v) for v in values)  # type: ignore[arg-type]
    if speed <= 0:
        raise ValueError(f"{path}: the speed must be positive")
    return ClockAnchors(sim, monotonic, speed)


class ClockFileReader:
    """The time the clock file says it is now. Read again whenever it was replaced; while it is missing or
    unreadable the last anchors read go on (the sandbox stopped, its agents are being stopped), and before any
    was read, the real time."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._seen: tuple[tuple[int, int, int], ClockAnchors] | None = None

    def anchors(self) -> ClockAnchors | None:
        seen = self._seen
        try:
            status = os.stat(self._path)
            version = (status.st_ino, status.st_mtime_ns, status.st_size)
            if seen is None or seen[0] != version:
                seen = self._seen = (version, read_clock_file(self._path))
        except (OSError, ValueError):
            pass
        return seen[1] if seen else None

    def now_ns(self) -> int:
        anchors = self.anchors()
        if anchors is None:
            return real_time_ns()
        return round(anchors.at(time.monotonic()) * NANOSECONDS)


# --- this process's wall clock ----------------------------------------------------------------------------------------


class WallClockTravel:
    """While started, every wall-clock reading of this process, in every thread, is `now_ns()`."""

    def __init__(self, now_ns: Callable[[], int]) -> None:
        self._now_ns = now_ns
        self._travel: Any = None

    def start(self) -> None:
        time_machine = _time_machine()
        self._travel = time_machine.travel(self._now_ns() / NANOSECONDS, tick=True)
        traveller = self._travel.start()
        # time-machine asks the innermost traveller for the time at every reading: this one follows the clock.
        traveller.time_ns = self._now_ns

    def stop(self) -> None:
        if self._travel is not None:
            self._travel.stop()
            self._travel = None


def follow_clock_file(path: Path) -> WallClockTravel:
    """Make this process's wall clock follow a sandbox's clock file (clock_startup/sitecustomize.py)."""
    travel = WallClockTravel(ClockFileReader(path).now_ns)
    travel.start()
    return travel


# --- the sandbox's side -----------------------------------------------------------------------------------------------


class SharedClock:
    """The sandbox clock as the wall clock of this process (while started) and of the processes started with
    `child_environment` (through the clock file, rewritten at every change of the clock)."""

    def __init__(self, clock: SandboxClock, clock_file: Path) -> None:
        self.clock = clock
        self.clock_file = clock_file
        self._travel = WallClockTravel(clock.now_ns)
        self._sharing = False
        clock.on_change(self._write)

    def start(self) -> None:
        self.clock_file.parent.mkdir(parents=True, exist_ok=True)
        self._sharing = True
        write_clock_file(self.clock_file, self.clock.anchors())
        self._travel.start()

    def stop(self) -> None:
        self._travel.stop()
        self._sharing = False  # the file stays: agents still stopping keep reading it

    def environment(self) -> dict[str, str]:
        """What a process started by the sandbox needs in its environment to share the clock (with
        `child_environment`)."""
        return {CLOCK_FILE_VARIABLE: str(self.clock_file)}

    def _write(self, anchors: ClockAnchors) -> None:
        if self._sharing:
            write_clock_file(self.clock_file, anchors)


def child_environment(environment: dict[str, str], source: Mapping[str, str]) -> dict[str, str]:
    """`environment` for a process the sandbox starts, sharing the clock named in `source` (the sandbox's agent
    environment) when it names one: the clock file, and the startup folder first on its PYTHONPATH."""
    clock_file = source.get(CLOCK_FILE_VARIABLE)
    if not clock_file:
        return environment
    paths = [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(STARTUP_DIR)]
    return {**environment, CLOCK_FILE_VARIABLE: clock_file, "PYTHONPATH": os.pathsep.join([str(STARTUP_DIR), *paths])}

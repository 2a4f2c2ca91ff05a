"""One clock for the sandbox (spothub/sandbox/shared_clock.py): the clock's anchors and waits, the clock file and its
reader, this process's wall clock following the sandbox clock, and a started process following the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spothub.sandbox.clock import ClockAnchors, SandboxClock
from spothub.sandbox.shared_clock import (
    CLOCK_FILE_VARIABLE,
    STARTUP_DIR,
    ClockFileReader,
    SharedClock,
    WallClockTravel,
    child_environment,
    read_clock_file,
    real_time,
    write_clock_file,
)

HOURS_AHEAD = 3 * 3600


# --- the clock: anchors, changes, waits -------------------------------------------------------------------------------


def test_the_anchors_read_the_time_the_clock_reads() -> None:
    clock = SandboxClock(speed=20, start=1_000_000.0)
    clock.advance(90)
    anchors = clock.anchors()
    assert anchors.speed == 20
    assert anchors.at(time.monotonic()) == pytest.approx(clock.now(), abs=0.05)


def test_every_advance_and_speed_change_is_told_with_the_new_anchors_before_the_advance_listeners() -> None:
    clock = SandboxClock(start=0.0)
    heard: list[str] = []
    clock.on_change(lambda anchors: heard.append(f"change {anchors.speed:g} {anchors.sim:.0f}"))
    clock.on_advance(lambda: heard.append("advanced"))
    clock.advance(600)
    clock.set_speed(4)
    assert heard[0] == "change 1 600"
    assert heard[1] == "advanced"
    assert heard[2].startswith("change 4 60")


def test_a_wait_on_the_clock_ends_when_the_clock_is_advanced_past_it() -> None:
    clock = SandboxClock(start=0.0)
    ended = threading.Event()
    waiter = threading.Thread(target=lambda: (clock.wait(3600), ended.set()))
    waiter.start()
    assert not ended.wait(0.3), "an hour of the clock has not passed"
    clock.advance(3600)
    assert ended.wait(1.0), "the advance ends the wait within a poll"
    waiter.join()


def test_a_wait_on_the_clock_follows_its_speed_and_can_be_woken() -> None:
    clock = SandboxClock(speed=100, start=0.0)
    started = time.monotonic()
    assert clock.wait(20) is False  # 20 simulated seconds: 0.2 real ones at 100x
    assert 0.15 < time.monotonic() - started < 1.0
    event = threading.Event()
    event.set()
    assert clock.wait(3600, event.wait) is True


# --- the clock file ---------------------------------------------------------------------------------------------------


def test_the_clock_file_holds_the_anchors(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    write_clock_file(path, ClockAnchors(sim=1e9, monotonic=12.5, speed=4.0))
    assert json.loads(path.read_text()) == {"anchor_sim": 1e9, "anchor_monotonic": 12.5, "speed": 4.0}
    assert read_clock_file(path) == ClockAnchors(1e9, 12.5, 4.0)
    assert [p.name for p in tmp_path.iterdir()] == ["clock.json"], "no staging file left behind"


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"anchor_sim": 1, "anchor_monotonic": 2}',
        '{"anchor_sim": "1", "anchor_monotonic": 2, "speed": 1}',
        '{"anchor_sim": 1, "anchor_monotonic": 2, "speed": 0}',
        '{"anchor_sim": true, "anchor_monotonic": 2, "speed": 1}',
        "not json",
    ],
)
def test_a_file_that_is_not_a_clock_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "clock.json"
    path.write_text(text)
    with pytest.raises(ValueError):
        read_clock_file(path)


def test_the_reader_follows_each_new_file_and_keeps_the_last_clock_when_it_goes(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    reader = ClockFileReader(path)
    assert reader.anchors() is None
    assert reader.now_ns() / 1e9 == pytest.approx(real_time(), abs=1.0), "no clock yet: the real time"

    write_clock_file(path, ClockAnchors(sim=5_000.0, monotonic=time.monotonic(), speed=1.0))
    assert reader.now_ns() / 1e9 == pytest.approx(5_000.0, abs=0.5)
    write_clock_file(path, ClockAnchors(sim=9_000.0, monotonic=time.monotonic(), speed=60.0))
    assert reader.now_ns() / 1e9 == pytest.approx(9_000.0, abs=1.0)

    path.write_text("{")  # a broken file: the last clock goes on
    assert reader.now_ns() / 1e9 == pytest.approx(9_000.0, abs=1.0)
    path.unlink()
    assert reader.anchors() == ClockAnchors(9_000.0, reader.anchors().monotonic, 60.0)  # type: ignore[union-attr]


def test_a_child_environment_puts_the_startup_folder_first_once_and_only_with_a_clock() -> None:
    assert child_environment({"PYTHONPATH": "/agent"}, {}) == {"PYTHONPATH": "/agent"}
    shared = {CLOCK_FILE_VARIABLE: "/state/clock.json"}
    once = child_environment({"PYTHONPATH": os.pathsep.join(["/nvml", "/agent"]), "A": "1"}, shared)
    assert once == {
        "A": "1",
        CLOCK_FILE_VARIABLE: "/state/clock.json",
        "PYTHONPATH": os.pathsep.join([str(STARTUP_DIR), "/nvml", "/agent"]),
    }
    assert child_environment(once, shared) == once
    assert child_environment({}, shared)["PYTHONPATH"] == str(STARTUP_DIR)


# --- this process's wall clock, and a started process's ---------------------------------------------------------------


def test_while_travelling_every_wall_clock_reading_follows_the_clock_and_the_clock_does_not_follow_itself() -> None:
    clock = SandboxClock(speed=50, start=time.time() + HOURS_AHEAD)
    travel = WallClockTravel(clock.now_ns)
    travel.start()
    try:
        assert time.time() == pytest.approx(clock.now(), abs=0.5)
        assert datetime.now(UTC).timestamp() == pytest.approx(clock.now(), abs=0.5)
        time.sleep(0.1)  # five simulated seconds at 50x: the wall clock keeps the clock's speed
        assert time.time() == pytest.approx(clock.now(), abs=0.5)
        clock.advance(600)
        assert time.time() == pytest.approx(clock.now(), abs=0.5)
        seen: list[float] = []
        other = threading.Thread(target=lambda: seen.append(time.time()))
        other.start()
        other.join()
        assert seen == [pytest.approx(clock.now(), abs=0.5)], "every thread"
        assert uuid.uuid1().time / 1e7 - 12219292800 == pytest.approx(clock.now(), abs=0.5)
        assert real_time() == pytest.approx(clock.now() - HOURS_AHEAD - 600, abs=60)
        # The clock counts from time.monotonic, which no travel touches: it reads the same whatever time.time says.
        before = clock.now()
        assert clock.now() - before < 0.5
    finally:
        travel.stop()
    assert time.time() == pytest.approx(real_time(), abs=0.1)


def test_a_process_started_with_the_child_environment_reads_the_sandbox_clock(tmp_path: Path) -> None:
    clock = SandboxClock(speed=1, start=time.time() + HOURS_AHEAD)
    shared = SharedClock(clock, tmp_path / "clock.json")
    shared.start()
    try:
        environment = child_environment({**os.environ}, shared.environment())
        script = "import time, datetime; print(time.time()); print(datetime.datetime.now(datetime.UTC).timestamp())"

        def child_times() -> list[float]:
            output = subprocess.check_output([sys.executable, "-c", script], env=environment, text=True, timeout=30)
            return [float(line) for line in output.split()]

        assert child_times() == [pytest.approx(clock.now(), abs=2)] * 2
        clock.advance(7200)  # the file is rewritten: a process started after, or running, reads the new time
        assert child_times() == [pytest.approx(clock.now(), abs=2)] * 2
        assert time.time() == pytest.approx(clock.now(), abs=0.5), "and this process too, while shared"
    finally:
        shared.stop()
    assert time.time() == pytest.approx(real_time(), abs=0.1)

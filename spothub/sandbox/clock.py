"""The sandbox clock: simulated time that runs at a chosen speed and can be advanced, and the
scheduler that fires scheduled EventBridge rules (`rate(...)`, `cron(...)`) by that clock.

The clock counts from `time.monotonic()`, which no time travel touches (time-machine patches the wall clock
only): the whole sandbox process and the processes it starts read their wall clock from this one
(spothub.sandbox.shared_clock), so the clock itself must never read the wall clock once it runs.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

# How often (real seconds) a wait on the clock looks at it again: an advance or a new speed can end it sooner.
CLOCK_POLL_SECONDS = 0.1
RATE = re.compile(r"^rate\((?P<value>\d+) (?P<unit>minutes?|hours?|days?)\)$")
CRON = re.compile(r"^cron\((?P<fields>[^)]+)\)$")
UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True)
class ClockAnchors:
    """What a clock reading follows from: simulated time `sim` at monotonic time `monotonic`, `speed` simulated
    seconds per real second since. CLOCK_MONOTONIC is one clock for every process of a Linux host, so another
    process given these reads the same time."""

    sim: float
    monotonic: float
    speed: float

    def at(self, monotonic: float) -> float:
        return self.sim + (monotonic - self.monotonic) * self.speed


class SandboxClock:
    """Simulated epoch seconds: `speed` simulated seconds pass per real second, plus any advance."""

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._speed = speed
        self._anchor_real = time.monotonic()
        self._anchor_sim = time.time() if start is None else start
        self._listeners: list[Callable[[], None]] = []
        self._before_listeners: list[Callable[[], None]] = []
        self._change_listeners: list[Callable[[ClockAnchors], None]] = []
        # Held while the listeners hear of a change: two changes at once reach them in order, the latest last.
        self._change_lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._anchor_sim + (time.monotonic() - self._anchor_real) * self._speed

    def now_ns(self) -> int:
        return round(self.now() * 1_000_000_000)

    def anchors(self) -> ClockAnchors:
        with self._lock:
            return ClockAnchors(self._anchor_sim, self._anchor_real, self._speed)

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)

    @property
    def speed(self) -> float:
        return self._speed

    def set_speed(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        with self._lock:
            now_real = time.monotonic()
            self._anchor_sim += (now_real - self._anchor_real) * self._speed
            self._anchor_real = now_real
            self._speed = speed
        self._changed()

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock does not go backwards")
        for listener in list(self._before_listeners):
            listener()
        with self._lock:
            self._anchor_sim += seconds
        self._changed()
        for listener in list(self._listeners):
            listener()

    def on_change(self, listener: Callable[[ClockAnchors], None]) -> None:
        """Called with the new anchors after each advance and change of speed, before the advance's listeners:
        whatever shares this clock with other processes tells them first."""
        self._change_listeners.append(listener)

    def _changed(self) -> None:
        with self._change_lock:
            anchors = self.anchors()
            for listener in list(self._change_listeners):
                listener(anchors)

    def on_advance(self, listener: Callable[[], None]) -> None:
        """Called after each advance (fire what became due)."""
        self._listeners.append(listener)

    def before_advance(self, listener: Callable[[], None]) -> None:
        """Called before each advance (take note of what exists at the time it jumps from)."""
        self._before_listeners.append(listener)

    def real_seconds(self, simulated: float) -> float:
        """How long a real wait lasts for `simulated` seconds at the current speed."""
        return simulated / self._speed

    def wait(self, seconds: float, wake: Callable[[float], bool] | None = None) -> bool:
        """Wait `seconds` of this clock, however it is sped up or advanced meanwhile. `wake(s)` waits at most `s` real
        seconds and says whether the wait is over early (an event was set); without it the wait is a plain sleep.
        True when woken early, False when the time has passed."""
        wake = wake or _sleep
        deadline = self.now() + seconds
        while (remaining := deadline - self.now()) > 0:
            if wake(min(CLOCK_POLL_SECONDS, self.real_seconds(remaining))):
                return True
        return False


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def next_fire(expression: str, after: datetime) -> datetime:
    """The first time strictly after `after` at which a schedule expression fires (UTC)."""
    rate = RATE.match(expression)
    if rate:
        value = int(rate["value"])
        if value < 1:
            raise ScheduleError(f"{expression}: the rate must be at least 1")
        return after + timedelta(seconds=value * UNIT_SECONDS[rate["unit"].rstrip("s")])
    cron = CRON.match(expression)
    if cron:
        return _next_cron(cron["fields"].split(), after, expression)
    raise ScheduleError(f"{expression!r} is not a rate(...) or cron(...) expression")


def _next_cron(fields: list[str], after: datetime, expression: str) -> datetime:
    if len(fields) != 6:  # noqa: PLR2004 (minutes hours day-of-month month day-of-week year)
        raise ScheduleError(f"{expression}: AWS cron has six fields")
    minute, hour, dom, month, dow, year = fields
    minutes = _values(minute, 0, 59, expression)
    hours = _values(hour, 0, 23, expression)
    doms = _values(dom, 1, 31, expression)
    months = _values(month, 1, 12, expression)
    # AWS day-of-week is 1-7 with 1 = Sunday.
    dows = {(d - 1) % 7 for d in _values(dow, 1, 7, expression)}
    years = _values(year, 1970, 2199, expression)
    candidate = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    limit = candidate + timedelta(days=366 * 5)
    while candidate < limit:
        weekday_sunday_first = (candidate.weekday() + 1) % 7
        if (
            candidate.year in years
            and candidate.month in months
            and candidate.day in doms
            and weekday_sunday_first in dows
            and candidate.hour in hours
            and candidate.minute in minutes
        ):
            return candidate
        candidate += timedelta(minutes=1)
    raise ScheduleError(f"{expression}: never fires within five years")


MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")  # AWS cron: 1 = Sunday
MONTH_NAMES = {name: number for number, name in enumerate(MONTHS, start=1)}
DAY_NAMES = {name: number for number, name in enumerate(DAYS, start=1)}


def _values(field: str, low: int, high: int, expression: str) -> set[int]:
    names = MONTH_NAMES if high == 12 else DAY_NAMES if high == 7 else {}  # noqa: PLR2004
    for name, number in names.items():
        field = field.upper().replace(name, str(number))
    if field in {"*", "?"}:
        return set(range(low, high + 1))
    values: set[int] = set()
    for part in field.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)  # noqa: PLW2901
            step = int(step_text)
        if part in {"*", "?"}:
            start, end = low, high
        elif "-" in part:
            start_text, end_text = part.split("-", 1)
            start, end = int(start_text), int(end_text)
        elif part.isdigit():
            start = int(part)
            end = high if "/" in field else start
        else:
            raise ScheduleError(f"{expression}: '{part}' is not supported by the sandbox scheduler")
        if not low <= start <= end <= high:
            raise ScheduleError(f"{expression}: '{field}' is out of range {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


class Ticker:
    """A daemon thread that calls `step` every `interval_s` real seconds until stopped; an error in one
    step goes to `on_error` and the next step runs anyway."""

    def __init__(
        self, name: str, step: Callable[[], object], interval_s: float, on_error: Callable[[Exception], None]
    ) -> None:
        self._step = step
        self._interval_s = interval_s
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._step()
            except Exception as exc:
                self._on_error(exc)


@dataclass
class _Scheduled:
    rule: Any
    next_at: datetime


class RuleScheduler:
    """Fires every enabled scheduled rule of the given events backends when the clock passes it."""

    def __init__(
        self,
        clock: SandboxClock,
        backends: Callable[[], Iterable[Any]],
        fire: Callable[[Any, datetime], None],
        tick_seconds: float = 0.2,
        on_error: Callable[[Exception], None] = lambda _exc: None,
    ) -> None:
        self._clock = clock
        self._backends = backends
        self._fire = fire
        self._scheduled: dict[str, _Scheduled] = {}
        self._lock = threading.Lock()
        self._ticker = Ticker("sandbox-scheduler", self.run_due, tick_seconds, on_error)
        clock.before_advance(self.refresh)
        clock.on_advance(self.run_due)

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()

    def refresh(self) -> None:
        """Schedule rules created since the last tick from now, before the clock jumps past them."""
        with self._lock:
            self._refresh(self._clock.datetime())

    def run_due(self) -> int:
        """Fire everything due by now, in time order; returns how many firings happened."""
        fired = 0
        with self._lock:
            now = self._clock.datetime()
            self._refresh(now)
            while True:
                due = [s for s in self._scheduled.values() if s.next_at <= now]
                if not due:
                    return fired
                earliest = min(due, key=lambda s: s.next_at)
                self._fire(earliest.rule, earliest.next_at)
                earliest.next_at = next_fire(earliest.rule.scheduled_expression, earliest.next_at)
                fired += 1

    def _refresh(self, now: datetime) -> None:
        live = {}
        for backend in self._backends():
            # Copies: the emulator's request threads add buses and rules meanwhile.
            for bus in list(backend.event_buses.values()):
                for rule in list(bus.rules.values()):
                    if rule.scheduled_expression and rule.state == "ENABLED":
                        live[rule.arn] = rule
        for arn in list(self._scheduled):
            if arn not in live:
                del self._scheduled[arn]
        for arn, rule in live.items():
            if arn not in self._scheduled:
                try:
                    self._scheduled[arn] = _Scheduled(rule, next_fire(rule.scheduled_expression, now))
                except ScheduleError as exc:
                    self._on_error(exc)

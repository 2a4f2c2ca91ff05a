"""CloudWatch alarm evaluation by the sandbox clock (moto stores alarms and metrics, never evaluates).

Metric alarms on one metric with SampleCount, Sum, Average, Minimum or Maximum are evaluated over
complete periods ending at the current simulated time, with TreatMissingData (`breaching`,
`notBreaching`, `ignore`, `missing`) and M-of-N (DatapointsToAlarm of EvaluationPeriods), as AWS does.
A state change is put on the region's default bus as "CloudWatch Alarm State Change".

Datapoints are stamped with the simulated time they arrive at (emulator_patches). Periods that lie
inside an advance of the clock are skipped: nothing ran during a jump, so nothing could be observed;
silence only counts while the clock runs (speed it up to let minutes pass quickly). Periods that began
before the alarm was first seen are skipped too: an alarm judges only the time it lived through.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from spothub.sandbox.clock import SandboxClock, Ticker
from spothub_core.contracts import AWS_EVENT_SOURCES, AwsEvent

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanThreshold": lambda value, threshold: value > threshold,
    "GreaterThanOrEqualToThreshold": lambda value, threshold: value >= threshold,
    "LessThanThreshold": lambda value, threshold: value < threshold,
    "LessThanOrEqualToThreshold": lambda value, threshold: value <= threshold,
}
STATISTICS: dict[str, Callable[[list[float]], float]] = {
    "SampleCount": lambda values: float(len(values)),
    "Sum": sum,
    "Average": lambda values: sum(values) / len(values),
    "Minimum": min,
    "Maximum": max,
}
EVALUATE_EVERY_S = 0.5

Recorder = Callable[[str, str, dict[str, Any]], Any]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


class AlarmEvaluator:
    def __init__(self, clock: SandboxClock, account: str, regions: list[str], record: Recorder) -> None:
        self._clock = clock
        self._account = account
        self._regions = regions
        self._record = record
        self._jumps: list[tuple[float, float]] = []
        self._first_seen: dict[tuple[str, str], float] = {}
        self._jump_from: float | None = None
        self._lock = threading.Lock()
        self._ticker = Ticker(
            "sandbox-alarms",
            self.evaluate,
            EVALUATE_EVERY_S,
            lambda exc: record("failure", f"alarm evaluation: {exc}", {"error": repr(exc)}),
        )
        clock.before_advance(self._jump_starts)
        clock.on_advance(self._jump_ends)

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()

    def reset(self) -> None:
        with self._lock:
            self._jumps.clear()
            self._first_seen.clear()

    def evaluate(self) -> list[tuple[str, str]]:
        """Evaluate every alarm once; returns the (alarm, new state) changes."""
        from moto.cloudwatch.models import cloudwatch_backends  # noqa: PLC0415

        now = self._clock.now()
        changes = []
        with self._lock:
            jumps = list(self._jumps)
        for region in self._regions:
            backend = cloudwatch_backends[self._account][region]
            for alarm in list(backend.alarms.values()):
                if alarm.metric_data_queries or alarm.statistic not in STATISTICS:
                    continue  # metric math and percentiles are not evaluated here
                born = self._first_seen.setdefault((region, alarm.alarm_arn), now)
                state, reason = self._state(alarm, backend.metric_data, now, jumps, born)
                if state is not None and state != alarm.state_value:
                    self._change(region, alarm, state, reason, now)
                    changes.append((alarm.name, state))
        return changes

    def _state(
        self, alarm: Any, data: list[Any], now: float, jumps: list[tuple[float, float]], born: float
    ) -> tuple[str | None, str]:
        period = float(alarm.period)
        wanted = {(d.name, d.value) for d in alarm.dimensions}
        times = [
            (d.timestamp.timestamp(), d.value)
            for d in list(data)
            if d.namespace == alarm.namespace
            and d.name == alarm.metric_name
            and {(x.name, x.value) for x in d.dimensions} == wanted
            and hasattr(d, "value")
        ]
        compare = COMPARISONS[alarm.comparison_operator]
        statistic = STATISTICS[alarm.statistic]
        missing = alarm.treat_missing_data or "missing"
        outcomes: list[bool] = []
        end = now - (now % period)  # the last complete period ends here
        while len(outcomes) < alarm.evaluation_periods and end - period >= born:
            start = end - period
            end_of_bucket, end = end, start
            if any(a <= start and end_of_bucket <= b for a, b in jumps):
                continue
            values = [v for t, v in times if start <= t < end_of_bucket]
            if values:
                outcomes.append(compare(statistic(values), float(alarm.threshold)))
            elif missing == "breaching":
                outcomes.append(True)
            elif missing == "notBreaching":
                outcomes.append(False)
        if not outcomes:
            return (None if missing in ("ignore",) else "INSUFFICIENT_DATA"), "no datapoints"
        needed = alarm.datapoints_to_alarm or alarm.evaluation_periods
        breaching = sum(outcomes)
        if breaching >= needed:
            return "ALARM", f"{breaching} of the last {len(outcomes)} periods breached the threshold"
        if len(outcomes) < alarm.evaluation_periods and missing == "missing":
            return "INSUFFICIENT_DATA", "not enough datapoints"
        return "OK", f"{breaching} of the last {len(outcomes)} periods breached the threshold"

    def _change(self, region: str, alarm: Any, state: str, reason: str, now: float) -> None:
        from moto.events.models import events_backends  # noqa: PLC0415

        previous = alarm.state_value
        alarm.update_state(reason, json.dumps({"evaluatedAt": _iso(now)}), state)
        self._record("alarm", f"{alarm.name}: {previous} -> {state} ({reason})", {"alarm": alarm.name})
        detail = {
            "alarmName": alarm.name,
            "state": {"value": state, "reason": reason, "timestamp": _iso(now)},
            "previousState": {"value": previous},
            "configuration": {
                "metrics": [
                    {
                        "metricStat": {
                            "metric": {
                                "namespace": alarm.namespace,
                                "name": alarm.metric_name,
                                "dimensions": {d.name: d.value for d in alarm.dimensions},
                            },
                            "period": alarm.period,
                            "stat": alarm.statistic,
                        }
                    }
                ]
            },
        }
        events_backends[self._account][region].put_events(
            [
                {
                    "Source": AWS_EVENT_SOURCES[AwsEvent.ALARM_STATE_CHANGE],
                    "DetailType": AwsEvent.ALARM_STATE_CHANGE.value,
                    "Detail": json.dumps(detail),
                    "Resources": [alarm.alarm_arn],
                    "Time": now,
                }
            ]
        )

    def _jump_starts(self) -> None:
        self._jump_from = self._clock.now()

    def _jump_ends(self) -> None:
        if self._jump_from is not None:
            with self._lock:
                self._jumps.append((self._jump_from, self._clock.now()))
            self._jump_from = None

"""Per-instance alarms on what the agent publishes: a silent agent (missing heartbeats are breaching)
and GPU XID errors. Created when a launch sees its instance in service with a healthy workload (not at
the claim: until the agent runs, its missing heartbeats would breach), deleted when the instance is
given back; their state changes reach the worker's remediation function through EventBridge.

Alarms are per instance because remediation must name the instance to replace; a group-level alarm
could only say that some instance is silent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spothub_core.contracts import METRICS_NAMESPACE, AgentMetric, alarm_name_prefix
from spothub_core.timings import HEARTBEAT_ALARM_PERIOD_SECONDS

# Three silent minutes (the agent beats every minute): one lost datapoint never pages anyone.
HEARTBEAT_MISSING_PERIODS = 3


@dataclass(frozen=True)
class AlarmKind:
    name: str
    metric: AgentMetric
    statistic: str
    comparison: str
    threshold: float
    periods: int
    missing_data: str
    reason: str


ALARM_KINDS = (
    AlarmKind(
        "heartbeat",
        AgentMetric.READY,
        "SampleCount",
        "LessThanThreshold",
        1,
        HEARTBEAT_MISSING_PERIODS,
        "breaching",
        "the agent stopped sending heartbeats",
    ),
    AlarmKind("gpu", AgentMetric.GPU_XID_ERRORS, "Sum", "GreaterThanThreshold", 0, 1, "notBreaching", "GPU XID errors"),
)


def alarm_name(prefix: str, kind: AlarmKind, instance_id: str) -> str:
    return f"{alarm_name_prefix(prefix)}{kind.name}-{instance_id}"


def parse_alarm_name(prefix: str, name: str) -> tuple[AlarmKind, str] | None:
    """(kind, instance id) of one of this deployment's instance alarms; None for any other alarm."""
    for kind in ALARM_KINDS:
        head = alarm_name(prefix, kind, "")
        if name.startswith(head) and name[len(head) :].startswith("i-"):
            return kind, name[len(head) :]
    return None


def alarm_names(prefix: str, instance_id: str) -> list[str]:
    return [alarm_name(prefix, kind, instance_id) for kind in ALARM_KINDS]


def alarm_definitions(prefix: str, instance_id: str, alarm_actions: list[str]) -> list[dict[str, Any]]:
    """The instance's alarms, as PutMetricAlarm's parameters."""
    return [
        {
            "AlarmName": alarm_name(prefix, kind, instance_id),
            "AlarmDescription": f"spothub {prefix}: {kind.reason} on {instance_id}; the instance is replaced.",
            "Namespace": METRICS_NAMESPACE,
            "MetricName": kind.metric.value,
            "Dimensions": [{"Name": "Prefix", "Value": prefix}, {"Name": "InstanceId", "Value": instance_id}],
            "Statistic": kind.statistic,
            "Period": HEARTBEAT_ALARM_PERIOD_SECONDS,
            "EvaluationPeriods": kind.periods,
            "DatapointsToAlarm": kind.periods,
            "Threshold": kind.threshold,
            "ComparisonOperator": kind.comparison,
            "TreatMissingData": kind.missing_data,
            "AlarmActions": alarm_actions,
        }
        for kind in ALARM_KINDS
    ]

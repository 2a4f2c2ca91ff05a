"""The per-instance CloudWatch alarms (their definitions: logic/instance_alarms.py): created or updated
(PutMetricAlarm is an upsert) and deleted by name."""

from __future__ import annotations

from typing import Any

from spothub_core.dal.task_errors import aws_call


class InstanceAlarms:
    def __init__(self, cloudwatch: Any) -> None:
        self._cloudwatch = cloudwatch

    def put(self, alarms: list[dict[str, Any]]) -> None:
        """Create or update each alarm, given as PutMetricAlarm's parameters."""
        for alarm in alarms:
            aws_call("create the instance's alarms", self._cloudwatch.put_metric_alarm, **alarm)

    def delete(self, names: list[str]) -> None:
        """Delete the alarms; names of alarms that do not exist are no error."""
        aws_call("delete the instance's alarms", self._cloudwatch.delete_alarms, AlarmNames=names)

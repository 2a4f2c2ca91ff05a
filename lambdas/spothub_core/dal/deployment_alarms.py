"""CloudWatch alarms in ALARM, for the deployments API's GET /health: every alarm of the deployment (its names start
with "<prefix>-") that is firing in the hub region."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import DependencyUnavailable


class AlarmStates:
    def __init__(self, cloudwatch: Any) -> None:
        self._cloudwatch = cloudwatch

    def in_alarm(self, name_prefix: str) -> list[str]:
        """The names of the metric alarms named `name_prefix`... in state ALARM, sorted (spothub makes no composite
        alarm, and the API's grant is of `alarm:<prefix>-*` only). Raises DependencyUnavailable when CloudWatch does
        not answer."""
        names: list[str] = []
        try:
            pages = self._cloudwatch.get_paginator("describe_alarms").paginate(
                AlarmNamePrefix=name_prefix, StateValue="ALARM", AlarmTypes=["MetricAlarm"]
            )
            for page in pages:
                # StateValue is asked of CloudWatch; looked at again since emulators (moto) ignore it beside a prefix.
                alarms = page.get("MetricAlarms", [])
                names.extend(alarm["AlarmName"] for alarm in alarms if alarm.get("StateValue") == "ALARM")
        except (ClientError, BotoCoreError) as exc:
            raise DependencyUnavailable(f"could not read the alarms: {reason_of(exc)}") from exc
        return sorted(names)

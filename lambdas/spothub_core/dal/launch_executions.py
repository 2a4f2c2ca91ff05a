"""A worker region's launch_instance executions: which are running (each named by its launch id), and
stopping one."""

from __future__ import annotations

from typing import Any

from spothub_core.dal.task_errors import aws_call


class LaunchExecutions:
    def __init__(self, sfn: Any, state_machine_arn: str) -> None:
        self._sfn = sfn
        self.state_machine_arn = state_machine_arn

    def running(self) -> dict[str, str]:
        """The running launches: execution ARN by name (the launch id)."""
        running: dict[str, str] = {}
        query: dict[str, Any] = {"stateMachineArn": self.state_machine_arn, "statusFilter": "RUNNING"}
        while True:
            page = aws_call("list running launches", self._sfn.list_executions, **query)
            running |= {e["name"]: e["executionArn"] for e in page.get("executions", [])}
            if not page.get("nextToken"):
                return running
            query["nextToken"] = page["nextToken"]

    def stop(self, execution_arn: str, cause: str) -> None:
        aws_call("stop a launch", self._sfn.stop_execution, executionArn=execution_arn, cause=cause)

"""The tasks of the worker's `teardown_instance` state machine: stop tasks, give instances back, and
confirm when they are gone. A teardown names one launch, one instance, or (neither) the whole region."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import TransientError
from spothub_core.logic.worker_region import (
    WorkerRegion,
    aws_call,
    members,
    release_launch,
    set_size,
    stop_tasks,
    terminate,
)


def teardown(worker: WorkerRegion, instance_id: str | None, launch_id: str | None) -> dict[str, Any]:
    if launch_id:
        _stop_launches(worker, launch_id)
        release_launch(worker, launch_id)
        return {"waiting_for": []}
    if instance_id:
        stop_tasks(worker, instance_id=instance_id)
        terminate(worker, instance_id)
        return {"waiting_for": [instance_id]}
    _stop_launches(worker, None)
    stop_tasks(worker)
    group, live = members(worker)
    set_size(worker, group, desired=0, on_demand=0)
    return {"waiting_for": [m["InstanceId"] for m in live]}


def teardown_status(worker: WorkerRegion, waiting_for: list[str]) -> dict[str, Any]:
    if not waiting_for:
        return {"done": True, "remaining": []}
    states = _instance_states(worker, waiting_for)
    remaining = [i for i in waiting_for if states.get(i, "terminated") != "terminated"]
    return {"done": not remaining, "remaining": remaining}


def _instance_states(worker: WorkerRegion, instance_ids: list[str]) -> dict[str, str]:
    """State per instance; instances EC2 no longer knows are left out (they are gone)."""
    try:
        reservations = worker.ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
    except ClientError as exc:
        if "InvalidInstanceID" in exc.response["Error"].get("Code", ""):
            return {}
        raise TransientError(f"describe instances: {reason_of(exc)}") from exc
    return {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}


def _stop_launches(worker: WorkerRegion, launch_id: str | None) -> None:
    """Stop the running launch executions: the named one, or (None) all of them."""
    if not worker.launch_state_machine_arn:
        return
    running = aws_call(
        "list launches",
        worker.sfn.list_executions,
        stateMachineArn=worker.launch_state_machine_arn,
        statusFilter="RUNNING",
    ).get("executions", [])
    for execution in running:
        if launch_id is None or execution["name"] == launch_id:
            aws_call(
                "stop a launch",
                worker.sfn.stop_execution,
                executionArn=execution["executionArn"],
                cause="spothub teardown",
            )

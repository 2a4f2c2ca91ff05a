"""The tasks of the worker's `teardown_instance` state machine: stop tasks, give instances back, and
confirm when they are gone. A teardown names one launch, one instance, or (neither) the whole region."""

from __future__ import annotations

from spothub_core.logic.worker_region import (
    TEARDOWN_REASON,
    WorkerRegion,
    members,
    release_launch,
    set_size,
    stop_tasks,
    terminate,
)
from spothub_core.models.worker_tasks import Teardown, TeardownProgress, TeardownStarted, TeardownStatus

TERMINATED = "terminated"


def teardown(worker: WorkerRegion, task: Teardown) -> TeardownStarted:
    if task.launch_id:
        _stop_launches(worker, task.launch_id)
        release_launch(worker, task.launch_id)
        return TeardownStarted(waiting_for=[])
    if task.instance_id:
        stop_tasks(worker, instance_id=task.instance_id)
        terminate(worker, task.instance_id)
        return TeardownStarted(waiting_for=[task.instance_id])
    _stop_launches(worker, None)
    stop_tasks(worker)
    group, live = members(worker)
    set_size(worker, group, desired=0, on_demand=0)
    return TeardownStarted(waiting_for=[m["InstanceId"] for m in live])


def teardown_status(worker: WorkerRegion, task: TeardownStatus) -> TeardownProgress:
    if not task.waiting_for:
        return TeardownProgress(done=True, remaining=[])
    states = worker.instances.states(task.waiting_for)
    remaining = [i for i in task.waiting_for if states.get(i, TERMINATED) != TERMINATED]
    return TeardownProgress(done=not remaining, remaining=remaining)


def _stop_launches(worker: WorkerRegion, launch_id: str | None) -> None:
    """Stop the running launch executions: the named one, or (None) all of them."""
    for name, execution_arn in worker.launches.running().items():
        if launch_id is None or name == launch_id:
            worker.launches.stop(execution_arn, TEARDOWN_REASON)

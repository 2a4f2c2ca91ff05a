"""A deployment's status from its tasks (spothub_core.logic.deployment_scaling.rollup), as a pure function: running,
degraded, creating, failed when a slot gave up or when creating outlasted DEPLOYMENT_CREATING_LIMIT_SECONDS (saying
what held it: capacity, the image pull, the health check), and the slot model it reads."""

from __future__ import annotations

from typing import Any

from spothub_core.logic.deployment_health import current_tasks, slot_gave_up, slot_occupied
from spothub_core.logic.deployment_scaling import Rollup, rollup
from spothub_core.models.deployment_records import (
    DeploymentStatus,
    DeploymentTask,
    ModelDeployment,
    RetireReason,
    TaskStatus,
)
from spothub_core.timings import DEPLOYMENT_CREATING_LIMIT_SECONDS

NOW = 1_700_000_000.0
LATE = NOW + DEPLOYMENT_CREATING_LIMIT_SECONDS
PULL_ERROR = "CannotPullContainerError: pull image manifest has been retried 5 time(s): not found"


def deployment(
    status: DeploymentStatus = DeploymentStatus.CREATING, replicas: int = 2, **fields: Any
) -> ModelDeployment:
    return ModelDeployment(
        deployment_id="d-1",
        model="m",
        tenant="acme",
        image="vllm",
        gpus=1,
        replicas=replicas,
        min_replicas=replicas,
        max_replicas=replicas,
        node_class="1gpu",
        status=status,
        created_at=NOW,
        updated_at=NOW,
        **fields,
    )


_counter = iter(range(1, 10_000))


def task(slot: int, status: TaskStatus, **fields: Any) -> DeploymentTask:
    """Tasks made later get later ids (ids sort by creation)."""
    return DeploymentTask(
        deployment_id="d-1",
        task_id=f"t-{next(_counter):06d}",
        slot=slot,
        generation=fields.pop("generation", 0),
        status=status,
        gpus=1,
        created_at=NOW,
        **fields,
    )


def test_every_desired_slot_running_is_running_and_clears_the_error() -> None:
    tasks = [task(0, TaskStatus.RUNNING), task(1, TaskStatus.RUNNING)]
    assert rollup(deployment(last_error="old"), tasks, NOW) == Rollup(DeploymentStatus.RUNNING, None)
    assert rollup(deployment(DeploymentStatus.DEGRADED), tasks, NOW).status == DeploymentStatus.RUNNING
    assert rollup(deployment(DeploymentStatus.FAILED), tasks, NOW).status == DeploymentStatus.RUNNING


def test_nothing_wanted_is_running() -> None:
    assert rollup(deployment(replicas=0), [], NOW).status == DeploymentStatus.RUNNING


def test_running_tasks_of_surplus_slots_do_not_count() -> None:
    tasks = [task(0, TaskStatus.RUNNING), task(2, TaskStatus.RUNNING)]
    assert rollup(deployment(DeploymentStatus.RUNNING), tasks, NOW).status == DeploymentStatus.DEGRADED


def test_a_replacement_and_the_task_it_replaces_count_their_slot_once() -> None:
    old = task(0, TaskStatus.RUNNING, retire=RetireReason.DRAIN)
    tasks = [old, task(0, TaskStatus.RUNNING, replaces=old.task_id)]
    assert rollup(deployment(DeploymentStatus.RUNNING), tasks, NOW).status == DeploymentStatus.DEGRADED


def test_some_running_is_creating_until_it_ran_then_degraded() -> None:
    tasks = [task(0, TaskStatus.RUNNING), task(1, TaskStatus.PENDING)]
    creating = rollup(deployment(), tasks, NOW + 60)
    assert creating == Rollup(DeploymentStatus.CREATING, "no capacity: 1 task waiting for 1gpu nodes")
    assert rollup(deployment(DeploymentStatus.RUNNING), tasks, NOW).status == DeploymentStatus.DEGRADED
    assert rollup(deployment(DeploymentStatus.FAILED), tasks, NOW).status == DeploymentStatus.DEGRADED


def test_a_running_deployment_losing_every_replica_is_degraded_while_they_restart() -> None:
    tasks = [
        task(0, TaskStatus.STOPPED, last_error="Essential container in task exited (exit 137)", stopped_at=NOW),
        task(0, TaskStatus.PENDING, not_before=NOW + 30, failures=2),
        task(1, TaskStatus.STARTING),
    ]
    verdict = rollup(deployment(DeploymentStatus.RUNNING), tasks, NOW)
    assert verdict.status == DeploymentStatus.DEGRADED
    assert verdict.last_error == (
        "restarting: 1 task in restart backoff; health check: 1 task started, not healthy yet; "
        "last stop: Essential container in task exited (exit 137)"
    )


def test_no_replica_running_and_a_slot_given_up_is_failed_with_why() -> None:
    gave_up = "gave up after 5 restarts: " + PULL_ERROR
    tasks = [
        task(0, TaskStatus.STOPPED, last_error=PULL_ERROR, stopped_at=NOW),
        task(0, TaskStatus.FAILED, last_error=gave_up, stopped_at=NOW + 1),
        task(1, TaskStatus.PENDING),
    ]
    assert rollup(deployment(), tasks, NOW) == Rollup(DeploymentStatus.FAILED, "slot 0 " + gave_up)
    assert rollup(deployment(DeploymentStatus.RUNNING), tasks, NOW).status == DeploymentStatus.FAILED


def test_a_slot_given_up_beside_running_ones_is_degraded() -> None:
    tasks = [task(0, TaskStatus.FAILED, last_error="gave up after 5 restarts: x"), task(1, TaskStatus.RUNNING)]
    verdict = rollup(deployment(DeploymentStatus.RUNNING), tasks, NOW)
    assert verdict == Rollup(DeploymentStatus.DEGRADED, "slot 0 gave up after 5 restarts: x")


def test_a_failure_of_an_older_generation_is_not_a_give_up() -> None:
    tasks = [task(0, TaskStatus.FAILED, last_error="gave up after 5 restarts: x", generation=0)]
    verdict = rollup(deployment(DeploymentStatus.FAILED, replicas=1, restart_generation=1), tasks, NOW)
    assert verdict.status == DeploymentStatus.FAILED  # stays failed (nothing runs), not for this give-up
    assert rollup(deployment(replicas=1, restart_generation=1), tasks, NOW).status == DeploymentStatus.CREATING


def test_creating_past_the_limit_with_no_capacity_fails_saying_so() -> None:
    tasks = [task(0, TaskStatus.PENDING), task(1, TaskStatus.PENDING)]
    assert rollup(deployment(), tasks, LATE - 1).status == DeploymentStatus.CREATING
    verdict = rollup(deployment(), tasks, LATE)
    assert verdict == Rollup(
        DeploymentStatus.FAILED, "not running after 30 min: no capacity: 2 tasks waiting for 1gpu nodes"
    )


def test_creating_past_the_limit_stuck_in_the_image_pull_fails_saying_so() -> None:
    tasks = [
        task(0, TaskStatus.STOPPED, last_error=PULL_ERROR, stopped_at=LATE - 100),
        task(0, TaskStatus.PENDING, not_before=LATE + 200, failures=4),
    ]
    verdict = rollup(deployment(replicas=1), tasks, LATE)
    assert verdict.status == DeploymentStatus.FAILED
    assert (
        verdict.last_error
        == f"not running after 30 min: restarting: 1 task in restart backoff; last stop: {PULL_ERROR}"
    )


def test_creating_past_the_limit_not_healthy_fails_with_the_health_check() -> None:
    tasks = [task(0, TaskStatus.STARTING)]
    verdict = rollup(deployment(replicas=1), tasks, LATE)
    assert verdict == Rollup(
        DeploymentStatus.FAILED, "not running after 30 min: health check: 1 task started, not healthy yet"
    )


def test_creating_past_the_limit_with_some_running_is_degraded_saying_what_holds_the_rest() -> None:
    tasks = [task(0, TaskStatus.RUNNING), task(1, TaskStatus.PENDING)]
    verdict = rollup(deployment(), tasks, LATE)
    assert verdict == Rollup(
        DeploymentStatus.DEGRADED, "not running after 30 min: no capacity: 1 task waiting for 1gpu nodes"
    )


def test_a_failed_deployment_stays_failed_with_its_error_until_a_replica_runs() -> None:
    tasks = [task(0, TaskStatus.PENDING)]
    failed = deployment(DeploymentStatus.FAILED, replicas=1, last_error="not running after 30 min: no capacity")
    assert rollup(failed, tasks, LATE + 3600) == Rollup(
        DeploymentStatus.FAILED, "not running after 30 min: no capacity"
    )


def test_an_unhealthy_replica_is_named() -> None:
    tasks = [task(0, TaskStatus.UNHEALTHY), task(1, TaskStatus.RUNNING)]
    verdict = rollup(deployment(DeploymentStatus.RUNNING), tasks, NOW)
    assert verdict == Rollup(DeploymentStatus.DEGRADED, "health check: 1 task failing")


# --- the slot model ----------------------------------------------------------------------------------------------


def test_a_slots_current_task_is_its_live_task_not_retired() -> None:
    old = task(0, TaskStatus.RUNNING, retire=RetireReason.RESTART)
    new = task(0, TaskStatus.STARTING, replaces=old.task_id)
    ended = task(0, TaskStatus.STOPPED)
    assert current_tasks([old, new, ended, task(1, TaskStatus.RUNNING)], 0) == [new]


def test_a_slot_is_occupied_by_any_live_task_but_those_retired_for_good() -> None:
    assert slot_occupied([task(0, TaskStatus.RUNNING, retire=RetireReason.DRAIN)], 0)
    assert slot_occupied([task(0, TaskStatus.STOPPING, retire=RetireReason.UNHEALTHY)], 0)
    assert slot_occupied([task(0, TaskStatus.PENDING)], 0)
    assert not slot_occupied([task(0, TaskStatus.STOPPING, retire=RetireReason.SCALE_DOWN)], 0)
    assert not slot_occupied([task(0, TaskStatus.RUNNING, retire=RetireReason.DELETED)], 0)
    assert not slot_occupied([task(0, TaskStatus.STOPPED), task(1, TaskStatus.RUNNING)], 0)


def test_a_slot_gave_up_when_its_newest_task_failed_in_this_generation() -> None:
    earlier = task(0, TaskStatus.STOPPED)
    failed = task(0, TaskStatus.FAILED, generation=1)
    assert slot_gave_up([earlier, failed], 0, 1) == failed
    assert slot_gave_up([failed], 0, 2) is None  # a restart retries it
    assert slot_gave_up([failed, task(0, TaskStatus.PENDING)], 0, 1) is None
    assert slot_gave_up([], 0, 0) is None
    # a retired task that keeps serving after its replacement gave up does not hide the give-up
    serving = task(0, TaskStatus.RUNNING, retire=RetireReason.RESTART)
    gave_up = task(0, TaskStatus.FAILED, replaces=serving.task_id)
    assert slot_gave_up([serving, gave_up], 0, 0) == gave_up

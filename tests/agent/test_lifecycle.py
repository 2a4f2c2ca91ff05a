"""Lifecycle completion: CONTINUE once the workload answers its health check, ABANDON when it does not in
time. Against a fake Auto Scaling client: moto 5.2.5 does not implement CompleteLifecycleAction or
RecordLifecycleActionHeartbeat (it raises NotImplementedError)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from spothub_agent.settings import WorkloadSpec
from tests.agent.conftest import (
    INSTANCE_ID,
    FakeAutoScaling,
    FakeWorkload,
    HealthServer,
    MakeAgent,
    wait_for,
    workload_command,
)

EXPECTED_CALL = {
    "LifecycleHookName": "spothub-workload-healthy",
    "AutoScalingGroupName": "spothub-gpu",
    "InstanceId": INSTANCE_ID,
}


def run_lifecycle(agent: object) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=agent.lifecycle.run, args=(stop,), daemon=True)  # type: ignore[attr-defined]
    thread.start()
    return thread, stop


def test_continue_once_the_workload_answers_its_health_check(
    make_agent: MakeAgent, autoscaling: FakeAutoScaling, health: HealthServer, tmp_path: Path
) -> None:
    agent = make_agent(
        health_url=health.url, workload=WorkloadSpec(runner="process", command=workload_command(tmp_path))
    )
    agent.workload.start()
    thread, stop = run_lifecycle(agent)
    try:
        wait_for(lambda: len(autoscaling.heartbeats) >= 2)  # waiting: the hook's timeout is extended
        assert health.requests >= 2
        assert autoscaling.completed == []
        health.status = 200
        wait_for(lambda: autoscaling.completed)
        thread.join(5)
        assert not thread.is_alive()  # done, once
        assert autoscaling.completed == [{**EXPECTED_CALL, "LifecycleActionResult": "CONTINUE"}]
        assert autoscaling.heartbeats[0] == EXPECTED_CALL
        assert agent.state.lifecycle["result"] == "CONTINUE"
    finally:
        stop.set()
        agent.workload.release()


def test_abandon_with_the_reason_when_not_healthy_in_time(
    make_agent: MakeAgent, autoscaling: FakeAutoScaling, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spothub_agent")
    workload = FakeWorkload()
    agent = make_agent(use=workload, healthy_within_s=0.3)
    started = time.monotonic()
    thread, _ = run_lifecycle(agent)
    wait_for(lambda: autoscaling.completed)
    thread.join(5)
    assert time.monotonic() - started >= 0.3
    assert autoscaling.completed == [{**EXPECTED_CALL, "LifecycleActionResult": "ABANDON"}]
    reason = agent.state.lifecycle["reason"]
    assert "not healthy within 0.3s" in reason
    assert "last output: last line" in reason
    logged = [json.loads(r.message) for r in caplog.records if "lifecycle_completed" in r.message]
    assert logged[0]["result"] == "ABANDON"
    assert logged[0]["reason"] == reason


def test_a_workload_that_exits_before_it_is_healthy_is_abandoned_at_once(
    make_agent: MakeAgent, autoscaling: FakeAutoScaling, health: HealthServer
) -> None:
    agent = make_agent(
        health_url=health.url,
        healthy_within_s=60,
        workload=WorkloadSpec(runner="process", command=("/bin/sh", "-c", "echo model not found; exit 4")),
    )
    agent.workload.start()
    run_lifecycle(agent)
    wait_for(lambda: autoscaling.completed)
    assert autoscaling.completed[0]["LifecycleActionResult"] == "ABANDON"
    assert "exited (exit code 4)" in agent.state.lifecycle["reason"]
    assert "model not found" in agent.state.lifecycle["reason"]


def test_no_active_lifecycle_action_is_recorded_not_fatal(make_agent: MakeAgent, autoscaling: FakeAutoScaling) -> None:
    autoscaling.active = False  # completed by someone else, or the hook timed out
    workload = FakeWorkload()
    workload.is_healthy = True
    agent = make_agent(use=workload)
    thread, _ = run_lifecycle(agent)
    thread.join(5)
    assert not thread.is_alive()
    assert agent.state.lifecycle["result"] == "NOT_ACTIVE"
    assert "No active Lifecycle Action found" in agent.state.lifecycle["reason"]


def test_a_failed_completion_is_retried(make_agent: MakeAgent, autoscaling: FakeAutoScaling) -> None:
    autoscaling.fail_next = [
        ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "CompleteLifecycleAction")
    ]
    workload = FakeWorkload()
    workload.is_healthy = True
    agent = make_agent(use=workload)
    thread, _ = run_lifecycle(agent)
    thread.join(5)
    assert autoscaling.completed == [{**EXPECTED_CALL, "LifecycleActionResult": "CONTINUE"}]
    assert agent.state.lifecycle["result"] == "CONTINUE"


def test_completed_once_across_restarts_and_the_wait_is_not_reset(
    make_agent: MakeAgent, autoscaling: FakeAutoScaling
) -> None:
    workload = FakeWorkload()
    first = make_agent(use=workload, healthy_within_s=30)
    thread, stop = run_lifecycle(first)
    wait_for(lambda: first.state.snapshot()["waiting_since"])
    stop.set()
    thread.join(5)
    waiting_since = first.state.snapshot()["waiting_since"]
    # Restarted: still waiting since the first start, and completes once when healthy.
    second = make_agent(use=workload, healthy_within_s=30)
    workload.is_healthy = True
    thread, _ = run_lifecycle(second)
    thread.join(5)
    assert second.state.snapshot()["waiting_since"] == waiting_since
    assert len(autoscaling.completed) == 1
    third = make_agent(use=workload)
    thread, _ = run_lifecycle(third)
    thread.join(5)
    assert len(autoscaling.completed) == 1  # the state file says it is done: no second call
    assert autoscaling.active is False


def test_an_interrupted_instance_does_not_complete_its_lifecycle(
    make_agent: MakeAgent, autoscaling: FakeAutoScaling
) -> None:
    agent = make_agent(use=FakeWorkload())
    agent.state.begin_drain("interruption-1", time.time() + 100)
    thread, _ = run_lifecycle(agent)
    thread.join(5)
    assert not thread.is_alive()
    assert autoscaling.completed == []

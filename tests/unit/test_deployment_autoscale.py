"""The autoscaling decision of a deployment (spothub_core.logic.deployment_scaling.autoscale_decision) and the
utilization it decides on (deployment_utilization), as pure functions: up proportionally (at most doubling) when
10%+ above target, down one step when 20%+ below and the rest would stay under target, min/max, the cooldown, no
decision without a fresh sample or while an earlier scale-up is starting."""

from __future__ import annotations

from typing import Any

import pytest

from spothub_core.logic.deployment_scaling import AutoscaleDecision, autoscale_decision, deployment_utilization
from spothub_core.models.deployment_records import DeploymentTask, GpuNode, GpuUsage, TaskStatus
from spothub_core.timings import DEPLOYMENT_UTILIZATION_WINDOW_SECONDS

NOW = 1_700_000_000.0


def decide(**overrides: Any) -> AutoscaleDecision | None:
    arguments: dict[str, Any] = {
        "replicas": 2,
        "running": 2,
        "waiting": 0,
        "utilization": 70.0,
        "target": 70.0,
        "min_replicas": 1,
        "max_replicas": 6,
        "now": NOW,
        "last_scaled_at": None,
        "cooldown_s": 300,
    }
    return autoscale_decision(**{**arguments, **overrides})


# --- the decision ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("utilization", [70.0, 76.0, 57.0, 60.0])
def test_within_the_band_around_the_target_nothing_changes(utilization: float) -> None:
    assert decide(utilization=utilization) is None


def test_above_target_by_ten_percent_scales_up_to_what_brings_it_to_the_target() -> None:
    decision = decide(utilization=91.0)  # 2 x 91 / 70 = 2.6 -> 3
    assert decision == AutoscaleDecision(3, 3, "GPU utilization 91% vs target 70%: 2 → 3 replicas")
    assert not decision.capped
    assert decide(utilization=77.0) == AutoscaleDecision(3, 3, "GPU utilization 77% vs target 70%: 2 → 3 replicas")


def test_a_scale_up_adds_at_least_one_and_at_most_doubles() -> None:
    assert decide(replicas=4, running=4, utilization=78.0).desired == 5  # 4 x 78 / 70 = 4.46 -> 5
    assert decide(replicas=2, running=2, utilization=100.0, target=20.0).desired == 4  # 10 wanted, doubled at most


def test_a_scale_up_stops_at_max_replicas_and_says_so() -> None:
    decision = decide(replicas=5, running=5, utilization=100.0, target=50.0)
    assert decision is not None
    assert (decision.desired, decision.wanted, decision.capped) == (6, 10, True)
    assert decision.reason.endswith("5 → 6 replicas (wanted 10, max_replicas 6)")
    assert decide(replicas=6, running=6, utilization=100.0) is None  # at max already: nothing to decide


def test_no_scale_up_while_an_earlier_one_is_still_starting() -> None:
    assert decide(replicas=3, running=2, waiting=1, utilization=95.0) is None
    # a scale-down needs no wait: the replicas running are what the utilization measures
    assert decide(replicas=3, running=2, waiting=1, utilization=10.0).desired == 2


def test_below_target_by_twenty_percent_scales_down_one_step() -> None:
    decision = decide(replicas=4, running=4, utilization=20.0)
    assert decision == AutoscaleDecision(3, 3, "GPU utilization 20% vs target 70%: 4 → 3 replicas")


def test_no_scale_down_that_would_push_the_rest_above_target() -> None:
    # 2 x 50% = 100 GPU-percent: one replica would run at 100% against a target of 70%
    assert decide(replicas=2, running=2, utilization=50.0) is None
    # 3 x 50% = 150: two replicas at 75%, 150 / 70 = 2.14 -> 3 needed: stay
    assert decide(replicas=3, running=3, utilization=50.0) is None
    # 3 x 40% = 120: two at 60%
    assert decide(replicas=3, running=3, utilization=40.0).desired == 2


def test_never_below_min_replicas_nor_to_zero() -> None:
    assert decide(replicas=2, running=2, utilization=0.0, min_replicas=2) is None
    assert decide(replicas=1, running=1, utilization=0.0, min_replicas=0) is None
    assert decide(replicas=2, running=2, utilization=0.0, min_replicas=0).desired == 1


def test_the_cooldown_holds_every_decision() -> None:
    assert decide(utilization=99.0, last_scaled_at=NOW - 299) is None
    assert decide(utilization=5.0, replicas=3, running=3, last_scaled_at=NOW - 100) is None
    assert decide(utilization=99.0, last_scaled_at=NOW - 300).desired == 3  # reached at its boundary
    assert decide(utilization=99.0, last_scaled_at=NOW - 61, cooldown_s=60).desired == 3


def test_no_utilization_or_nothing_running_decides_nothing() -> None:
    assert decide(utilization=None) is None
    assert decide(running=0, waiting=2, utilization=99.0) is None


def test_replicas_outside_min_max_are_brought_within_at_once() -> None:
    assert decide(replicas=8, running=8, max_replicas=6, last_scaled_at=NOW).desired == 6
    decision = decide(replicas=1, running=1, min_replicas=3, utilization=None)
    assert decision is not None
    assert decision.desired == 3
    assert "outside 3..6" in decision.reason


# --- the utilization ---------------------------------------------------------------------------------------------


def node(instance_id: str, usage: list[float | None], *, heartbeat: float | None = NOW) -> GpuNode:
    return GpuNode(
        instance_id=instance_id,
        region="us-west-2",
        node_class="4gpu",
        instance_type="g5.12xlarge",
        container_instance_arn=f"arn:ci/{instance_id}",
        gpus_total=len(usage),
        gpu_ids=[f"GPU-{instance_id}-{i}" for i in range(len(usage))],
        first_seen=NOW - 3600,
        last_heartbeat=heartbeat,
        gpu_usage=[
            GpuUsage(uuid=f"GPU-{instance_id}-{i}", index=i, utilization_pct=pct) for i, pct in enumerate(usage)
        ],
    )


def task(task_id: str, instance_id: str, gpus: list[int], status: TaskStatus = TaskStatus.RUNNING) -> DeploymentTask:
    return DeploymentTask(
        deployment_id="d-1",
        task_id=task_id,
        slot=0,
        generation=0,
        status=status,
        gpus=len(gpus),
        created_at=NOW - 600,
        instance_id=instance_id,
        gpu_ids=[f"GPU-{instance_id}-{i}" for i in gpus],
    )


def test_the_utilization_is_the_mean_over_the_running_tasks_own_gpus() -> None:
    nodes = {"i-a": node("i-a", [90.0, 70.0, 5.0, 5.0]), "i-b": node("i-b", [50.0, 0.0])}
    tasks = [task("t-1", "i-a", [0, 1]), task("t-2", "i-b", [0])]  # the other GPUs serve other deployments
    assert deployment_utilization(tasks, nodes, NOW) == pytest.approx((90 + 70 + 50) / 3)


def test_only_running_tasks_and_fresh_heartbeats_count() -> None:
    nodes = {
        "i-a": node("i-a", [90.0]),
        "i-old": node("i-old", [10.0], heartbeat=NOW - DEPLOYMENT_UTILIZATION_WINDOW_SECONDS - 1),
        "i-never": node("i-never", [10.0], heartbeat=None),
    }
    tasks = [
        task("t-1", "i-a", [0]),
        task("t-2", "i-old", [0]),
        task("t-3", "i-never", [0]),
        task("t-4", "i-a", [0], status=TaskStatus.STARTING),
        task("t-5", "i-missing", [0]),
    ]
    assert deployment_utilization(tasks, nodes, NOW) == 90.0
    assert deployment_utilization(tasks[1:], nodes, NOW) is None


def test_gpus_the_agent_reported_no_utilization_for_are_left_out() -> None:
    nodes = {"i-a": node("i-a", [None, 40.0])}
    assert deployment_utilization([task("t-1", "i-a", [0, 1])], nodes, NOW) == 40.0
    assert deployment_utilization([task("t-1", "i-a", [0])], nodes, NOW) is None

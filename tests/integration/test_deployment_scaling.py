"""The deployment controller's scaling step (spothub_core.logic.deployment_scaling.reconcile) against the deployments
table in moto's DynamoDB and a stand-in ECS: a task per missing slot, scale-down, deletion to the end (the tenant's
GPUs given back once), autoscaling up, down, within the cooldown and the tenant's quota (capped, refused), and the
status rollup written without overriding a deletion.

Runs go through the stand-in controller of test_deployment_health (observe, then reconcile; placement by `place`).
"""

from __future__ import annotations

import pytest

from spothub_core.dal.deployment_store import DeploymentStore
from spothub_core.logic.deployment_scaling import reconcile
from spothub_core.models.deployment_records import (
    Autoscale,
    DeploymentStatus,
    DeploymentTask,
    GpuNode,
    ModelDeployment,
    RetireReason,
    ScalingResult,
    ScalingTrigger,
    TaskStatus,
)
from spothub_core.timings import DEPLOYMENT_CREATING_LIMIT_SECONDS, DEPLOYMENT_RECORD_TTL_SECONDS
from tests.integration.deployment_fixtures import (  # noqa: F401 (fixtures)
    NOW,
    deployment_store_fixture,
    deployments_table_fixture,
    make_deployment,
    make_node,
    make_task,
    write_deployment,
    write_node,
    write_task,
)
from tests.integration.test_deployment_health import Controller, events, live, only

AUTOSCALE = Autoscale(target_gpu_utilization=70, cooldown_s=300)


@pytest.fixture
def controller(deployment_store: DeploymentStore) -> Controller:
    return Controller(deployment_store)


def serving(
    controller: Controller,
    deployment: ModelDeployment,
    *,
    utilization: float | None = None,
    replicas: int | None = None,
    first_node: int = 1,
) -> list[GpuNode]:
    """The deployment written with one running task per slot, each on a node of its own whose agent reports
    `utilization` on its GPU(s)."""
    store = controller.store
    write_deployment(store, deployment)
    nodes = []
    for slot in range(deployment.replicas if replicas is None else replicas):
        spec = make_node(
            f"i-{first_node + slot:016x}",
            node_class=deployment.node_class,
            utilization=None if utilization is None else [utilization] * (4 if deployment.node_class == "4gpu" else 1),
        )
        node = write_node(store, spec)
        task = make_task(deployment, f"t-0000000000{slot:05d}", slot=slot, status=TaskStatus.RUNNING)
        running = write_task(store, task, node=node)
        controller.ecs.set(running.ecs_task_arn or "", health="HEALTHY", host_port=32768 + slot)
        nodes.append(node)
    running = [t for t in store.tasks(deployment.deployment_id) if t.status == TaskStatus.RUNNING]
    assert len(running) == len(nodes)
    return nodes


def reserved(store: DeploymentStore, tenant: str = "acme") -> int:
    return store.tenant(tenant).gpus_reserved


# --- slots -----------------------------------------------------------------------------------------------------------


def test_each_missing_slot_gets_a_pending_task_once(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment(replicas=3, restart_generation=2)
    write_deployment(store, deployment)

    stored, tasks = controller.run(deployment.deployment_id, NOW)

    assert sorted((t.slot, t.status, t.generation, t.gpus, t.failures, t.restarts) for t in tasks) == [
        (slot, TaskStatus.PENDING, 2, 1, 0, 0) for slot in range(3)
    ]
    assert stored.status == DeploymentStatus.CREATING
    assert stored.last_error == "no capacity: 3 tasks waiting for 1gpu nodes"
    _, again = controller.run(deployment.deployment_id, NOW + 60)
    assert again == tasks


def test_a_slot_with_a_task_coming_or_moving_gets_none(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment(replicas=3)
    write_deployment(store, deployment)
    node = write_node(store, make_node(node_class="4gpu"))
    old = write_task(store, make_task(deployment, "t-000000000000001", slot=0, status=TaskStatus.RUNNING), node=node)
    store.update_task(old, {"retire": RetireReason.DRAIN}, expect=[TaskStatus.RUNNING])
    write_task(store, make_task(deployment, "t-000000000000002", slot=0, replaces=old.task_id))
    write_task(store, make_task(deployment, "t-000000000000003", slot=1, status=TaskStatus.STARTING), node=node)
    # slot 2: only a task retired for a scale-down earlier: it needs a new one
    write_task(
        store,
        make_task(deployment, "t-000000000000004", slot=2, status=TaskStatus.STOPPED, retire=RetireReason.SCALE_DOWN),
    )

    _, tasks = reconcile(
        controller.context(NOW), deployment, store.tasks(deployment.deployment_id), {node.instance_id: node}
    )

    added = [t for t in tasks if t.task_id > "t-000000000000004"]
    assert [(t.slot, t.status) for t in added] == [(2, TaskStatus.PENDING)]


def test_scaling_down_retires_the_surplus_slots(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment(replicas=3, status=DeploymentStatus.RUNNING)
    serving(controller, deployment)
    extra = make_task(deployment, "t-zzzzzzzzzzzzzz9", slot=3)  # a pending task of a slot scaled away before
    write_task(store, extra)
    assert store.change_replicas(deployment, 1, quota=8) is not None

    stored, tasks = controller.run(deployment.deployment_id, NOW)

    assert [(t.slot, t.status, t.retire) for t in tasks] == [
        (0, TaskStatus.RUNNING, None),
        (1, TaskStatus.STOPPING, RetireReason.SCALE_DOWN),
        (2, TaskStatus.STOPPING, RetireReason.SCALE_DOWN),
        (3, TaskStatus.STOPPED, RetireReason.SCALE_DOWN),
    ]
    assert controller.ecs.stops == [(t.ecs_task_arn, "spothub: scale-down") for t in tasks[1:3]]
    assert stored.status == DeploymentStatus.RUNNING
    assert reserved(store) == 1

    _, tasks = controller.run(deployment.deployment_id, NOW + 10)  # ECS stopped them
    assert [t.status for t in tasks] == [TaskStatus.RUNNING] + [TaskStatus.STOPPED] * 3
    assert sum(n.gpus_allocated for n in store.nodes()) == 1
    assert len(controller.ecs.stops) == 2


def test_scaling_up_adds_slots_and_the_deployment_is_degraded_until_they_run(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment(replicas=1, max_replicas=3, status=DeploymentStatus.RUNNING)
    serving(controller, deployment)
    assert store.change_replicas(deployment, 3, quota=8) is not None

    stored, tasks = controller.run(deployment.deployment_id, NOW)

    # tasks made in the same millisecond sort in any order among themselves
    assert sorted((t.slot, t.status) for t in tasks) == [
        (0, TaskStatus.RUNNING),
        (1, TaskStatus.PENDING),
        (2, TaskStatus.PENDING),
    ]
    assert stored.status == DeploymentStatus.DEGRADED
    assert stored.last_error == "no capacity: 2 tasks waiting for 1gpu nodes"


# --- deletion --------------------------------------------------------------------------------------------------------


def test_a_deletion_stops_every_task_then_gives_the_quota_back_once(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment(replicas=2, status=DeploymentStatus.RUNNING)
    serving(controller, deployment)
    pending = make_task(deployment, "t-zzzzzzzzzzzzzz9", slot=1, replaces="x")  # never placed
    write_task(store, pending)
    assert reserved(store) == 2
    store.update_deployment(deployment.deployment_id, {"status": DeploymentStatus.DELETING})

    stored, tasks = controller.run(deployment.deployment_id, NOW)

    assert [(t.status, t.retire) for t in tasks] == [
        (TaskStatus.STOPPING, RetireReason.DELETED),
        (TaskStatus.STOPPING, RetireReason.DELETED),
        (TaskStatus.STOPPED, RetireReason.DELETED),
    ]
    assert sorted(controller.ecs.stopped_arns()) == sorted(t.ecs_task_arn for t in tasks[:2])
    assert stored.status == DeploymentStatus.DELETING
    assert reserved(store) == 2  # held until every task has stopped

    stored, tasks = controller.run(deployment.deployment_id, NOW + 20)  # ECS stopped them

    assert [t.status for t in tasks] == [TaskStatus.STOPPED] * 3
    assert stored.status == DeploymentStatus.DELETED
    assert stored.expires_at == int(NOW + 20 + DEPLOYMENT_RECORD_TTL_SECONDS)
    assert reserved(store) == 0
    assert all(n.gpus_allocated == 0 for n in store.nodes())
    [event] = events(store, deployment.deployment_id)
    assert (event.trigger, event.reason, event.before, event.after, event.result) == (
        ScalingTrigger.MANUAL,
        "deleted",
        2,
        0,
        ScalingResult.APPLIED,
    )

    # a second run with the deployment as it was read before (deleting): nothing given back twice
    still_deleting = stored.model_copy(update={"status": DeploymentStatus.DELETING})
    again, _ = reconcile(controller.context(NOW + 30), still_deleting, tasks, {})
    assert again.status == DeploymentStatus.DELETED
    assert reserved(store) == 0
    assert len(events(store, deployment.deployment_id)) == 1
    # and a deleted deployment is left as it is
    assert reconcile(controller.context(NOW + 40), stored, tasks, {}) == (stored, tasks)


def test_a_deployment_with_no_task_is_deleted_at_once(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment(replicas=2, status=DeploymentStatus.DELETING)
    write_deployment(store, deployment)
    stored, tasks = controller.run(deployment.deployment_id, NOW)
    assert (stored.status, tasks) == (DeploymentStatus.DELETED, [])
    assert reserved(store) == 0


# --- autoscaling -----------------------------------------------------------------------------------------------------


def autoscaled(replicas: int = 2, **fields: object) -> ModelDeployment:
    return make_deployment(
        replicas=replicas,
        min_replicas=fields.pop("min_replicas", 1),  # type: ignore[arg-type]
        max_replicas=fields.pop("max_replicas", 4),  # type: ignore[arg-type]
        autoscale=AUTOSCALE,
        status=fields.pop("status", DeploymentStatus.RUNNING),  # type: ignore[arg-type]
        **fields,
    )


def test_utilization_above_target_scales_up(controller: Controller) -> None:
    store = controller.store
    deployment = autoscaled()
    serving(controller, deployment, utilization=95.0)

    stored, tasks = controller.run(deployment.deployment_id, NOW)

    assert (stored.replicas, stored.last_scaled_at) == (3, NOW)
    assert reserved(store) == 3
    assert [(t.slot, t.status) for t in tasks][-1] == (2, TaskStatus.PENDING)
    assert stored.status == DeploymentStatus.DEGRADED
    [event] = events(store, deployment.deployment_id)
    assert (event.trigger, event.before, event.after, event.result) == (
        ScalingTrigger.AUTOSCALE,
        2,
        3,
        ScalingResult.APPLIED,
    )
    assert event.reason == "GPU utilization 95% vs target 70%: 2 → 3 replicas"


def test_within_the_cooldown_nothing_is_decided(controller: Controller) -> None:
    store = controller.store
    deployment = autoscaled(last_scaled_at=NOW - 299)
    serving(controller, deployment, utilization=99.0)
    stored, _ = controller.run(deployment.deployment_id, NOW)
    assert stored.replicas == 2
    assert events(store, deployment.deployment_id) == []
    stored, _ = controller.run(deployment.deployment_id, NOW + 1)
    assert stored.replicas == 3


def test_utilization_well_below_target_scales_down_one_step(controller: Controller) -> None:
    store = controller.store
    deployment = autoscaled(replicas=3)
    serving(controller, deployment, utilization=20.0)

    stored, tasks = controller.run(deployment.deployment_id, NOW)

    assert stored.replicas == 2
    assert reserved(store) == 2
    assert [(t.slot, t.status, t.retire) for t in tasks][-1] == (2, TaskStatus.STOPPING, RetireReason.SCALE_DOWN)
    assert stored.status == DeploymentStatus.RUNNING
    [event] = events(store, deployment.deployment_id)
    assert (event.before, event.after, event.result) == (3, 2, ScalingResult.APPLIED)
    # the next decision waits for the cooldown
    controller.run(deployment.deployment_id, NOW + 60)
    assert len(events(store, deployment.deployment_id)) == 1


def test_a_stale_or_missing_heartbeat_decides_nothing(controller: Controller) -> None:
    store = controller.store
    deployment = autoscaled()
    nodes = serving(controller, deployment, utilization=99.0)
    for node in nodes:
        store.update_node(node.instance_id, {"last_heartbeat": NOW - 600})
    stored, _ = controller.run(deployment.deployment_id, NOW)
    assert stored.replicas == 2
    assert events(store, deployment.deployment_id) == []


def test_a_creating_deployment_is_not_autoscaled(controller: Controller) -> None:
    store = controller.store
    deployment = autoscaled(status=DeploymentStatus.CREATING)
    serving(controller, deployment, utilization=99.0, replicas=1)
    stored, _ = controller.run(deployment.deployment_id, NOW)
    assert stored.replicas == 2
    assert events(store, deployment.deployment_id) == []


def test_a_scale_up_past_the_tenants_quota_is_capped_at_what_fits(controller: Controller) -> None:
    store = controller.store
    # acme's quota is 8 GPUs: another deployment holds 2, this one 4 (2 x 2): room for one more replica of 2
    write_deployment(store, make_deployment("d-000000000other0", gpus=2, replicas=1))
    deployment = autoscaled(gpus=2, replicas=2, max_replicas=4, node_class="4gpu")
    serving(controller, deployment, utilization=100.0)
    assert reserved(store) == 6
    # 2 x 100% against 40%: 5 replicas would do, 4 at most (max_replicas)
    deployment = deployment.model_copy(update={"autoscale": Autoscale(target_gpu_utilization=40, cooldown_s=300)})
    store.update_deployment(deployment.deployment_id, {"autoscale": deployment.autoscale})

    stored, _ = controller.run(deployment.deployment_id, NOW)

    assert stored.replicas == 3
    assert reserved(store) == 8
    [event] = events(store, deployment.deployment_id)
    assert (event.before, event.after, event.result) == (2, 3, ScalingResult.CAPPED)
    assert event.reason == (
        "GPU utilization 100% vs target 40%: 2 → 4 replicas; capped at 3 by tenant acme quota 8 GPUs"
    )


def test_a_scale_up_with_no_quota_left_is_refused_and_waits_for_the_cooldown(controller: Controller) -> None:
    store = controller.store
    deployment = autoscaled(tenant="small", replicas=2, max_replicas=4)  # small's quota: 2 GPUs, all reserved
    serving(controller, deployment, utilization=99.0)

    stored, _ = controller.run(deployment.deployment_id, NOW)

    assert (stored.replicas, stored.last_scaled_at) == (2, NOW)
    assert reserved(store, "small") == 2
    [event] = events(store, deployment.deployment_id)
    assert (event.before, event.after, event.result) == (2, 2, ScalingResult.REFUSED)
    assert event.reason.endswith("refused: over tenant small quota 2 GPUs")
    controller.run(deployment.deployment_id, NOW + 60)
    assert len(events(store, deployment.deployment_id)) == 1


def test_an_autoscaling_decision_losing_to_a_manual_scale_changes_nothing(controller: Controller) -> None:
    store = controller.store
    deployment = autoscaled()
    nodes = serving(controller, deployment, utilization=99.0)
    stale = store.get_deployment(deployment.deployment_id)
    assert stale is not None
    assert store.change_replicas(stale, 1, quota=8) is not None  # an operator scaled down meanwhile

    stored, _ = reconcile(
        controller.context(NOW),
        stale,
        store.tasks(deployment.deployment_id),
        {n.instance_id: n for n in store.nodes()},
    )

    assert stored.replicas == 1
    assert reserved(store) == 1
    assert events(store, deployment.deployment_id) == []
    assert len(nodes) == 2


# --- rollup ----------------------------------------------------------------------------------------------------------


def test_a_deployment_becomes_running_when_every_slot_is_healthy(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment(replicas=2)
    write_deployment(store, deployment)
    controller.run(deployment.deployment_id, NOW)
    node = write_node(store, make_node(node_class="4gpu"))
    started = [controller.place(t, node, NOW + 10) for t in store.tasks(deployment.deployment_id)]
    controller.ecs.healthy(started[0].ecs_task_arn or "")
    stored, _ = controller.run(deployment.deployment_id, NOW + 60)
    assert (stored.status, stored.last_error) == (
        DeploymentStatus.CREATING,
        "health check: 1 task started, not healthy yet",
    )
    controller.ecs.healthy(started[1].ecs_task_arn or "")
    stored, tasks = controller.run(deployment.deployment_id, NOW + 120)
    assert (stored.status, stored.last_error, stored.updated_at) == (DeploymentStatus.RUNNING, None, NOW + 120)
    assert [t.endpoint for t in tasks] == [f"http://{node.private_ip}:32768", f"http://{node.private_ip}:32769"]


def test_creating_with_no_capacity_past_the_limit_fails_saying_so(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment(replicas=2, gpus=4)
    write_deployment(store, deployment)
    controller.run(deployment.deployment_id, NOW)
    stored, _ = controller.run(deployment.deployment_id, NOW + DEPLOYMENT_CREATING_LIMIT_SECONDS)
    assert stored.status == DeploymentStatus.FAILED
    assert stored.last_error == "not running after 30 min: no capacity: 2 tasks waiting for 4gpu nodes"
    # its tasks keep waiting (capacity may still come): a failed deployment is not torn down
    assert len(live(store.tasks(deployment.deployment_id))) == 2


def test_the_rollup_never_overrides_a_deletion(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment(replicas=1)
    serving(controller, deployment)
    store.update_deployment(deployment.deployment_id, {"status": DeploymentStatus.DELETING})
    # a run that read the deployment before the DELETE
    stored, tasks = reconcile(
        controller.context(NOW),
        deployment,
        store.tasks(deployment.deployment_id),
        {n.instance_id: n for n in store.nodes()},
    )
    assert stored.status == DeploymentStatus.DELETING
    assert only(tasks).status == TaskStatus.RUNNING


def test_reconcile_answers_the_tasks_as_stored(controller: Controller) -> None:
    store = controller.store
    deployment = make_deployment(replicas=2)
    write_deployment(store, deployment)
    _, tasks = reconcile(controller.context(NOW), deployment, [], {})
    assert tasks == store.tasks(deployment.deployment_id)
    assert all(isinstance(t, DeploymentTask) for t in tasks)

"""The deployments table's store against moto: GPU accounting that never overcommits a node, quotas that concurrent
creates never exceed, GPUs given back exactly once, placements undone, the controller's lease.

moto does not make a conditional write atomic (it checks, then writes, without a lock), so the concurrency tests
run its item operations one at a time (`atomic_items`), as DynamoDB makes each item write atomic: the races the
conditions close (between a caller's read and its conditional write) still happen, twenty threads at once.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
import pytest

from spothub_core.dal.deployment_store import CreateOutcome, DeploymentStore, PlaceOutcome, encode_token
from spothub_core.models.deployment_records import (
    DeploymentStatus,
    DeploymentTask,
    GpuNode,
    NodeStatus,
    ScalingEvent,
    ScalingResult,
    ScalingTrigger,
    TaskStatus,
)
from tests.integration.batch_fixtures import atomic_items
from tests.integration.deployment_fixtures import (  # noqa: F401 (fixtures)
    DEPLOYMENTS_REGION,
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

T = TypeVar("T")
THREADS = 20


@pytest.fixture
def store(deployment_store: DeploymentStore) -> DeploymentStore:
    return deployment_store


@pytest.fixture
def own_store(deployments_table: Any) -> Callable[[], DeploymentStore]:
    """A store on a boto3 resource of its own: one per thread (boto3 resources are not shared across threads)."""
    local = threading.local()

    def store() -> DeploymentStore:
        if not hasattr(local, "store"):
            resource = boto3.session.Session().resource("dynamodb", region_name=DEPLOYMENTS_REGION)
            local.store = DeploymentStore(resource.Table(deployments_table.name))
        return local.store

    return store


def all_at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls in THREADS threads, released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.fixture
def serialized_items() -> Iterator[None]:
    with atomic_items():
        yield


def placement(node: GpuNode, task: DeploymentTask) -> dict[str, Any]:
    return {
        "instance_id": node.instance_id,
        "region": node.region,
        "container_instance_arn": node.container_instance_arn,
        "placed_at": NOW,
    }


# --- GPU accounting under concurrency -------------------------------------------------------------------------


@pytest.mark.usefixtures("serialized_items")
def test_twenty_concurrent_placements_on_one_node_never_overcommit_it(
    store: DeploymentStore, own_store: Callable[[], DeploymentStore]
) -> None:
    node = write_node(store, make_node("i-00000000000000f4", node_class="4gpu"))
    deployment = make_deployment(replicas=THREADS, tenant="big", max_replicas=THREADS)
    write_deployment(store, deployment, quota=THREADS)
    tasks = [make_task(deployment, f"t-{slot:015d}", slot=slot) for slot in range(THREADS)]
    for task in tasks:
        assert store.put_task(task)

    # Every run read the node with nothing allocated: only the node's condition stops the fifth.
    outcomes = all_at_once(
        [lambda task=task: own_store().place_task(task, node, placement(node, task)) for task in tasks]
    )

    assert Counter(outcomes) == {PlaceOutcome.PLACED: 4, PlaceOutcome.NODE_FULL: THREADS - 4}
    after = store.get_node(node.instance_id)
    assert after is not None and after.gpus_allocated == after.gpus_total == 4
    placed = [task for task in store.tasks(deployment.deployment_id) if task.status is TaskStatus.STARTING]
    assert len(placed) == 4 and {task.instance_id for task in placed} == {node.instance_id}
    assert sum(task.status is TaskStatus.PENDING for task in store.tasks(deployment.deployment_id)) == THREADS - 4


@pytest.mark.usefixtures("serialized_items")
def test_twenty_placements_of_tasks_of_two_gpus_fill_a_node_to_exactly_its_gpus(
    store: DeploymentStore, own_store: Callable[[], DeploymentStore]
) -> None:
    nodes = [write_node(store, make_node(f"i-00000000000000b{n}", node_class="4gpu")) for n in range(3)]
    deployment = make_deployment(gpus=2, replicas=THREADS, max_replicas=THREADS, tenant="big")
    write_deployment(store, deployment, quota=2 * THREADS)
    tasks = [make_task(deployment, f"t-{slot:015d}", slot=slot) for slot in range(THREADS)]
    for task in tasks:
        store.put_task(task)

    # Twenty placements spread over three nodes of four GPUs: two tasks of two GPUs each fit a node.
    outcomes = all_at_once(
        [
            lambda task=task, node=nodes[i % 3]: own_store().place_task(task, node, placement(node, task))
            for i, task in enumerate(tasks)
        ]
    )

    assert Counter(outcomes)[PlaceOutcome.PLACED] == 6
    for node in nodes:
        after = store.get_node(node.instance_id)
        assert after is not None and after.gpus_allocated == 4
        on_it = [t for t in store.tasks(deployment.deployment_id) if t.instance_id == node.instance_id]
        assert sum(task.gpus for task in on_it) == 4


@pytest.mark.usefixtures("serialized_items")
def test_one_task_placed_by_twenty_runs_at_once_is_placed_once(
    store: DeploymentStore, own_store: Callable[[], DeploymentStore]
) -> None:
    nodes = [write_node(store, make_node(f"i-0000000000000c{n:02d}", node_class="4gpu")) for n in range(THREADS)]
    deployment = make_deployment()
    write_deployment(store, deployment)
    task = make_task(deployment)
    store.put_task(task)

    outcomes = all_at_once(
        [lambda node=node: own_store().place_task(task, node, placement(node, task)) for node in nodes]
    )

    assert Counter(outcomes) == {PlaceOutcome.PLACED: 1, PlaceOutcome.TASK_MOVED: THREADS - 1}
    allocated = [store.get_node(node.instance_id).gpus_allocated for node in nodes]  # type: ignore[union-attr]
    assert sum(allocated) == 1
    (placed,) = store.tasks(deployment.deployment_id)
    assert placed.status is TaskStatus.STARTING
    assert store.get_node(placed.instance_id or "").gpus_allocated == 1  # type: ignore[union-attr]


@pytest.mark.usefixtures("serialized_items")
def test_twenty_concurrent_creates_of_one_tenant_never_exceed_its_quota(
    store: DeploymentStore, own_store: Callable[[], DeploymentStore]
) -> None:
    # Tenant "acme": 8 GPUs. Twenty deployments of 2 GPUs x 1 replica: four fit.
    deployments = [make_deployment(f"d-{n:015d}", gpus=2) for n in range(THREADS)]

    outcomes = all_at_once([lambda d=d: own_store().create_deployment(d, reserve=2, quota=8) for d in deployments])

    assert Counter(outcomes) == {CreateOutcome.CREATED: 4, CreateOutcome.OVER_QUOTA: THREADS - 4}
    assert store.tenant("acme").gpus_reserved == 8
    assert len(store.deployments()) == 4


@pytest.mark.usefixtures("serialized_items")
def test_concurrent_creates_of_mixed_sizes_stay_within_the_quota(
    store: DeploymentStore, own_store: Callable[[], DeploymentStore]
) -> None:
    sizes = [1, 2, 3, 4, 5] * 4
    deployments = [
        make_deployment(f"d-{n:015d}", gpus=1, replicas=size, max_replicas=size) for n, size in enumerate(sizes)
    ]

    outcomes = all_at_once(
        [lambda d=d: own_store().create_deployment(d, reserve=d.replicas, quota=8) for d in deployments]
    )

    created = [d for d, outcome in zip(deployments, outcomes, strict=True) if outcome is CreateOutcome.CREATED]
    reserved = store.tenant("acme").gpus_reserved
    assert reserved == sum(d.replicas for d in created) <= 8
    assert {d.deployment_id for d in store.deployments()} == {d.deployment_id for d in created}


@pytest.mark.usefixtures("serialized_items")
def test_the_gpus_of_a_task_are_given_back_once_however_many_runs_end_it(
    store: DeploymentStore, own_store: Callable[[], DeploymentStore]
) -> None:
    node = write_node(store, make_node(node_class="4gpu"))
    deployment = make_deployment(gpus=2)
    write_deployment(store, deployment)
    task = write_task(store, make_task(deployment, status=TaskStatus.RUNNING), node=node)
    assert store.get_node(node.instance_id).gpus_allocated == 2  # type: ignore[union-attr]

    ended = all_at_once(
        [lambda: own_store().end_task(task, TaskStatus.STOPPED, {"last_error": "exit 1"}, now=NOW, expires_at=1)]
        * THREADS
    )

    assert sum(result is not None for result in ended) == 1
    after = store.get_node(node.instance_id)
    assert after is not None and after.gpus_allocated == 0
    (stored,) = store.tasks(deployment.deployment_id)
    assert (stored.status, stored.last_error, stored.stopped_at) == (TaskStatus.STOPPED, "exit 1", NOW)


# --- one caller at a time ---------------------------------------------------------------------------------------


def test_end_task_gives_back_once_and_only_what_was_placed(store: DeploymentStore) -> None:
    node = write_node(store, make_node(node_class="4gpu"))
    deployment = make_deployment(gpus=2, replicas=2)
    write_deployment(store, deployment)
    running = write_task(store, make_task(deployment, "t-1", status=TaskStatus.RUNNING), node=node)
    other = write_task(store, make_task(deployment, "t-2", slot=1, status=TaskStatus.RUNNING), node=node)

    ended = store.end_task(running, TaskStatus.FAILED, {}, now=NOW + 5, expires_at=int(NOW) + 100)

    assert ended is not None and ended.status is TaskStatus.FAILED and ended.stopped_at == NOW + 5
    assert store.get_node(node.instance_id).gpus_allocated == 2  # type: ignore[union-attr]
    # A second end of the same task (a late event): the task is no longer running, nothing is given back.
    assert store.end_task(running, TaskStatus.STOPPED, {}, now=NOW + 6, expires_at=1) is None
    assert store.get_node(node.instance_id).gpus_allocated == 2  # type: ignore[union-attr]
    assert store.end_task(other, TaskStatus.STOPPED, {}, now=NOW, expires_at=1) is not None
    assert store.get_node(node.instance_id).gpus_allocated == 0  # type: ignore[union-attr]


def test_ending_a_pending_task_gives_nothing_back(store: DeploymentStore) -> None:
    node = write_node(store, make_node(node_class="4gpu"))
    deployment = make_deployment(gpus=2, replicas=2)
    write_deployment(store, deployment)
    write_task(store, make_task(deployment, "t-1", status=TaskStatus.RUNNING), node=node)
    pending = write_task(store, make_task(deployment, "t-2", slot=1))

    assert store.end_task(pending, TaskStatus.FAILED, {"last_error": "gave up"}, now=NOW, expires_at=1) is not None
    assert store.get_node(node.instance_id).gpus_allocated == 2  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="ended status"):
        store.end_task(pending, TaskStatus.RUNNING, {}, now=NOW, expires_at=1)


def test_unplace_task_puts_the_task_back_to_pending_and_the_gpus_back_on_the_node(store: DeploymentStore) -> None:
    node = write_node(store, make_node(node_class="4gpu"))
    deployment = make_deployment(gpus=2)
    write_deployment(store, deployment)
    starting = write_task(store, make_task(deployment, status=TaskStatus.STARTING), node=node)
    assert store.get_node(node.instance_id).gpus_allocated == 2  # type: ignore[union-attr]

    undone = store.unplace_task(starting, {"last_error": "StartTask refused: RESOURCE:GPU", "not_before": NOW + 30})

    assert undone is not None and undone.status is TaskStatus.PENDING and undone.instance_id is None
    assert store.get_node(node.instance_id).gpus_allocated == 0  # type: ignore[union-attr]
    (stored,) = store.tasks(deployment.deployment_id)
    assert stored.status is TaskStatus.PENDING
    assert (stored.instance_id, stored.region, stored.container_instance_arn, stored.placed_at) == (None,) * 4
    assert (stored.last_error, stored.not_before) == ("StartTask refused: RESOURCE:GPU", NOW + 30)
    # Twice (a retried run): the task is no longer starting; nothing is given back again.
    assert store.unplace_task(starting, {}) is None
    assert store.get_node(node.instance_id).gpus_allocated == 0  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="starting task on a node"):
        store.unplace_task(stored, {})


def test_unplace_task_leaves_a_placement_that_started_an_ecs_task(store: DeploymentStore) -> None:
    node = write_node(store, make_node(node_class="4gpu"))
    deployment = make_deployment(gpus=2)
    write_deployment(store, deployment)
    starting = write_task(store, make_task(deployment, status=TaskStatus.STARTING), node=node)
    started = store.update_task(starting, {"ecs_task_arn": "arn:aws:ecs:task/1"}, expect=[TaskStatus.STARTING])
    assert started is not None

    assert store.unplace_task(starting, {}) is None
    assert store.get_node(node.instance_id).gpus_allocated == 2  # type: ignore[union-attr]
    assert store.tasks(deployment.deployment_id)[0].status is TaskStatus.STARTING


@pytest.mark.parametrize("status", [NodeStatus.CORDONED, NodeStatus.DRAINING, NodeStatus.INTERRUPTED, NodeStatus.GONE])
def test_a_node_that_takes_no_placements_refuses_one(store: DeploymentStore, status: NodeStatus) -> None:
    node = write_node(store, make_node(node_class="4gpu"))
    store.update_node(node.instance_id, {"status": status})
    deployment = make_deployment()
    write_deployment(store, deployment)
    task = write_task(store, make_task(deployment))

    assert store.place_task(task, node, placement(node, task)) is PlaceOutcome.NODE_FULL
    assert store.get_node(node.instance_id).gpus_allocated == 0  # type: ignore[union-attr]
    assert store.tasks(deployment.deployment_id)[0].status is TaskStatus.PENDING


def test_update_node_keeps_gpus_allocated_to_placements_and_statuses_to_their_race(store: DeploymentStore) -> None:
    node = write_node(store, make_node())
    with pytest.raises(ValueError, match="place_task and end_task"):
        store.update_node(node.instance_id, {"gpus_allocated": 0})
    store.update_node(node.instance_id, {"status": NodeStatus.INTERRUPTED})
    assert store.update_node(node.instance_id, {"status": NodeStatus.READY}, expect=[NodeStatus.CORDONED]) is None
    assert store.get_node(node.instance_id).status is NodeStatus.INTERRUPTED  # type: ignore[union-attr]
    assert store.update_node("i-00000000000000ff", {"status": NodeStatus.READY}) is None
    assert not store.add_node(node)  # known already


def test_a_redelivered_create_reserves_nothing_and_an_impossible_one_reserves_nothing(store: DeploymentStore) -> None:
    deployment = make_deployment(gpus=2, replicas=2)
    assert store.create_deployment(deployment, reserve=4, quota=8) is CreateOutcome.CREATED
    assert store.create_deployment(deployment, reserve=4, quota=8) is CreateOutcome.EXISTS
    assert store.tenant("acme").gpus_reserved == 4
    too_big = make_deployment("d-00000000000big", gpus=4, replicas=3)
    assert store.create_deployment(too_big, reserve=12, quota=8) is CreateOutcome.OVER_QUOTA
    assert store.get_deployment(too_big.deployment_id) is None
    # A first reservation of a tenant larger than its quota: refused too (nothing reserved before).
    assert (
        store.create_deployment(
            make_deployment("d-0000000000fresh", tenant="new", gpus=4, replicas=3), reserve=12, quota=8
        )
        is CreateOutcome.OVER_QUOTA
    )
    assert store.tenant("new").gpus_reserved == 0


def test_change_replicas_moves_the_reservation_within_the_quota_and_loses_a_stale_read(store: DeploymentStore) -> None:
    deployment = make_deployment(gpus=2, replicas=1, max_replicas=8)
    write_deployment(store, deployment, quota=8)

    assert store.change_replicas(deployment, 3, quota=8) is CreateOutcome.CREATED
    assert store.tenant("acme").gpus_reserved == 6
    current = store.get_deployment(deployment.deployment_id)
    assert current is not None and current.replicas == 3
    assert store.change_replicas(current, 5, quota=8) is CreateOutcome.OVER_QUOTA
    assert store.change_replicas(deployment, 2, quota=8) is None  # read when it had 1 replica
    assert store.change_replicas(current, 0, quota=8, fields={"min_replicas": 0}) is CreateOutcome.CREATED
    assert store.tenant("acme").gpus_reserved == 0
    assert store.get_deployment(deployment.deployment_id).min_replicas == 0  # type: ignore[union-attr]


def test_release_reservation_gives_the_tenants_gpus_back_once(store: DeploymentStore) -> None:
    deployment = make_deployment(gpus=2, replicas=3, expires_at=int(NOW) + 60)
    write_deployment(store, deployment)
    assert store.tenant("acme").gpus_reserved == 6

    assert store.release_reservation(deployment)
    assert not store.release_reservation(deployment)
    assert store.tenant("acme").gpus_reserved == 0
    stored = store.get_deployment(deployment.deployment_id)
    assert stored is not None and stored.status is DeploymentStatus.DELETED and stored.expires_at == int(NOW) + 60
    assert store.live_deployments() == []


def test_update_deployment_respects_the_statuses_expected(store: DeploymentStore) -> None:
    deployment = make_deployment(status=DeploymentStatus.DELETING)
    write_deployment(store, deployment)
    assert (
        store.update_deployment(deployment.deployment_id, {"restart_generation": 1}, expect=[DeploymentStatus.RUNNING])
        is None
    )
    assert store.update_deployment("d-0000000000nope0", {"updated_at": NOW}) is None
    updated = store.update_deployment(deployment.deployment_id, {"last_error": "x"}, expect=[DeploymentStatus.DELETING])
    assert updated is not None and updated.last_error == "x"


def test_deployments_page_newest_first_with_filters_and_tokens(store: DeploymentStore) -> None:
    for n in range(5):
        write_deployment(store, make_deployment(f"d-00000000000000{n}", tenant="acme" if n % 2 else "beta"))

    first, token = store.deployments_page(limit=2, next_token=None)
    assert [d.deployment_id for d in first] == ["d-000000000000004", "d-000000000000003"] and token
    second, token = store.deployments_page(limit=2, next_token=token)
    assert [d.deployment_id for d in second] == ["d-000000000000002", "d-000000000000001"] and token
    last, token = store.deployments_page(limit=2, next_token=token)
    assert [d.deployment_id for d in last] == ["d-000000000000000"] and token is None
    acme, token = store.deployments_page(limit=10, next_token=None, filters={"tenant": "acme"})
    assert [d.deployment_id for d in acme] == ["d-000000000000003", "d-000000000000001"] and token is None
    for bad in ("not base64!", encode_token("x")[:-4], "eyJ4IjogMX0="):
        with pytest.raises(ValueError, match="next_token"):
            store.deployments_page(limit=2, next_token=bad)


def test_scaling_events_newest_first_of_one_deployment_or_all(store: DeploymentStore) -> None:
    for n in range(4):
        store.add_event(
            ScalingEvent(
                event_id=f"e-{n}",
                deployment_id="d-000000000000001" if n % 2 else "d-000000000000002",
                trigger=ScalingTrigger.MANUAL,
                reason=f"r{n}",
                before=n,
                after=n + 1,
                result=ScalingResult.APPLIED,
                at=NOW + n,
            )
        )
    assert [e.event_id for e in store.events()] == ["e-3", "e-2", "e-1", "e-0"]
    assert [e.event_id for e in store.events(deployment_id="d-000000000000001")] == ["e-3", "e-1"]
    assert [e.event_id for e in store.events(limit=1)] == ["e-3"]


def test_put_task_once(store: DeploymentStore) -> None:
    deployment = make_deployment()
    task = make_task(deployment)
    assert store.put_task(task)
    assert not store.put_task(task)
    assert store.update_task(task, {"restarts": 2}, expect=[TaskStatus.RUNNING]) is None
    assert store.update_task(task, {"restarts": 2}, expect=[TaskStatus.PENDING]).restarts == 2  # type: ignore[union-attr]


# --- the controller's lease -------------------------------------------------------------------------------------


def test_the_lease_serializes_runs_and_gives_its_holder_one_more_pass(store: DeploymentStore) -> None:
    assert store.acquire_lease("run-1", now=NOW, until=NOW + 300)
    assert not store.acquire_lease("run-2", now=NOW + 1, until=NOW + 301)
    assert store.lease().again and store.lease().holder == "run-1"

    assert store.release_lease("run-1")  # asked again meanwhile: keep it, one more pass
    assert not store.lease().again and store.lease().holder == "run-1"
    assert not store.release_lease("run-1")  # nobody asked since: let go
    assert store.lease().holder is None

    assert store.acquire_lease("run-3", now=NOW + 2, until=NOW + 302)
    assert not store.release_lease("run-2")  # not its lease: nothing happens to it
    assert store.lease().holder == "run-3"


def test_an_expired_lease_is_taken_over(store: DeploymentStore) -> None:
    assert store.acquire_lease("crashed", now=NOW, until=NOW + 300)
    assert store.acquire_lease("next", now=NOW + 301, until=NOW + 601)
    assert store.lease().holder == "next"


@pytest.mark.usefixtures("serialized_items")
def test_one_of_twenty_runs_at_once_takes_the_lease(own_store: Callable[[], DeploymentStore]) -> None:
    taken = all_at_once(
        [lambda n=n: own_store().acquire_lease(f"run-{n}", now=NOW, until=NOW + 300) for n in range(THREADS)]
    )
    assert sum(taken) == 1
    assert own_store().lease().again

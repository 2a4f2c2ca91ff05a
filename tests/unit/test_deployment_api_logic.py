"""The deployments API's decisions without AWS: the node class of a deployment, the quota it must fit (its largest
size when autoscaled) and what it reserves, the scale bounds, the node operations' transitions, and the views
(tasks shown, replica counts, endpoints, GPUs per region and type, utilization, the infrastructure's health).

The store is a fake that answers as DeploymentStore does and records what it was asked."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from spothub_core.dal.deployment_store import CreateOutcome
from spothub_core.errors import Conflict, DependencyUnavailable, InvalidRequest, NotFound
from spothub_core.logic import deployment_api
from spothub_core.logic.deployment_api import (
    DeploymentsApi,
    deployment_view,
    health_view,
    node_class_for,
    node_view,
    resources_view,
    shown_tasks,
    stuck,
    utilization_view,
)
from spothub_core.models.deployment_api import DeploymentRequest, NodeOperation, ScaleRequest
from spothub_core.models.deployment_records import (
    Autoscale,
    DeploymentStatus,
    DeploymentTask,
    GpuNode,
    GpuUsage,
    ModelDeployment,
    NodeStatus,
    ScalingEvent,
    ScalingResult,
    ScalingTrigger,
    TaskStatus,
    TenantUsage,
)
from spothub_core.settings import DeploymentSettings, NodeClass
from spothub_core.timings import DEPLOYMENT_CREATING_LIMIT_SECONDS, NODE_HEARTBEAT_STALE_SECONDS

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
CLASSES = {
    "1gpu": NodeClass(gpus=1, instance_types=["g5.xlarge", "g6.xlarge"], max_nodes=4),
    "4gpu": NodeClass(gpus=4, instance_types=["g5.12xlarge"], max_nodes=2),
}
SETTINGS = DeploymentSettings(
    prefix="spothub",
    version="0.1.0",
    service="spothub-deployments-api",
    hub_region="us-east-1",
    worker_regions=["us-west-2"],
    state_table_name="spothub-state",
    capacity_fallback="on-demand",
    deployments_table_name="spothub-deployments",
    node_classes=CLASSES,
    tenant_quotas={"acme": 8},
    default_tenant_quota=16,
    default_image="vllm/vllm-openai:v0.6.3",
    hub_bus_name="spothub-hub",
)


def deployment(deployment_id: str = "d-000000000000001", **fields: Any) -> ModelDeployment:
    values: dict[str, Any] = {
        "model": "m",
        "tenant": "acme",
        "image": "i",
        "gpus": 1,
        "replicas": 2,
        "min_replicas": 2,
        "max_replicas": 2,
        "node_class": "1gpu",
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(fields)
    return ModelDeployment(deployment_id=deployment_id, **values)


def task(task_id: str, slot: int, status: TaskStatus, **fields: Any) -> DeploymentTask:
    return DeploymentTask(
        deployment_id=fields.pop("deployment_id", "d-000000000000001"),
        task_id=task_id,
        slot=slot,
        generation=0,
        status=status,
        gpus=fields.pop("gpus", 1),
        created_at=NOW,
        **fields,
    )


def node(instance_id: str = "i-0000000000000001", **fields: Any) -> GpuNode:
    values: dict[str, Any] = {
        "region": "us-west-2",
        "node_class": "1gpu",
        "instance_type": "g5.xlarge",
        "container_instance_arn": f"arn:ci/{instance_id}",
        "gpus_total": 1,
        "first_seen": NOW,
        "last_heartbeat": NOW,
    }
    values.update(fields)
    return GpuNode(instance_id=instance_id, **values)


@dataclass
class FakeStore:
    """What the API logic calls of DeploymentStore, answered from dicts; `outcomes` scripts the conditional writes."""

    deployments_by_id: dict[str, ModelDeployment] = field(default_factory=dict)
    tasks_by_id: dict[str, list[DeploymentTask]] = field(default_factory=dict)
    nodes_by_id: dict[str, GpuNode] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)
    events_added: list[ScalingEvent] = field(default_factory=list)
    creates: list[tuple[str, int, int]] = field(default_factory=list)  # (id, reserve, quota)
    changes: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)  # (replicas, quota, fields)
    outcomes: list[Any] = field(default_factory=list)  # change_replicas answers to give first

    def create_deployment(self, d: ModelDeployment, *, reserve: int, quota: int) -> CreateOutcome:
        self.creates.append((d.deployment_id, reserve, quota))
        if d.deployment_id in self.deployments_by_id:
            return CreateOutcome.EXISTS
        held = self.reserved.get(d.tenant, 0)
        if reserve > 0 and held > quota - reserve:
            return CreateOutcome.OVER_QUOTA
        self.reserved[d.tenant] = held + reserve
        self.deployments_by_id[d.deployment_id] = d
        return CreateOutcome.CREATED

    def tenant(self, tenant: str) -> TenantUsage:
        return TenantUsage(tenant=tenant, gpus_reserved=self.reserved.get(tenant, 0))

    def get_deployment(self, deployment_id: str) -> ModelDeployment | None:
        return self.deployments_by_id.get(deployment_id)

    def deployments(self) -> list[ModelDeployment]:
        return list(self.deployments_by_id.values())

    def tasks(self, deployment_id: str) -> list[DeploymentTask]:
        return self.tasks_by_id.get(deployment_id, [])

    def add_event(self, event: ScalingEvent) -> None:
        self.events_added.append(event)

    def update_deployment(
        self, deployment_id: str, fields: dict[str, Any], *, expect: Any = None
    ) -> ModelDeployment | None:
        current = self.deployments_by_id.get(deployment_id)
        if current is None or (expect is not None and current.status not in expect):
            return None
        updated = current.model_copy(update=fields)
        self.deployments_by_id[deployment_id] = updated
        return updated

    def change_replicas(
        self, d: ModelDeployment, replicas: int, *, quota: int, fields: dict[str, Any] | None = None
    ) -> CreateOutcome | None:
        self.changes.append((replicas, quota, fields or {}))
        if self.outcomes:
            return self.outcomes.pop(0)
        delta = (replicas - d.replicas) * d.gpus
        held = self.reserved.get(d.tenant, 0)
        if delta > 0 and held > quota - delta:
            return CreateOutcome.OVER_QUOTA
        self.reserved[d.tenant] = held + delta
        self.deployments_by_id[d.deployment_id] = d.model_copy(update={**(fields or {}), "replicas": replicas})
        return CreateOutcome.CREATED

    def nodes(self) -> list[GpuNode]:
        return list(self.nodes_by_id.values())

    def get_node(self, instance_id: str) -> GpuNode | None:
        return self.nodes_by_id.get(instance_id)

    def update_node(self, instance_id: str, fields: dict[str, Any], *, expect: Any = None) -> GpuNode | None:
        current = self.nodes_by_id.get(instance_id)
        if current is None or (expect is not None and current.status not in expect):
            return None
        self.nodes_by_id[instance_id] = current.model_copy(update=fields)
        return self.nodes_by_id[instance_id]


class FakeEvents:
    def __init__(self, *, fail: bool = False) -> None:
        self.entries: list[dict[str, Any]] = []
        self.fail = fail

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.entries.extend(Entries)
        if self.fail:
            return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure"}]}
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]}

    def changes(self) -> list[dict[str, Any]]:
        return [json.loads(entry["Detail"]) for entry in self.entries]


class FakeAlarms:
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def in_alarm(self, name_prefix: str) -> list[str]:
        return [name for name in self.names if name.startswith(name_prefix)]


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def events() -> FakeEvents:
    return FakeEvents()


@pytest.fixture
def api(store: FakeStore, events: FakeEvents) -> DeploymentsApi:
    return DeploymentsApi(store=store, settings=SETTINGS, events=events, alarms=FakeAlarms([]))  # type: ignore[arg-type]


# --- the node class ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("gpus", "chosen"), [(1, "1gpu"), (2, "4gpu"), (3, "4gpu"), (4, "4gpu")])
def test_the_smallest_node_class_with_enough_gpus_per_node(gpus: int, chosen: str) -> None:
    assert node_class_for(CLASSES, gpus) == chosen


def test_too_many_gpus_per_replica_names_the_largest_class_offered() -> None:
    with pytest.raises(InvalidRequest) as refused:
        node_class_for(CLASSES, 8)
    assert str(refused.value) == "8 GPUs per replica: the largest node class offers 4 (class 4gpu: g5.12xlarge)"


def test_a_class_of_no_nodes_offers_nothing() -> None:
    classes = {**CLASSES, "8gpu": NodeClass(gpus=8, instance_types=["p4d.24xlarge"], max_nodes=0)}
    with pytest.raises(InvalidRequest, match="offers 4"):
        node_class_for(classes, 8)
    with pytest.raises(InvalidRequest, match="no node class offers"):
        node_class_for({"8gpu": classes["8gpu"]}, 1)


# --- create ----------------------------------------------------------------------------------------------------


def test_a_create_reserves_gpus_times_replicas_and_records_its_event_and_nudge(
    api: DeploymentsApi, store: FakeStore, events: FakeEvents
) -> None:
    request = DeploymentRequest(model="meta-llama/Llama-3.1-8B", tenant="acme", gpus=2, replicas=3)

    accepted = deployment_api.create(api, request, now=NOW, deployment_id="d-0000000000000aa")

    assert (accepted.deployment_id, accepted.status) == ("d-0000000000000aa", DeploymentStatus.CREATING)
    assert store.creates == [("d-0000000000000aa", 6, 8)]
    created = store.deployments_by_id["d-0000000000000aa"]
    assert (created.node_class, created.image, created.min_replicas, created.max_replicas) == (
        "4gpu",
        SETTINGS.default_image,
        3,
        3,
    )
    (event,) = store.events_added
    assert (event.trigger, event.reason, event.before, event.after, event.result) == (
        ScalingTrigger.MANUAL,
        "created",
        0,
        3,
        ScalingResult.APPLIED,
    )
    assert events.changes()[0]["change"] == "created"
    assert events.entries[0]["DetailType"] == "Spothub Deployments Changed"
    assert events.entries[0]["Source"] == "spothub.hub"
    assert events.entries[0]["EventBusName"] == "spothub-hub"


def test_an_autoscaled_create_needs_room_for_its_largest_size_but_reserves_its_current_one(
    api: DeploymentsApi, store: FakeStore
) -> None:
    store.reserved["acme"] = 2
    autoscaled = DeploymentRequest(
        model="m", tenant="acme", gpus=1, replicas=1, min_replicas=1, max_replicas=6, autoscale=Autoscale()
    )
    deployment_api.create(api, autoscaled, now=NOW, deployment_id="d-0000000000000aa")
    # quota 8 tightened by the 5 replicas it may add: it goes through only while 2 + 6 <= 8.
    assert store.creates == [("d-0000000000000aa", 1, 3)]
    assert store.reserved["acme"] == 3

    with pytest.raises(Conflict) as refused:
        deployment_api.create(api, autoscaled, now=NOW, deployment_id="d-0000000000000ab")
    assert str(refused.value) == (
        "tenant acme is over its quota: quota 8 GPUs, holds 3, asked 6 (up to max_replicas 6 x 1 GPUs: an "
        "autoscaled deployment needs room for its largest)"
    )
    assert store.reserved["acme"] == 3 and "d-0000000000000ab" not in store.deployments_by_id


def test_a_create_over_the_quota_says_the_tenant_its_quota_what_it_holds_and_what_was_asked(
    api: DeploymentsApi, store: FakeStore, events: FakeEvents
) -> None:
    store.reserved["acme"] = 6
    with pytest.raises(Conflict) as refused:
        deployment_api.create(api, DeploymentRequest(model="m", tenant="acme", gpus=1, replicas=3), now=NOW)
    assert str(refused.value) == "tenant acme is over its quota: quota 8 GPUs, holds 6, asked 3 (3 replicas x 1 GPUs)"
    assert not store.events_added and not events.entries


def test_a_create_larger_than_the_quota_itself_is_refused_without_a_write(
    api: DeploymentsApi, store: FakeStore
) -> None:
    with pytest.raises(Conflict, match="quota 8 GPUs, holds 0, asked 12"):
        deployment_api.create(api, DeploymentRequest(model="m", tenant="acme", gpus=4, replicas=3), now=NOW)
    assert store.creates == []


def test_a_create_of_zero_replicas_autoscaled_checks_its_room_before_writing(
    api: DeploymentsApi, store: FakeStore
) -> None:
    store.reserved["acme"] = 6
    request = DeploymentRequest(
        model="m", tenant="acme", replicas=0, min_replicas=0, max_replicas=4, autoscale=Autoscale()
    )
    with pytest.raises(Conflict, match="holds 6, asked 4"):
        deployment_api.create(api, request, now=NOW)
    store.reserved["acme"] = 4
    deployment_api.create(api, request, now=NOW, deployment_id="d-0000000000000aa")
    assert store.deployments_by_id["d-0000000000000aa"].replicas == 0


def test_a_tenant_not_named_gets_the_default_quota_and_the_image_asked_is_kept(
    api: DeploymentsApi, store: FakeStore
) -> None:
    request = DeploymentRequest(model="m", tenant="other", gpus=4, replicas=4, image="lmsysorg/sglang:v0.4")
    deployment_api.create(api, request, now=NOW, deployment_id="d-0000000000000aa")
    assert store.creates == [("d-0000000000000aa", 16, 16)]
    assert store.deployments_by_id["d-0000000000000aa"].image == "lmsysorg/sglang:v0.4"


def test_an_id_taken_is_a_conflict(api: DeploymentsApi, store: FakeStore) -> None:
    store.deployments_by_id["d-0000000000000aa"] = deployment("d-0000000000000aa")
    with pytest.raises(Conflict, match="exists already"):
        deployment_api.create(
            api, DeploymentRequest(model="m", tenant="acme"), now=NOW, deployment_id="d-0000000000000aa"
        )


def test_a_nudge_eventbridge_refuses_does_not_fail_the_change(store: FakeStore) -> None:
    failing = FakeEvents(fail=True)
    api = DeploymentsApi(store=store, settings=SETTINGS, events=failing, alarms=FakeAlarms([]))  # type: ignore[arg-type]
    accepted = deployment_api.create(api, DeploymentRequest(model="m", tenant="acme"), now=NOW)
    assert accepted.deployment_id in store.deployments_by_id and len(failing.entries) == 1


# --- scale, restart, delete ------------------------------------------------------------------------------------


def test_scale_of_an_autoscaled_deployment_stays_within_its_bounds(api: DeploymentsApi, store: FakeStore) -> None:
    store.deployments_by_id["d-000000000000001"] = deployment(min_replicas=1, max_replicas=4, autoscale=Autoscale())
    with pytest.raises(InvalidRequest) as refused:
        deployment_api.scale(api, "d-000000000000001", ScaleRequest(replicas=5), now=NOW)
    assert "within min_replicas..max_replicas (1..4)" in str(refused.value) and "asked 5" in str(refused.value)
    with pytest.raises(InvalidRequest, match=r"\(1\.\.4\)"):
        deployment_api.scale(api, "d-000000000000001", ScaleRequest(replicas=0), now=NOW)

    shown = deployment_api.scale(api, "d-000000000000001", ScaleRequest(replicas=4), now=NOW)

    assert shown.replicas.desired == 4 and (shown.min_replicas, shown.max_replicas) == (1, 4)
    assert store.changes == [(4, 8, {"updated_at": NOW})]
    (event,) = store.events_added
    assert (event.trigger, event.before, event.after, event.result) == (
        ScalingTrigger.MANUAL,
        2,
        4,
        ScalingResult.APPLIED,
    )


def test_scale_of_a_deployment_without_autoscale_moves_its_bounds_along(api: DeploymentsApi, store: FakeStore) -> None:
    store.deployments_by_id["d-000000000000001"] = deployment()
    store.reserved["acme"] = 2
    shown = deployment_api.scale(api, "d-000000000000001", ScaleRequest(replicas=5), now=NOW)
    assert (shown.replicas.desired, shown.min_replicas, shown.max_replicas) == (5, 2, 5)
    shown = deployment_api.scale(api, "d-000000000000001", ScaleRequest(replicas=0), now=NOW)
    assert (shown.replicas.desired, shown.min_replicas, shown.max_replicas) == (0, 0, 5)
    assert store.reserved["acme"] == 0


def test_scale_over_the_quota_is_refused_and_recorded(api: DeploymentsApi, store: FakeStore) -> None:
    store.deployments_by_id["d-000000000000001"] = deployment(gpus=4, replicas=2, node_class="4gpu")
    store.reserved["acme"] = 8
    with pytest.raises(Conflict) as refused:
        deployment_api.scale(api, "d-000000000000001", ScaleRequest(replicas=3), now=NOW)
    assert str(refused.value) == (
        "tenant acme is over its quota: quota 8 GPUs, holds 8, asked 4 (2 -> 3 replicas x 4 GPUs)"
    )
    (event,) = store.events_added
    assert (event.result, event.before, event.after) == (ScalingResult.REFUSED, 2, 2)
    assert event.reason.startswith("scale refused: tenant acme is over its quota")


def test_scale_read_stale_tries_again_then_gives_up(api: DeploymentsApi, store: FakeStore) -> None:
    store.deployments_by_id["d-000000000000001"] = deployment()
    store.outcomes = [None]
    shown = deployment_api.scale(api, "d-000000000000001", ScaleRequest(replicas=3), now=NOW)
    assert shown.replicas.desired == 3 and len(store.changes) == 2

    store.outcomes = [None] * deployment_api.SCALE_TRIES
    with pytest.raises(Conflict, match="kept changing"):
        deployment_api.scale(api, "d-000000000000001", ScaleRequest(replicas=4), now=NOW)


def test_scale_to_the_same_replicas_changes_nothing(api: DeploymentsApi, store: FakeStore, events: FakeEvents) -> None:
    store.deployments_by_id["d-000000000000001"] = deployment()
    assert deployment_api.scale(api, "d-000000000000001", ScaleRequest(replicas=2), now=NOW).replicas.desired == 2
    assert not store.changes and not store.events_added and not events.entries


@pytest.mark.parametrize("status", [DeploymentStatus.DELETING, DeploymentStatus.DELETED])
def test_a_deployment_being_deleted_neither_scales_nor_restarts(
    api: DeploymentsApi, store: FakeStore, status: DeploymentStatus
) -> None:
    store.deployments_by_id["d-000000000000001"] = deployment(status=status)
    with pytest.raises(Conflict, match=f"is {status}"):
        deployment_api.scale(api, "d-000000000000001", ScaleRequest(replicas=3), now=NOW)
    with pytest.raises(Conflict, match=f"is {status}"):
        deployment_api.restart(api, "d-000000000000001", now=NOW)


def test_an_unknown_deployment_is_not_found(api: DeploymentsApi) -> None:
    for call in (
        lambda: deployment_api.view(api, "d-00000000000none"),
        lambda: deployment_api.delete(api, "d-00000000000none", now=NOW),
        lambda: deployment_api.restart(api, "d-00000000000none", now=NOW),
        lambda: deployment_api.scale(api, "d-00000000000none", ScaleRequest(replicas=1), now=NOW),
    ):
        with pytest.raises(NotFound, match="no deployment d-00000000000none"):
            call()


def test_restart_raises_the_generation_and_records_it(
    api: DeploymentsApi, store: FakeStore, events: FakeEvents
) -> None:
    store.deployments_by_id["d-000000000000001"] = deployment(restart_generation=2, status=DeploymentStatus.FAILED)
    deployment_api.restart(api, "d-000000000000001", now=NOW)
    assert store.deployments_by_id["d-000000000000001"].restart_generation == 3
    assert store.events_added[0].reason == "rolling restart asked (generation 3)"
    assert events.changes()[0]["change"] == "restart"


def test_delete_marks_deleting_once(api: DeploymentsApi, store: FakeStore, events: FakeEvents) -> None:
    store.deployments_by_id["d-000000000000001"] = deployment(status=DeploymentStatus.RUNNING)
    assert deployment_api.delete(api, "d-000000000000001", now=NOW).status is DeploymentStatus.DELETING
    assert deployment_api.delete(api, "d-000000000000001", now=NOW).status is DeploymentStatus.DELETING
    assert [(e.reason, e.before, e.after) for e in store.events_added] == [("deleted", 2, 0)]
    assert [change["change"] for change in events.changes()] == ["deleted"]


# --- node operations -------------------------------------------------------------------------------------------

TRANSITIONS = [
    ("cordon", NodeStatus.READY, NodeStatus.CORDONED),
    ("cordon", NodeStatus.CORDONED, NodeStatus.CORDONED),
    ("cordon", NodeStatus.DRAINING, None),
    ("cordon", NodeStatus.INTERRUPTED, None),
    ("cordon", NodeStatus.GONE, None),
    ("uncordon", NodeStatus.CORDONED, NodeStatus.READY),
    ("uncordon", NodeStatus.DRAINING, NodeStatus.READY),
    ("uncordon", NodeStatus.READY, NodeStatus.READY),
    ("uncordon", NodeStatus.INTERRUPTED, None),
    ("uncordon", NodeStatus.GONE, None),
    ("drain", NodeStatus.READY, NodeStatus.DRAINING),
    ("drain", NodeStatus.CORDONED, NodeStatus.DRAINING),
    ("drain", NodeStatus.DRAINING, NodeStatus.DRAINING),
    ("drain", NodeStatus.INTERRUPTED, None),
    ("drain", NodeStatus.GONE, None),
]


@pytest.mark.parametrize("transition", TRANSITIONS, ids=lambda t: f"{t[0]}-{t[1]}")
def test_node_operations_move_a_node_only_from_the_statuses_they_apply_to(
    api: DeploymentsApi, store: FakeStore, events: FakeEvents, transition: tuple[str, NodeStatus, NodeStatus | None]
) -> None:
    operation, before, after = transition
    store.nodes_by_id["i-0000000000000001"] = node(status=before)
    request = NodeOperation(reason="kernel update")
    if after is None:
        with pytest.raises(Conflict, match=f"node i-0000000000000001 is {before}: {operation} applies to"):
            deployment_api.operate_node(api, "i-0000000000000001", operation, request, caller="op")
        assert store.nodes_by_id["i-0000000000000001"].status is before and not events.entries
        return
    shown = deployment_api.operate_node(api, "i-0000000000000001", operation, request, caller="op")
    assert shown.status is after
    changed = before != after
    assert [c["change"] for c in events.changes()] == ([operation] if changed else [])
    if changed:
        assert events.changes()[0]["instance_id"] == "i-0000000000000001"
        assert shown.status_reason == (None if after is NodeStatus.READY else "kernel update")


def test_a_node_operation_without_a_reason_says_who_asked(api: DeploymentsApi, store: FakeStore) -> None:
    store.nodes_by_id["i-0000000000000001"] = node()
    shown = deployment_api.operate_node(api, "i-0000000000000001", "drain", None, caller="arn:aws:iam::1:user/ops")
    assert shown.status_reason == "drain asked by arn:aws:iam::1:user/ops"
    with pytest.raises(NotFound, match="no GPU node i-00000000000000ff"):
        deployment_api.operate_node(api, "i-00000000000000ff", "drain", None, caller="x")


def test_a_node_that_moved_between_the_read_and_the_write_is_a_conflict(api: DeploymentsApi, store: FakeStore) -> None:
    store.nodes_by_id["i-0000000000000001"] = node()
    interrupted = node(status=NodeStatus.INTERRUPTED)
    original = store.update_node

    def interrupted_meanwhile(instance_id: str, fields: dict[str, Any], *, expect: Any = None) -> GpuNode | None:
        store.nodes_by_id[instance_id] = interrupted
        return original(instance_id, fields, expect=expect)

    store.update_node = interrupted_meanwhile  # type: ignore[method-assign]
    with pytest.raises(Conflict, match="became interrupted meanwhile: cordon not applied"):
        deployment_api.operate_node(api, "i-0000000000000001", "cordon", None, caller="x")


# --- views -----------------------------------------------------------------------------------------------------


def test_a_deployments_tasks_are_the_live_ones_and_the_last_ended_of_a_slot_without_one() -> None:
    d = deployment(replicas=3)
    tasks = [
        task("t-01", 0, TaskStatus.STOPPED),
        task("t-02", 0, TaskStatus.RUNNING),
        task("t-03", 1, TaskStatus.FAILED, last_error="exit 1"),
        task("t-04", 1, TaskStatus.FAILED, last_error="exit 137"),
        task("t-05", 2, TaskStatus.PENDING),
        task("t-06", 2, TaskStatus.STOPPING, retire="restart"),
        task("t-07", 3, TaskStatus.STOPPED),  # a slot scaled away
    ]
    assert [t.task_id for t in shown_tasks(d, tasks)] == ["t-02", "t-04", "t-05", "t-06"]


def test_a_deployments_view_counts_placed_and_healthy_tasks_and_lists_healthy_endpoints() -> None:
    d = deployment(replicas=3, last_error="slot 2: no capacity")
    tasks = [
        task("t-01", 0, TaskStatus.RUNNING, instance_id="i-1", endpoint="http://10.0.0.1:32768", placed_at=NOW + 1.6),
        task("t-02", 1, TaskStatus.STARTING, instance_id="i-1", endpoint=None, placed_at=NOW),
        task("t-03", 1, TaskStatus.UNHEALTHY, instance_id="i-2", endpoint="http://10.0.0.2:32769", placed_at=NOW),
        task("t-04", 2, TaskStatus.PENDING, restarts=3),
        task("t-05", 2, TaskStatus.STOPPED, instance_id="i-1", endpoint="http://10.0.0.1:32770"),
    ]
    shown = deployment_view(d, tasks)
    assert shown.replicas.model_dump() == {"desired": 3, "running": 3, "healthy": 1}
    assert shown.endpoints == ["http://10.0.0.1:32768"]
    assert shown.tasks[0].started_at == "2027-01-15T08:00:01Z"
    assert shown.tasks[-1].task_id == "t-04" and shown.tasks[-1].restarts == 3 and shown.tasks[-1].started_at is None
    assert (shown.created_at, shown.last_error) == ("2027-01-15T08:00:00Z", "slot 2: no capacity")


def test_a_nodes_view_has_its_tasks_and_mean_utilization() -> None:
    gpus = [GpuUsage(uuid="g0", index=0, utilization_pct=40.0), GpuUsage(uuid="g1", index=1, utilization_pct=None)]
    n = node(gpus_total=4, gpus_allocated=2, gpu_usage=gpus, status=NodeStatus.CORDONED, status_reason="maint")
    tasks = [
        task("t-2", 0, TaskStatus.RUNNING, instance_id=n.instance_id, gpus=2),
        task("t-3", 0, TaskStatus.RUNNING, instance_id="i-other"),
    ]
    shown = node_view(n, tasks)
    assert (shown.gpus_free, shown.gpu_utilization_pct, shown.last_heartbeat) == (2, 40.0, "2027-01-15T08:00:00Z")
    assert [(t.task_id, t.gpus) for t in shown.tasks] == [("t-2", 2)]
    assert (shown.status, shown.status_reason) == (NodeStatus.CORDONED, "maint")


def test_resources_count_gpus_per_region_and_type_free_only_where_placements_go() -> None:
    nodes = [
        node("i-01", gpus_total=1, gpus_allocated=1),
        node("i-02", gpus_total=1),
        node("i-03", gpus_total=1, status=NodeStatus.CORDONED),
        node("i-04", instance_type="g5.12xlarge", node_class="4gpu", gpus_total=4, gpus_allocated=1),
        node("i-05", region="eu-west-1", gpus_total=1, status=NodeStatus.DRAINING),
        node("i-06", gpus_total=1, status=NodeStatus.GONE),
    ]
    shown = resources_view(nodes)
    assert [c.model_dump() for c in shown.resources] == [
        {"region": "eu-west-1", "instance_type": "g5.xlarge", "nodes": 1, "total": 1, "allocated": 0, "free": 0},
        {"region": "us-west-2", "instance_type": "g5.12xlarge", "nodes": 1, "total": 4, "allocated": 1, "free": 3},
        {"region": "us-west-2", "instance_type": "g5.xlarge", "nodes": 3, "total": 3, "allocated": 1, "free": 1},
    ]
    assert (shown.total, shown.allocated, shown.free) == (8, 2, 4)


def test_utilization_maps_each_gpu_to_its_deployment_and_averages_running_tasks() -> None:
    usage = [GpuUsage(uuid=f"g{i}", index=i, utilization_pct=pct) for i, pct in enumerate([80.0, 60.0, 10.0, 0.0])]
    n = node(gpus_total=4, node_class="4gpu", instance_type="g5.12xlarge", gpu_usage=usage)
    bare = node("i-0000000000000002", gpu_ids=["h0"], last_heartbeat=None)
    auto = deployment("d-000000000000001", autoscale=Autoscale(target_gpu_utilization=50))
    other = deployment("d-000000000000002")
    tasks = {
        auto.deployment_id: [
            task("t-1", 0, TaskStatus.RUNNING, instance_id=n.instance_id, gpu_ids=["g0", "g1"], gpus=2),
            task("t-2", 1, TaskStatus.STARTING, instance_id=n.instance_id, gpu_ids=["g2"]),
            task("t-0", 1, TaskStatus.STOPPED, gpu_ids=["g3"]),
        ],
        other.deployment_id: [task("t-3", 0, TaskStatus.RUNNING, deployment_id=other.deployment_id, gpu_ids=["h0"])],
    }
    shown = utilization_view(
        [auto, other, deployment("d-000000000000003", status=DeploymentStatus.DELETED)], tasks, [n, bare]
    )

    first, second = shown.nodes
    assert [(g.uuid, g.deployment_id) for g in first.gpus] == [
        ("g0", auto.deployment_id),
        ("g1", auto.deployment_id),
        ("g2", auto.deployment_id),
        ("g3", None),
    ]
    assert first.utilization_pct == 37.5
    assert [(g.uuid, g.utilization_pct, g.deployment_id) for g in second.gpus] == [("h0", None, other.deployment_id)]
    assert second.utilization_pct is None and second.last_heartbeat is None
    assert [d.model_dump() for d in shown.deployments] == [
        {"deployment_id": auto.deployment_id, "utilization_pct": 70.0, "gpus": 3, "target_pct": 50.0},
        {"deployment_id": other.deployment_id, "utilization_pct": None, "gpus": 1, "target_pct": None},
    ]


def test_a_deployment_is_stuck_when_failed_or_creating_past_the_limit() -> None:
    assert stuck(deployment(status=DeploymentStatus.FAILED), NOW)
    creating = deployment(status=DeploymentStatus.CREATING)
    assert not stuck(creating, NOW + DEPLOYMENT_CREATING_LIMIT_SECONDS)
    assert stuck(creating, NOW + DEPLOYMENT_CREATING_LIMIT_SECONDS + 1)
    assert not stuck(deployment(status=DeploymentStatus.DEGRADED), NOW + 10 * DEPLOYMENT_CREATING_LIMIT_SECONDS)


def test_health_says_every_check_and_is_healthy_only_when_all_pass() -> None:
    late = NOW + NODE_HEARTBEAT_STALE_SECONDS + 1
    nodes = [
        node("i-01", last_heartbeat=late),
        node("i-02", status=NodeStatus.CORDONED, last_heartbeat=late),
        node("i-03", status=NodeStatus.GONE),
    ]
    deployments = [deployment("d-1", status=DeploymentStatus.RUNNING)]
    healthy = health_view(nodes, deployments, [], prefix="spothub-", now=late)
    assert healthy.healthy and (healthy.nodes_ready, healthy.nodes_total) == (1, 2)
    assert [(c.name, c.ok) for c in healthy.checks] == [("nodes", True), ("deployments", True), ("alarms", True)]
    assert healthy.checks[0].detail == "1 of 2 nodes ready (1 ready, 1 cordoned)"

    silent = [*nodes, node("i-04", last_heartbeat=NOW), node("i-05", status=NodeStatus.INTERRUPTED, last_heartbeat=NOW)]
    failed = [*deployments, deployment("d-2", status=DeploymentStatus.FAILED)]
    sick = health_view(silent, failed, ["spothub-hub-errors"], prefix="spothub-", now=late)
    assert not sick.healthy
    assert sick.stuck_deployments == ["d-2"] and sick.alarms_in_alarm == ["spothub-hub-errors"]
    assert [c.ok for c in sick.checks] == [False, False, False]
    assert sick.checks[0].detail.endswith(f"agents silent over {NODE_HEARTBEAT_STALE_SECONDS} s: i-04")

    unread = health_view(
        nodes, deployments, DependencyUnavailable("could not read the alarms: throttled"), prefix="spothub-", now=late
    )
    assert not unread.healthy and unread.alarms_in_alarm == []
    assert unread.checks[-1].model_dump() == {
        "name": "alarms",
        "ok": False,
        "detail": "could not read the alarms: throttled",
    }


def test_health_asks_the_alarms_of_the_deployments_prefix(store: FakeStore, events: FakeEvents) -> None:
    alarms = FakeAlarms(["spothub-a", "other-b", "spothubx-c"])
    api = DeploymentsApi(store=store, settings=SETTINGS, events=events, alarms=alarms)  # type: ignore[arg-type]
    assert deployment_api.health(api, now=NOW).alarms_in_alarm == ["spothub-a"]

"""The deployment controller through its Lambda entry point, against moto: the deployments table and the state table
(the agents' heartbeats) in the hub region, ECS and the node groups of the worker regions (container instances
registered by hand with the GPUs their type has), and a stand-in spot finder.

One test per way in: the schedule, the API's nudge, a deployment task's ECS state change, an agent's capacity notice
(a node's, and any other instance's), a kind the controller does not consume; and the lease (a run that finds it
held marks it, and the holder passes once more).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spothub_core.contracts import DEPLOYMENT_STARTED_BY, AwsEvent, DeploymentMetric, HubEvent, Source, WorkerReport
from spothub_core.dal.deployment_store import DeploymentStore
from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.models.agent import Heartbeat, Registration
from spothub_core.models.deployment_records import NodeStatus, TaskStatus
from spothub_core.models.orchestrator_tasks import FindAnswer, FindRequest, RankedRegionView
from tests.integration.conftest import (
    HUB_REGION,
    STATE_TABLE_KEYS,
    WORKER_REGIONS,
    ApiCalls,
    eventbridge_event,
    load_handler,
    set_environment,
)
from tests.integration.deployment_fixtures import (
    DEPLOYMENT_ENVIRONMENT,
    create_deployments_table,
    make_deployment,
    write_deployment,
)
from tests.integration.test_worker_ecs import (  # noqa: F401 (ecs_as_aws: a fixture)
    CLUSTER,
    EXECUTION_ROLE,
    TASK_ROLE,
    create_cluster,
    create_node_group,
    ecs_as_aws,
    group_members,
    register_node,
)
from tests.lambda_events import FakeLambdaContext

NOW = 1_700_000_000.0
WEST = WORKER_REGIONS[0]
STATE_TABLE = "spothub-state"
FINDER = "spothub-spot-finder"
CONTROLLER_ENVIRONMENT = {
    **DEPLOYMENT_ENVIRONMENT,
    "POWERTOOLS_SERVICE_NAME": "spothub-deployment-controller",
    "SPOTHUB_SPOT_FINDER_FUNCTION": FINDER,
    "SPOTHUB_DEPLOYMENT_EXECUTION_ROLE_ARN": EXECUTION_ROLE,
    "SPOTHUB_DEPLOYMENT_TASK_ROLE_ARN": TASK_ROLE,
}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Finder:
    """The spot finder: us-west-2 first."""

    def __init__(self) -> None:
        self.asked: list[FindRequest] = []

    def __call__(self, request: FindRequest) -> FindAnswer:
        self.asked.append(request)
        return FindAnswer(
            best=WEST,
            reason="best placement score",
            on_demand_region=WEST,
            ranked=[RankedRegionView(region=WEST, rank=1, placement_score=9, spot_price=0.4, reason="score 9")],
            left_out=[],
            instance_types=request.instance_types or [],
            target_capacity=request.target_capacity,
            observed_at=NOW,
        )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def finder() -> Finder:
    return Finder()


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch, clock: Clock, finder: Finder, ecs_as_aws: None) -> Iterator[ModuleType]:  # noqa: F811
    set_environment(monkeypatch, CONTROLLER_ENVIRONMENT)
    with mock_aws():
        create_deployments_table()
        boto3.client("dynamodb", region_name=HUB_REGION).create_table(TableName=STATE_TABLE, **STATE_TABLE_KEYS)
        for region in WORKER_REGIONS:
            create_cluster(region)
        module = load_handler("deployment_controller.handler")
        monkeypatch.setattr(module, "time", SimpleNamespace(time=clock))
        monkeypatch.setattr(module, "services", dataclasses.replace(module.services, find=finder))
        yield module


@pytest.fixture
def store(handler: ModuleType) -> DeploymentStore:
    return handler.services.store


def ecs_calls(handler: ModuleType, *operations: str) -> ApiCalls:
    return ApiCalls(handler.region_clients(WEST).ecs.ecs, *operations)


def node_up(node_class: str = "1gpu") -> str:
    """A node group member, registered in the GPU cluster, its agent beating (GPU sample included)."""
    create_node_group(node_class, desired=1)
    (instance_id,) = group_members(node_class)
    register_node(instance_id)
    health = InstanceHealthStore(boto3.resource("dynamodb", region_name=HUB_REGION).Table(STATE_TABLE))
    health.register(instance_id, Registration(region=WEST, instance_type="g5.xlarge"), now=NOW - 30)
    sample = {"available": True, "count": 1, "gpus": [{"index": 0, "uuid": "GPU-x", "utilization_pct": 5}]}
    assert health.heartbeat(instance_id, Heartbeat(ready=True, gpu=sample), now=NOW - 10)
    return instance_id


def invoke(handler: ModuleType, event: dict[str, Any]) -> dict[str, Any]:
    return handler.lambda_handler(event, FakeLambdaContext())


SCHEDULE = eventbridge_event("aws.events", "Scheduled Event", {})


# --- the ways in -----------------------------------------------------------------------------------------------


def test_every_consumed_kind_has_its_function(handler: ModuleType) -> None:
    from spothub_core.logic.deployment_controller import dispatch  # noqa: PLC0415

    assert dispatch.unregistered() == []


def test_the_schedule_tracks_the_nodes_and_places_a_deployment(
    handler: ModuleType, store: DeploymentStore, capsys: pytest.CaptureFixture[str]
) -> None:
    instance_id = node_up()
    deployment = make_deployment()
    write_deployment(store, deployment)
    calls = ecs_calls(handler, "StartTask", "RegisterTaskDefinition")

    answer = invoke(handler, SCHEDULE)

    assert answer["outcome"] == "run: schedule"
    summary = answer["summary"]
    assert (summary["lease"], summary["passes"], summary["placed"], summary["errors"]) == ("taken", 1, 1, 0)
    node = store.get_node(instance_id)
    assert node is not None and (node.status, node.gpus_total, node.gpus_allocated) == (NodeStatus.READY, 1, 1)
    assert node.last_heartbeat == NOW - 10 and [g.uuid for g in node.gpu_usage] == ["GPU-x"]
    (task,) = store.tasks(deployment.deployment_id)
    assert task.status == TaskStatus.STARTING and task.instance_id == instance_id and task.ecs_task_arn
    (start,) = calls.of("StartTask")
    assert start["containerInstances"] == [node.container_instance_arn] and start["startedBy"] == DEPLOYMENT_STARTED_BY
    assert len(calls.of("RegisterTaskDefinition")) == 1
    listed = boto3.client("ecs", region_name=WEST).list_tasks(cluster=CLUSTER, startedBy=DEPLOYMENT_STARTED_BY)
    assert listed["taskArns"] == [task.ecs_task_arn]
    assert store.lease().holder is None  # let go
    emitted = _metrics(capsys.readouterr().out)
    assert emitted[DeploymentMetric.GPUS_TOTAL] == 1 and emitted[DeploymentMetric.GPUS_ALLOCATED] == 1
    assert emitted[DeploymentMetric.TASKS_PENDING] == 0 and emitted[DeploymentMetric.NODES_ASKED] == 0


def test_a_node_ecs_no_longer_lists_is_gone_and_its_task_ends(
    handler: ModuleType, store: DeploymentStore, clock: Clock
) -> None:
    instance_id = node_up()
    deployment = make_deployment()
    write_deployment(store, deployment)
    invoke(handler, SCHEDULE)
    (placed,) = store.tasks(deployment.deployment_id)
    node = store.get_node(instance_id)
    assert node is not None
    boto3.client("ecs", region_name=WEST).deregister_container_instance(
        cluster=CLUSTER, containerInstance=node.container_instance_arn, force=True
    )
    clock.now += 60

    invoke(handler, SCHEDULE)

    gone = store.get_node(instance_id)
    assert gone is not None and gone.status == NodeStatus.GONE and gone.expires_at
    assert gone.gpus_allocated == 0  # the health step ended its task, giving its GPU back
    ended = next(t for t in store.tasks(deployment.deployment_id) if t.task_id == placed.task_id)
    assert ended.status.ended


def test_the_apis_nudge_runs_and_asks_for_nodes_where_none_has_room(
    handler: ModuleType, store: DeploymentStore, finder: Finder
) -> None:
    create_node_group("1gpu")
    deployment = make_deployment(replicas=2)
    write_deployment(store, deployment)
    event = eventbridge_event(
        Source.HUB, HubEvent.DEPLOYMENTS_CHANGED, {"deployment_id": deployment.deployment_id, "change": "created"}
    )

    answer = invoke(handler, event)

    assert answer["outcome"] == f"run: created {deployment.deployment_id}"
    assert answer["summary"]["nodes_asked"] == 2
    (request,) = finder.asked
    assert (request.instance_types, request.target_capacity, request.share_regions) == (
        ["g5.xlarge", "g6.xlarge"],
        2,
        True,
    )
    group = boto3.client("autoscaling", region_name=WEST).describe_auto_scaling_groups(
        AutoScalingGroupNames=["spothub-nodes-1gpu"]
    )["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 2
    (ask,) = store.asks()
    assert (ask.region, ask.node_class, ask.desired, ask.asked_at) == (WEST, "1gpu", 2, NOW)
    assert {t.status for t in store.tasks(deployment.deployment_id)} == {TaskStatus.PENDING}


def test_a_task_state_change_runs_and_describes_the_tasks(handler: ModuleType, store: DeploymentStore) -> None:
    node_up()
    deployment = make_deployment()
    write_deployment(store, deployment)
    invoke(handler, SCHEDULE)
    (task,) = store.tasks(deployment.deployment_id)
    calls = ecs_calls(handler, "DescribeTasks")
    event = eventbridge_event(
        "aws.ecs",
        AwsEvent.ECS_TASK_STATE_CHANGE,
        {"taskArn": task.ecs_task_arn, "lastStatus": "RUNNING", "startedBy": DEPLOYMENT_STARTED_BY},
        region=WEST,
    )

    answer = invoke(handler, event)

    assert answer["outcome"] == f"run: task {task.ecs_task_arn} RUNNING"
    assert answer["summary"]["lease"] == "taken"
    assert [c["tasks"] for c in calls.of("DescribeTasks")] == [[task.ecs_task_arn]]


def test_a_state_change_of_a_task_nobody_knows_is_just_a_run(handler: ModuleType, store: DeploymentStore) -> None:
    calls = ecs_calls(handler, "DescribeTasks", "StopTask")
    event = eventbridge_event(
        "aws.ecs",
        AwsEvent.ECS_TASK_STATE_CHANGE,
        {"taskArn": f"arn:aws:ecs:{WEST}:123456789012:task/{CLUSTER}/unknown", "lastStatus": "STOPPED"},
        region=WEST,
    )

    answer = invoke(handler, event)

    assert answer["summary"]["lease"] == "taken" and answer["summary"]["errors"] == 0
    assert calls.calls == []


def test_a_capacity_notice_for_a_node_marks_it_interrupted_and_runs(
    handler: ModuleType, store: DeploymentStore
) -> None:
    instance_id = node_up()
    invoke(handler, SCHEDULE)  # the node recorded
    detail = {"region": WEST, "instance_id": instance_id, "kind": "interruption", "notice_id": "n-1"}
    event = eventbridge_event(Source.AGENT, WorkerReport.CAPACITY_NOTICE, detail)

    answer = invoke(handler, event)
    again = invoke(handler, event)  # delivered twice

    assert answer["outcome"] == f"run: node {instance_id} interrupted (interruption)"
    assert answer["summary"]["lease"] == "taken"
    assert again["outcome"] == f"run: node {instance_id} already interrupted (interruption)"
    node = store.get_node(instance_id)
    assert node is not None and node.status == NodeStatus.INTERRUPTED
    assert node.status_reason == "interruption notice n-1"


def test_a_capacity_notice_for_any_other_instance_is_ignored(handler: ModuleType, store: DeploymentStore) -> None:
    detail = {"region": WEST, "instance_id": "i-0serving00000000", "kind": "rebalance", "notice_id": "n-1"}

    answer = invoke(handler, eventbridge_event(Source.AGENT, WorkerReport.CAPACITY_NOTICE, detail))

    assert answer == {"outcome": "ignored: i-0serving00000000 is not a deployment node"}
    assert store.lease().holder is None  # no run


def test_a_kind_the_controller_does_not_consume_is_ignored(handler: ModuleType, store: DeploymentStore) -> None:
    event = eventbridge_event("aws.ec2", "EC2 Spot Instance Interruption Warning", {"instance-id": "i-0abc"})
    assert invoke(handler, event) == {"outcome": "ignored: unknown kind"}
    assert store.lease().holder is None


# --- the lease -------------------------------------------------------------------------------------------------


def test_a_run_that_finds_the_lease_held_marks_it_and_leaves(handler: ModuleType, store: DeploymentStore) -> None:
    assert store.acquire_lease("another-run", now=NOW, until=NOW + 300)
    calls = ecs_calls(handler, "ListContainerInstances")

    answer = invoke(handler, SCHEDULE)

    assert answer["summary"]["lease"] == "held" and answer["summary"]["passes"] == 0
    lease = store.lease()
    assert lease.holder == "another-run" and lease.again
    assert calls.calls == []
    assert store.release_lease("another-run")  # its holder is told to pass once more


def test_the_holder_passes_again_when_a_run_marked_the_lease(
    handler: ModuleType, store: DeploymentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents = handler.services.agents
    marked: list[bool] = []

    def agents_then_a_second_run() -> Any:
        if not marked:
            marked.append(store.acquire_lease("a-second-run", now=NOW, until=NOW + 300))  # held: marks it
        return agents()

    monkeypatch.setattr(handler, "services", dataclasses.replace(handler.services, agents=agents_then_a_second_run))

    answer = invoke(handler, SCHEDULE)

    assert marked == [False]
    assert answer["summary"]["passes"] == 2
    assert store.lease().holder is None


def test_an_expired_lease_is_taken(handler: ModuleType, store: DeploymentStore, clock: Clock) -> None:
    assert store.acquire_lease("a-run-that-died", now=NOW - 600, until=NOW - 300)
    assert invoke(handler, SCHEDULE)["summary"]["lease"] == "taken"


def _metrics(stdout: str) -> dict[str, float]:
    """The Powertools metrics (EMF) the invocation printed, by name."""
    found: dict[str, float] = {}
    for line in stdout.splitlines():
        if '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                found[metric["Name"]] = value[0] if isinstance(value, list) else value
    return found

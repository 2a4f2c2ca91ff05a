"""The deployments API through the real handler: the deployments table, the hub bus and CloudWatch in moto.

Every route, and every way each is refused: a bad body or parameter (400 naming the field), too many GPUs per
replica (400 naming the largest node class), an unknown deployment or node (404), over the tenant's quota (409), a
deployment being deleted or a node in a status the operation does not apply to (409), a next_token this API did not
make (400). Each change nudges the controller on the hub bus.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest

from spothub_core.dal.deployment_store import DeploymentStore
from spothub_core.models.deployment_records import (
    Autoscale,
    DeploymentStatus,
    GpuNode,
    NodeStatus,
    ScalingResult,
    ScalingTrigger,
    TaskStatus,
)
from tests.integration.conftest import ApiCalls, BusRecorder, load_handler, set_environment
from tests.integration.deployment_fixtures import (  # noqa: F401 (fixtures)
    DEPLOYMENT_ENVIRONMENT,
    HUB_BUS,
    IMAGE,
    MODEL,
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
from tests.lambda_events import FakeLambdaContext, rest_proxy_event

REGION = "us-east-1"
NODE = "i-0000000000000001"
BIG = "i-00000000000000f4"
# API Gateway's resources of the routes, with their path parameters.
RESOURCES = [
    (r"^/deployments/(?P<deployment_id>[^/]+)/status$", "/deployments/{deployment_id}/status"),
    (r"^/deployments/(?P<deployment_id>[^/]+)/restart$", "/deployments/{deployment_id}/restart"),
    (r"^/deployments/(?P<deployment_id>[^/]+)/scale$", "/deployments/{deployment_id}/scale"),
    (r"^/deployments/(?P<deployment_id>[^/]+)$", "/deployments/{deployment_id}"),
    (r"^/nodes/(?P<instance_id>[^/]+)/(?P<operation>cordon|uncordon|drain)$", "/nodes/{instance_id}/{operation}"),
    (r"^/nodes/(?P<instance_id>[^/]+)$", "/nodes/{instance_id}"),
]


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, deployments_table: Any) -> dict[str, str]:
    boto3.client("events", region_name=REGION).create_event_bus(Name=HUB_BUS)
    set_environment(monkeypatch, DEPLOYMENT_ENVIRONMENT)
    return DEPLOYMENT_ENVIRONMENT


@pytest.fixture
def bus(environment: dict[str, str]) -> BusRecorder:
    return BusRecorder(HUB_BUS, REGION)


@pytest.fixture
def handler(environment: dict[str, str]) -> Iterator[ModuleType]:
    yield load_handler("deployments_api.handler")


@pytest.fixture
def store(deployment_store: DeploymentStore) -> DeploymentStore:
    return deployment_store


def call(
    handler: ModuleType, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    resource, parameters = path, None
    for pattern, template in RESOURCES:
        match = re.match(pattern, path)
        if match:
            parameters = match.groupdict()
            resource = template.replace("{operation}", parameters.pop("operation", "{operation}"))
            break
    event = rest_proxy_event(method, path, body, resource=resource)
    event["pathParameters"] = parameters
    if query:
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {key: [value] for key, value in query.items()}
    response = handler.lambda_handler(event, FakeLambdaContext())
    assert "Traceback" not in response["body"]
    return response["statusCode"], json.loads(response["body"])


def fields_of(answer: dict[str, Any]) -> list[str]:
    return [detail["field"] for detail in answer.get("details", [])]


def changes(bus: BusRecorder) -> list[dict[str, Any]]:
    found = []
    for event in bus.events():
        assert (event["source"], event["detail-type"]) == ("spothub.hub", "Spothub Deployments Changed")
        found.append({k: v for k, v in event["detail"].items() if v is not None and k != "version"})
    return found


def create(handler: ModuleType, **fields: Any) -> str:
    status, answer = call(handler, "POST", "/deployments", {"model": MODEL, "tenant": "acme", **fields})
    assert status == 202, answer
    return str(answer["deployment_id"])


def fresh_node(store: DeploymentStore, instance_id: str = NODE, **fields: Any) -> GpuNode:
    """A node whose agent beat just now (the clock of the handler is the real one)."""
    return write_node(store, make_node(instance_id, first_seen=time.time(), last_heartbeat=time.time(), **fields))


# --- POST /deployments -----------------------------------------------------------------------------------------


def test_a_deployment_is_accepted_recorded_reserved_and_announced(
    handler: ModuleType, store: DeploymentStore, bus: BusRecorder
) -> None:
    status, answer = call(
        handler,
        "POST",
        "/deployments",
        {
            "model": MODEL,
            "tenant": "acme",
            "gpus": 2,
            "replicas": 1,
            "max_replicas": 2,
            "autoscale": {"target_gpu_utilization": 60, "cooldown_s": 120},
            "max_model_len": 8192,
            "env": {"VLLM_LOGGING_LEVEL": "INFO"},
        },
    )

    assert status == 202
    assert answer == {"deployment_id": answer["deployment_id"], "status": "creating"}
    assert re.match(r"^d-[0-9a-z]{15}$", answer["deployment_id"])
    deployment = store.get_deployment(answer["deployment_id"])
    assert deployment is not None
    assert (deployment.node_class, deployment.image, deployment.gpus, deployment.replicas) == ("4gpu", IMAGE, 2, 1)
    assert (deployment.min_replicas, deployment.max_replicas, deployment.max_model_len) == (1, 2, 8192)
    assert deployment.autoscale == Autoscale(target_gpu_utilization=60, cooldown_s=120)
    assert deployment.env == {"VLLM_LOGGING_LEVEL": "INFO"}
    assert store.tenant("acme").gpus_reserved == 2
    (event,) = store.events(deployment_id=deployment.deployment_id)
    assert (event.trigger, event.reason, event.before, event.after) == (ScalingTrigger.MANUAL, "created", 0, 1)
    assert changes(bus) == [{"deployment_id": deployment.deployment_id, "change": "created"}]


def test_more_gpus_per_replica_than_any_node_class_is_a_400_naming_the_largest(
    handler: ModuleType, store: DeploymentStore
) -> None:
    status, answer = call(handler, "POST", "/deployments", {"model": MODEL, "tenant": "acme", "gpus": 8})
    assert status == 400
    assert answer == {
        "error": "Bad Request",
        "message": "8 GPUs per replica: the largest node class offers 4 (class 4gpu: g5.12xlarge)",
    }
    assert store.deployments() == [] and store.tenant("acme").gpus_reserved == 0


def test_over_the_tenants_quota_is_a_409_saying_the_quota_held_and_asked(
    handler: ModuleType, store: DeploymentStore, bus: BusRecorder
) -> None:
    create(handler, gpus=4, replicas=1)
    changes(bus)
    status, answer = call(handler, "POST", "/deployments", {"model": MODEL, "tenant": "acme", "gpus": 4, "replicas": 2})
    assert status == 409
    assert answer["message"] == "tenant acme is over its quota: quota 8 GPUs, holds 4, asked 8 (2 replicas x 4 GPUs)"
    assert len(store.deployments()) == 1 and store.tenant("acme").gpus_reserved == 4
    assert changes(bus) == []
    # Another tenant has its own quota (the default, 16).
    create(handler, tenant="globex", gpus=4, replicas=4)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tenant": "acme"}, "body.model"),
        ({"model": MODEL}, "body.tenant"),
        ({"model": MODEL, "tenant": "Not A Tenant"}, "body.tenant"),
        ({"model": MODEL, "tenant": "acme", "gpus": 0}, "body.gpus"),
        ({"model": MODEL, "tenant": "acme", "gpus": 9}, "body.gpus"),
        ({"model": MODEL, "tenant": "acme", "replicas": 65}, "body.replicas"),
        ({"model": MODEL, "tenant": "acme", "replicas": 3, "max_replicas": 2}, "body"),
        (
            {"model": MODEL, "tenant": "acme", "autoscale": {"target_gpu_utilization": 120}},
            "body.autoscale.target_gpu_utilization",
        ),
        ({"model": MODEL, "tenant": "acme", "env": {"1BAD": "x"}}, "body.env.1BAD.[key]"),
        ({"model": MODEL, "tenant": "acme", "colour": "blue"}, "body.colour"),
    ],
)
def test_a_bad_body_is_a_400_naming_the_field(handler: ModuleType, body: dict[str, Any], field: str) -> None:
    status, answer = call(handler, "POST", "/deployments", body)
    assert status == 400, answer
    assert field in fields_of(answer), answer


@pytest.mark.parametrize("body", ["[1, 2]", "not json", '"text"'])
def test_a_body_that_is_no_json_object_is_a_400(handler: ModuleType, body: str) -> None:
    status, answer = call(handler, "POST", "/deployments", body)
    assert status == 400 and answer["error"] == "Bad Request"


# --- GET /deployments ------------------------------------------------------------------------------------------


def test_the_list_is_newest_first_filtered_and_paginated(handler: ModuleType, store: DeploymentStore) -> None:
    for n, (tenant, status) in enumerate(
        [("acme", DeploymentStatus.RUNNING), ("beta", DeploymentStatus.RUNNING), ("acme", DeploymentStatus.FAILED)]
    ):
        write_deployment(store, make_deployment(f"d-00000000000000{n}", tenant=tenant, status=status))

    status, page = call(handler, "GET", "/deployments", query={"limit": "2"})
    assert status == 200
    assert [d["deployment_id"] for d in page["deployments"]] == ["d-000000000000002", "d-000000000000001"]
    assert page["deployments"][0] == {
        "deployment_id": "d-000000000000002",
        "model": MODEL,
        "tenant": "acme",
        "gpus": 1,
        "status": "failed",
        "replicas": 1,
        "created_at": "2023-11-14T22:13:20Z",
    }
    _, rest = call(handler, "GET", "/deployments", query={"limit": "2", "next_token": page["next_token"]})
    assert [d["deployment_id"] for d in rest["deployments"]] == ["d-000000000000000"] and rest["next_token"] is None
    _, acme = call(handler, "GET", "/deployments", query={"tenant": "acme", "status": "running"})
    assert [d["deployment_id"] for d in acme["deployments"]] == ["d-000000000000000"]
    _, by_model = call(handler, "GET", "/deployments", query={"model": "other/model"})
    assert by_model == {"deployments": [], "next_token": None}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "sleeping"}, "query.status"),
        ({"limit": "0"}, "query.limit"),
        ({"limit": "101"}, "query.limit"),
        ({"tenant": "BAD"}, "query.tenant"),
    ],
)
def test_a_bad_list_parameter_is_a_400(handler: ModuleType, query: dict[str, str], field: str) -> None:
    status, answer = call(handler, "GET", "/deployments", query=query)
    assert status == 400 and field in fields_of(answer), answer


def test_a_next_token_this_api_did_not_make_is_a_400(handler: ModuleType) -> None:
    status, answer = call(handler, "GET", "/deployments", query={"next_token": "bm90LWEtdG9rZW4="})
    assert status == 400
    assert answer["message"] == "next_token: next_token is not one this API returned"


# --- GET /deployments/{id}/status ------------------------------------------------------------------------------


def test_the_status_shows_replicas_tasks_and_healthy_endpoints(handler: ModuleType, store: DeploymentStore) -> None:
    node = write_node(store, make_node(BIG, node_class="4gpu"))
    deployment = make_deployment(gpus=2, replicas=2, status=DeploymentStatus.DEGRADED, last_error="slot 1: restarting")
    write_deployment(store, deployment)
    write_task(store, make_task(deployment, "t-000000000000001", slot=0, status=TaskStatus.RUNNING), node=node)
    write_task(store, make_task(deployment, "t-000000000000002", slot=1, status=TaskStatus.STOPPED), node=node)
    write_task(store, make_task(deployment, "t-000000000000003", slot=1, restarts=1, not_before=NOW + 30))

    status, answer = call(handler, "GET", f"/deployments/{deployment.deployment_id}/status")

    assert status == 200
    assert answer["status"] == "degraded" and answer["last_error"] == "slot 1: restarting"
    assert answer["replicas"] == {"desired": 2, "running": 1, "healthy": 1}
    assert answer["endpoints"] == ["http://10.0.0.245:32768"]
    assert answer["tasks"] == [
        {
            "task_id": "t-000000000000001",
            "slot": 0,
            "instance_id": BIG,
            "region": "us-west-2",
            "gpus": 2,
            "status": "running",
            "endpoint": "http://10.0.0.245:32768",
            "started_at": "2023-11-14T22:13:20Z",
            "restarts": 0,
            "last_error": None,
        },
        {
            "task_id": "t-000000000000003",
            "slot": 1,
            "instance_id": None,
            "region": None,
            "gpus": 2,
            "status": "pending",
            "endpoint": None,
            "started_at": None,
            "restarts": 1,
            "last_error": None,
        },
    ]
    assert (answer["model"], answer["tenant"], answer["image"], answer["gpus"]) == (MODEL, "acme", IMAGE, 2)
    assert (answer["min_replicas"], answer["max_replicas"], answer["autoscale"]) == (2, 2, None)


def test_an_unknown_deployment_is_a_404_on_every_route(handler: ModuleType) -> None:
    missing = "d-00000000000none"
    for method, path, body in [
        ("GET", f"/deployments/{missing}/status", None),
        ("DELETE", f"/deployments/{missing}", None),
        ("POST", f"/deployments/{missing}/restart", None),
        ("POST", f"/deployments/{missing}/scale", {"replicas": 1}),
    ]:
        status, answer = call(handler, method, path, body)
        assert (status, answer["message"]) == (404, f"no deployment {missing}"), (method, path)


@pytest.mark.parametrize("path", ["/deployments/x/status", "/deployments/D-ABCDEFGH/status", "/nodes/not-an-instance"])
def test_a_malformed_id_is_a_400(handler: ModuleType, path: str) -> None:
    status, answer = call(handler, "GET", path)
    assert status == 400 and any(field.startswith("path.") for field in fields_of(answer)), answer


# --- DELETE, restart, scale ------------------------------------------------------------------------------------


def test_delete_marks_the_deployment_deleting_once(
    handler: ModuleType, store: DeploymentStore, bus: BusRecorder
) -> None:
    deployment_id = create(handler, replicas=2)
    changes(bus)

    status, answer = call(handler, "DELETE", f"/deployments/{deployment_id}")
    assert (status, answer["status"]) == (200, "deleting")
    status, again = call(handler, "DELETE", f"/deployments/{deployment_id}")
    assert (status, again["status"]) == (200, "deleting")

    assert store.get_deployment(deployment_id).status is DeploymentStatus.DELETING  # type: ignore[union-attr]
    assert changes(bus) == [{"deployment_id": deployment_id, "change": "deleted"}]
    assert [(e.reason, e.before, e.after) for e in store.events(deployment_id=deployment_id)] == [
        ("deleted", 2, 0),
        ("created", 0, 2),
    ]
    # The reservation goes back when the controller has stopped the tasks (release_reservation), not now.
    assert store.tenant("acme").gpus_reserved == 2


def test_restart_raises_the_generation_and_is_refused_while_deleting(
    handler: ModuleType, store: DeploymentStore, bus: BusRecorder
) -> None:
    deployment_id = create(handler)
    changes(bus)

    status, answer = call(handler, "POST", f"/deployments/{deployment_id}/restart")
    assert (status, answer["deployment_id"]) == (200, deployment_id)
    assert store.get_deployment(deployment_id).restart_generation == 1  # type: ignore[union-attr]
    assert changes(bus) == [{"deployment_id": deployment_id, "change": "restart"}]

    call(handler, "DELETE", f"/deployments/{deployment_id}")
    status, answer = call(handler, "POST", f"/deployments/{deployment_id}/restart")
    assert status == 409
    assert answer["message"] == f"deployment {deployment_id} is deleting: it cannot change any more"
    assert store.get_deployment(deployment_id).restart_generation == 1  # type: ignore[union-attr]


def test_scale_moves_the_replicas_and_the_reservation(
    handler: ModuleType, store: DeploymentStore, bus: BusRecorder
) -> None:
    deployment_id = create(handler, gpus=2, replicas=1)
    changes(bus)

    status, answer = call(handler, "POST", f"/deployments/{deployment_id}/scale", {"replicas": 3})

    assert status == 200
    assert answer["replicas"]["desired"] == 3 and (answer["min_replicas"], answer["max_replicas"]) == (1, 3)
    assert store.tenant("acme").gpus_reserved == 6
    assert changes(bus) == [{"deployment_id": deployment_id, "change": "scaled"}]
    latest = store.events(deployment_id=deployment_id)[0]
    assert (latest.trigger, latest.before, latest.after, latest.result) == (
        ScalingTrigger.MANUAL,
        1,
        3,
        ScalingResult.APPLIED,
    )

    status, answer = call(handler, "POST", f"/deployments/{deployment_id}/scale", {"replicas": 5})
    assert status == 409
    assert (
        answer["message"] == "tenant acme is over its quota: quota 8 GPUs, holds 6, asked 4 (3 -> 5 replicas x 2 GPUs)"
    )
    assert store.get_deployment(deployment_id).replicas == 3  # type: ignore[union-attr]
    assert store.events(deployment_id=deployment_id)[0].result is ScalingResult.REFUSED

    status, answer = call(handler, "POST", f"/deployments/{deployment_id}/scale", {"replicas": 0})
    assert (status, answer["replicas"]["desired"]) == (200, 0)
    assert store.tenant("acme").gpus_reserved == 0


def test_scale_of_an_autoscaled_deployment_outside_its_bounds_is_a_400_saying_them(
    handler: ModuleType, store: DeploymentStore
) -> None:
    deployment_id = create(handler, replicas=2, min_replicas=1, max_replicas=3, autoscale={})
    status, answer = call(handler, "POST", f"/deployments/{deployment_id}/scale", {"replicas": 4})
    assert status == 400
    assert answer["message"] == (
        f"replicas must lie within min_replicas..max_replicas (1..3) of autoscaled deployment {deployment_id}; asked 4"
    )
    assert store.get_deployment(deployment_id).replicas == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "field"), [({}, "body.replicas"), ({"replicas": -1}, "body.replicas"), ({"replicas": 1, "x": 1}, "body.x")]
)
def test_a_bad_scale_body_is_a_400(handler: ModuleType, body: dict[str, Any], field: str) -> None:
    deployment_id = create(handler)
    status, answer = call(handler, "POST", f"/deployments/{deployment_id}/scale", body)
    assert status == 400 and field in fields_of(answer), answer


def test_scale_while_deleting_is_a_409(handler: ModuleType) -> None:
    deployment_id = create(handler)
    call(handler, "DELETE", f"/deployments/{deployment_id}")
    status, answer = call(handler, "POST", f"/deployments/{deployment_id}/scale", {"replicas": 2})
    assert status == 409 and "is deleting" in answer["message"]


# --- nodes -----------------------------------------------------------------------------------------------------


def test_nodes_are_listed_and_shown_with_their_tasks(handler: ModuleType, store: DeploymentStore) -> None:
    big = write_node(store, make_node(BIG, node_class="4gpu", utilization=[90.0, 70.0, 0.0, 0.0], capacity_type="spot"))
    write_node(store, make_node(NODE))
    write_node(store, make_node("i-00000000000000ee", status=NodeStatus.GONE))
    deployment = make_deployment(gpus=2)
    write_deployment(store, deployment)
    write_task(store, make_task(deployment, status=TaskStatus.RUNNING), node=big)

    status, answer = call(handler, "GET", "/nodes")
    assert status == 200
    assert [n["instance_id"] for n in answer["nodes"]] == [BIG, NODE]
    status, shown = call(handler, "GET", f"/nodes/{BIG}")
    assert status == 200 and shown == answer["nodes"][0]
    assert shown == {
        "instance_id": BIG,
        "region": "us-west-2",
        "instance_type": "g5.12xlarge",
        "node_class": "4gpu",
        "capacity_type": "spot",
        "status": "ready",
        "status_reason": None,
        "gpus_total": 4,
        "gpus_allocated": 2,
        "gpus_free": 2,
        "last_heartbeat": "2023-11-14T22:13:20Z",
        "gpu_utilization_pct": 40.0,
        "tasks": [
            {"deployment_id": deployment.deployment_id, "task_id": "t-000000000000001", "gpus": 2, "status": "running"}
        ],
    }
    status, gone = call(handler, "GET", "/nodes/i-00000000000000ee")
    assert (status, gone["status"]) == (200, "gone")
    status, answer = call(handler, "GET", "/nodes/i-00000000000000ff")
    assert (status, answer["message"]) == (404, "no GPU node i-00000000000000ff")


def test_cordon_drain_uncordon_move_the_node_store_the_reason_and_nudge(
    handler: ModuleType, store: DeploymentStore, bus: BusRecorder
) -> None:
    write_node(store, make_node(NODE))

    status, answer = call(handler, "POST", f"/nodes/{NODE}/cordon", {"reason": "kernel update"})
    assert (status, answer["status"], answer["status_reason"]) == (200, "cordoned", "kernel update")
    status, answer = call(handler, "POST", f"/nodes/{NODE}/cordon")  # again, no body: as it is
    assert (status, answer["status"], answer["status_reason"]) == (200, "cordoned", "kernel update")
    status, answer = call(handler, "POST", f"/nodes/{NODE}/drain")
    assert (status, answer["status"]) == (200, "draining")
    assert answer["status_reason"] == "drain asked by arn:aws:iam::123456789012:user/operator"
    status, answer = call(handler, "POST", f"/nodes/{NODE}/uncordon", {})
    assert (status, answer["status"], answer["status_reason"]) == (200, "ready", None)

    assert store.get_node(NODE).status is NodeStatus.READY  # type: ignore[union-attr]
    assert changes(bus) == [
        {"instance_id": NODE, "change": "cordon"},
        {"instance_id": NODE, "change": "drain"},
        {"instance_id": NODE, "change": "uncordon"},
    ]


@pytest.mark.parametrize("operation", ["cordon", "uncordon", "drain"])
@pytest.mark.parametrize("status", [NodeStatus.INTERRUPTED, NodeStatus.GONE])
def test_a_node_going_refuses_every_operation_with_a_409(
    handler: ModuleType, store: DeploymentStore, bus: BusRecorder, operation: str, status: NodeStatus
) -> None:
    write_node(store, make_node(NODE))
    store.update_node(NODE, {"status": status})
    code, answer = call(handler, "POST", f"/nodes/{NODE}/{operation}", {"reason": "x"})
    assert code == 409
    assert answer["message"].startswith(f"node {NODE} is {status}: {operation} applies to a node that is ")
    assert store.get_node(NODE).status is status  # type: ignore[union-attr]
    assert changes(bus) == []


def test_cordon_of_a_draining_node_is_a_409(handler: ModuleType, store: DeploymentStore) -> None:
    write_node(store, make_node(NODE))
    call(handler, "POST", f"/nodes/{NODE}/drain")
    status, answer = call(handler, "POST", f"/nodes/{NODE}/cordon")
    assert (status, answer["message"]) == (409, f"node {NODE} is draining: cordon applies to a node that is ready")


def test_node_operations_on_an_unknown_node_or_with_a_bad_body(handler: ModuleType, store: DeploymentStore) -> None:
    status, answer = call(handler, "POST", "/nodes/i-00000000000000ff/drain")
    assert (status, answer["message"]) == (404, "no GPU node i-00000000000000ff")
    write_node(store, make_node(NODE))
    status, answer = call(handler, "POST", f"/nodes/{NODE}/drain", {"reason": "x" * 201})
    assert status == 400 and "body.reason" in fields_of(answer)
    status, answer = call(handler, "POST", f"/nodes/{NODE}/drain", {"why": "x"})
    assert status == 400 and "body.why" in fields_of(answer)
    status, answer = call(handler, "POST", f"/nodes/{NODE}/reboot")
    assert status == 404


# --- resources, utilization, scaling events, health ------------------------------------------------------------


def test_resources_count_gpus_per_region_and_instance_type(handler: ModuleType, store: DeploymentStore) -> None:
    big = write_node(store, make_node(BIG, node_class="4gpu"))
    write_node(store, make_node(NODE))
    write_node(store, make_node("i-0000000000000002", instance_type="g6.xlarge"))
    write_node(store, make_node("i-0000000000000003", status=NodeStatus.CORDONED))
    write_node(store, make_node("i-00000000000000e1", region="eu-west-1"))
    write_node(store, make_node("i-00000000000000ee", status=NodeStatus.GONE))
    deployment = make_deployment(gpus=3)
    write_deployment(store, deployment)
    write_task(store, make_task(deployment, status=TaskStatus.RUNNING), node=big)

    status, answer = call(handler, "GET", "/resources/available")

    assert status == 200
    assert answer == {
        "resources": [
            {"region": "eu-west-1", "instance_type": "g5.xlarge", "nodes": 1, "total": 1, "allocated": 0, "free": 1},
            {"region": "us-west-2", "instance_type": "g5.12xlarge", "nodes": 1, "total": 4, "allocated": 3, "free": 1},
            {"region": "us-west-2", "instance_type": "g5.xlarge", "nodes": 2, "total": 2, "allocated": 0, "free": 1},
            {"region": "us-west-2", "instance_type": "g6.xlarge", "nodes": 1, "total": 1, "allocated": 0, "free": 1},
        ],
        "total": 8,
        "allocated": 3,
        "free": 4,
    }


def test_gpu_utilization_per_node_and_deployment(handler: ModuleType, store: DeploymentStore) -> None:
    big = write_node(store, make_node(BIG, node_class="4gpu", utilization=[90.0, 70.0, 5.0, 0.0]))
    deployment = make_deployment(gpus=2, autoscale=Autoscale(target_gpu_utilization=60))
    write_deployment(store, deployment)
    write_task(store, make_task(deployment, status=TaskStatus.RUNNING), node=big)

    status, answer = call(handler, "GET", "/gpu-utilization")

    assert status == 200
    (node,) = answer["nodes"]
    assert (node["instance_id"], node["utilization_pct"], node["last_heartbeat"]) == (BIG, 41.2, "2023-11-14T22:13:20Z")
    assert [(g["index"], g["utilization_pct"], g["deployment_id"]) for g in node["gpus"]] == [
        (0, 90.0, deployment.deployment_id),
        (1, 70.0, deployment.deployment_id),
        (2, 5.0, None),
        (3, 0.0, None),
    ]
    assert node["gpus"][0]["memory_total_mib"] == 24_000
    assert answer["deployments"] == [
        {"deployment_id": deployment.deployment_id, "utilization_pct": 80.0, "gpus": 2, "target_pct": 60.0}
    ]


def test_scaling_events_newest_first_of_one_deployment_or_all(handler: ModuleType) -> None:
    first = create(handler)
    second = create(handler, tenant="globex")
    call(handler, "POST", f"/deployments/{first}/scale", {"replicas": 2})

    status, answer = call(handler, "GET", "/scaling/events")
    assert status == 200
    assert [(e["deployment_id"], e["reason"]) for e in answer["events"]] == [
        (first, "scaled by request"),
        (second, "created"),
        (first, "created"),
    ]
    event = answer["events"][0]
    assert (event["trigger"], event["before"], event["after"], event["result"]) == ("manual", 1, 2, "applied")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", event["at"])
    _, mine = call(handler, "GET", "/scaling/events", query={"deployment_id": first, "limit": "1"})
    assert [(e["deployment_id"], e["reason"]) for e in mine["events"]] == [(first, "scaled by request")]
    for query in ({"deployment_id": "nope"}, {"limit": "0"}, {"limit": "101"}):
        status, answer = call(handler, "GET", "/scaling/events", query=query)
        assert status == 400, query


def test_health_of_a_sound_infrastructure(handler: ModuleType, store: DeploymentStore) -> None:
    fresh_node(store)
    fresh_node(store, "i-0000000000000002")
    store.update_node("i-0000000000000002", {"status": NodeStatus.CORDONED})

    status, answer = call(handler, "GET", "/health")

    assert status == 200
    assert answer == {
        "healthy": True,
        "nodes_ready": 1,
        "nodes_total": 2,
        "stuck_deployments": [],
        "alarms_in_alarm": [],
        "checks": [
            {"name": "nodes", "ok": True, "detail": "1 of 2 nodes ready (1 ready, 1 cordoned)"},
            {"name": "deployments", "ok": True, "detail": "none stuck"},
            {"name": "alarms", "ok": True, "detail": "no alarm spothub-* in ALARM"},
        ],
    }


def test_health_names_stuck_deployments_silent_nodes_and_the_deployments_alarms_in_alarm(
    handler: ModuleType, store: DeploymentStore
) -> None:
    write_node(store, make_node(NODE))  # its agent last beat at NOW, long ago
    write_deployment(store, make_deployment("d-000000000000001"))  # creating since NOW
    write_deployment(store, make_deployment("d-000000000000002", status=DeploymentStatus.FAILED))
    write_deployment(store, make_deployment("d-000000000000003", created_at=time.time()))  # creating, just now
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    for name in ("spothub-hub-api-errors", "spothub-deployments-stuck", "other-app-alarm", "spothubx-alarm"):
        cloudwatch.put_metric_alarm(
            AlarmName=name,
            MetricName="Errors",
            Namespace="Spothub",
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanThreshold",
        )
        cloudwatch.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="test")
    cloudwatch.set_alarm_state(AlarmName="spothub-deployments-stuck", StateValue="OK", StateReason="test")

    status, answer = call(handler, "GET", "/health")

    assert status == 200
    assert answer["healthy"] is False
    assert answer["stuck_deployments"] == ["d-000000000000001", "d-000000000000002"]
    assert answer["alarms_in_alarm"] == ["spothub-hub-api-errors"]
    assert [(c["name"], c["ok"]) for c in answer["checks"]] == [
        ("nodes", False),
        ("deployments", False),
        ("alarms", False),
    ]
    assert answer["checks"][0]["detail"].endswith(f": {NODE}")


def test_health_when_cloudwatch_does_not_answer_says_so(handler: ModuleType) -> None:
    ApiCalls(handler.cloudwatch, "DescribeAlarms").answer("DescribeAlarms", error=("Throttling", "Rate exceeded"))
    status, answer = call(handler, "GET", "/health")
    assert status == 200 and answer["healthy"] is False
    assert answer["checks"][-1]["name"] == "alarms" and answer["checks"][-1]["ok"] is False
    assert answer["checks"][-1]["detail"].startswith("could not read the alarms: ")
    assert "Rate exceeded" in answer["checks"][-1]["detail"]


def test_an_unknown_route_is_a_404(handler: ModuleType) -> None:
    status, answer = call(handler, "GET", "/deployments/d-000000000000001/logs")
    assert status == 404 and answer["error"] == "Not Found"

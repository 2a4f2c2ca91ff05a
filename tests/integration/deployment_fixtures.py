"""The deployments table in moto's DynamoDB, as the hub stack defines it (pk/sk, TTL on expires_at), the settings of
the deployment functions, and builders of the table's records.

Import the fixtures into a test module (registered as `deployments_table` and `deployment_store`):
`from tests.integration.deployment_fixtures import deployment_store_fixture, deployments_table_fixture  # noqa: F401`.

Two node classes: "1gpu" (1 GPU per node: g5.xlarge, g6.xlarge; at most 4 nodes per region) and "4gpu" (4 GPUs per
node: g5.12xlarge; at most 2). Quotas: tenant "acme" 8 GPUs, "small" 2, anyone else DEFAULT_QUOTA (16).

The builders write through DeploymentStore, so what they write keeps the store's accounting: `write_deployment`
reserves the tenant's GPUs as a create does, `write_task` with a placed status allocates its GPUs on the node with
place_task before moving the task on. place_task takes only ready nodes: for tasks on a cordoned, draining or
interrupted node, write the node ready, its tasks, then `store.update_node(instance_id, {"status": ...})`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spothub_core.dal.deployment_store import CreateOutcome, DeploymentStore, PlaceOutcome
from spothub_core.models.deployment_records import (
    Autoscale,
    DeploymentStatus,
    DeploymentTask,
    GpuNode,
    GpuUsage,
    ModelDeployment,
    NodeStatus,
    TaskStatus,
)
from spothub_core.settings import DeploymentSettings, load_settings
from tests.integration.conftest import ACCOUNT, HUB_ENVIRONMENT, HUB_REGION, STATE_TABLE_KEYS

DEPLOYMENTS_TABLE = "spothub-deployments"
DEPLOYMENTS_REGION = HUB_REGION
NODE_REGION = "us-west-2"  # the first worker region of HUB_ENVIRONMENT
HUB_BUS = "spothub-hub"
IMAGE = "vllm/vllm-openai:v0.6.3"
NODE_CLASSES: dict[str, dict[str, Any]] = {
    "1gpu": {"gpus": 1, "instance_types": ["g5.xlarge", "g6.xlarge"], "max_nodes": 4},
    "4gpu": {"gpus": 4, "instance_types": ["g5.12xlarge"], "max_nodes": 2},
}
TENANT_QUOTAS = {"acme": 8, "small": 2}
DEFAULT_QUOTA = 16
DEPLOYMENT_ENVIRONMENT = {
    **HUB_ENVIRONMENT,
    "POWERTOOLS_SERVICE_NAME": "spothub-deployments-api",
    "AWS_DEFAULT_REGION": HUB_REGION,
    "SPOTHUB_DEPLOYMENTS_TABLE": DEPLOYMENTS_TABLE,
    "SPOTHUB_NODE_CLASSES": json.dumps(NODE_CLASSES),
    "SPOTHUB_TENANT_QUOTAS": json.dumps(TENANT_QUOTAS),
    "SPOTHUB_DEFAULT_TENANT_QUOTA": str(DEFAULT_QUOTA),
    "SPOTHUB_DEPLOYMENT_IMAGE": IMAGE,
    "SPOTHUB_HUB_BUS": HUB_BUS,
}
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
MODEL = "meta-llama/Llama-3.1-8B"


def deployment_settings(**overrides: str) -> DeploymentSettings:
    """DeploymentSettings as the functions read them from DEPLOYMENT_ENVIRONMENT (with `overrides` by env name)."""
    return load_settings(DeploymentSettings, {**DEPLOYMENT_ENVIRONMENT, **overrides})


def create_deployments_table(name: str = DEPLOYMENTS_TABLE, region: str = DEPLOYMENTS_REGION) -> Any:
    """Create the deployments table (inside mock_aws, or against an emulator) and return it as a boto3 Table
    resource."""
    client = boto3.client("dynamodb", region_name=region)
    client.create_table(TableName=name, **STATE_TABLE_KEYS)
    client.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
    return boto3.resource("dynamodb", region_name=region).Table(name)


@pytest.fixture(name="deployments_table")
def deployments_table_fixture() -> Iterator[Any]:
    """An empty deployments table in moto (us-east-1), as a boto3 Table resource."""
    with mock_aws():
        yield create_deployments_table()


@pytest.fixture(name="deployment_store")
def deployment_store_fixture(deployments_table: Any) -> DeploymentStore:
    return DeploymentStore(deployments_table)


# --- records ------------------------------------------------------------------------------------------------


def make_deployment(
    deployment_id: str = "d-000000000abcdef",
    *,
    tenant: str = "acme",
    gpus: int = 1,
    replicas: int = 1,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    autoscale: Autoscale | None = None,
    node_class: str | None = None,
    status: DeploymentStatus = DeploymentStatus.CREATING,
    created_at: float = NOW,
    **fields: Any,
) -> ModelDeployment:
    """A deployment of MODEL on the smallest node class with `gpus` GPUs (unless `node_class` says)."""
    if node_class is None:
        node_class = min(
            (name for name, spec in NODE_CLASSES.items() if spec["gpus"] >= gpus), key=lambda n: NODE_CLASSES[n]["gpus"]
        )
    return ModelDeployment(
        deployment_id=deployment_id,
        model=fields.pop("model", MODEL),
        tenant=tenant,
        image=fields.pop("image", IMAGE),
        gpus=gpus,
        replicas=replicas,
        min_replicas=replicas if min_replicas is None else min_replicas,
        max_replicas=replicas if max_replicas is None else max_replicas,
        autoscale=autoscale,
        node_class=node_class,
        status=status,
        created_at=created_at,
        updated_at=fields.pop("updated_at", created_at),
        **fields,
    )


def make_node(
    instance_id: str = "i-0000000000000001",
    *,
    node_class: str = "1gpu",
    region: str = NODE_REGION,
    instance_type: str | None = None,
    status: NodeStatus = NodeStatus.READY,
    utilization: list[float] | None = None,
    **fields: Any,
) -> GpuNode:
    """A node of `node_class` (its first instance type unless named), its GPUs named GPU-<instance>-<index>; with
    `utilization` (percent per GPU), a heartbeat's GPU sample at NOW."""
    spec = NODE_CLASSES[node_class]
    gpu_ids = [f"GPU-{instance_id}-{index}" for index in range(spec["gpus"])]
    usage = (
        [
            GpuUsage(uuid=uuid, index=index, utilization_pct=pct, memory_used_mib=1000, memory_total_mib=24_000)
            for index, (uuid, pct) in enumerate(zip(gpu_ids, utilization, strict=True))
        ]
        if utilization is not None
        else []
    )
    return GpuNode(
        instance_id=instance_id,
        region=region,
        node_class=node_class,
        instance_type=instance_type or spec["instance_types"][0],
        container_instance_arn=fields.pop(
            "container_instance_arn",
            f"arn:aws:ecs:{region}:{ACCOUNT}:container-instance/spothub-gpu/{instance_id.removeprefix('i-')}",
        ),
        gpus_total=spec["gpus"],
        gpu_ids=gpu_ids,
        status=status,
        private_ip=fields.pop("private_ip", _private_ip(instance_id)),
        first_seen=fields.pop("first_seen", NOW),
        last_heartbeat=fields.pop("last_heartbeat", NOW if utilization is not None else None),
        gpu_usage=usage,
        **fields,
    )


def _private_ip(instance_id: str) -> str:
    """10.0.0.<n>, n from the id's last two hex digits (any other id: from its characters)."""
    try:
        host = int(instance_id[-2:], 16)
    except ValueError:
        host = sum(instance_id.encode())
    return f"10.0.0.{host % 250 + 1}"


def make_task(
    deployment: ModelDeployment,
    task_id: str = "t-000000000000001",
    *,
    slot: int = 0,
    status: TaskStatus = TaskStatus.PENDING,
    created_at: float = NOW,
    **fields: Any,
) -> DeploymentTask:
    return DeploymentTask(
        deployment_id=deployment.deployment_id,
        task_id=task_id,
        slot=slot,
        generation=fields.pop("generation", deployment.restart_generation),
        status=status,
        gpus=deployment.gpus,
        created_at=created_at,
        **fields,
    )


# --- writing them -------------------------------------------------------------------------------------------


def write_deployment(store: DeploymentStore, deployment: ModelDeployment, *, quota: int | None = None) -> None:
    """Create the deployment as the API does: its tenant reserves gpus x replicas (of `quota`, default its quota)."""
    tenant_quota = quota if quota is not None else TENANT_QUOTAS.get(deployment.tenant, DEFAULT_QUOTA)
    outcome = store.create_deployment(deployment, reserve=deployment.gpus * deployment.replicas, quota=tenant_quota)
    assert outcome is CreateOutcome.CREATED, outcome


def write_node(store: DeploymentStore, node: GpuNode) -> GpuNode:
    """Record a node with nothing allocated (allocate through write_task)."""
    assert node.gpus_allocated == 0, "GPUs are allocated by placing tasks: write_task(..., node=...)"
    assert store.add_node(node)
    return node


def write_task(
    store: DeploymentStore,
    task: DeploymentTask,
    *,
    node: GpuNode | None = None,
    gpu_ids: list[str] | None = None,
    now: float = NOW,
) -> DeploymentTask:
    """Write the task. A task in a placed status (starting, running, unhealthy, stopping) needs its `node`: it is
    placed there with place_task (allocating its GPUs: `gpu_ids`, default the node's first free ones by what the
    store knows is allocated), then moved to its status, with an endpoint and (running) healthy_at. An ended task
    with a node is placed, then ended (its GPUs given back)."""
    target = task.status
    assert store.put_task(task.model_copy(update={"status": TaskStatus.PENDING}))
    if node is None:
        assert not target.placed, "a placed task needs its node"
        if target is not TaskStatus.PENDING:
            ended = store.update_task(task, {"status": target}, expect=[TaskStatus.PENDING])
            assert ended is not None
            return ended
        return task
    current = store.get_node(node.instance_id) or node
    ids = gpu_ids or current.gpu_ids[current.gpus_allocated : current.gpus_allocated + task.gpus]
    pending = task.model_copy(update={"status": TaskStatus.PENDING})
    fields: dict[str, Any] = {
        "instance_id": node.instance_id,
        "region": node.region,
        "container_instance_arn": node.container_instance_arn,
        "placed_at": now,
        "gpu_ids": ids,
    }
    outcome = store.place_task(pending, current, fields)
    assert outcome is PlaceOutcome.PLACED, outcome
    placed = pending.model_copy(update={**fields, "status": TaskStatus.STARTING})
    if target is TaskStatus.STARTING:
        return placed
    if target.ended:
        ended = store.end_task(placed, target, {}, now=now, expires_at=int(now) + 86_400)
        assert ended is not None
        return ended
    port = 32768 + task.slot
    moved = {
        "status": target,
        "ecs_task_arn": f"arn:aws:ecs:{node.region}:{ACCOUNT}:task/spothub-gpu/{task.task_id}",
        "endpoint": f"http://{node.private_ip}:{port}",
    }
    if target is TaskStatus.RUNNING:
        moved["healthy_at"] = now
    updated = store.update_task(placed, moved, expect=[TaskStatus.STARTING])
    assert updated is not None
    return updated

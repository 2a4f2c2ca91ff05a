"""The deployment controller's ECS in one worker region (dal/worker_ecs.py) against moto: nodes are the GPU
cluster's container instances that are node group members, with the GPUs ECS registered; a deployment's task
definition (registered once per content), StartTask on one container instance (ECS's refusal as PlacementRefused),
DescribeTasks read into TaskState, StopTask idempotent.

moto registers every container instance with 4096 CPU units, 7482 MiB and no GPU, and places any task anywhere: the
container instances here register what the ECS agent of their type registers (spothub/sandbox/ecs_placement.py), and
`ecs_as_aws` lends these tests the sandbox's placement by ECS's rules (restored afterwards).

The builders at the top are shared with tests/integration/test_deployment_controller_handler.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spothub.sandbox import ecs_placement
from spothub.sandbox.ecs_placement import registered_resources, task_requirements
from spothub_core.contracts import (
    DEPLOYMENT_CONTAINER_NAME,
    DEPLOYMENT_STARTED_BY,
    GROUP_TAG,
    deployment_log_group,
    deployment_task_family,
    gpu_cluster_name,
    node_group_name,
)
from spothub_core.dal.worker_ecs import DEFINITION_DIGEST_TAG, RegionEcs, memory_reservation_mib
from spothub_core.errors import DependencyUnavailable
from spothub_core.logic.deployment_context import PlacementRefused
from tests.integration.conftest import ACCOUNT, ApiCalls
from tests.integration.deployment_fixtures import NODE_CLASSES, NODE_REGION, deployment_settings, make_deployment

PREFIX = "spothub"
CLUSTER = gpu_cluster_name(PREFIX)
EXECUTION_ROLE = f"arn:aws:iam::{ACCOUNT}:role/spothub-deployment-execution"
TASK_ROLE = f"arn:aws:iam::{ACCOUNT}:role/spothub-deployment-task"
# What a node's ecs.config says (the GPU capacity's user data).
GPU_CONFIG = {"ECS_CLUSTER": CLUSTER, "ECS_ENABLE_GPU_SUPPORT": "true", "ECS_RESERVED_MEMORY": "256"}
AMI = "ami-12c6146b"


# --- a worker region in moto -----------------------------------------------------------------------------------


def create_cluster(region: str = NODE_REGION) -> None:
    boto3.client("ecs", region_name=region).create_cluster(clusterName=CLUSTER)


def create_node_group(node_class: str, *, desired: int = 0, region: str = NODE_REGION, on_demand: int = 0) -> str:
    """The class's node group as the worker stack defines it: min 0, max max_nodes, spot over the class's types."""
    spec = NODE_CLASSES[node_class]
    ec2 = boto3.client("ec2", region_name=region)
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    name = node_group_name(PREFIX, node_class)
    ec2.create_launch_template(
        LaunchTemplateName=name, LaunchTemplateData={"ImageId": AMI, "InstanceType": spec["instance_types"][0]}
    )
    boto3.client("autoscaling", region_name=region).create_auto_scaling_group(
        AutoScalingGroupName=name,
        MinSize=0,
        MaxSize=spec["max_nodes"],
        DesiredCapacity=desired,
        VPCZoneIdentifier=subnet,
        MixedInstancesPolicy={
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateName": name, "Version": "$Latest"},
                "Overrides": [{"InstanceType": t} for t in spec["instance_types"]],
            },
            "InstancesDistribution": {
                "OnDemandBaseCapacity": on_demand,
                "OnDemandPercentageAboveBaseCapacity": 0,
                "SpotAllocationStrategy": "price-capacity-optimized",
            },
        },
    )
    return name


def group_members(node_class: str, region: str = NODE_REGION) -> list[str]:
    group = boto3.client("autoscaling", region_name=region).describe_auto_scaling_groups(
        AutoScalingGroupNames=[node_group_name(PREFIX, node_class)]
    )["AutoScalingGroups"][0]
    return [m["InstanceId"] for m in group["Instances"]]


def run_instance(instance_type: str, *, group: str | None = None, spot: bool = False, region: str = NODE_REGION) -> str:
    """An instance launched outside a group here (moto lets a test set Auto Scaling's own tag)."""
    extra: dict[str, Any] = {"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}
    if group:
        extra["TagSpecifications"] = [{"ResourceType": "instance", "Tags": [{"Key": GROUP_TAG, "Value": group}]}]
    return boto3.client("ec2", region_name=region).run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, InstanceType=instance_type, **extra
    )["Instances"][0]["InstanceId"]


def register_node(instance_id: str, region: str = NODE_REGION) -> str:
    """What the instance's ECS agent does when it starts with GPU support: its container instance's ARN, with the
    resources (GPU ids included) the agent registers for its type."""
    from moto.ecs.models import ecs_backends  # noqa: PLC0415

    document = json.dumps({"instanceId": instance_id, "region": region})
    arn = boto3.client("ecs", region_name=region).register_container_instance(
        cluster=CLUSTER, instanceIdentityDocument=document
    )["containerInstance"]["containerInstanceArn"]
    container_instance = ecs_backends[ACCOUNT][region].container_instances[CLUSTER][arn.split("/")[-1]]
    instance_type = container_instance.attributes["ecs.instance-type"]
    ecs_placement.register_resources(container_instance, registered_resources(instance_type, GPU_CONFIG))
    return arn


def registered_gpu_ids(container_instance_arn: str, region: str = NODE_REGION) -> list[str]:
    described = boto3.client("ecs", region_name=region).describe_container_instances(
        cluster=CLUSTER, containerInstances=[container_instance_arn]
    )["containerInstances"][0]
    return next(r["stringSetValue"] for r in described["registeredResources"] if r["name"] == "GPU")


def region_ecs(region: str = NODE_REGION) -> RegionEcs:
    return RegionEcs(
        boto3.client("ecs", region_name=region),
        boto3.client("ec2", region_name=region),
        region=region,
        prefix=PREFIX,
        node_classes=deployment_settings().node_classes,
        execution_role_arn=EXECUTION_ROLE,
        task_role_arn=TASK_ROLE,
    )


@pytest.fixture
def ecs_as_aws() -> Iterator[None]:
    """The sandbox's ECS placement (GPUs, memory, ports counted; StartTask's failures), undone after the test."""
    from moto.ecs.models import EC2ContainerServiceBackend  # noqa: PLC0415
    from moto.ecs.responses import EC2ContainerServiceResponse  # noqa: PLC0415

    patched = (EC2ContainerServiceBackend, EC2ContainerServiceResponse)
    before = {owner: dict(vars(owner)) for owner in patched}
    ecs_placement.apply()
    yield
    for owner, attributes in before.items():
        for name in set(vars(owner)) - set(attributes):
            delattr(owner, name)
        for name, value in attributes.items():
            if vars(owner).get(name) is not value:
                setattr(owner, name, value)


@pytest.fixture
def region() -> Iterator[None]:
    with mock_aws():
        create_cluster()
        yield


# --- nodes -----------------------------------------------------------------------------------------------------


def test_nodes_are_the_node_group_members_registered_in_the_gpu_cluster(region: None) -> None:
    create_node_group("1gpu", desired=2)
    members = group_members("1gpu")
    spot = run_instance("g5.12xlarge", group=node_group_name(PREFIX, "4gpu"), spot=True)
    serving = run_instance("g5.xlarge", group="spothub-gpu")  # the serving group's instance, same cluster
    stranger = run_instance("g5.xlarge", group="spothub-nodes-8gpu")  # a class this deployment does not have
    arns = {i: register_node(i) for i in [*members, spot, serving, stranger]}
    run_instance("g5.xlarge", group=node_group_name(PREFIX, "1gpu"))  # booting: not registered in ECS yet

    nodes = {n.instance_id: n for n in region_ecs().nodes()}

    assert set(nodes) == {*members, spot}
    one = nodes[members[0]]
    assert (one.node_class, one.instance_type, one.gpus_registered, one.status) == ("1gpu", "g5.xlarge", 1, "ACTIVE")
    assert one.gpu_ids == registered_gpu_ids(arns[members[0]])
    assert one.container_instance_arn == arns[members[0]]
    assert one.capacity_type == "on-demand" and one.agent_connected and one.private_ip
    four = nodes[spot]
    assert (four.node_class, four.gpus_registered, four.capacity_type) == ("4gpu", 4, "spot")
    assert len(set(four.gpu_ids)) == 4


def test_a_draining_container_instance_is_a_node_and_a_deregistered_one_is_not(region: None) -> None:
    ecs = boto3.client("ecs", region_name=NODE_REGION)
    draining = register_node(run_instance("g5.xlarge", group=node_group_name(PREFIX, "1gpu")))
    leaving = register_node(run_instance("g5.xlarge", group=node_group_name(PREFIX, "1gpu")))
    ecs.update_container_instances_state(cluster=CLUSTER, containerInstances=[draining], status="DRAINING")
    ecs.deregister_container_instance(cluster=CLUSTER, containerInstance=leaving, force=True)

    nodes = region_ecs().nodes()

    assert [(n.container_instance_arn, n.status) for n in nodes] == [(draining, "DRAINING")]


def test_no_cluster_answer_is_an_error_not_an_empty_list(region: None) -> None:
    """A node missing from the answer counts as gone: a failed listing must not look like an empty cluster."""
    ecs = region_ecs()
    calls = ApiCalls(ecs.ecs, "ListContainerInstances")
    calls.answer("ListContainerInstances", error=("ThrottlingException", "Rate exceeded"))
    with pytest.raises(DependencyUnavailable, match="Rate exceeded"):
        ecs.nodes()


# --- task definitions ------------------------------------------------------------------------------------------


def _latest(family: str) -> dict[str, Any]:
    return boto3.client("ecs", region_name=NODE_REGION).describe_task_definition(
        taskDefinition=family, include=["TAGS"]
    )


def test_the_task_definition_is_the_vllm_server_on_a_dynamic_port_with_its_gpus(region: None) -> None:
    deployment = make_deployment(gpus=1, max_model_len=8192, env={"HF_TOKEN_FILE": "/run/token"})

    arn = region_ecs().ensure_task_definition(deployment)

    described = _latest(deployment_task_family(PREFIX, deployment.deployment_id))
    definition = described["taskDefinition"]
    assert definition["taskDefinitionArn"] == arn
    assert definition["family"] == f"spothub-model-{deployment.deployment_id}"
    assert definition["networkMode"] == "bridge"
    assert (definition["executionRoleArn"], definition["taskRoleArn"]) == (EXECUTION_ROLE, TASK_ROLE)
    (container,) = definition["containerDefinitions"]
    assert container["name"] == DEPLOYMENT_CONTAINER_NAME and container["image"] == deployment.image
    model = deployment.model
    assert container["command"] == [
        "--model", model, "--served-model-name", model, "--port", "8000", "--tensor-parallel-size", "1",
        "--max-model-len", "8192",
    ]  # fmt: skip
    assert container["portMappings"] == [{"containerPort": 8000, "hostPort": 0, "protocol": "tcp"}]
    assert container["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert container["healthCheck"]["command"] == ["CMD-SHELL", "curl -fsS http://localhost:8000/health || exit 1"]
    assert container["healthCheck"]["startPeriod"] == 300  # ECS's most
    assert container["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": deployment_log_group(PREFIX),
            "awslogs-region": NODE_REGION,
            "awslogs-stream-prefix": deployment.deployment_id,
        },
    }
    environment = {e["name"]: e["value"] for e in container["environment"]}
    assert environment == {"HF_TOKEN_FILE": "/run/token", "SPOTHUB_DEPLOYMENT_ID": deployment.deployment_id}
    assert "linuxParameters" not in container  # one GPU: no tensor-parallel workers
    tags = {t["key"]: t["value"] for t in described["tags"]}
    assert tags["spothub:prefix"] == PREFIX and tags["spothub:deployment-id"] == deployment.deployment_id


def test_a_multi_gpu_server_has_shared_memory(region: None) -> None:
    deployment = make_deployment(gpus=4)
    region_ecs().ensure_task_definition(deployment)
    (container,) = _latest(deployment_task_family(PREFIX, deployment.deployment_id))["taskDefinition"][
        "containerDefinitions"
    ]
    assert container["linuxParameters"]["sharedMemorySize"] == 16 * 1024
    assert "--tensor-parallel-size" in container["command"] and container["command"][-1] == "4"


@pytest.mark.parametrize(
    ("node_class", "gpus"), [(c, g) for c, spec in NODE_CLASSES.items() for g in range(1, spec["gpus"] + 1)]
)
def test_the_tasks_that_fill_a_nodes_gpus_fit_its_memory(region: None, node_class: str, gpus: int) -> None:
    """The reservation fits what the smallest type of the class registers, as many times as tasks fit its GPUs."""
    deployment = make_deployment(gpus=gpus, node_class=node_class)
    region_ecs().ensure_task_definition(deployment)
    definition = _latest(deployment_task_family(PREFIX, deployment.deployment_id))["taskDefinition"]
    need = task_requirements(definition["containerDefinitions"])
    per_node = NODE_CLASSES[node_class]["gpus"] // gpus
    for instance_type in NODE_CLASSES[node_class]["instance_types"]:
        registered = registered_resources(instance_type, GPU_CONFIG)
        assert need.memory_mib * per_node <= registered.memory_mib, instance_type
        assert need.gpus * per_node <= registered.gpus
        assert need.ports == frozenset()  # dynamic host ports: no two tasks on a node collide


def test_the_reservation_is_a_share_of_what_the_agent_registers() -> None:
    assert memory_reservation_mib(16384, node_gpus=1, task_gpus=1) == 13409  # (16384 * 0.925 - 256) * 0.9
    assert memory_reservation_mib(196608, node_gpus=4, task_gpus=2) == 81722


def test_the_same_deployment_registers_once_and_a_change_registers_a_revision(region: None) -> None:
    ecs = region_ecs()
    calls = ApiCalls(ecs.ecs, "RegisterTaskDefinition")
    deployment = make_deployment()

    first = ecs.ensure_task_definition(deployment)
    again = region_ecs().ensure_task_definition(deployment)  # another run: a fresh client, the same content
    changed = ecs.ensure_task_definition(deployment.model_copy(update={"env": {"VLLM_LOGGING_LEVEL": "DEBUG"}}))

    assert first == again and first.endswith(":1")
    assert changed.endswith(":2")
    assert len(calls.of("RegisterTaskDefinition")) == 2
    tags = {t["key"]: t["value"] for t in _latest(deployment_task_family(PREFIX, deployment.deployment_id))["tags"]}
    assert len(tags[DEFINITION_DIGEST_TAG]) == 64


def test_a_type_the_region_does_not_offer_is_left_out_of_the_memory(region: None) -> None:
    ecs = region_ecs()
    calls = ApiCalls(ecs.ec2, "DescribeInstanceTypes")
    calls.answer("DescribeInstanceTypes", error=("InvalidInstanceType", "g6.xlarge is not offered"))
    with pytest.raises(DependencyUnavailable, match="no instance type of node class 1gpu"):
        ecs.ensure_task_definition(make_deployment())


# --- tasks -----------------------------------------------------------------------------------------------------


def test_a_task_starts_on_the_named_container_instance_with_its_tags(region: None, ecs_as_aws: None) -> None:
    node = register_node(run_instance("g5.xlarge", group=node_group_name(PREFIX, "1gpu")))
    ecs = region_ecs()
    calls = ApiCalls(ecs.ecs, "StartTask")
    deployment = make_deployment()
    definition = ecs.ensure_task_definition(deployment)

    task_arn = ecs.start_task(definition, node, deployment_id=deployment.deployment_id, task_id="t-1")

    (call,) = calls.of("StartTask")
    assert call["containerInstances"] == [node] and call["startedBy"] == DEPLOYMENT_STARTED_BY
    assert call["enableECSManagedTags"] is True
    assert {t["key"]: t["value"] for t in call["tags"]} == {
        "spothub:prefix": PREFIX,
        "spothub:deployment-id": deployment.deployment_id,
        "spothub:task-id": "t-1",
    }
    (task,) = boto3.client("ecs", region_name=NODE_REGION).describe_tasks(cluster=CLUSTER, tasks=[task_arn])["tasks"]
    assert task["containerInstanceArn"] == node and task["taskDefinitionArn"] == definition


def test_a_full_node_refuses_the_task(region: None, ecs_as_aws: None) -> None:
    """Its GPU taken, and its memory by the first task's reservation (ECS names the first resource short)."""
    node = register_node(run_instance("g5.xlarge", group=node_group_name(PREFIX, "1gpu")))
    ecs = region_ecs()
    deployment = make_deployment()
    definition = ecs.ensure_task_definition(deployment)
    ecs.start_task(definition, node, deployment_id=deployment.deployment_id, task_id="t-1")

    with pytest.raises(PlacementRefused, match=r"^RESOURCE:(GPU|MEMORY)$"):
        ecs.start_task(definition, node, deployment_id=deployment.deployment_id, task_id="t-2")


def test_describe_tasks_reads_health_port_gpus_and_the_stop(region: None) -> None:
    ecs = region_ecs()
    calls = ApiCalls(ecs.ecs, "DescribeTasks")
    running, stopped = "arn:aws:ecs:us-west-2:1:task/spothub-gpu/a", "arn:aws:ecs:us-west-2:1:task/spothub-gpu/b"
    started = datetime(2023, 11, 14, 22, 0, tzinfo=UTC)
    calls.answer(
        "DescribeTasks",
        {
            "tasks": [
                {
                    "taskArn": running,
                    "lastStatus": "RUNNING",
                    "desiredStatus": "RUNNING",
                    "healthStatus": "HEALTHY",
                    "startedAt": started,
                    "containers": [
                        {
                            "name": DEPLOYMENT_CONTAINER_NAME,
                            "lastStatus": "RUNNING",
                            "healthStatus": "HEALTHY",
                            "networkBindings": [{"bindIP": "0.0.0.0", "containerPort": 8000, "hostPort": 32768}],  # noqa: S104
                            "gpuIds": ["GPU-aaaa"],
                        }
                    ],
                },
                {
                    "taskArn": stopped,
                    "lastStatus": "STOPPED",
                    "desiredStatus": "STOPPED",
                    "stopCode": "EssentialContainerExited",
                    "stoppedReason": "Essential container in task exited",
                    "stoppedAt": started,
                    "containers": [{"name": DEPLOYMENT_CONTAINER_NAME, "lastStatus": "STOPPED", "exitCode": 137}],
                },
            ],
            "failures": [{"arn": "arn:aws:ecs:us-west-2:1:task/spothub-gpu/c", "reason": "MISSING"}],
        },
    )

    states = ecs.describe_tasks([running, stopped, "arn:aws:ecs:us-west-2:1:task/spothub-gpu/c"])

    assert set(states) == {running, stopped}  # one ECS no longer knows is absent
    up = states[running]
    assert (up.health_status, up.host_port, up.gpu_ids, up.exit_code) == ("HEALTHY", 32768, ["GPU-aaaa"], None)
    assert up.started_at == started.timestamp() and not up.stopped
    down = states[stopped]
    assert down.stopped and (down.exit_code, down.stop_code) == (137, "EssentialContainerExited")
    assert down.stopped_reason == "Essential container in task exited"


def test_describe_tasks_asks_a_hundred_at_a_time(region: None) -> None:
    ecs = region_ecs()
    calls = ApiCalls(ecs.ecs, "DescribeTasks")
    calls.answer("DescribeTasks", {"tasks": [], "failures": []})
    ecs.describe_tasks([f"arn:aws:ecs:us-west-2:1:task/spothub-gpu/{i}" for i in range(250)])
    assert [len(c["tasks"]) for c in calls.of("DescribeTasks")] == [100, 100, 50]


def test_stopping_is_idempotent(region: None, ecs_as_aws: None) -> None:
    node = register_node(run_instance("g5.xlarge", group=node_group_name(PREFIX, "1gpu")))
    ecs = region_ecs()
    deployment = make_deployment()
    task_arn = ecs.start_task(ecs.ensure_task_definition(deployment), node, deployment_id="d", task_id="t")

    ecs.stop_task(task_arn, "spothub: scale-down")
    ecs.stop_task(task_arn, "spothub: scale-down")  # a second run, a redelivered event

    state = ecs.describe_tasks([task_arn])[task_arn]
    assert state.stopped and state.stopped_reason == "spothub: scale-down"
    # The GPU went back once: the node takes the next task.
    ecs.start_task(ecs.ensure_task_definition(deployment), node, deployment_id="d", task_id="t2")


def test_stopping_a_task_ecs_forgot_is_done_and_other_errors_are_not(region: None) -> None:
    ecs = region_ecs()
    calls = ApiCalls(ecs.ecs, "StopTask")
    calls.answer("StopTask", error=("InvalidParameterException", "The referenced task was not found."))
    ecs.stop_task("arn:aws:ecs:us-west-2:1:task/spothub-gpu/old", "spothub: deleted")
    calls.answer("StopTask", error=("AccessDeniedException", "not authorized to perform ecs:StopTask"))
    with pytest.raises(DependencyUnavailable, match="AccessDenied"):
        ecs.stop_task("arn:aws:ecs:us-west-2:1:task/spothub-gpu/old", "spothub: deleted")

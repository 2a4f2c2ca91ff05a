"""`spothub.sandbox.ecs_placement`: ECS placement against what a container instance registers.

As in test_emulator_patches: the gaps are checked in the pinned moto's own functions (kept by the patch),
then the behaviour with the patch, through the ECS API of an in-process moto app in an account of its
own. The last test runs in the session sandbox: an instance the fleet launched refuses a task too big.
"""

from __future__ import annotations

import base64
import inspect
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from spothub.sandbox import ecs_placement, emulator_patches
from spothub.sandbox.ecs_placement import Resources, ecs_config, registered_resources, task_requirements
from spothub.sandbox.iam import hooks as iam_hooks
from spothub.sandbox.sandbox import Sandbox

ACCOUNT = "210987654321"  # never the sandbox's account
REGION = "eu-west-1"
GPU_CONFIG = {"ECS_CLUSTER": "gpu", "ECS_ENABLE_GPU_SUPPORT": "true", "ECS_RESERVED_MEMORY": "256"}
GPU = [{"type": "GPU", "value": "1"}]


@pytest.fixture(scope="module", autouse=True)
def _patches_applied() -> None:
    emulator_patches.apply()


@pytest.fixture(autouse=True)
def _no_iam_without_the_sandbox(request: pytest.FixtureRequest) -> Iterator[None]:
    """The tests of placement mechanics call moto's ECS app in another account with a made-up key, which the
    sandbox's IAM would refuse as unknown; IAM is tested in test_iam_enforcement.py."""
    if "sandbox" in request.fixturenames:
        yield
        return
    lent = iam_hooks.current()
    iam_hooks.attach(None)
    yield
    iam_hooks.attach(lent)


def _container_instance(cluster: str, instance_type: str = "g5.xlarge") -> Any:
    """A container instance of a fresh EC2 instance, as moto registers it (before the fleet's resources)."""
    from moto.ec2.models import ec2_backends  # noqa: PLC0415
    from moto.ecs.models import ecs_backends  # noqa: PLC0415

    reservation = ec2_backends[ACCOUNT][REGION].run_instances(
        "ami-12c6146b", 1, None, [], instance_type=instance_type, is_instance_type_default=False
    )
    backend = ecs_backends[ACCOUNT][REGION]
    backend.create_cluster(cluster)
    return backend.register_container_instance(cluster, reservation.instances[0].id)


def _task_definition(family: str, container: dict[str, Any], **task_level: str) -> Any:
    from moto.ecs.models import ecs_backends  # noqa: PLC0415

    return ecs_backends[ACCOUNT][REGION].register_task_definition(
        family, [{"name": "server", "image": "x", **container}], **task_level
    )


Api = Callable[[str, dict[str, Any]], dict[str, Any]]


@pytest.fixture(scope="module")
def ecs_api() -> Api:
    """ECS's JSON API served by moto in-process (no mock of botocore: the session sandbox may be running)."""
    from moto.server import create_backend_app  # noqa: PLC0415

    client = create_backend_app("ecs").test_client()

    def call(action: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {
            "X-Amz-Target": f"AmazonEC2ContainerServiceV20141113.{action}",
            "Content-Type": "application/x-amz-json-1.1",
            "x-moto-account-id": ACCOUNT,
            "Authorization": f"AWS4-HMAC-SHA256 Credential=AKIA/20250101/{REGION}/ecs/aws4_request, Signature=x",
        }
        answer = client.post("/", data=json.dumps(body), headers=headers)
        assert answer.status_code == 200, answer.data
        return json.loads(answer.data)

    return call


# --- the gaps, in the pinned moto -------------------------------------------------------------------------


def test_moto_registers_every_container_instance_with_the_same_resources_and_no_gpu() -> None:
    for instance_type in ("g5.xlarge", "p4d.24xlarge"):
        container_instance = _container_instance(f"gap-{instance_type}", instance_type)
        registered = {r["name"]: r.get("integerValue") for r in container_instance.registered_resources}
        assert registered == {"CPU": 4096, "MEMORY": 7482, "PORTS": 0, "PORTS_UDP": 0}


def test_moto_reserves_the_hard_memory_limit_and_no_gpu_and_ignores_task_level_sizes() -> None:
    definition = _task_definition(
        "gap-requirements", {"memory": 4096, "memoryReservation": 1024, "resourceRequirements": GPU}, cpu="2048"
    )
    requirements = ecs_placement._original_requirements(definition)
    assert (requirements["CPU"], requirements["MEMORY"]) == (0, 4096)
    assert "GPU" not in requirements


def test_moto_places_a_gpu_task_on_an_instance_without_gpus() -> None:
    container_instance = _container_instance("gap-gpu")
    needs_a_gpu = {"CPU": 0, "MEMORY": 16, "PORTS": [], "PORTS_UDP": [], "GPU": 1}
    assert ecs_placement._original_can_be_placed(container_instance, needs_a_gpu)


def test_moto_start_task_places_without_looking_and_answers_no_failure() -> None:
    from moto.ecs.models import EC2ContainerServiceBackend  # noqa: PLC0415

    assert '"failures": []' in inspect.getsource(ecs_placement._original_start_task_response)
    assert "_can_be_placed" not in inspect.getsource(EC2ContainerServiceBackend.start_task)
    original = inspect.signature(ecs_placement._original_start_task_response)
    assert list(original.parameters) == ["self"]
    start = inspect.signature(EC2ContainerServiceBackend.start_task)
    assert list(start.parameters) == [
        "self",
        "cluster_str",
        "task_definition_str",
        "container_instances",
        "overrides",
        "started_by",
        "tags",
        "group",
    ]


def test_moto_gives_a_stopped_task_its_resources_back_on_every_stop() -> None:
    from moto.ecs.models import ecs_backends  # noqa: PLC0415

    backend = ecs_backends[ACCOUNT][REGION]
    container_instance = _container_instance("gap-stop")
    _task_definition("gap-stop", {"memoryReservation": 1024})
    (task,) = backend.start_task("gap-stop", "gap-stop", [container_instance.container_instance_arn], {}, "test")
    for _ in range(2):
        ecs_placement._original_stop_task(backend, "gap-stop", task.task_arn, "test")
    memory = next(r for r in container_instance.remaining_resources if r["name"] == "MEMORY")
    assert memory["integerValue"] == 7482 + 1024


def test_apply_is_idempotent() -> None:
    from moto.ecs.models import EC2ContainerServiceBackend  # noqa: PLC0415

    ecs_placement.apply()
    ecs_placement.apply()
    assert EC2ContainerServiceBackend.stop_task is ecs_placement._stop_task
    assert ecs_placement._original_stop_task.__module__ == "moto.ecs.models"
    assert ecs_placement._original_update_resources.__module__ == "moto.ecs.models"
    assert ecs_placement._original_start_task_response.__module__ == "moto.ecs.responses"


# --- what the ECS agent registers, what a task needs ---------------------------------------------------


def test_registered_resources_come_from_the_instance_type_data_less_the_kernel_and_the_reservation() -> None:
    from moto.ec2.models.instance_types import INSTANCE_TYPES  # noqa: PLC0415

    g5 = registered_resources("g5.xlarge", GPU_CONFIG)
    installed = INSTANCE_TYPES["g5.xlarge"]["MemoryInfo"]["SizeInMiB"]
    assert g5 == Resources(cpu=4 * 1024, memory_mib=math.floor(installed * 0.925) - 256, gpus=1)
    assert g5.memory_mib < 16 * 1024
    assert registered_resources("p4d.24xlarge", GPU_CONFIG).gpus == 8
    # Without GPU support in ecs.config the agent registers no GPU, and nothing is reserved.
    assert registered_resources("g5.xlarge", {}) == Resources(4096, math.floor(installed * 0.925), 0)
    with pytest.raises(KeyError):
        registered_resources("g99.xlarge")


def test_ecs_config_is_read_from_plain_or_base64_user_data() -> None:
    user_data = "#!/bin/bash\ncat >>/etc/ecs/ecs.config <<'ECS'\nECS_CLUSTER=gpu\nECS_RESERVED_MEMORY=256\nECS\n"
    assert ecs_config(user_data) == {"ECS_CLUSTER": "gpu", "ECS_RESERVED_MEMORY": "256"}
    assert ecs_config(base64.b64encode(user_data.encode()).decode()) == ecs_config(user_data)
    assert ecs_config(None) == {}


def test_a_task_needs_its_task_level_size_or_the_sum_of_its_reservations() -> None:
    containers = [
        {"name": "a", "cpu": 1024, "memory": 4096, "memoryReservation": 1024, "resourceRequirements": GPU},
        {"Name": "b", "Cpu": 512, "Memory": 512, "ResourceRequirements": [{"Type": "GPU", "Value": "2"}]},
        {"name": "c", "portMappings": [{"containerPort": 80, "hostPort": 8080}]},
    ]
    assert task_requirements(containers) == Resources(1536, 1536, 3, frozenset({"8080"}))
    assert task_requirements(containers, cpu="2048", memory="8192") == Resources(2048, 8192, 3, frozenset({"8080"}))


# --- StartTask with the patch ---------------------------------------------------------------------------


def _fleet_instance(cluster: str, config: dict[str, str]) -> Any:
    container_instance = _container_instance(cluster)
    ecs_placement.register_resources(container_instance, registered_resources("g5.xlarge", config))
    return container_instance


def _start(api: Api, cluster: str, family: str, container_instance: Any) -> dict[str, Any]:
    body = {
        "cluster": cluster,
        "taskDefinition": family,
        "containerInstances": [container_instance.container_instance_arn],
    }
    return api("StartTask", body)


def test_a_task_too_big_for_the_registered_memory_is_not_placed(ecs_api: Api) -> None:
    container_instance = _fleet_instance("too-big", GPU_CONFIG)
    registered = registered_resources("g5.xlarge", GPU_CONFIG)
    _task_definition("too-big", {"memoryReservation": registered.memory_mib + 1, "resourceRequirements": GPU})
    answer = _start(ecs_api, "too-big", "too-big", container_instance)
    assert answer["tasks"] == []
    assert answer["failures"] == [{"arn": container_instance.container_instance_arn, "reason": "RESOURCE:MEMORY"}]
    assert ecs_api("ListTasks", {"cluster": "too-big"})["taskArns"] == []

    _task_definition("too-big-cpu", {"cpu": registered.cpu + 1, "memoryReservation": 16})
    assert _start(ecs_api, "too-big", "too-big-cpu", container_instance)["failures"][0]["reason"] == "RESOURCE:CPU"


def test_gpus_are_registered_taken_by_a_task_and_given_back_once_when_it_stops(ecs_api: Api) -> None:
    container_instance = _fleet_instance("gpus", GPU_CONFIG)
    _task_definition("one-gpu", {"cpu": 1024, "memoryReservation": 1024, "resourceRequirements": GPU})
    arn = container_instance.container_instance_arn
    described = ecs_api("DescribeContainerInstances", {"cluster": "gpus", "containerInstances": [arn]})
    described = described["containerInstances"][0]
    (gpu,) = [r for r in described["registeredResources"] if r["name"] == "GPU"]
    assert gpu["type"] == "STRINGSET"
    assert [g.startswith("GPU-") for g in gpu["stringSetValue"]] == [True]

    first = _start(ecs_api, "gpus", "one-gpu", container_instance)
    assert (len(first["tasks"]), first["failures"]) == (1, [])
    second = _start(ecs_api, "gpus", "one-gpu", container_instance)
    assert second["tasks"] == []
    assert second["failures"] == [{"arn": arn, "reason": "RESOURCE:GPU"}]

    task_arn = first["tasks"][0]["taskArn"]
    for _ in range(2):  # a second StopTask of a stopped task frees nothing more
        ecs_api("StopTask", {"cluster": "gpus", "task": task_arn, "reason": "test"})
    left = ecs_placement.remaining(container_instance)
    assert replace(left, ports=frozenset()) == registered_resources("g5.xlarge", GPU_CONFIG)
    assert len(_start(ecs_api, "gpus", "one-gpu", container_instance)["tasks"]) == 1


def test_without_gpu_support_in_ecs_config_a_gpu_task_is_refused(ecs_api: Api) -> None:
    container_instance = _fleet_instance("no-gpu-support", {"ECS_CLUSTER": "no-gpu-support"})
    _task_definition("needs-gpu", {"memoryReservation": 1024, "resourceRequirements": GPU})
    answer = _start(ecs_api, "no-gpu-support", "needs-gpu", container_instance)
    assert [f["reason"] for f in answer["failures"]] == ["RESOURCE:GPU"]


def test_a_container_instance_that_is_not_there_is_missing(ecs_api: Api) -> None:
    _fleet_instance("missing", GPU_CONFIG)
    _task_definition("small", {"memoryReservation": 16})
    missing = f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/missing/00000000-0000-0000-0000-000000000000"
    answer = ecs_api("StartTask", {"cluster": "missing", "taskDefinition": "small", "containerInstances": [missing]})
    assert answer == {"tasks": [], "failures": [{"arn": missing, "reason": "MISSING"}]}


def test_run_task_does_not_place_a_gpu_task_on_an_instance_without_gpus(ecs_api: Api) -> None:
    _fleet_instance("run-task", {"ECS_CLUSTER": "run-task"})
    _task_definition("run-needs-gpu", {"memoryReservation": 1024, "resourceRequirements": GPU})
    answer = ecs_api("RunTask", {"cluster": "run-task", "taskDefinition": "run-needs-gpu", "launchType": "EC2"})
    assert answer["tasks"] == []


# --- in the sandbox: an instance the fleet launched -----------------------------------------------------------


def test_the_fleet_registers_real_resources_and_a_task_too_big_is_refused(fresh_sandbox: Sandbox) -> None:
    region = fresh_sandbox.workers[0].region
    fleet = fresh_sandbox.fleet
    assert fleet is not None
    fresh_sandbox.client("autoscaling", region).set_desired_capacity(
        AutoScalingGroupName="spothub-gpu", DesiredCapacity=1
    )
    (instance,) = fresh_sandbox.wait_for(
        lambda: [i for i in fleet.running(region) if i.ecs_cluster], timeout_s=30, interval_s=0.2
    )
    ec2 = fresh_sandbox.client("ec2", region)
    (version,) = ec2.describe_launch_template_versions(LaunchTemplateName="spothub-gpu")["LaunchTemplateVersions"]
    config = ecs_config(version["LaunchTemplateData"]["UserData"])
    registered = registered_resources(instance.instance_type, config)
    assert config.get("ECS_ENABLE_GPU_SUPPORT") == "true"

    ecs = fresh_sandbox.client("ecs", region)
    cluster = instance.ecs_cluster
    (arn,) = ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
    (described,) = ecs.describe_container_instances(cluster=cluster, containerInstances=[arn])["containerInstances"]
    by_name = {r["name"]: r for r in described["registeredResources"]}
    assert by_name["CPU"]["integerValue"] == registered.cpu
    assert by_name["MEMORY"]["integerValue"] == registered.memory_mib
    assert len(by_name["GPU"]["stringSetValue"]) == registered.gpus == 1

    ecs.register_task_definition(
        family="spothub-too-big",
        networkMode="host",
        containerDefinitions=[
            {"name": "server", "image": "x", "memoryReservation": 16 * 1024, "resourceRequirements": GPU}
        ],
    )
    refused = ecs.start_task(cluster=cluster, taskDefinition="spothub-too-big", containerInstances=[arn])
    assert refused["tasks"] == []
    assert refused["failures"] == [{"arn": arn, "reason": "RESOURCE:MEMORY"}]

    # The deployed serving task fits the instance the group launched.
    served = ecs.start_task(cluster=cluster, taskDefinition="spothub-serving", containerInstances=[arn])
    assert (len(served["tasks"]), served["failures"]) == (1, [])

"""The sandbox's runtime of model deployments' tasks (spothub/sandbox/deployment_tasks.py), driving ECS directly: a
node launched by a node group (the deployment's `<prefix>-nodes-<class>` when the worker stack has one, else a group
made here of the same shape), its agent in node mode over the stand-in NVML, a task definition of the deployments'
shape, StartTask on the node as the controller calls it. What DescribeTasks answers (health, network bindings, GPU
ids, start and stop), the stand-in server at the task's endpoint, StopTask, a kill, a crash, a health check that
fails, the node's termination, the ECS Task State Change events on the region's default bus, and the utilization a
test sets as the node's agent reports it in its heartbeat.

The first tests need no sandbox: the stand-in NVML under the agent's own gpu.py, the stand-in server's utilization
and failure knobs, and exact GPU ids per task in ECS placement (an in-process moto app in an account of its own).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from spothub.sandbox import emulator_patches, gpu_files
from spothub.sandbox.ports import free_port
from spothub.sandbox.sandbox import Sandbox, SandboxError
from spothub_core.contracts import (
    DEPLOYMENT_CONTAINER_NAME,
    DEPLOYMENT_STARTED_BY,
    MODEL_NODE_SERVICE,
    InstanceTag,
    SearchTag,
    deployment_task_family,
    gpu_cluster_name,
    node_group_name,
)
from spothub_core.dal.instance_health import InstanceHealthStore
from stacks.paths import LAMBDAS_DIR, WORKER_AGENT_DIR

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
DEPLOYMENT_ID = "dep-sandbox-runtime"
NODE_TYPE = "g5.12xlarge"  # 4 GPUs
HAND_MADE_CLASS = "runtime-test"
TASK_STATE_CHANGE = "ECS Task State Change"
TEST_STARTED_BY = "sandbox-runtime-test"  # any task on a node runs, whoever started it
MODEL_SERVER = Path(__file__).parents[2] / "spothub" / "sandbox" / "model_server.py"
GPU_IDS_ACCOUNT = "210987654322"  # never the sandbox's account
GPU_IDS_REGION = "eu-west-1"


def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout_s}s: {getattr(predicate, '__name__', predicate)}")
        time.sleep(interval_s)


# --- the stand-in NVML, under the agent's own gpu.py (no sandbox) ----------------------------------------------


def test_the_stand_in_nvml_reports_the_node_gpus_with_the_ecs_ids_and_the_utilization_set(tmp_path: Path) -> None:
    uuids = gpu_files.write_inventory(tmp_path, "i-0123456789abcdef0", NODE_TYPE)
    assert len(uuids) == 4 and all(u.startswith("GPU-") for u in uuids)
    from spothub.sandbox.ecs_placement import gpu_ids  # noqa: PLC0415

    assert uuids == gpu_ids("i-0123456789abcdef0", 4)  # what the ECS agent registers for the instance
    gpu_files.set_figures(tmp_path, uuids[2], utilization_pct=85, memory_used_mib=20000)
    environment = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        gpu_files.GPU_DIR_VARIABLE: str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(gpu_files.STAND_IN_NVML), str(WORKER_AGENT_DIR), str(LAMBDAS_DIR)]),
    }
    script = "import json; from spothub_agent.gpu import GpuMonitor; m = GpuMonitor(); print(json.dumps(m.sample()))"
    sample = json.loads(subprocess.check_output([sys.executable, "-c", script], env=environment, timeout=30))
    assert sample["available"] is True and sample["count"] == 4
    assert [g["uuid"] for g in sample["gpus"]] == uuids
    assert [g["utilization_pct"] for g in sample["gpus"]] == [0, 0, 85, 0]
    assert sample["gpus"][2]["memory_used_mib"] == 20000
    assert sample["gpus"][0]["memory_total_mib"] == 22888 and sample["gpus"][0]["name"] == "NVIDIA A10G"
    assert sample["xid_supported"] is True and sample["xid_errors_new"] == 0

    # Without the node's directory NVML does not initialize: the agent reports why, as on a machine without a driver.
    del environment[gpu_files.GPU_DIR_VARIABLE]
    sample = json.loads(subprocess.check_output([sys.executable, "-c", script], env=environment, timeout=30))
    assert sample["available"] is False
    assert sample["reason"].startswith("NVML did not initialize")


# --- the stand-in inference server (no sandbox) ---------------------------------------------------------------


def _serve(tmp_path: Path, *arguments: str, environment: dict[str, str] | None = None) -> tuple[Any, int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(MODEL_SERVER), "--port", str(port), "--load-seconds", "0", *arguments],
        env={**os.environ, **(environment or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    return process, port


def _get(url: str) -> tuple[int, Any]:
    """(status, the JSON answer or None); (0, None) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (local)
            body = answer.read()
            status = answer.status
    except urllib.error.HTTPError as error:
        return error.code, None
    except OSError:
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def test_the_stand_in_server_sets_the_utilization_of_its_gpu_files(tmp_path: Path) -> None:
    files = [str(tmp_path / "GPU-a.json"), str(tmp_path / "GPU-b.json")]
    process, port = _serve(tmp_path, "--gpu-file", files[0], "--gpu-file", files[1], "--model", MODEL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(f"{base}/health")[0] == 200, timeout_s=10)
        answer = requests.post(f"{base}/_sandbox/utilization", json={"utilization_pct": 62.5}, timeout=5)
        assert answer.status_code == 200
        assert [g["utilization_pct"] for g in answer.json()["gpus"]] == [62.5, 62.5]
        assert json.loads(Path(files[1]).read_text()) == {"utilization_pct": 62.5}
        assert _get(f"{base}/_sandbox/utilization")[1]["gpus"][0] == {"file": files[0], "utilization_pct": 62.5}
        for wrong in ({}, {"utilization_pct": 101}, {"utilization_pct": "high"}, {"utilization_pct": True}):
            refused = requests.post(f"{base}/_sandbox/utilization", json=wrong, timeout=5)
            assert refused.status_code == 400, wrong
            assert "utilization_pct" in refused.json()["error"]["message"]
        completion = requests.post(f"{base}/v1/completions", json={"model": MODEL, "prompt": "hi"}, timeout=5)
        assert completion.json()["model"] == MODEL
    finally:
        process.terminate()
        assert process.wait(10) == 0  # exits 0 on SIGTERM


def test_a_deployment_environment_can_make_the_stand_in_crash_or_never_load(tmp_path: Path) -> None:
    crashing, _ = _serve(
        tmp_path, environment={"SPOTHUB_SANDBOX_EXIT_AFTER_SECONDS": "0.3", "SPOTHUB_SANDBOX_EXIT_CODE": "3"}
    )
    assert crashing.wait(10) == 3
    loading, port = _serve(tmp_path, environment={"SPOTHUB_SANDBOX_LOAD_SECONDS": "3600"})
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/health")[0] != 0, timeout_s=10)
        assert _get(f"http://127.0.0.1:{port}/health")[0] == 503
        assert _get(f"http://127.0.0.1:{port}/v1/models")[0] == 503
    finally:
        loading.terminate()
        loading.wait(10)


# --- GPU ids per task in ECS placement (moto in-process, another account) -------------------------------------


def test_each_task_holds_its_own_gpu_ids_and_a_stop_gives_back_exactly_those() -> None:
    """moto accounts no GPU; ECS gives each task GPU ids of its instance (its container's gpuIds), and a stopped
    task's own come back: before the fix a stop gave back the first ids taken, whoever held them."""
    from moto.ec2.models import ec2_backends  # noqa: PLC0415
    from moto.ecs.models import ecs_backends  # noqa: PLC0415

    from spothub.sandbox import ecs_placement  # noqa: PLC0415

    emulator_patches.apply()
    account, region = GPU_IDS_ACCOUNT, GPU_IDS_REGION
    reservation = ec2_backends[account][region].run_instances(
        "ami-12c6146b", 1, None, [], instance_type=NODE_TYPE, is_instance_type_default=False
    )
    backend = ecs_backends[account][region]
    backend.create_cluster("gpu-ids")
    container_instance = backend.register_container_instance("gpu-ids", reservation.instances[0].id)
    config = {"ECS_CLUSTER": "gpu-ids", "ECS_ENABLE_GPU_SUPPORT": "true"}
    ecs_placement.register_resources(container_instance, ecs_placement.registered_resources(NODE_TYPE, config))
    registered = ecs_placement.gpu_ids(container_instance.ec2_instance_id, 4)
    backend.register_task_definition(
        "two-gpus",
        [
            {
                "name": "model",
                "image": "x",
                "memoryReservation": 1024,
                "resourceRequirements": [{"type": "GPU", "value": "2"}],
            }
        ],
    )
    arn = container_instance.container_instance_arn

    def start() -> Any:
        (task,) = backend.start_task("gpu-ids", "two-gpus", [arn], {}, "test")
        return task

    first, second = start(), start()
    assert first.containers[0].gpu_ids == registered[:2]
    assert second.containers[0].gpu_ids == registered[2:]
    backend.stop_task("gpu-ids", first.task_arn, "test")
    backend.stop_task("gpu-ids", first.task_arn, "again")  # once
    third = start()
    assert third.containers[0].gpu_ids == registered[:2]  # the first's, not the second's still held
    assert ecs_placement.remaining(container_instance).gpus == 0
    backend.stop_task("gpu-ids", second.task_arn, "test")
    backend.stop_task("gpu-ids", third.task_arn, "test")
    left = next(r for r in container_instance.remaining_resources if r["name"] == "GPU")
    assert left["stringSetValue"] == registered


# --- in the sandbox: a node, its agent, tasks on it -------------------------------------------------------------


@dataclass
class Node:
    sandbox: Sandbox
    region: str
    cluster: str
    instance_id: str
    private_ip: str
    container_instance_arn: str
    gpu_ids: list[str]
    task_definition: str
    group: str
    hand_made: bool

    @property
    def ecs(self) -> Any:
        return self.sandbox.client("ecs", self.region)

    def start(self, gpus: int = 2, *, started_by: str = TEST_STARTED_BY, **overrides: Any) -> str:
        """StartTask of the deployment's task definition (or `taskDefinition`) on the node, as the controller does
        (startedBy the test's own unless told: a deployment controller running in the sandbox would take a task
        startedBy spothub-deployments it does not know for a leftover, and stop it)."""
        definition = overrides.pop("taskDefinition", self.task_definition)
        if gpus != 2:  # the deployment's own size
            definition = register_definition(self.sandbox, self.region, f"{DEPLOYMENT_ID}-{gpus}", gpus=gpus)
        answer = self.ecs.start_task(
            cluster=self.cluster,
            taskDefinition=definition,
            containerInstances=[self.container_instance_arn],
            startedBy=started_by,
            **overrides,
        )
        assert answer["failures"] == [], answer["failures"]
        return str(answer["tasks"][0]["taskArn"])

    def describe(self, task_arn: str) -> dict[str, Any]:
        return dict(self.ecs.describe_tasks(cluster=self.cluster, tasks=[task_arn])["tasks"][0])

    def healthy(self, task_arn: str, timeout_s: float = 20.0) -> dict[str, Any]:
        return dict(wait_for(lambda: (t := self.describe(task_arn))["healthStatus"] == "HEALTHY" and t, timeout_s))

    def gpus_left(self) -> list[str]:
        described = self.ecs.describe_container_instances(
            cluster=self.cluster, containerInstances=[self.container_instance_arn]
        )["containerInstances"][0]
        return list(next(r for r in described["remainingResources"] if r["name"] == "GPU")["stringSetValue"])

    def stop_all(self) -> None:
        for task in self.sandbox.deployment_tasks(running=True):
            self.ecs.stop_task(cluster=self.cluster, task=task["task_arn"], reason="test cleanup")

    def events(self, task_arn: str) -> list[dict[str, Any]]:
        """The ECS Task State Change details of a task put on the region's default bus, oldest first."""
        return [
            e.details["event"]["detail"]
            for e in self.sandbox.events(bus_suffix="event-bus/default", detail_type=TASK_STATE_CHANGE)
            if e.details["event"]["detail"].get("taskArn") == task_arn
        ]

    def agent_record(self) -> Any:
        table = boto3.resource(
            "dynamodb",
            region_name=self.sandbox.hub.region,
            endpoint_url=self.sandbox.aws_endpoint_url,
            **self.sandbox.credentials(),
        ).Table(self.sandbox.hub.outputs["StateTableName"])
        return InstanceHealthStore(table).agents().get(self.instance_id)


def register_definition(sandbox: Sandbox, region: str, deployment_id: str, *, gpus: int = 2, **container: Any) -> str:
    """A task definition of the deployments' shape (the common picture of issue 16), as the controller registers it."""
    command = ["--model", MODEL, "--served-model-name", MODEL, "--port", "8000", "--tensor-parallel-size", str(gpus)]
    definition = {
        "name": DEPLOYMENT_CONTAINER_NAME,
        "image": "vllm/vllm-openai:v0.6.3",
        "essential": True,
        "command": command,
        "portMappings": [{"containerPort": 8000, "hostPort": 0, "protocol": "tcp"}],
        "resourceRequirements": [{"type": "GPU", "value": str(gpus)}],
        "memoryReservation": 4096,  # fits what the smallest node type registers
        "environment": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
        "healthCheck": {
            "command": ["CMD-SHELL", "curl -fsS http://localhost:8000/health || exit 1"],
            "interval": 30,
            "timeout": 5,
            "retries": 3,
            "startPeriod": 600,
        },
        **container,
    }
    answer = sandbox.client("ecs", region).register_task_definition(
        family=deployment_task_family(sandbox.prefix, deployment_id),
        networkMode="bridge",
        containerDefinitions=[definition],
        tags=[{"key": "spothub:deployment-id", "value": deployment_id}],
    )
    return str(answer["taskDefinition"]["taskDefinitionArn"])


def _node_group(sandbox: Sandbox, region: str) -> tuple[str, bool]:
    """The deployment's first node group in the region, or (the worker stack has none yet) one made here as the
    worker stack makes them: the GPU cluster in its user data, the node tags propagated, tags in IMDS."""
    autoscaling = sandbox.client("autoscaling", region)
    groups = autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]
    start = node_group_name(sandbox.prefix, "")
    deployed = [g for g in groups if g["AutoScalingGroupName"].startswith(start)]
    if deployed:  # the class with the most GPUs per node: the tests place several tasks on one node
        return max(deployed, key=_gpus_per_node)["AutoScalingGroupName"], False
    name = node_group_name(sandbox.prefix, HAND_MADE_CLASS)
    ec2 = sandbox.client("ec2", region)
    serving = next((g for g in groups if g["AutoScalingGroupName"] == gpu_cluster_name(sandbox.prefix)), None)
    subnets = (serving or {}).get("VPCZoneIdentifier") or ",".join(
        s["SubnetId"] for s in ec2.describe_subnets()["Subnets"][:2]
    )
    user_data = (
        "#!/bin/bash\ncat >> /etc/ecs/ecs.config <<'EOF'\n"
        f"ECS_CLUSTER={gpu_cluster_name(sandbox.prefix)}\nECS_ENABLE_GPU_SUPPORT=true\nEOF\n"
    )
    template = ec2.create_launch_template(
        LaunchTemplateName=name,
        LaunchTemplateData={
            "ImageId": "ami-12c6146b",
            "InstanceType": NODE_TYPE,
            "UserData": base64.b64encode(user_data.encode()).decode(),
            "MetadataOptions": {"HttpTokens": "required", "InstanceMetadataTags": "enabled"},
        },
    )["LaunchTemplate"]
    tags = {
        SearchTag.SERVICE.value: MODEL_NODE_SERVICE,
        InstanceTag.PREFIX.value: sandbox.prefix,
        InstanceTag.HUB_REGION.value: sandbox.hub.region,
    }
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateId": template["LaunchTemplateId"], "Version": "$Latest"},
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=0,
        VPCZoneIdentifier=subnets,
        Tags=[
            {"Key": k, "Value": v, "PropagateAtLaunch": True, "ResourceId": name, "ResourceType": "auto-scaling-group"}
            for k, v in tags.items()
        ],
    )
    return name, True


def _gpus_per_node(group: dict[str, Any]) -> int:
    overrides = group.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {}).get("Overrides", [])
    return min((len(gpu_files.instance_gpus(o["InstanceType"])) for o in overrides if o.get("InstanceType")), default=0)


@pytest.fixture(scope="module")
def node(sandbox: Sandbox) -> Iterator[Node]:
    """One node for the module's tests (launching one takes seconds): the group raised to 1, the node registered in
    the GPU cluster; its tasks stopped after each test that leaves some."""
    sandbox.reset()
    region = sandbox.workers[0].region
    group, hand_made = _node_group(sandbox, region)
    autoscaling = sandbox.client("autoscaling", region)
    autoscaling.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=1)
    try:
        instance = wait_for(lambda: next((i for i in sandbox.model_nodes() if i.ecs_cluster), None), timeout_s=60)
        ecs = sandbox.client("ecs", region)
        cluster = gpu_cluster_name(sandbox.prefix)
        arns = ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
        described = ecs.describe_container_instances(cluster=cluster, containerInstances=arns)["containerInstances"]
        own = next(c for c in described if c["ec2InstanceId"] == instance.instance_id)
        gpus = next(r for r in own["registeredResources"] if r["name"] == "GPU")["stringSetValue"]
        yield Node(
            sandbox=sandbox,
            region=region,
            cluster=cluster,
            instance_id=instance.instance_id,
            private_ip=str(instance.private_ip),
            container_instance_arn=own["containerInstanceArn"],
            gpu_ids=list(gpus),
            task_definition=register_definition(sandbox, region, DEPLOYMENT_ID),
            group=group,
            hand_made=hand_made,
        )
    finally:
        if hand_made:
            autoscaling.delete_auto_scaling_group(AutoScalingGroupName=group, ForceDelete=True)
            sandbox.client("ec2", region).delete_launch_template(LaunchTemplateName=group)
        sandbox.reset()


@pytest.fixture
def on_node(node: Node) -> Iterator[Node]:
    if node.instance_id not in {i.instance_id for i in node.sandbox.model_nodes()}:
        pytest.skip("the module's node was terminated by an earlier test")
    yield node
    node.stop_all()


def test_the_node_agent_registers_and_heartbeats_its_gpus_as_ecs_registered_them(on_node: Node) -> None:
    record = wait_for(lambda: (r := on_node.agent_record()) is not None and r.gpu and r, timeout_s=30)
    assert record.ready is True
    assert record.workload.get("state") == "none"
    assert record.group == on_node.group
    assert record.gpu["available"] is True
    assert [g["uuid"] for g in record.gpu["gpus"]] == on_node.gpu_ids
    instance = next(i for i in on_node.sandbox.model_nodes() if i.instance_id == on_node.instance_id)
    log = instance.log_path.read_text()
    assert '"event": "node_mode_started"' in log
    assert '"event": "lifecycle_' not in log  # a node group has no launch hook: no lifecycle loop


def test_a_deployment_task_runs_the_stand_in_server_becomes_healthy_and_stops_on_stop_task(on_node: Node) -> None:
    node = on_node
    task_arn = node.start(started_by=DEPLOYMENT_STARTED_BY)
    task = node.describe(task_arn)
    assert task["lastStatus"] == "RUNNING" and task["healthStatus"] == "UNKNOWN"  # the model is loading
    assert task["startedBy"] == DEPLOYMENT_STARTED_BY and "startedAt" in task
    (container,) = task["containers"]
    assert container["name"] == DEPLOYMENT_CONTAINER_NAME and container["healthStatus"] == "UNKNOWN"
    (binding,) = container["networkBindings"]
    assert binding["containerPort"] == 8000 and binding["protocol"] == "tcp"
    host_port = int(binding["hostPort"])
    assert len(container["gpuIds"]) == 2 and set(container["gpuIds"]) <= set(node.gpu_ids)
    assert sorted(node.gpus_left() + container["gpuIds"]) == sorted(node.gpu_ids)

    task = node.healthy(task_arn)
    assert task["containers"][0]["healthStatus"] == "HEALTHY"
    endpoint = f"http://{node.private_ip}:{host_port}"
    completion = node.sandbox.deployment_request(endpoint, "/v1/completions", {"model": MODEL, "prompt": "hello"})
    assert completion.status_code == 200 and completion.json()["model"] == MODEL
    assert completion.headers["x-spothub-instance"] == node.instance_id
    (listed,) = node.sandbox.deployment_tasks(DEPLOYMENT_ID, running=True)
    assert listed["endpoint"] == endpoint and listed["health"] == "HEALTHY"
    assert listed["gpu_ids"] == container["gpuIds"] and listed["model"] == MODEL
    started = wait_for(lambda: node.events(task_arn))
    assert started[0]["lastStatus"] == "RUNNING" and started[0]["startedBy"] == DEPLOYMENT_STARTED_BY
    assert started[0]["containerInstanceArn"] == node.container_instance_arn
    assert started[0]["containers"][0]["networkBindings"] == [binding]

    pid = listed["pid"]
    node.ecs.stop_task(cluster=node.cluster, task=task_arn, reason="Scaled down by spothub")
    stopped = node.describe(task_arn)
    assert (stopped["lastStatus"], stopped["desiredStatus"]) == ("STOPPED", "STOPPED")
    assert stopped["stopCode"] == "UserInitiated" and stopped["stoppedReason"] == "Scaled down by spothub"
    assert stopped["containers"][0]["exitCode"] == 0  # the server exits 0 on SIGTERM
    assert "stoppedAt" in stopped
    assert sorted(node.gpus_left()) == sorted(node.gpu_ids)  # its GPUs back
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    event = wait_for(lambda: [e for e in node.events(task_arn) if e["lastStatus"] == "STOPPED"])[0]
    assert event["stopCode"] == "UserInitiated" and event["desiredStatus"] == "STOPPED"
    assert event["containers"][0]["name"] == DEPLOYMENT_CONTAINER_NAME
    assert event["containers"][0]["exitCode"] == 0 and event["containers"][0]["lastStatus"] == "STOPPED"
    with pytest.raises(SandboxError, match="no running deployment task"):
        node.sandbox.reach(endpoint)
    node.ecs.stop_task(cluster=node.cluster, task=task_arn, reason="again")  # a second stop changes nothing
    assert len([e for e in node.events(task_arn) if e["lastStatus"] == "STOPPED"]) == 1
    assert sorted(node.gpus_left()) == sorted(node.gpu_ids)


def test_a_killed_task_is_stopped_as_an_essential_container_exit_with_an_event(on_node: Node) -> None:
    node = on_node
    task_arn = node.start(gpus=1)
    node.healthy(task_arn)
    killed = node.sandbox.kill_deployment_task(task_arn)
    assert killed["last_status"] == "STOPPED" and killed["exit_code"] == 137
    task = node.describe(task_arn)
    assert task["stopCode"] == "EssentialContainerExited"
    assert task["stoppedReason"] == "Essential container in task exited"
    assert task["containers"][0]["exitCode"] == 137
    assert sorted(node.gpus_left()) == sorted(node.gpu_ids)
    event = wait_for(lambda: [e for e in node.events(task_arn) if e["lastStatus"] == "STOPPED"])[0]
    assert event["stopCode"] == "EssentialContainerExited" and event["containers"][0]["exitCode"] == 137
    with pytest.raises(ValueError, match="not running"):
        node.sandbox.kill_deployment_task(task_arn)


def test_a_crashing_server_and_a_failing_health_check(on_node: Node) -> None:
    node = on_node
    crashing = register_definition(
        node.sandbox,
        node.region,
        f"{DEPLOYMENT_ID}-crash",
        gpus=1,
        environment=[{"name": "SPOTHUB_SANDBOX_EXIT_AFTER_SECONDS", "value": "0.5"}],
    )
    task_arn = node.start(taskDefinition=crashing)
    stopped = wait_for(lambda: (t := node.describe(task_arn))["lastStatus"] == "STOPPED" and t, timeout_s=15)
    assert stopped["stopCode"] == "EssentialContainerExited" and stopped["containers"][0]["exitCode"] == 1

    # A container ECS cannot create (secrets, and no execution role to fetch them): stopped before it ever ran.
    unstartable = register_definition(
        node.sandbox,
        node.region,
        f"{DEPLOYMENT_ID}-unstartable",
        gpus=1,
        secrets=[{"name": "HF_TOKEN", "valueFrom": "arn:aws:secretsmanager:us-west-2:123456789012:secret:hf-AbCdEf"}],
    )
    task_arn = node.start(taskDefinition=unstartable)
    stopped = wait_for(lambda: (t := node.describe(task_arn))["lastStatus"] == "STOPPED" and t, timeout_s=15)
    assert stopped["stopCode"] == "TaskFailedToStart" and "no task execution role" in stopped["stoppedReason"]
    assert "startedAt" not in stopped
    assert [e["lastStatus"] for e in node.events(task_arn)] == ["PENDING", "STOPPED"]
    assert sorted(node.gpus_left()) == sorted(node.gpu_ids)

    # Never loads: UNKNOWN through the start period (600 s of the sandbox clock), failing checks not counted; without
    # one, UNHEALTHY after the retries.
    never = [{"name": "SPOTHUB_SANDBOX_LOAD_SECONDS", "value": "3600"}]
    patient = register_definition(node.sandbox, node.region, f"{DEPLOYMENT_ID}-patient", gpus=1, environment=never)
    impatient = register_definition(
        node.sandbox,
        node.region,
        f"{DEPLOYMENT_ID}-impatient",
        gpus=1,
        environment=never,
        healthCheck={"command": ["CMD-SHELL", "curl -fsS http://localhost:8000/health || exit 1"], "retries": 2},
    )
    waiting, failing = node.start(taskDefinition=patient), node.start(taskDefinition=impatient)
    unhealthy = wait_for(lambda: (t := node.describe(failing))["healthStatus"] == "UNHEALTHY" and t, timeout_s=10)
    assert unhealthy["lastStatus"] == "RUNNING"  # ECS does not stop a standalone task for its health
    assert node.describe(waiting)["healthStatus"] == "UNKNOWN"


def test_utilization_set_on_a_task_reaches_the_node_agent_heartbeat(on_node: Node) -> None:
    node = on_node
    task_arn = node.start()
    node.healthy(task_arn)
    gpus = node.describe(task_arn)["containers"][0]["gpuIds"]
    assert node.sandbox.set_gpu_utilization(85, task_arn=task_arn) == gpus

    def reported(utilization: float) -> dict[str, Any] | None:
        record = node.agent_record()
        by_uuid = {g["uuid"]: g for g in (record.gpu or {}).get("gpus", [])} if record else {}
        if all(by_uuid.get(u, {}).get("utilization_pct") == utilization for u in gpus):
            return by_uuid
        return None

    by_uuid = wait_for(lambda: reported(85), timeout_s=20)
    for uuid in node.gpu_ids:
        if uuid in gpus:  # the model's memory, once loaded
            assert by_uuid[uuid]["memory_used_mib"] == int(by_uuid[uuid]["memory_total_mib"] * 0.9)
        else:
            assert (by_uuid[uuid]["utilization_pct"], by_uuid[uuid]["memory_used_mib"]) == (0, 0)

    # Through the control API, and through the stand-in server's own route.
    answer = requests.post(
        node.sandbox.control_url + "deployment-tasks/utilization",
        json={"task_arn": task_arn, "utilization_pct": 40},
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["gpu_ids"] == gpus
    wait_for(lambda: reported(40), timeout_s=20)
    endpoint = next(t["endpoint"] for t in node.sandbox.deployment_tasks(running=True) if t["task_arn"] == task_arn)
    own_route = node.sandbox.reach(endpoint + "/_sandbox/utilization")
    assert requests.post(own_route, json={"utilization_pct": 7}, timeout=10).ok
    wait_for(lambda: reported(7), timeout_s=20)
    assert node.sandbox.set_gpu_utilization(93, deployment_id=DEPLOYMENT_ID) == gpus  # every task of a deployment
    wait_for(lambda: reported(93), timeout_s=20)

    node.ecs.stop_task(cluster=node.cluster, task=task_arn)
    by_uuid = wait_for(lambda: reported(0), timeout_s=20)
    assert all(by_uuid[u]["memory_used_mib"] == 0 for u in gpus)  # a stopped task's GPUs are idle


def test_the_control_api_lists_and_kills_tasks_and_says_what_was_wrong(on_node: Node) -> None:
    node = on_node
    task_arn = node.start(gpus=1)
    node.healthy(task_arn)
    control = node.sandbox.control_url
    listed = requests.get(control + "deployment-tasks", params={"running": "true"}, timeout=10).json()
    assert [t["task_arn"] for t in listed] == [task_arn]
    for body, status in (
        ({}, 400),
        ({"task_arn": "arn:aws:ecs:us-west-2:123456789012:task/none/0000"}, 404),
        ({"task_arn": task_arn, "signal": "HUP"}, 400),
    ):
        answer = requests.post(control + "deployment-tasks/kill", json=body, timeout=10)
        assert answer.status_code == status, (body, answer.text)
    answer = requests.post(
        control + "deployment-tasks/utilization",
        json={"instance_id": node.instance_id, "utilization_pct": 120},
        timeout=10,
    )
    assert answer.status_code == 400 and "utilization_pct" in answer.json()["message"]
    killed = requests.post(control + "deployment-tasks/kill", json={"task_arn": task_arn, "signal": "TERM"}, timeout=20)
    assert killed.status_code == 200
    assert killed.json()["stop_code"] == "EssentialContainerExited" and killed.json()["exit_code"] == 0
    reach = requests.post(control + "deployment-tasks/reach", json={"url": f"http://{node.private_ip}:1"}, timeout=10)
    assert reach.status_code == 404


def test_by_deployment_id_and_slot_from_the_deployments_table(on_node: Node) -> None:
    node = on_node
    try:
        table_name = node.sandbox.deployments_table()
    except SandboxError:
        pytest.skip("the deployment has no deployments table yet (the hub stack's model deployments)")
    from spothub_core.dal.deployment_store import DeploymentStore  # noqa: PLC0415
    from spothub_core.models.deployment_records import DeploymentTask, TaskStatus  # noqa: PLC0415

    task_arn = node.start(gpus=1)
    table = boto3.resource(
        "dynamodb",
        region_name=node.sandbox.hub.region,
        endpoint_url=node.sandbox.aws_endpoint_url,
        **node.sandbox.credentials(),
    ).Table(table_name)
    store = DeploymentStore(table)
    store.put_task(
        DeploymentTask(
            deployment_id=DEPLOYMENT_ID,
            task_id="t-slot-1",
            slot=1,
            generation=0,
            status=TaskStatus.STARTING,
            gpus=1,
            created_at=time.time(),
            ecs_task_arn=task_arn,
            instance_id=node.instance_id,
        )
    )
    assert node.sandbox.deployment_task_arn(DEPLOYMENT_ID, 1) == task_arn
    node.healthy(task_arn)
    assert (
        node.sandbox.set_gpu_utilization(55, deployment_id=DEPLOYMENT_ID, slot=1)
        == node.describe(task_arn)["containers"][0]["gpuIds"]
    )
    killed = node.sandbox.kill_deployment_task(deployment_id=DEPLOYMENT_ID, slot=1)
    assert killed["task_arn"] == task_arn and killed["exit_code"] == 137
    with pytest.raises(SandboxError, match="no task placed in slot 5"):
        node.sandbox.deployment_task_arn(DEPLOYMENT_ID, 5)


def test_a_terminated_node_stops_its_tasks_with_events(on_node: Node) -> None:
    """Last: the module's node goes."""
    node = on_node
    task_arn = node.start()
    node.healthy(task_arn)
    pid = node.sandbox.deployment_tasks(running=True)[0]["pid"]
    node.sandbox.client("ec2", node.region).terminate_instances(InstanceIds=[node.instance_id])
    stopped = wait_for(lambda: (t := node.describe(task_arn))["lastStatus"] == "STOPPED" and t, timeout_s=15)
    assert stopped["stoppedReason"] == "Host EC2 instance terminated"
    assert stopped["stopCode"] == "TerminationNotice"
    event = wait_for(lambda: [e for e in node.events(task_arn) if e["lastStatus"] == "STOPPED"])[0]
    assert event["stoppedReason"] == "Host EC2 instance terminated" and "exitCode" not in event["containers"][0]
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text())
    assert node.sandbox.deployment_tasks(running=True) == []

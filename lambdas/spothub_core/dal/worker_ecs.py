"""ECS (and what EC2 says of its instances) in one worker region, for the deployment controller: the GPU nodes as
container instances of the GPU cluster, the deployments' task definitions, and their tasks (WorkerEcs in
logic/deployment_context.py).

A node is a container instance (ACTIVE or DRAINING) of `<prefix>-gpu` whose EC2 instance is a member of a node group
(`<prefix>-nodes-<class>`: Auto Scaling's own tag on the instance names its group); the serving replicas' instances in
the same cluster are not nodes. Every AWS failure becomes DependencyUnavailable (the controller leaves the step to its
next run), except StartTask placing nothing: PlacementRefused with ECS's reason.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.contracts import (
    DEPLOYMENT_CONTAINER_NAME,
    DEPLOYMENT_STARTED_BY,
    GROUP_TAG,
    InstanceTag,
    deployment_log_group,
    deployment_task_family,
    gpu_cluster_name,
    node_group_name,
)
from spothub_core.dal.state_table import call, reason_of
from spothub_core.errors import DependencyUnavailable
from spothub_core.logic.deployment_context import PlacementRefused
from spothub_core.models.deployment_ecs import ContainerNode, TaskState
from spothub_core.models.deployment_records import ModelDeployment
from spothub_core.settings import NodeClass

# The inference server's port in its container (bridge network: ECS maps it to a dynamic host port).
SERVER_PORT = 8000
NODE_STATUSES = ("ACTIVE", "DRAINING")
# Tags on a deployment's task definitions and tasks (with InstanceTag.PREFIX).
DEPLOYMENT_TAG = "spothub:deployment-id"
TASK_TAG = "spothub:task-id"
# A digest of everything the controller registers for a deployment: an equal digest on the family's latest ACTIVE
# revision means there is nothing to register.
DEFINITION_DIGEST_TAG = "spothub:definition-digest"
# The container's health check: vLLM answers /health once the model is loaded. ECS takes a start period of 300 s at
# most; a large model loads longer, so the retries carry on after it (30 s x 10) before the task shows UNHEALTHY.
HEALTH_COMMAND = ["CMD-SHELL", f"curl -fsS http://localhost:{SERVER_PORT}/health || exit 1"]
HEALTH_INTERVAL_SECONDS = 30
HEALTH_TIMEOUT_SECONDS = 10
HEALTH_RETRIES = 10
HEALTH_START_PERIOD_SECONDS = 300
# /dev/shm for tensor-parallel workers (NCCL exchanges through shared memory; Docker's default is 64 MiB).
MULTI_GPU_SHARED_MEMORY_MIB = 16 * 1024
# What the ECS agent registers of an instance's memory: what the operating system reports (the sandbox's rule, on
# the safe side: 7.5 % below the installed memory; spothub/sandbox/ecs_placement.py) less ECS_RESERVED_MEMORY of the
# node's ecs.config (the GPU capacity's user data).
OS_MEMORY_OVERHEAD_FRACTION = 0.075
NODE_RESERVED_MEMORY_MIB = 256
# A task reserves (soft) its share of the node's GPUs of that memory, less this margin: the tasks that fill a node's
# GPUs always fit its memory, so placement is decided by the GPUs alone, as the controller counts them.
MEMORY_MARGIN_FRACTION = 0.1
DESCRIBE_BATCH = 100  # DescribeTasks and DescribeContainerInstances take 100 at most
INSTANCE_FILTER_BATCH = 200  # values of one DescribeInstances filter
STOPPED_REASON_LENGTH = 255


def memory_reservation_mib(installed_mib: int, *, node_gpus: int, task_gpus: int) -> int:
    """The soft memory reservation of a task of `task_gpus` GPUs on a node of `node_gpus` whose smallest instance type
    has `installed_mib`."""
    registered = math.floor(installed_mib * (1 - OS_MEMORY_OVERHEAD_FRACTION)) - NODE_RESERVED_MEMORY_MIB
    share = registered * min(task_gpus, node_gpus) / node_gpus
    return max(128, math.floor(share * (1 - MEMORY_MARGIN_FRACTION)))


def server_command(deployment: ModelDeployment) -> list[str]:
    """The vLLM OpenAI server's arguments (the image's entry point is the server)."""
    command = [
        "--model",
        deployment.model,
        "--served-model-name",
        deployment.model,
        "--port",
        str(SERVER_PORT),
        "--tensor-parallel-size",
        str(deployment.gpus),
    ]
    if deployment.max_model_len:
        command += ["--max-model-len", str(deployment.max_model_len)]
    return command


class RegionEcs:
    """WorkerEcs over one region's ECS and EC2 clients."""

    def __init__(
        self,
        ecs: Any,
        ec2: Any,
        *,
        region: str,
        prefix: str,
        node_classes: dict[str, NodeClass],
        execution_role_arn: str,
        task_role_arn: str,
    ) -> None:
        self.ecs = ecs
        self.ec2 = ec2
        self.region = region
        self.prefix = prefix
        self.cluster = gpu_cluster_name(prefix)
        self.node_classes = node_classes
        self.execution_role_arn = execution_role_arn
        self.task_role_arn = task_role_arn
        self._installed_mib: dict[str, int] = {}  # by node class: its smallest instance type's memory

    # --- nodes ----------------------------------------------------------------------------------------------

    def nodes(self) -> list[ContainerNode]:
        """The cluster's container instances that are node group members, ACTIVE or DRAINING. Raises
        DependencyUnavailable rather than answering a partial list (a node missing from the answer counts as gone)."""
        arns = self._container_instance_arns()
        described: list[dict[str, Any]] = []
        for batch in _batches(arns, DESCRIBE_BATCH):
            described += call(
                "describe the GPU cluster's container instances",
                self.ecs.describe_container_instances,
                cluster=self.cluster,
                containerInstances=batch,
            ).get("containerInstances", [])
        described = [c for c in described if c.get("status") in NODE_STATUSES and c.get("ec2InstanceId")]
        instances = self._instances([c["ec2InstanceId"] for c in described])
        nodes = []
        for container in described:
            instance = instances.get(container["ec2InstanceId"])
            node_class = self._node_class_of(instance)
            if instance is None or node_class is None:
                continue  # not a node: a serving replica's instance, or an instance EC2 no longer has
            gpu_ids = _gpu_ids(container.get("registeredResources", []))
            attributes = {a.get("name"): a.get("value") for a in container.get("attributes", [])}
            nodes.append(
                ContainerNode(
                    instance_id=container["ec2InstanceId"],
                    container_instance_arn=container["containerInstanceArn"],
                    instance_type=attributes.get("ecs.instance-type") or instance.get("InstanceType", ""),
                    node_class=node_class,
                    gpus_registered=len(gpu_ids),
                    gpu_ids=gpu_ids,
                    status=container["status"],
                    agent_connected=bool(container.get("agentConnected", False)),
                    private_ip=instance.get("PrivateIpAddress"),
                    capacity_type="spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand",
                )
            )
        return nodes

    def _container_instance_arns(self) -> list[str]:
        arns: list[str] = []
        arguments: dict[str, Any] = {"cluster": self.cluster}
        while True:
            page = call("list the GPU cluster's container instances", self.ecs.list_container_instances, **arguments)
            arns += page.get("containerInstanceArns", [])
            if not page.get("nextToken"):
                return arns
            arguments["nextToken"] = page["nextToken"]

    def _instances(self, instance_ids: list[str]) -> dict[str, dict[str, Any]]:
        """EC2's description of the instances, by id (a filter: an id EC2 no longer knows is absent, no error)."""
        found: dict[str, dict[str, Any]] = {}
        for batch in _batches(sorted(set(instance_ids)), INSTANCE_FILTER_BATCH):
            arguments: dict[str, Any] = {"Filters": [{"Name": "instance-id", "Values": batch}]}
            while True:
                page = call("describe the nodes' instances", self.ec2.describe_instances, **arguments)
                for reservation in page.get("Reservations", []):
                    for instance in reservation.get("Instances", []):
                        found[instance["InstanceId"]] = instance
                if not page.get("NextToken"):
                    break
                arguments["NextToken"] = page["NextToken"]
        return found

    def _node_class_of(self, instance: dict[str, Any] | None) -> str | None:
        """The node class whose group the instance is a member of (Auto Scaling's tag), None for any other."""
        if instance is None:
            return None
        group = next((t.get("Value", "") for t in instance.get("Tags", []) if t.get("Key") == GROUP_TAG), "")
        group_prefix = node_group_name(self.prefix, "")
        if not group.startswith(group_prefix):
            return None
        node_class = group.removeprefix(group_prefix)
        return node_class if node_class in self.node_classes else None

    # --- task definitions -----------------------------------------------------------------------------------

    def task_definition(self, deployment: ModelDeployment) -> dict[str, Any]:
        """RegisterTaskDefinition's arguments for the deployment in this region, tags aside."""
        node_class = self.node_classes.get(deployment.node_class)
        if node_class is None:
            raise DependencyUnavailable(f"node class {deployment.node_class} is not configured")
        memory = memory_reservation_mib(
            self._smallest_memory_mib(deployment.node_class, node_class),
            node_gpus=node_class.gpus,
            task_gpus=deployment.gpus,
        )
        environment = {**deployment.env, "SPOTHUB_DEPLOYMENT_ID": deployment.deployment_id}
        container: dict[str, Any] = {
            "name": DEPLOYMENT_CONTAINER_NAME,
            "image": deployment.image,
            "essential": True,
            "command": server_command(deployment),
            "portMappings": [{"containerPort": SERVER_PORT, "hostPort": 0, "protocol": "tcp"}],
            "resourceRequirements": [{"type": "GPU", "value": str(deployment.gpus)}],
            "memoryReservation": memory,
            "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
            "healthCheck": {
                "command": HEALTH_COMMAND,
                "interval": HEALTH_INTERVAL_SECONDS,
                "timeout": HEALTH_TIMEOUT_SECONDS,
                "retries": HEALTH_RETRIES,
                "startPeriod": HEALTH_START_PERIOD_SECONDS,
            },
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": deployment_log_group(self.prefix),
                    "awslogs-region": self.region,
                    "awslogs-stream-prefix": deployment.deployment_id,
                },
            },
        }
        if deployment.gpus > 1:
            container["linuxParameters"] = {"sharedMemorySize": MULTI_GPU_SHARED_MEMORY_MIB}
        return {
            "family": deployment_task_family(self.prefix, deployment.deployment_id),
            "taskRoleArn": self.task_role_arn,
            "executionRoleArn": self.execution_role_arn,
            # No requiresCompatibilities: without it ECS validates for EC2, which is all StartTask uses.
            "networkMode": "bridge",
            "containerDefinitions": [container],
        }

    def ensure_task_definition(self, deployment: ModelDeployment) -> str:
        definition = self.task_definition(deployment)
        digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
        latest = self._latest(definition["family"])
        if latest is not None:
            revision, tags = latest
            if revision.get("status") == "ACTIVE" and tags.get(DEFINITION_DIGEST_TAG) == digest:
                return str(revision["taskDefinitionArn"])
        tags = {InstanceTag.PREFIX.value: self.prefix, DEPLOYMENT_TAG: deployment.deployment_id}
        registered = call(
            "register the deployment's task definition",
            self.ecs.register_task_definition,
            **definition,
            tags=[{"key": k, "value": v} for k, v in {**tags, DEFINITION_DIGEST_TAG: digest}.items()],
        )
        return str(registered["taskDefinition"]["taskDefinitionArn"])

    def _latest(self, family: str) -> tuple[dict[str, Any], dict[str, str]] | None:
        """The family's latest ACTIVE revision and its tags; None when it has none."""
        try:
            answer = self.ecs.describe_task_definition(taskDefinition=family, include=["TAGS"])
        except ClientError as exc:
            if exc.response["Error"].get("Code") in ("ClientException", "InvalidParameterException"):
                return None  # "Unable to describe task definition": no revision yet
            raise DependencyUnavailable(f"could not describe task definition {family}: {reason_of(exc)}") from exc
        except BotoCoreError as exc:
            raise DependencyUnavailable(f"could not describe task definition {family}: {reason_of(exc)}") from exc
        tags = {t.get("key", ""): t.get("value", "") for t in answer.get("tags", [])}
        return answer["taskDefinition"], tags

    def _smallest_memory_mib(self, name: str, node_class: NodeClass) -> int:
        if name not in self._installed_mib:
            sizes = []
            for instance_type in node_class.instance_types:
                try:
                    types = self.ec2.describe_instance_types(InstanceTypes=[instance_type]).get("InstanceTypes", [])
                except BotoCoreError as exc:
                    raise DependencyUnavailable(f"could not describe {instance_type}: {reason_of(exc)}") from exc
                except ClientError as exc:
                    if exc.response["Error"].get("Code") == "InvalidInstanceType":
                        continue  # not offered in this region: its nodes are none of this type
                    raise DependencyUnavailable(f"could not describe {instance_type}: {reason_of(exc)}") from exc
                sizes += [int(t["MemoryInfo"]["SizeInMiB"]) for t in types]
            if not sizes:
                raise DependencyUnavailable(f"no instance type of node class {name} is offered in {self.region}")
            self._installed_mib[name] = min(sizes)
        return self._installed_mib[name]

    # --- tasks ----------------------------------------------------------------------------------------------

    def start_task(
        self, task_definition_arn: str, container_instance_arn: str, *, deployment_id: str, task_id: str
    ) -> str:
        tags = {InstanceTag.PREFIX.value: self.prefix, DEPLOYMENT_TAG: deployment_id, TASK_TAG: task_id}
        answer = call(
            "start the deployment's task",
            self.ecs.start_task,
            cluster=self.cluster,
            taskDefinition=task_definition_arn,
            containerInstances=[container_instance_arn],
            startedBy=DEPLOYMENT_STARTED_BY,
            tags=[{"key": k, "value": v} for k, v in tags.items()],
            enableECSManagedTags=True,
        )
        tasks = answer.get("tasks") or []
        if not tasks:
            reasons = sorted({str(f.get("reason", "")) for f in answer.get("failures", [])} - {""})
            raise PlacementRefused(", ".join(reasons) or "ECS started no task")
        return str(tasks[0]["taskArn"])

    def describe_tasks(self, task_arns: list[str]) -> dict[str, TaskState]:
        states: dict[str, TaskState] = {}
        for batch in _batches(sorted(set(task_arns)), DESCRIBE_BATCH):
            answer = call("describe the deployments' tasks", self.ecs.describe_tasks, cluster=self.cluster, tasks=batch)
            for task in answer.get("tasks", []):
                if task.get("taskArn") in batch:
                    states[task["taskArn"]] = task_state(task)
        return states

    def stop_task(self, task_arn: str, reason: str) -> None:
        try:
            self.ecs.stop_task(cluster=self.cluster, task=task_arn, reason=reason[:STOPPED_REASON_LENGTH])
        except BotoCoreError as exc:
            raise DependencyUnavailable(f"could not stop task {task_arn}: {reason_of(exc)}") from exc
        except ClientError as exc:
            error = exc.response["Error"]
            # ECS: InvalidParameterException "The referenced task was not found." (it expired after stopping)
            if error.get("Code") in ("InvalidParameterException", "ClientException") and "not found" in str(
                error.get("Message", "")
            ):
                return
            raise DependencyUnavailable(f"could not stop task {task_arn}: {reason_of(exc)}") from exc


def task_state(task: dict[str, Any]) -> TaskState:
    """A DescribeTasks task as the controller reads it: its model container's port binding, GPUs and exit code."""
    container = next((c for c in task.get("containers", []) if c.get("name") == DEPLOYMENT_CONTAINER_NAME), {})
    host_port = next(
        (b.get("hostPort") for b in container.get("networkBindings", []) if b.get("containerPort") == SERVER_PORT),
        None,
    )
    stopped = task.get("lastStatus") == "STOPPED"
    exit_code = container.get("exitCode") if stopped else None
    return TaskState(
        task_arn=task["taskArn"],
        last_status=task.get("lastStatus", ""),
        desired_status=task.get("desiredStatus", ""),
        health_status=task.get("healthStatus") or container.get("healthStatus") or "UNKNOWN",
        stopped_reason=task.get("stoppedReason") or container.get("reason") or "",
        stop_code=task.get("stopCode", ""),
        exit_code=int(exit_code) if exit_code is not None else None,
        host_port=int(host_port) if host_port else None,
        gpu_ids=list(container.get("gpuIds", [])),
        started_at=_epoch(task.get("startedAt")),
        stopped_at=_epoch(task.get("stoppedAt")),
    )


def _gpu_ids(resources: list[dict[str, Any]]) -> list[str]:
    gpu = next((r for r in resources if r.get("name") == "GPU"), None)
    return list(gpu.get("stringSetValue", [])) if gpu else []


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

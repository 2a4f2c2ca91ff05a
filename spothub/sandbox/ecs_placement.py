"""ECS placement against what a container instance really has: the sandbox's addition to moto 5.2.5.

moto registers every container instance with 4096 CPU units, 7482 MiB and no GPU, whatever its instance
type, and its StartTask places any task on any instance, answering `failures: []`. Here:
- the sandbox fleet registers each simulated instance with what the ECS agent registers for its type
  (`registered_resources`);
- a task needs what ECS reserves for it (`task_requirements`), GPUs included;
- StartTask refuses a task that does not fit what its container instance has left, as ECS does: no task,
  and a failure `{"arn": <container instance ARN>, "reason": "RESOURCE:CPU" | "RESOURCE:MEMORY" |
  "RESOURCE:GPU" | "RESOURCE:PORTS"}`; RunTask's placement (moto skips an instance that does not fit)
  counts GPUs too. A stopped task gives its resources back, once;
- a task's GPUs are GPU ids of its container instance, as ECS assigns them: DescribeTasks shows them as its
  container's `gpuIds`, and a stop gives back exactly those (moto's accounting has no GPU at all);
- a listener (`attach`: the sandbox's deployment runtime, deployment_tasks.py) hears of each task started and of
  each task a StopTask stopped, so that something can run on the node as ECS would.

What the ECS agent registers (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/memory-management.html):
- CPU: 1024 units per vCPU;
- MEMORY: the total memory the operating system reports (MemTotal, through Docker), less
  `ECS_RESERVED_MEMORY` from /etc/ecs/ecs.config. MemTotal is less than the installed memory EC2
  advertises (kernel, firmware, page tables); AWS gives one figure, an m4.large's 8192 MiB registering as
  7985 MiB (2.5 % less), and no table per type. Other types can lose more, so the sandbox takes
  7.5 % off the installed memory, the default VM memory overhead of AWS's Karpenter for EC2 instance
  types: a bound on the safe side (the sandbox may refuse a task AWS would just place; the reverse takes
  an instance whose kernel keeps more than 7.5 %);
- GPU: with `ECS_ENABLE_GPU_SUPPORT=true`, the instance's NVIDIA GPU ids, a STRINGSET.
Installed memory, vCPUs and GPUs come from the EC2 instance type data moto ships
(moto/ec2/resources/instance_types.json), never from a table typed here.

`tests/infrastructure` checks the serving task definition against the same `registered_resources`, and
`tests/sandbox/test_ecs_placement.py` checks each patched moto function against the pinned version.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import math
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

CPU_UNITS_PER_VCPU = 1024
# The installed memory the operating system does not report (see the module docstring).
MEMORY_OVERHEAD_FRACTION = 0.075

_ECS_CONFIG_LINE = re.compile(r"^(ECS_[A-Z0-9_]+)=(\S*)$", re.MULTILINE)
# The key of a task's own GPU ids in its resource requirements (moto's dict, per task once placed).
GPU_IDS = "GPU_IDS"


class TaskListener(Protocol):
    """What hears of ECS tasks in the emulator (the sandbox's deployment runtime)."""

    def started(self, backend: Any, tasks: list[Any]) -> None:
        """StartTask or RunTask created these tasks (GPU ids assigned)."""

    def stopped(self, backend: Any, task: Any, reason: str | None) -> None:
        """StopTask stopped this task (once: a second StopTask of it is not heard)."""


@dataclass(frozen=True)
class Resources:
    """CPU units, MiB of memory and GPUs: what an instance registers, has left, or a task needs."""

    cpu: int
    memory_mib: int
    gpus: int
    ports: frozenset[str] = frozenset()  # TCP host ports: taken on an instance, needed by a task


def ecs_config(user_data: Any) -> dict[str, str]:
    """The `ECS_*=value` lines an instance's user data writes to /etc/ecs/ecs.config (plain or base64)."""
    if not user_data:
        return {}
    text = str(user_data)
    with contextlib.suppress(binascii.Error, UnicodeDecodeError):
        text = base64.b64decode(text, validate=True).decode()
    return dict(_ECS_CONFIG_LINE.findall(text))


def registered_resources(instance_type: str, config: Mapping[str, str] | None = None) -> Resources:
    """What the ECS agent registers for an instance of this type, with this ecs.config."""
    from moto.ec2.models.instance_types import INSTANCE_TYPES  # noqa: PLC0415

    if instance_type not in INSTANCE_TYPES:
        raise KeyError(f"no EC2 instance type {instance_type!r} in moto's instance type data")
    data = INSTANCE_TYPES[instance_type]
    config = config or {}
    installed_mib = int(data["MemoryInfo"]["SizeInMiB"])
    reserved_mib = int(config.get("ECS_RESERVED_MEMORY", "0") or 0)
    memory_mib = math.floor(installed_mib * (1 - MEMORY_OVERHEAD_FRACTION)) - reserved_mib
    gpus = 0
    if config.get("ECS_ENABLE_GPU_SUPPORT", "").lower() == "true":
        gpus = sum(int(g.get("Count", 0)) for g in data.get("GpuInfo", {}).get("Gpus", []))
    return Resources(int(data["VCpuInfo"]["DefaultVCpus"]) * CPU_UNITS_PER_VCPU, memory_mib, gpus)


def _field(definition: Mapping[str, Any], name: str) -> Any:
    """A field of an ECS API shape (camelCase) or of a CloudFormation template (PascalCase)."""
    return definition.get(name, definition.get(name[0].upper() + name[1:]))


def _number(value: Any) -> int:
    return int(value) if value not in (None, "") else 0


def task_requirements(
    container_definitions: Iterable[Mapping[str, Any]], cpu: Any = None, memory: Any = None
) -> Resources:
    """What ECS reserves on the container instance for a task: the task-level cpu and memory when set,
    else the sum over its containers (memoryReservation, or memory when there is none); GPUs from the
    containers' resourceRequirements; TCP host ports from their port mappings."""
    containers = list(container_definitions)
    container_cpu = sum(_number(_field(c, "cpu")) for c in containers)
    container_memory = sum(_number(_field(c, "memoryReservation") or _field(c, "memory")) for c in containers)
    gpus = 0
    ports: set[str] = set()
    for container in containers:
        for requirement in _field(container, "resourceRequirements") or []:
            if _field(requirement, "type") == "GPU":
                gpus += _number(_field(requirement, "value"))
        for mapping in _field(container, "portMappings") or []:
            host_port = _field(mapping, "hostPort")
            if host_port and (_field(mapping, "protocol") or "tcp") == "tcp":
                ports.add(str(host_port))
    return Resources(_number(cpu) or container_cpu, _number(memory) or container_memory, gpus, frozenset(ports))


def shortfall(available: Resources, required: Resources) -> str | None:
    """ECS's failure reason when `required` does not fit `available`, None when it fits."""
    if required.cpu > available.cpu:
        return "RESOURCE:CPU"
    if required.memory_mib > available.memory_mib:
        return "RESOURCE:MEMORY"
    if required.ports & available.ports:
        return "RESOURCE:PORTS"
    if required.gpus > available.gpus:
        return "RESOURCE:GPU"
    return None


# --- the container instance's resources, in moto's shape ---------------------------------------------


def _resource(name: str, value: int) -> dict[str, Any]:
    return {"doubleValue": 0.0, "integerValue": value, "longValue": 0, "name": name, "type": "INTEGER"}


def gpu_ids(instance_id: str, count: int) -> list[str]:
    """NVIDIA GPU UUIDs, as the ECS agent registers them; stable per instance (the stand-in NVML reports the same)."""
    return [f"GPU-{uuid.uuid5(uuid.NAMESPACE_URL, f'{instance_id}/gpu/{i}')}" for i in range(count)]


def register_resources(container_instance: Any, resources: Resources) -> None:
    """Give a moto container instance the resources the ECS agent registers (instead of moto's defaults)."""
    ports = [r for r in container_instance.registered_resources if r["name"] in ("PORTS", "PORTS_UDP")]
    registered = [_resource("CPU", resources.cpu), _resource("MEMORY", resources.memory_mib), *ports]
    if resources.gpus:
        gpu = {**_resource("GPU", 0), "type": "STRINGSET"}
        registered.append({**gpu, "stringSetValue": gpu_ids(container_instance.ec2_instance_id, resources.gpus)})
    container_instance.registered_resources = registered
    container_instance.remaining_resources = copy.deepcopy(registered)


def remaining(container_instance: Any) -> Resources:
    by_name = {r["name"]: r for r in container_instance.remaining_resources}
    return Resources(
        cpu=int(by_name.get("CPU", {}).get("integerValue", 0)),
        memory_mib=int(by_name.get("MEMORY", {}).get("integerValue", 0)),
        gpus=len(by_name.get("GPU", {}).get("stringSetValue", [])),
        ports=frozenset(by_name.get("PORTS", {}).get("stringSetValue", [])),
    )


def _moto_requirements(task_definition: Any) -> dict[str, Any]:
    """moto's `_calculate_task_resource_requirements`, by ECS's rules, with the GPUs."""
    need = task_requirements(task_definition.container_definitions, task_definition.cpu, task_definition.memory)
    ports = [int(p) for p in sorted(need.ports)]
    return {"CPU": need.cpu, "MEMORY": need.memory_mib, "PORTS": ports, "PORTS_UDP": [], "GPU": need.gpus}


def _as_resources(requirements: Mapping[str, Any]) -> Resources:
    ports = frozenset(str(p) for p in requirements.get("PORTS", []))
    return Resources(requirements["CPU"], requirements["MEMORY"], requirements.get("GPU", 0), ports)


def _can_be_placed(container_instance: Any, task_resource_requirements: dict[str, Any]) -> bool:
    return shortfall(remaining(container_instance), _as_resources(task_resource_requirements)) is None


def _move_gpus(container_instance: Any, count: int, *, removing: bool, ids: list[str] | None = None) -> list[str]:
    """Take `count` GPU ids from what the instance has left (returns them), or give back a task's own `ids` (without
    them, as many as `count` it registered)."""
    left = next((r for r in container_instance.remaining_resources if r["name"] == "GPU"), None)
    if left is None or not count:
        return []
    if removing:
        registered = next(r for r in container_instance.registered_resources if r["name"] == "GPU")
        taken = [g for g in registered["stringSetValue"] if g not in left["stringSetValue"]]
        given_back = [g for g in taken if g in ids] if ids is not None else taken[:count]
        left["stringSetValue"] = [g for g in registered["stringSetValue"] if g in left["stringSetValue"] + given_back]
        return []
    taking, left["stringSetValue"] = left["stringSetValue"][:count], left["stringSetValue"][count:]
    return list(taking)


# moto's own functions, kept when patched (the tests check the gaps are still there).
_original_requirements: Any = None
_original_can_be_placed: Any = None
_original_update_resources: Any = None
_original_stop_task: Any = None
_original_start_task_response: Any = None
_original_start_task: Any = None
_original_run_task: Any = None
_listener: TaskListener | None = None
# The GPU ids each placement took, in order, while a StartTask or RunTask of this thread runs: (container instance
# ARN, ids) per task created.
_placements = threading.local()


def attach(listener: TaskListener | None) -> None:
    """Lend (or, with None, take back) the listener of started and stopped tasks."""
    global _listener  # noqa: PLW0603
    _listener = listener


def _update_container_instance_resources(
    self: Any, container_instance: Any, task_resources: dict[str, Any], removing: bool = False
) -> None:
    _original_update_resources(self, container_instance, task_resources, removing)
    own = task_resources.get(GPU_IDS) if removing else None
    taken = _move_gpus(container_instance, int(task_resources.get("GPU", 0)), removing=removing, ids=own)
    log = getattr(_placements, "log", None)
    if not removing and log is not None:
        log.append((container_instance.container_instance_arn, taken))


def _placing(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto's StartTask or RunTask, each task given the GPU ids its placement took, then the listener told."""

    def place(self: Any, *arguments: Any, **keywords: Any) -> Any:
        _placements.log = []
        try:
            tasks = original(self, *arguments, **keywords)
        finally:
            log, _placements.log = _placements.log, None
        for task in tasks:
            entry = next((e for e in log if e[0] == task.container_instance_arn), None)
            if entry is None:
                continue
            log.remove(entry)
            if entry[1]:
                # Per task: moto shares one requirements dict between the tasks of a call.
                task.resource_requirements = {**(task.resource_requirements or {}), GPU_IDS: list(entry[1])}
                for container in task.containers:
                    container.gpu_ids = list(entry[1])
        if _listener is not None and tasks:
            _listener.started(self, list(tasks))
        return tasks

    place.__wrapped__ = original  # type: ignore[attr-defined]
    return place


def _stop_task(self: Any, cluster_str: str, task_str: str, reason: str) -> Any:
    # moto gives a task's resources back on every StopTask; ECS stops a task (and frees its resources) once.
    cluster = self._get_cluster(cluster_str)
    task_id = task_str.rsplit("/", maxsplit=1)[-1]
    for arn, task in self.tasks.get(cluster.name, {}).items():
        if arn.endswith(task_id) and task.last_status == "STOPPED":
            return task
    stopped = _original_stop_task(self, cluster_str, task_str, reason)
    if _listener is not None:
        _listener.stopped(self, stopped, reason)
    return stopped


def _start_task_response(self: Any) -> Any:
    """StartTask: each container instance named either gets the task or a failure saying why not."""
    from moto.core.responses import ActionResult  # noqa: PLC0415

    backend = self.ecs_backend
    cluster_str = self._get_param("cluster", "default")
    task_definition_str = self._get_param("taskDefinition")
    named = self._get_param("containerInstances") or []
    cluster = backend._get_cluster(cluster_str)
    requirements = _as_resources(
        backend._calculate_task_resource_requirements(backend.describe_task_definition(task_definition_str))
    )
    placed, failures = [], []
    for reference in named:
        container_instance = backend.container_instances.get(cluster.name, {}).get(reference.split("/")[-1])
        if container_instance is None:
            failures.append({"arn": reference, "reason": "MISSING"})
            continue
        reason = shortfall(remaining(container_instance), requirements)
        if reason is None:
            placed.append(reference)
        else:
            failures.append({"arn": container_instance.container_instance_arn, "reason": reason})
    tasks = []
    if placed or not named:  # none named: moto's own validation error
        tasks = backend.start_task(
            cluster_str,
            task_definition_str,
            placed,
            self._get_param("overrides"),
            self._get_param("startedBy"),
            self._get_param("tags"),
            self._get_param("group"),
        )
    return ActionResult({"tasks": tasks, "failures": failures})


def apply() -> None:
    """Patch moto's ECS placement (from emulator_patches.apply); idempotent."""
    from moto.ecs.models import EC2ContainerServiceBackend  # noqa: PLC0415
    from moto.ecs.responses import EC2ContainerServiceResponse  # noqa: PLC0415

    global _original_requirements, _original_can_be_placed, _original_update_resources  # noqa: PLW0603
    global _original_stop_task, _original_start_task_response  # noqa: PLW0603
    global _original_start_task, _original_run_task  # noqa: PLW0603
    backend, response = EC2ContainerServiceBackend, EC2ContainerServiceResponse
    if response.start_task is _start_task_response:
        return
    _original_start_task = backend.start_task
    _original_run_task = backend.run_task
    backend.start_task = _placing(_original_start_task)  # type: ignore[method-assign]
    backend.run_task = _placing(_original_run_task)  # type: ignore[method-assign]
    _original_requirements = backend._calculate_task_resource_requirements
    _original_can_be_placed = backend._can_be_placed
    _original_update_resources = backend.update_container_instance_resources
    _original_stop_task = backend.stop_task
    _original_start_task_response = response.start_task
    backend._calculate_task_resource_requirements = staticmethod(_moto_requirements)  # type: ignore[method-assign,assignment]
    backend._can_be_placed = staticmethod(_can_be_placed)  # type: ignore[method-assign,assignment]
    backend.update_container_instance_resources = _update_container_instance_resources  # type: ignore[method-assign]
    backend.stop_task = _stop_task  # type: ignore[method-assign]
    response.start_task = _start_task_response  # type: ignore[method-assign]

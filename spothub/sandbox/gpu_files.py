"""A simulated node's GPUs, as files its stand-in NVML (stand_in_nvml/pynvml.py) reads: the inventory (`gpus.json`:
the instance type's GPUs from moto's instance type data, their UUIDs the ids the ECS agent registers for the instance,
ecs_placement.gpu_ids) and, per GPU, its figures now (`<uuid>.json`: utilization_pct, memory_used_mib; absent: 0).

Written by the fleet (the inventory, at launch), the deployment runtime (a task's GPUs: memory taken while its model
is loaded, utilization as a test sets it) and the stand-in inference server (POST /_sandbox/utilization). Each write
replaces the file whole (a temporary file renamed), so a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from spothub.sandbox.ecs_placement import gpu_ids

INVENTORY = "gpus.json"  # stand_in_nvml/pynvml.py's INVENTORY
GPU_DIR_VARIABLE = "SPOTHUB_SANDBOX_GPU_DIR"  # stand_in_nvml/pynvml.py's GPU_DIR_VARIABLE
STAND_IN_NVML = Path(__file__).with_name("stand_in_nvml")
# What a model server takes of each of its GPUs' memory once its model is loaded: vLLM's default
# --gpu-memory-utilization.
MODEL_MEMORY_SHARE = 0.9


def instance_gpus(instance_type: str) -> list[dict[str, Any]]:
    """[{"name", "memory_total_mib"}] per GPU of the instance type (moto's data; [] for a type without GPUs)."""
    from moto.ec2.models.instance_types import INSTANCE_TYPES  # noqa: PLC0415

    gpus = []
    for kind in INSTANCE_TYPES.get(instance_type, {}).get("GpuInfo", {}).get("Gpus", []):
        name = f"{kind.get('Manufacturer', 'NVIDIA')} {kind.get('Name', 'GPU')}".strip()
        memory = int(kind.get("MemoryInfo", {}).get("SizeInMiB", 0))
        gpus += [{"name": name, "memory_total_mib": memory}] * int(kind.get("Count", 0))
    return gpus


def write_inventory(directory: Path, instance_id: str, instance_type: str) -> list[str]:
    """The node's GPUs in `directory` (created); returns their UUIDs, in index order."""
    gpus = instance_gpus(instance_type)
    uuids = gpu_ids(instance_id, len(gpus))
    directory.mkdir(parents=True, exist_ok=True)
    _replace(directory / INVENTORY, {"gpus": [{"uuid": u, **g} for u, g in zip(uuids, gpus, strict=True)]})
    return uuids


def inventory(directory: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((directory / INVENTORY).read_text()).get("gpus", []))
    except (OSError, ValueError):
        return []


def figures(directory: Path, uuid: str) -> dict[str, Any]:
    try:
        found = json.loads((directory / f"{uuid}.json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def set_figures(directory: Path, uuid: str, **changes: float | int | None) -> dict[str, Any]:
    """Change a GPU's figures (utilization_pct, memory_used_mib); returns them as they are now."""
    current = {**figures(directory, uuid), **{k: v for k, v in changes.items() if v is not None}}
    _replace(directory / f"{uuid}.json", current)
    return current


def memory_total_mib(directory: Path, uuid: str) -> int:
    return next((int(g.get("memory_total_mib", 0)) for g in inventory(directory) if g.get("uuid") == uuid), 0)


def _replace(path: Path, document: dict[str, Any]) -> None:
    descriptor, temporary = tempfile.mkstemp(prefix=".gpu-", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(document, handle)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

"""A stand-in for NVML's Python binding (`pynvml`, from nvidia-ml-py) on a simulated deployment node: the sandbox puts
this directory first on the node agent's PYTHONPATH (that agent's only), so the agent's own gpu.py runs unchanged
against the node's simulated GPUs. Standard library only: it runs inside the agent's bundle.

What it reads, from the directory in SPOTHUB_SANDBOX_GPU_DIR (the fleet writes it per node; gpu_files.py):
  gpus.json      {"gpus": [{"uuid", "name", "memory_total_mib"}, ...]}: the instance type's GPUs, their UUIDs the ids
                 the ECS agent registered for the node (ecs_placement.gpu_ids)
  <uuid>.json    {"utilization_pct", "memory_used_mib"}: each GPU's figures now, read at every query (absent: 0),
                 written by the sandbox's deployment runtime and the stand-in inference server

Without SPOTHUB_SANDBOX_GPU_DIR (or its gpus.json) nvmlInit fails as on a machine without the driver. XID events are
supported and never happen.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GPU_DIR_VARIABLE = "SPOTHUB_SANDBOX_GPU_DIR"
INVENTORY = "gpus.json"
MIB = 1024 * 1024

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_TEMPERATURE_GPU = 0
nvmlEventTypeXidCriticalError = 0x0000000000000008

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_TIMEOUT: "Timeout",
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(_MESSAGES.get(value, f"Unknown Error {value}"))
        self.value = value


@dataclass(frozen=True)
class _Device:
    index: int
    uuid: str
    name: str
    memory_total_mib: int


@dataclass(frozen=True)
class _Memory:
    total: int
    used: int
    free: int


@dataclass(frozen=True)
class _Utilization:
    gpu: int
    memory: int


@dataclass(frozen=True)
class _EventSet:
    devices: tuple[_Device, ...]


_devices: list[_Device] | None = None
_directory: Path | None = None


def nvmlInit() -> None:
    global _devices, _directory  # noqa: PLW0603
    directory = os.environ.get(GPU_DIR_VARIABLE, "")
    if not directory:
        raise NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)
    try:
        inventory = json.loads((Path(directory) / INVENTORY).read_text())
    except (OSError, ValueError) as exc:
        raise NVMLError(NVML_ERROR_DRIVER_NOT_LOADED) from exc
    _directory = Path(directory)
    _devices = [
        _Device(index, str(gpu["uuid"]), str(gpu.get("name", "NVIDIA GPU")), int(gpu.get("memory_total_mib", 0)))
        for index, gpu in enumerate(inventory.get("gpus", []))
    ]


def nvmlShutdown() -> None:
    global _devices  # noqa: PLW0603
    _initialized()
    _devices = None


def nvmlDeviceGetCount() -> int:
    return len(_initialized())


def nvmlDeviceGetHandleByIndex(index: int) -> _Device:
    devices = _initialized()
    if not 0 <= index < len(devices):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return devices[index]


def nvmlDeviceGetIndex(device: _Device) -> int:
    return device.index


def nvmlDeviceGetName(device: _Device) -> str:
    return device.name


def nvmlDeviceGetUUID(device: _Device) -> str:
    return device.uuid


def nvmlDeviceGetMemoryInfo(device: _Device) -> _Memory:
    total = device.memory_total_mib * MIB
    used = min(total, max(0, int(_figures(device).get("memory_used_mib", 0))) * MIB)
    return _Memory(total=total, used=used, free=total - used)


def nvmlDeviceGetUtilizationRates(device: _Device) -> _Utilization:
    figures = _figures(device)
    gpu = min(100, max(0, round(float(figures.get("utilization_pct", 0)))))
    # The memory controller's busy share follows the compute's in a model server: half of it, as a plausible figure.
    return _Utilization(gpu=gpu, memory=gpu // 2)


def nvmlDeviceGetTemperature(device: _Device, sensor: int) -> int:
    if sensor != NVML_TEMPERATURE_GPU:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return 32 + nvmlDeviceGetUtilizationRates(device).gpu * 45 // 100


def nvmlEventSetCreate() -> _EventSet:
    return _EventSet(tuple(_initialized()))


def nvmlDeviceRegisterEvents(device: _Device, event_types: int, event_set: _EventSet) -> None:
    del device, event_types, event_set  # XID events are supported; none ever happens


def nvmlEventSetWait(event_set: _EventSet, timeout_ms: int) -> Any:
    del event_set, timeout_ms
    raise NVMLError(NVML_ERROR_TIMEOUT)


def nvmlEventSetFree(event_set: _EventSet) -> None:
    del event_set


def _initialized() -> list[_Device]:
    if _devices is None:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return _devices


def _figures(device: _Device) -> dict[str, Any]:
    _initialized()
    assert _directory is not None  # noqa: S101 (set with the devices)
    try:
        figures = json.loads((_directory / f"{device.uuid}.json").read_text())
    except (OSError, ValueError):
        return {}
    return figures if isinstance(figures, dict) else {}

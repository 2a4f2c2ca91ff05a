"""The heartbeat (AgentReady and GpuXidErrors in CloudWatch, the control plane's heartbeat) and GPU
health from NVML: absent, failing, or a fake pynvml with GPUs and XID events."""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from spothub_agent.gpu import GpuMonitor
from tests.agent.conftest import INSTANCE_ID, REGION, Aws, FakeControlPlane, FakeWorkload, MakeAgent, wait_for

DIMENSIONS = [{"Name": "Prefix", "Value": "spothub"}, {"Name": "InstanceId", "Value": INSTANCE_ID}]


def metric_values(name: str, statistic: str) -> float | None:
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    now = datetime.now(UTC)
    points = cloudwatch.get_metric_statistics(
        Namespace="Spothub",
        MetricName=name,
        Dimensions=DIMENSIONS,
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(minutes=5),
        Period=600,
        Statistics=[statistic],
    )["Datapoints"]
    return points[0][statistic] if points else None


# --- a fake pynvml ---------------------------------------------------------------------------


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


NVML_ERROR_TIMEOUT = 10
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIBRARY_NOT_FOUND = 12


def fake_pynvml(gpus: int = 2, **overrides: Callable[..., Any]) -> types.ModuleType:
    module = types.ModuleType("pynvml")
    module.NVMLError = NVMLError  # type: ignore[attr-defined]
    module.NVML_ERROR_TIMEOUT = NVML_ERROR_TIMEOUT  # type: ignore[attr-defined]
    module.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    module.nvmlEventTypeXidCriticalError = 8  # type: ignore[attr-defined]
    module.xid_queue = []  # type: ignore[attr-defined]  (device handle, xid) pairs waiting
    module.initialized = 0  # type: ignore[attr-defined]

    def init() -> None:
        module.initialized += 1  # type: ignore[attr-defined]

    def event_wait(_event_set: object, _timeout_ms: int) -> object:
        if not module.xid_queue:  # type: ignore[attr-defined]
            raise NVMLError(NVML_ERROR_TIMEOUT)
        device, xid = module.xid_queue.pop(0)  # type: ignore[attr-defined]
        return types.SimpleNamespace(device=device, eventData=xid, eventType=8)

    functions: dict[str, Callable[..., Any]] = {
        "nvmlInit": init,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: gpus,
        "nvmlDeviceGetHandleByIndex": lambda i: f"handle-{i}",
        "nvmlDeviceGetName": lambda h: b"NVIDIA A10G",
        "nvmlDeviceGetUUID": lambda h: f"GPU-{h}",
        "nvmlDeviceGetMemoryInfo": lambda h: types.SimpleNamespace(total=24 * 1024**3, used=3 * 1024**3),
        "nvmlDeviceGetUtilizationRates": lambda h: types.SimpleNamespace(gpu=87, memory=40),
        "nvmlDeviceGetTemperature": lambda h, sensor: 61,
        "nvmlEventSetCreate": lambda: "event-set",
        "nvmlDeviceRegisterEvents": lambda h, types_, event_set: None,
        "nvmlEventSetWait": event_wait,
        "nvmlEventSetFree": lambda event_set: None,
        **overrides,
    }
    for name, function in functions.items():
        setattr(module, name, function)
    return module


def use_nvml(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType) -> types.ModuleType:
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return module


# --- GPU health -------------------------------------------------------------------------------


def test_no_pynvml_is_reported_plainly() -> None:
    assert GpuMonitor().sample() == {"available": False, "reason": "nvidia-ml-py (pynvml) is not installed"}


def test_no_driver_and_no_gpu_are_reported_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_library() -> None:
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)

    use_nvml(monkeypatch, fake_pynvml(nvmlInit=no_library))
    sample = GpuMonitor().sample()
    assert sample["available"] is False
    assert sample["reason"].startswith("NVML did not initialize (no NVIDIA driver?): NVMLError")
    use_nvml(monkeypatch, fake_pynvml(gpus=0))
    assert GpuMonitor().sample() == {"available": False, "reason": "no GPU found"}


def test_gpu_health_per_gpu_with_xid_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = use_nvml(monkeypatch, fake_pynvml(gpus=2))
    monitor = GpuMonitor()
    first = monitor.sample()
    assert first == {
        "available": True,
        "count": 2,
        "gpus": [
            {
                "index": i,
                "name": "NVIDIA A10G",
                "uuid": f"GPU-handle-{i}",
                "memory_total_mib": 24576,
                "memory_used_mib": 3072,
                "utilization_pct": 87,
                "memory_utilization_pct": 40,
                "temperature_c": 61,
                "xid_errors": 0,
            }
            for i in range(2)
        ],
        "xid_supported": True,
        "xid_errors_new": 0,
    }
    nvml.xid_queue.extend([("handle-1", 79), ("handle-1", 48)])  # type: ignore[attr-defined]
    second = monitor.sample()
    assert second["xid_errors_new"] == 2
    assert second["gpus"][1]["xid_errors"] == 2
    assert second["gpus"][1]["last_xid"] == 48
    assert second["gpus"][0]["xid_errors"] == 0
    third = monitor.sample()
    assert third["xid_errors_new"] == 0
    assert third["gpus"][1]["xid_errors"] == 2  # cumulative since the agent started
    assert nvml.initialized == 1  # type: ignore[attr-defined]


def test_nvml_errors_are_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def lost(*_args: object) -> None:
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)

    use_nvml(monkeypatch, fake_pynvml(gpus=2, nvmlDeviceGetTemperature=lost, nvmlDeviceRegisterEvents=lost))
    sample = GpuMonitor().sample()
    assert sample["available"] is True
    assert sample["errors"] == [
        "gpu 0 temperature_c: NVMLError: NVML error 15",
        "gpu 1 temperature_c: NVMLError: NVML error 15",
    ]
    assert "temperature_c" not in sample["gpus"][0]
    assert sample["gpus"][0]["memory_used_mib"] == 3072
    assert sample["xid_supported"] is False  # events not supported here: no XID metric

    # NVML failing as a whole (the driver went away) makes the sample unavailable, and is retried.
    broken = fake_pynvml(gpus=2)
    monitor = GpuMonitor()
    use_nvml(monkeypatch, broken)
    assert monitor.sample()["available"] is True
    broken.nvmlEventSetWait = lambda *_: (_ for _ in ()).throw(RuntimeError("ctypes: bad handle"))  # type: ignore[attr-defined]
    broken.nvmlDeviceGetName = lost  # type: ignore[attr-defined]
    sample = monitor.sample()
    assert sample["available"] is True and sample["xid_supported"] is False
    broken.nvmlDeviceGetCount = lost  # type: ignore[attr-defined]
    monitor.close()
    assert monitor.sample() == {
        "available": False,
        "reason": "NVML could not list the GPUs: NVMLError: NVML error 15",
    }


def test_an_unexpected_nvml_failure_never_escapes(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = use_nvml(monkeypatch, fake_pynvml(gpus=1))
    monitor = GpuMonitor()
    monitor.sample()
    nvml.nvmlEventSetWait = None  # type: ignore[attr-defined]  # a broken binding: TypeError when called
    monitor._xid_supported = True
    monitor._handles = None  # type: ignore[assignment]  # enumerate(None): TypeError in the sample itself
    sample = monitor.sample()
    assert sample["available"] is False
    assert sample["reason"].startswith("NVML error: TypeError")
    assert monitor.sample()["available"] is True  # initialized again at the next sample


# --- the heartbeat ----------------------------------------------------------------------------


def test_heartbeat_writes_the_metric_and_the_control_plane_record(
    make_agent: MakeAgent, api: FakeControlPlane, aws: Aws
) -> None:
    workload = FakeWorkload()
    workload.is_healthy = True
    agent = make_agent(use=workload)
    stop = threading.Event()
    loop = threading.Thread(target=agent.heartbeat.run, args=(stop,), daemon=True)
    loop.start()
    try:
        wait_for(lambda: api.actions().count("heartbeat") >= 2)
        workload.is_healthy = False
        wait_for(lambda: api.calls[-1].action == "heartbeat" and api.calls[-1].body["ready"] is False)
    finally:
        stop.set()
        loop.join(5)
    assert api.actions()[0] == "register"
    beat = api.calls[1].body
    assert beat == {
        "ready": True,
        "workload": {"state": "running", "exit_code": None, "last_lines": ["last line"]},
        "gpu": {"available": False, "reason": "nvidia-ml-py (pynvml) is not installed"},
        "drained": False,
    }
    assert metric_values("AgentReady", "Maximum") == 1.0
    assert metric_values("AgentReady", "Minimum") == 0.0
    assert metric_values("AgentReady", "SampleCount") >= 3
    assert metric_values("GpuXidErrors", "Sum") is None  # no NVML: no XID metric


def test_xid_errors_become_a_metric(make_agent: MakeAgent, aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = use_nvml(monkeypatch, fake_pynvml(gpus=1))
    agent = make_agent(use=FakeWorkload())
    assert agent.heartbeat.beat().gpu["xid_errors_new"] == 0
    nvml.xid_queue.extend([("handle-0", 79), ("handle-0", 79), ("handle-0", 31)])  # type: ignore[attr-defined]
    beat = agent.heartbeat.beat()
    assert beat.gpu["gpus"][0]["xid_errors"] == 3
    assert metric_values("GpuXidErrors", "Sum") == 3.0
    assert metric_values("GpuXidErrors", "SampleCount") == 2

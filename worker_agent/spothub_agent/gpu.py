"""GPU health from NVML (`pynvml`, from the optional nvidia-ml-py package, imported lazily).

A sample names the GPU count and, per GPU, memory total/used, utilization, temperature and the XID
errors NVML reported since the agent started (critical XID events, drained without waiting at each
sample). A machine without the package, the driver or a GPU reports {"available": false, "reason"}.
An NVML error is caught and reported, in the sample, never raised: a failing query of one GPU names
that GPU and query, and a failure of NVML as a whole makes the sample unavailable with the reason.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from types import ModuleType
from typing import Any

MIB = 1024 * 1024


class GpuMonitor:
    def __init__(self, module: str = "pynvml") -> None:
        self._module_name = module
        self._nvml: ModuleType | None = None
        self._handles: list[Any] = []
        self._events: Any = None
        self._xid_supported = False
        self._xid_counts: dict[int, int] = {}
        self._last_xid: dict[int, int] = {}
        self._lock = threading.Lock()

    def sample(self) -> dict[str, Any]:
        """GPU health now; `xid_errors_new` counts the XID errors since the previous sample."""
        with self._lock:
            try:
                unavailable = self._init()
                if unavailable:
                    return {"available": False, "reason": unavailable}
                return self._sample()
            except Exception as exc:  # NVML raises its own NVMLError subclasses, and ctypes errors
                self._reset()
                return {"available": False, "reason": f"NVML error: {_describe(exc)}"}

    def close(self) -> None:
        with self._lock:
            self._reset()

    def _init(self) -> str:
        """'' once NVML is ready; else why GPU health cannot be read (tried again at the next sample)."""
        if self._nvml is not None:
            return ""
        try:
            nvml = importlib.import_module(self._module_name)
        except ImportError:
            return "nvidia-ml-py (pynvml) is not installed"
        try:
            nvml.nvmlInit()
        except Exception as exc:
            return f"NVML did not initialize (no NVIDIA driver?): {_describe(exc)}"
        try:
            count = int(nvml.nvmlDeviceGetCount())
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:
            _shutdown(nvml)
            return f"NVML could not list the GPUs: {_describe(exc)}"
        if not handles:
            _shutdown(nvml)
            return "no GPU found"
        self._nvml, self._handles = nvml, handles
        self._register_xid_events()
        return ""

    def _register_xid_events(self) -> None:
        nvml = self._nvml
        assert nvml is not None  # noqa: S101
        try:
            self._events = nvml.nvmlEventSetCreate()
            for handle in self._handles:
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, self._events)
            self._xid_supported = True
        except Exception:  # NOT_SUPPORTED on some GPUs and in containers without the capability
            self._xid_supported = False

    def _sample(self) -> dict[str, Any]:
        nvml = self._nvml
        assert nvml is not None  # noqa: S101
        new_xids = self._drain_xid_events()
        gpus = []
        errors: list[str] = []
        for index, handle in enumerate(self._handles):
            gpu: dict[str, Any] = {"index": index}
            for name, query in (
                ("name", lambda h: _text(nvml.nvmlDeviceGetName(h))),
                ("uuid", lambda h: _text(nvml.nvmlDeviceGetUUID(h))),
                ("memory", nvml.nvmlDeviceGetMemoryInfo),
                ("utilization", nvml.nvmlDeviceGetUtilizationRates),
                ("temperature_c", lambda h: int(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))),
            ):
                try:
                    value = query(handle)
                except Exception as exc:
                    errors.append(f"gpu {index} {name}: {_describe(exc)}")
                    continue
                if name == "memory":
                    gpu["memory_total_mib"] = int(value.total) // MIB
                    gpu["memory_used_mib"] = int(value.used) // MIB
                elif name == "utilization":
                    gpu["utilization_pct"] = int(value.gpu)
                    gpu["memory_utilization_pct"] = int(value.memory)
                else:
                    gpu[name] = value
            if self._xid_supported:
                gpu["xid_errors"] = self._xid_counts.get(index, 0)
                if index in self._last_xid:
                    gpu["last_xid"] = self._last_xid[index]
            gpus.append(gpu)
        sample: dict[str, Any] = {"available": True, "count": len(gpus), "gpus": gpus}
        sample["xid_supported"] = self._xid_supported
        if self._xid_supported:
            sample["xid_errors_new"] = new_xids
        if errors:
            sample["errors"] = errors
        return sample

    def _drain_xid_events(self) -> int:
        nvml = self._nvml
        if not self._xid_supported or nvml is None:
            return 0
        new = 0
        timeout_code = getattr(nvml, "NVML_ERROR_TIMEOUT", None)
        while True:
            try:
                event = nvml.nvmlEventSetWait(self._events, 0)
            except Exception as exc:
                if getattr(exc, "value", None) != timeout_code:  # TIMEOUT: no event waiting
                    self._xid_supported = False
                return new
            index = self._index_of(event.device)
            self._xid_counts[index] = self._xid_counts.get(index, 0) + 1
            self._last_xid[index] = int(event.eventData)
            new += 1

    def _index_of(self, device: Any) -> int:
        """The GPU an event names (-1: none): ctypes handles compare by identity, so NVML says which."""
        try:
            return int(self._nvml.nvmlDeviceGetIndex(device))  # type: ignore[union-attr]
        except Exception:
            return next((index for index, handle in enumerate(self._handles) if handle == device), -1)

    def _reset(self) -> None:
        if self._nvml is not None:
            if self._events is not None:
                with contextlib.suppress(Exception):  # best effort on the way out
                    self._nvml.nvmlEventSetFree(self._events)
            _shutdown(self._nvml)
        self._nvml, self._handles, self._events, self._xid_supported = None, [], None, False


def _shutdown(nvml: ModuleType) -> None:
    with contextlib.suppress(Exception):  # best effort on the way out
        nvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"

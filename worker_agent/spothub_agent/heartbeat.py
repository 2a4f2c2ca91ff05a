"""The heartbeat, every heartbeat_s: CloudWatch metrics in the instance's region, then the control plane's
record of the instance (last_seen, readiness, workload, GPU health) through the reconnect watchdog, as
the agent API's Heartbeat model (spothub_core.models.agent).

Metrics (namespace `Spothub`, dimensions Prefix and InstanceId):
  AgentReady    one datapoint per heartbeat while the agent runs: 1 when the workload answers its
                health check (and the instance is not drained), 0 when it does not (yet). Its absence
                is what the per-instance alarm watches (SampleCount, missing data breaching); the
                value says whether the instance can serve. On a deployment node (node.py): 1 while NVML sees
                its GPUs and no interruption warning came.
  GpuXidErrors  XID errors NVML reported since the previous heartbeat, when NVML can report them.

When the control plane does not answer, the metrics go on at the same pace while the API is retried
with capped, jittered backoff (see watchdog); nothing here stops the agent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_agent.aws import error_code
from spothub_agent.backoff import Backoff
from spothub_agent.gpu import GpuMonitor
from spothub_agent.logs import log_event, warn
from spothub_agent.state import AgentState
from spothub_agent.watchdog import ControlPlaneLink
from spothub_agent.workload import Workload
from spothub_core.contracts import METRICS_NAMESPACE, AgentMetric
from spothub_core.models.agent import Heartbeat as HeartbeatBody
from spothub_core.models.agent import WorkloadHealth


class Heartbeat:
    def __init__(
        self,
        cloudwatch: Callable[[], Any],
        link: ControlPlaneLink,
        workload: Workload | None,
        gpu: GpuMonitor,
        state: AgentState,
        *,
        prefix: str,
        instance_id: str,
        heartbeat_s: float,
        backoff: Backoff,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cloudwatch = cloudwatch
        self._link = link
        self._workload = workload
        self._gpu = gpu
        self._state = state
        self._prefix = prefix
        self._instance_id = instance_id
        self._heartbeat_s = heartbeat_s
        self._backoff = backoff
        self._monotonic = monotonic
        self.beats = 0
        self.last: HeartbeatBody | None = None

    def run(self, stop: threading.Event) -> None:
        next_beat = self._monotonic()
        next_api_try = next_beat
        pending: HeartbeatBody | None = None  # the heartbeat the control plane has not taken yet
        while not stop.is_set():
            now = self._monotonic()
            if now >= next_beat:
                pending = self.beat()
                next_beat = now + self._heartbeat_s
            if pending is not None and self._monotonic() >= next_api_try:
                if self._link.beat(pending):
                    if self._backoff.failures:
                        log_event("control_plane_reconnected", api_url=self._link.api_url)
                    self._backoff.reset()
                    pending = None
                else:
                    next_api_try = self._monotonic() + self._backoff.next_delay()
            wake = next_beat if pending is None else min(next_beat, next_api_try)
            stop.wait(max(0.0, wake - self._monotonic()))

    def beat(self) -> HeartbeatBody:
        """Sample, put the metrics; returns the control plane's heartbeat body."""
        gpu = self._gpu.sample()
        ready, workload, drained = self.assess(gpu)
        self._put_metrics(ready, gpu)
        self.beats += 1
        self.last = HeartbeatBody(ready=ready, workload=workload, gpu=gpu, drained=drained)
        return self.last

    def assess(self, gpu: dict[str, Any]) -> tuple[bool, WorkloadHealth, bool]:
        """(ready, the workload's report, drained): ready while the workload answers its health check and the
        instance was not drained. Node mode (node.py) judges a node by its GPUs instead."""
        del gpu  # a serving instance's readiness is its workload's
        if self._workload is None:
            raise RuntimeError("a heartbeat without a workload must say how it assesses readiness")
        status = self._workload.status()
        drained = self._state.drained
        ready = not drained and status.state not in ("exited", "stopped") and self._workload.healthy()
        return ready, status.report(), drained

    def _put_metrics(self, ready: bool, gpu: dict[str, Any]) -> None:
        dimensions = [{"Name": "Prefix", "Value": self._prefix}, {"Name": "InstanceId", "Value": self._instance_id}]
        data = [
            {"MetricName": AgentMetric.READY.value, "Dimensions": dimensions, "Value": 1.0 if ready else 0.0},
        ]
        if gpu.get("xid_supported"):
            data.append(
                {
                    "MetricName": AgentMetric.GPU_XID_ERRORS.value,
                    "Dimensions": dimensions,
                    "Value": float(gpu.get("xid_errors_new", 0)),
                    "Unit": "Count",
                }
            )
        try:
            self._cloudwatch().put_metric_data(Namespace=METRICS_NAMESPACE, MetricData=data)
        except (BotoCoreError, ClientError) as exc:
            warn("metrics_failed", error=error_code(exc), reason=str(exc)[:300])

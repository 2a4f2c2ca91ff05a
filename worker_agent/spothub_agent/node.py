"""The agent in node mode: an instance tagged Service=model-node (contracts.MODEL_NODE_SERVICE), a member of a model
deployments' node group (`<prefix>-nodes-<class>`). ECS runs the deployments' tasks on it, placed by the hub's
deployment controller; the agent runs nothing of its own. It reports:

  notices    IMDS every poll_s; each capacity notice published once to the hub bus, as on every instance (the
             deployment controller consumes them: it replaces the node's tasks elsewhere before the node goes).
             An interruption warning is remembered (state file); there is no drain to run: ECS stops the tasks
             with the instance, once the controller has replaced them.
  heartbeat  every heartbeat_s: AgentReady in CloudWatch, then `agents/{id}/heartbeat` through the reconnect
             watchdog (register first; again after a 404 or a failure), with the GPU sample of gpu.py (per GPU:
             index, uuid, utilization_pct, memory_used_mib, memory_total_mib, ...). The controller copies it onto
             the node's record: a deployment's GPU utilization is the mean over its tasks' GPUs, found by uuid (ECS's
             gpuIds of a task are the NVIDIA UUIDs NVML reports).

No lifecycle loop: a node group has no launch hook (a node is in service once ECS registers it; the controller
places on it only after it registered and its agent reported GPUs).

Readiness (the heartbeat's `ready`, AgentReady 1): NVML answers and names at least one GPU, and no interruption
warning was seen. A node whose GPUs NVML cannot see cannot run a GPU task whatever ECS registered, so it is not
ready; an interrupted node takes no new placement (`drained` true from the warning on). The heartbeat's workload
says `{"state": "none"}`: the tasks' health is ECS's to report, not the agent's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from spothub_agent.agent import run_guarded
from spothub_agent.aws import AwsClients
from spothub_agent.backoff import Backoff
from spothub_agent.config import AgentConfig
from spothub_agent.gpu import GpuMonitor
from spothub_agent.heartbeat import Heartbeat
from spothub_agent.imds import Imds
from spothub_agent.logs import log_event
from spothub_agent.notices import Notice, NoticeWatch
from spothub_agent.publisher import Publisher, hub_bus_arn
from spothub_agent.settings import Settings
from spothub_agent.state import AgentState
from spothub_agent.watchdog import instance_link
from spothub_core.models.agent import WorkloadHealth
from spothub_core.timings import AGENT_LOOP_JOIN_SECONDS, SPOT_NOTICE_WINDOW_SECONDS

# What a node's heartbeat says of its workload: it runs none of its own (ECS runs the deployments' tasks).
NO_WORKLOAD = "none"


def gpus_seen(gpu: dict[str, Any]) -> bool:
    """NVML answered and named at least one GPU."""
    return gpu.get("available") is True and int(gpu.get("count") or 0) > 0


class NodeInterruption:
    """The notice watch's drainer on a node: no workload to drain. The warning is recorded once (state file, so a
    restarted agent keeps reporting the node as going) and logged; the capacity notice itself goes to the hub."""

    def __init__(self, state: AgentState, *, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._clock = clock

    def begin(self, notice: Notice) -> None:
        if self._state.begin_drain(notice.notice_id, self._clock() + SPOT_NOTICE_WINDOW_SECONDS):
            log_event("node_interrupted", notice_id=notice.notice_id, action=notice.action, action_time=notice.time)


class NodeHeartbeat(Heartbeat):
    """A node's heartbeat: ready while NVML sees its GPUs and it was not interrupted (see the module docstring)."""

    def assess(self, gpu: dict[str, Any]) -> tuple[bool, WorkloadHealth, bool]:
        interrupted = self._state.drain is not None
        return gpus_seen(gpu) and not interrupted, WorkloadHealth(state=NO_WORKLOAD), interrupted


class NodeAgent:
    def __init__(
        self,
        config: AgentConfig,
        settings: Settings,
        imds: Imds,
        aws: AwsClients,
        *,
        state: AgentState | None = None,
        gpu: GpuMonitor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.settings = settings
        self.state = state or AgentState(settings.state_dir, config.instance_id, clock=clock)
        self.gpu = gpu or GpuMonitor()
        self._aws = aws
        bus = hub_bus_arn(config.hub_region, config.account_id, config.prefix) if config.account_id else ""
        self.publisher = Publisher(lambda: aws.events, bus or f"{config.prefix}-hub")
        self.notices = NoticeWatch(
            imds,
            self.state,
            self.publisher,
            NodeInterruption(self.state, clock=clock),
            instance_id=config.instance_id,
            region=config.region,
            poll_s=settings.poll_s,
        )
        self.link = instance_link(config, aws, self.state)
        self.heartbeat = NodeHeartbeat(
            lambda: aws.cloudwatch,
            self.link,
            None,
            self.gpu,
            self.state,
            prefix=config.prefix,
            instance_id=config.instance_id,
            heartbeat_s=settings.heartbeat_s,
            backoff=Backoff(settings.backoff_base_s, settings.backoff_cap_s),
        )
        self._threads: list[threading.Thread] = []

    def start(self, stop: threading.Event) -> None:
        self._aws.warm()
        sample = self.gpu.sample()
        log_event(
            "node_mode_started",
            instance_id=self.config.instance_id,
            group=self.config.auto_scaling_group,
            gpus=sample.get("count", 0),
            gpu_uuids=[g.get("uuid") for g in sample.get("gpus", [])],
            gpu_reason=sample.get("reason"),
        )
        for name, loop in (("notices", self.notices.run), ("heartbeat", self.heartbeat.run)):
            thread = threading.Thread(target=run_guarded, args=(name, loop, stop), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def run(self, stop: threading.Event) -> None:
        self.start(stop)
        stop.wait()
        self.shutdown()

    def shutdown(self) -> None:
        for thread in self._threads:
            thread.join(AGENT_LOOP_JOIN_SECONDS)
        self.gpu.close()

"""The agent: three loops on threads, sharing one stop event, the state file and the workload.

  notices    IMDS every poll_s; publishes capacity notices, starts the drain (its own thread)
  lifecycle  until the launch lifecycle action is completed (CONTINUE or ABANDON), then ends
  heartbeat  metrics every heartbeat_s, and the control plane through the reconnect watchdog

The agent reports and executes; the control plane decides. On SIGTERM the loops end; a drain under
way is finished first (it is bounded by its own deadline); a process workload is stopped with the
agent, as systemd would, while containers outlive it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from spothub_agent.aws import AwsClients
from spothub_agent.backoff import Backoff
from spothub_agent.config import AgentConfig
from spothub_agent.drain import Drain
from spothub_agent.gpu import GpuMonitor
from spothub_agent.heartbeat import Heartbeat
from spothub_agent.imds import Imds
from spothub_agent.lifecycle import LifecycleCompletion
from spothub_agent.logs import log_event, warn
from spothub_agent.notices import NoticeWatch
from spothub_agent.publisher import Publisher, hub_bus_arn
from spothub_agent.settings import Settings
from spothub_agent.state import AgentState
from spothub_agent.watchdog import instance_link
from spothub_agent.workload import Workload, make_workload
from spothub_core.timings import (
    AGENT_DRAIN_REPORT_SECONDS,
    AGENT_LOOP_JOIN_SECONDS,
    AGENT_LOOP_RESTART_SECONDS,
    SPOT_NOTICE_WINDOW_SECONDS,
)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        settings: Settings,
        imds: Imds,
        aws: AwsClients,
        *,
        state: AgentState | None = None,
        workload: Workload | None = None,
        gpu: GpuMonitor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.settings = settings
        self.state = state or AgentState(settings.state_dir, config.instance_id, clock=clock)
        self.workload = workload or make_workload(settings, self.state)
        self.gpu = gpu or GpuMonitor()
        self._aws = aws
        self._clock = clock
        # With the account (identity document) the bus ARN; without, the name, in the hub region's client.
        bus = hub_bus_arn(config.hub_region, config.account_id, config.prefix) if config.account_id else ""
        self.publisher = Publisher(lambda: aws.events, bus or f"{config.prefix}-hub")
        self.drain = Drain(
            self.state,
            self.workload,
            self.publisher,
            settings,
            region=config.region,
            instance_id=config.instance_id,
            clock=clock,
        )
        self.notices = NoticeWatch(
            imds,
            self.state,
            self.publisher,
            self.drain,
            instance_id=config.instance_id,
            region=config.region,
            poll_s=settings.poll_s,
        )
        self.lifecycle = LifecycleCompletion(
            lambda: aws.autoscaling,
            self.state,
            self.workload,
            instance_id=config.instance_id,
            group=config.auto_scaling_group,
            hook=config.lifecycle_hook,
            healthy_within_s=settings.healthy_within_s,
            poll_s=settings.poll_s,
            heartbeat_s=settings.lifecycle_heartbeat_s,
            backoff=Backoff(settings.backoff_base_s, settings.backoff_cap_s),
            clock=clock,
        )
        self.link = instance_link(config, aws, self.state)
        self.heartbeat = Heartbeat(
            lambda: aws.cloudwatch,
            self.link,
            self.workload,
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
        # After a drain began, only adopt (to finish stopping it, or to report it): never start it again.
        self.workload.start(launch=self.state.drain is None)
        self.drain.resume()
        for name, loop in (
            ("notices", self.notices.run),
            ("lifecycle", self.lifecycle.run),
            ("heartbeat", self.heartbeat.run),
        ):
            thread = threading.Thread(target=run_guarded, args=(name, loop, stop), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def run(self, stop: threading.Event) -> None:
        self.start(stop)
        stop.wait()
        self.shutdown()

    def shutdown(self) -> None:
        """After the stop event: let a drain finish, release the workload, wait briefly for the loops."""
        if self.drain.active:
            deadline = float((self.state.drain or {}).get("deadline", self._clock() + SPOT_NOTICE_WINDOW_SECONDS))
            log_event("stopping_after_drain", seconds_left=round(deadline - self._clock(), 1))
            self.drain.join(max(0.0, deadline - self._clock()) + AGENT_DRAIN_REPORT_SECONDS)
        if self.state.drain is None:
            self.workload.release()
        for thread in self._threads:
            thread.join(AGENT_LOOP_JOIN_SECONDS)
        self.gpu.close()


def run_guarded(name: str, loop: Callable[[threading.Event], None], stop: threading.Event) -> None:
    """A loop that raises is logged and started again after a pause: no bug ends a watcher for good."""
    while not stop.is_set():
        try:
            loop(stop)
            return
        except Exception as exc:
            warn("loop_crashed", loop=name, reason=repr(exc))
            stop.wait(AGENT_LOOP_RESTART_SECONDS)

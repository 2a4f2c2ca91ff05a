"""Completes the group's launch lifecycle action: the instance enters service only once its workload is
healthy (CONTINUE), or is abandoned, so the group replaces it, when it is not healthy within
healthy_within_s (ABANDON, with the reason logged and kept in the state file).

While waiting, RecordLifecycleActionHeartbeat extends the hook's timeout every lifecycle_heartbeat_s.
The wait is measured from when the agent first began it (state file), so restarts do not extend it.
Done once: the state file records the result. "No active Lifecycle Action found" means the action
was completed already or expired; it is recorded and the agent moves on. Other failures are retried.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_agent.aws import error_code
from spothub_agent.backoff import Backoff
from spothub_agent.logs import log_event, warn
from spothub_agent.state import AgentState
from spothub_agent.workload import Workload

CONTINUE = "CONTINUE"
ABANDON = "ABANDON"
NOT_ACTIVE = "NOT_ACTIVE"
NO_ACTIVE_ACTION = "No active Lifecycle Action found"


class LifecycleCompletion:
    def __init__(
        self,
        autoscaling: Callable[[], Any],
        state: AgentState,
        workload: Workload,
        *,
        instance_id: str,
        group: str,
        hook: str,
        healthy_within_s: float,
        poll_s: float,
        heartbeat_s: float,
        backoff: Backoff,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._autoscaling = autoscaling
        self._state = state
        self._workload = workload
        self._instance_id = instance_id
        self._group = group
        self._hook = hook
        self._healthy_within_s = healthy_within_s
        self._poll_s = poll_s
        self._heartbeat_s = heartbeat_s
        self._backoff = backoff
        self._clock = clock
        self._monotonic = monotonic

    def run(self, stop: threading.Event) -> None:
        if self._state.lifecycle is not None:
            log_event("lifecycle_already_done", **(self._state.lifecycle or {}))
            return
        waiting_since = self._state.lifecycle_wait_started()
        last_heartbeat = self._monotonic()
        log_event("lifecycle_waiting", hook=self._hook, healthy_within_s=self._healthy_within_s)
        while not stop.is_set():
            if self._state.drain is not None:
                log_event("lifecycle_skipped", reason="the instance is being drained after an interruption warning")
                return
            decision = self._decide(waiting_since)
            if decision is not None:
                result, reason = decision
                if self._complete(result, reason):
                    return
                stop.wait(self._backoff.next_delay())
                continue
            if self._monotonic() - last_heartbeat >= self._heartbeat_s:
                if self._record_heartbeat():
                    return
                last_heartbeat = self._monotonic()
            stop.wait(self._poll_s)

    def _decide(self, waiting_since: float) -> tuple[str, str] | None:
        if self._workload.healthy():
            return CONTINUE, "the workload answers its health check"
        status = self._workload.status()
        waited = self._clock() - waiting_since
        last = f"; last output: {status.last_lines[-1]}" if status.last_lines else ""
        if status.ended and not self._workload.restarts_itself:
            return ABANDON, f"the workload {status.state} (exit code {status.exit_code}) before it was healthy{last}"
        if waited >= self._healthy_within_s:
            return (
                ABANDON,
                f"the workload was not healthy within {self._healthy_within_s:g}s "
                f"(state {status.state}{', ' + status.detail if status.detail else ''}){last}",
            )
        return None

    def _complete(self, result: str, reason: str) -> bool:
        """True when the action is settled (completed now, or no longer open)."""
        try:
            self._autoscaling().complete_lifecycle_action(
                LifecycleHookName=self._hook,
                AutoScalingGroupName=self._group,
                LifecycleActionResult=result,
                InstanceId=self._instance_id,
            )
        except ClientError as exc:
            if NO_ACTIVE_ACTION in str(exc):
                self._state.record_lifecycle(NOT_ACTIVE, f"wanted {result} ({reason}): {exc}")
                log_event("lifecycle_not_active", wanted=result, reason=reason)
                return True
            warn("lifecycle_complete_failed", result=result, error=error_code(exc), reason=str(exc)[:300])
            return False
        except BotoCoreError as exc:
            warn("lifecycle_complete_failed", result=result, error=error_code(exc), reason=str(exc)[:300])
            return False
        self._state.record_lifecycle(result, reason)
        log_event("lifecycle_completed", result=result, reason=reason, hook=self._hook, group=self._group)
        return True

    def _record_heartbeat(self) -> bool:
        """Extend the hook's timeout; True when there is no open action any more (nothing to wait for)."""
        try:
            self._autoscaling().record_lifecycle_action_heartbeat(
                LifecycleHookName=self._hook, AutoScalingGroupName=self._group, InstanceId=self._instance_id
            )
        except ClientError as exc:
            if NO_ACTIVE_ACTION in str(exc):
                self._state.record_lifecycle(NOT_ACTIVE, f"no open action while waiting: {exc}")
                log_event("lifecycle_not_active", wanted="heartbeat")
                return True
            warn("lifecycle_heartbeat_failed", error=error_code(exc), reason=str(exc)[:300])
        except BotoCoreError as exc:
            warn("lifecycle_heartbeat_failed", error=error_code(exc), reason=str(exc)[:300])
        else:
            log_event("lifecycle_heartbeat", hook=self._hook)
        return False

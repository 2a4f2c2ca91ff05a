"""The deployment controller's scaling step for one deployment, after the health step (logic/deployment_health.py):
the desired replicas against the slots, autoscaling, deletion, and the deployment's status.

- Deleting: every live task is stopped (retire deleted); once all have ended, the deployment is marked deleted and
  its tenant's reservation given back, once (store.release_reservation's condition), with a scaling event.
- Autoscaling (running or degraded deployments with `autoscale`): `autoscale_decision` below, applied through
  store.change_replicas against the tenant's quota (over it: capped at what fits, or refused), each decision a
  scaling event.
- Slots: each slot 0..replicas-1 with no task serving it or coming (and that has not given up) gets a pending
  task; the tasks of slots >= replicas are retired (scale-down) and stopped.
- Rollup (`rollup` below): the status and last_error from the tasks, written only while the deployment is not
  being deleted (the race with a DELETE).

Autoscaling policy (decided here, one decision per cooldown):
- utilization: the mean GPU utilization of the deployment's running tasks (their GPUs matched by NVIDIA UUID in the
  node's last agent heartbeat, heartbeats within DEPLOYMENT_UTILIZATION_WINDOW_SECONDS only); none known → nothing
  decided.
- up when utilization >= target x 1.10: to the replicas that would bring it to the target (running x utilization /
  target, rounded up), at least one more, at most double, within max_replicas; not while an earlier scale-up is
  still starting (a slot below `replicas` not running yet).
- down when utilization <= target x 0.80: one replica fewer, never below min_replicas nor below 1 (a deployment at
  zero has no utilization to scale back up on), and only when the replicas left would still run at or below the
  target (no flapping: a step down never calls for a step up).
- replicas outside min..max (the bounds changed): brought within them at once.
- every decision that changes replicas, or is capped or refused by the tenant's quota, is a scaling event and
  starts the cooldown (a refusal too: otherwise it would be retried and recorded every run).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from spothub_core.dal.deployment_store import CreateOutcome
from spothub_core.logic.deployment_context import ControllerContext
from spothub_core.logic.deployment_health import (
    LIVE,
    current_tasks,
    record_event,
    slot_gave_up,
    slot_occupied,
    stop,
)
from spothub_core.logic.deployment_ids import new_task_id
from spothub_core.models.deployment_records import (
    DeploymentStatus,
    DeploymentTask,
    GpuNode,
    ModelDeployment,
    RetireReason,
    ScalingResult,
    ScalingTrigger,
    TaskStatus,
)
from spothub_core.timings import (
    DEPLOYMENT_CREATING_LIMIT_SECONDS,
    DEPLOYMENT_RECORD_TTL_SECONDS,
    DEPLOYMENT_UTILIZATION_WINDOW_SECONDS,
)

UP_THRESHOLD = 1.10  # utilization / target at or above which replicas are added
DOWN_THRESHOLD = 0.80  # at or below which one is taken away
MAX_UP_FACTOR = 2  # one decision at most doubles the replicas
# The statuses the rollup writes from, and to: never over a deletion.
ROLLUP_STATUSES = (
    DeploymentStatus.CREATING,
    DeploymentStatus.RUNNING,
    DeploymentStatus.DEGRADED,
    DeploymentStatus.FAILED,
)
AUTOSCALED_STATUSES = (DeploymentStatus.RUNNING, DeploymentStatus.DEGRADED)


# --- autoscaling ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AutoscaleDecision:
    desired: int  # within min..max
    wanted: int  # what the utilization asked for, before min..max
    reason: str

    @property
    def capped(self) -> bool:
        return self.desired != self.wanted


def autoscale_decision(
    *,
    replicas: int,
    running: int,
    waiting: int,
    utilization: float | None,
    target: float,
    min_replicas: int,
    max_replicas: int,
    now: float,
    last_scaled_at: float | None,
    cooldown_s: float,
) -> AutoscaleDecision | None:
    """The replicas a deployment should have, or None to leave them. `running`: replicas healthy now (their
    utilization is `utilization`, percent); `waiting`: replicas wanted and not running yet (an earlier scale-up
    still starting, a restart)."""
    if replicas < min_replicas or replicas > max_replicas:
        bounded = min(max(replicas, min_replicas), max_replicas)
        return AutoscaleDecision(
            bounded, bounded, f"{replicas} replicas outside {min_replicas}..{max_replicas}: {replicas} → {bounded}"
        )
    cooling = last_scaled_at is not None and now - last_scaled_at < cooldown_s
    if utilization is None or running < 1 or cooling:
        return None
    ratio = utilization / target
    # The replicas that would run at the target: the load (running x utilization) spread at `target` each.
    needed = math.ceil(running * ratio - 1e-9)
    measured = f"GPU utilization {utilization:.0f}% vs target {target:.0f}%"
    if ratio >= UP_THRESHOLD and not waiting:  # waiting: an earlier scale-up has not landed yet
        wanted = max(replicas + 1, min(needed, replicas * MAX_UP_FACTOR))
        desired = min(wanted, max_replicas)
        limit = f" (wanted {wanted}, max_replicas {max_replicas})" if desired != wanted else ""
    elif ratio <= DOWN_THRESHOLD:
        wanted = desired = max(replicas - 1, min_replicas, 1)
        if needed > desired:
            return None  # one fewer would run above the target: stay
        limit = ""
    else:
        return None
    if desired == replicas:
        return None  # at max_replicas (or min_replicas) already: nothing to decide
    return AutoscaleDecision(desired, wanted, f"{measured}: {replicas} → {desired} replicas{limit}")


def deployment_utilization(
    tasks: Iterable[DeploymentTask],
    nodes: dict[str, GpuNode],
    now: float,
    *,
    window: float = DEPLOYMENT_UTILIZATION_WINDOW_SECONDS,
) -> float | None:
    """The mean utilization of the running tasks' GPUs (matched by NVIDIA UUID: ECS's gpuIds are the agent's
    `uuid`), from heartbeats within `window`; None when none is known."""
    samples: list[float] = []
    for task in tasks:
        if task.status != TaskStatus.RUNNING or not task.instance_id:
            continue
        node = nodes.get(task.instance_id)
        if node is None or node.last_heartbeat is None or now - node.last_heartbeat > window:
            continue
        ids = set(task.gpu_ids)
        samples.extend(g.utilization_pct for g in node.gpu_usage if g.uuid in ids and g.utilization_pct is not None)
    return sum(samples) / len(samples) if samples else None


# --- the rollup ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollup:
    status: DeploymentStatus
    last_error: str | None


def rollup(deployment: ModelDeployment, tasks: list[DeploymentTask], now: float) -> Rollup:
    """The status of a deployment that is not being deleted, from its tasks:
    - every desired slot running → running (last_error cleared), unless one gave up (served by the task its
      replacement was to replace: degraded);
    - some running → degraded, or creating while it never ran (past DEPLOYMENT_CREATING_LIMIT_SECONDS: degraded,
      saying what holds the rest);
    - none running and a slot gave up → failed (last_error: why it gave up);
    - none running, never ran, past the creating limit → failed, saying what held it (no capacity, the image pull,
      the health check); before that → creating; a failed deployment stays failed until a replica runs.
    The last_error of a deployment not running says why: the give-up, what holds it, the latest stop."""
    wanted = deployment.replicas
    running = {t.slot for t in tasks if t.status == TaskStatus.RUNNING and t.slot < wanted}
    # A slot can have given up and still be served: by the task its last replacement was to replace.
    gave_up = [task for slot in range(wanted) if (task := slot_gave_up(tasks, slot, deployment.restart_generation))]
    if len(running) >= wanted and not gave_up:
        return Rollup(DeploymentStatus.RUNNING, None)
    why = _gave_up_error(gave_up) or held(deployment, tasks, now, running)
    creating = deployment.status == DeploymentStatus.CREATING
    overdue = creating and now - deployment.created_at >= DEPLOYMENT_CREATING_LIMIT_SECONDS
    if overdue and not gave_up:
        why = f"not running after {DEPLOYMENT_CREATING_LIMIT_SECONDS // 60} min: {why}"
    if running:
        status = DeploymentStatus.CREATING if creating and not overdue else DeploymentStatus.DEGRADED
    elif gave_up or overdue:
        status = DeploymentStatus.FAILED
    elif deployment.status == DeploymentStatus.FAILED:
        status, why = DeploymentStatus.FAILED, deployment.last_error or why
    else:
        status = DeploymentStatus.CREATING if creating else DeploymentStatus.DEGRADED
    return Rollup(status, why)


def _gave_up_error(gave_up: list[DeploymentTask]) -> str | None:
    if not gave_up:
        return None
    latest = max(gave_up, key=lambda t: t.task_id)
    slots = ", ".join(str(t.slot) for t in sorted(gave_up, key=lambda t: t.slot))
    return f"slot{'s' if len(gave_up) > 1 else ''} {slots} {latest.last_error or 'gave up'}"


def held(deployment: ModelDeployment, tasks: list[DeploymentTask], now: float, running: set[int]) -> str | None:
    """What keeps the slots that are not running from running, in a few words each."""
    waiting_slots = [slot for slot in range(deployment.replicas) if slot not in running]
    current = [t for slot in waiting_slots for t in current_tasks(tasks, slot)]
    parts: list[str] = []
    backoff = [t for t in current if t.status == TaskStatus.PENDING and t.not_before and t.not_before > now]
    unplaced = [t for t in current if t.status == TaskStatus.PENDING and t not in backoff]
    starting = [t for t in current if t.status == TaskStatus.STARTING]
    unhealthy = [t for t in current if t.status == TaskStatus.UNHEALTHY]
    latest_stop = _latest_stop(tasks, waiting_slots)
    if unplaced:
        parts.append(f"no capacity: {_count(len(unplaced))} waiting for {deployment.node_class} nodes")
    if backoff:
        parts.append(f"restarting: {_count(len(backoff))} in restart backoff")
    if starting:
        parts.append(f"health check: {_count(len(starting))} started, not healthy yet")
    if unhealthy:
        parts.append(f"health check: {_count(len(unhealthy))} failing")
    if latest_stop:
        parts.append(f"last stop: {latest_stop}")
    return "; ".join(parts) or None


def _latest_stop(tasks: list[DeploymentTask], slots: list[int]) -> str | None:
    """The reason of the latest unexpected stop among those slots' tasks (image pull, exit code, health check)."""
    wanted = set(slots)
    failed = [t for t in tasks if t.slot in wanted and t.last_error and t.stopped_at is not None]
    return max(failed, key=lambda t: (t.stopped_at or 0, t.task_id)).last_error if failed else None


def _count(n: int) -> str:
    return f"{n} task{'s' if n != 1 else ''}"


# --- the step ------------------------------------------------------------------------------------------------


def reconcile(
    ctx: ControllerContext, deployment: ModelDeployment, tasks: list[DeploymentTask], nodes: dict[str, GpuNode]
) -> tuple[ModelDeployment, list[DeploymentTask]]:
    """Bring the deployment's tasks to its desired replicas (after autoscaling), or to none when it is being
    deleted, and write its status; the deployment as stored and its tasks as they are now, oldest first."""
    step = _Reconcile(ctx, tasks)
    if deployment.status == DeploymentStatus.DELETED:
        return deployment, step.tasks()
    if deployment.autoscale is not None and deployment.status in AUTOSCALED_STATUSES:
        deployment = step.autoscale(deployment, nodes)
    if deployment.status == DeploymentStatus.DELETING:
        deployment = step.delete(deployment)
    else:
        step.scale_down(deployment)
        step.fill_slots(deployment)
        deployment = step.write_status(deployment)
    return deployment, step.final(deployment.deployment_id)


class _Reconcile:
    def __init__(self, ctx: ControllerContext, tasks: list[DeploymentTask]) -> None:
        self.ctx = ctx
        self.by_id: dict[str, DeploymentTask] = {t.task_id: t for t in tasks}
        self.lost_race = False

    def tasks(self) -> list[DeploymentTask]:
        return sorted(self.by_id.values(), key=lambda t: t.task_id)

    def final(self, deployment_id: str) -> list[DeploymentTask]:
        """The tasks as they are now: as read and written here, or as stored when a write found one moved."""
        return self.ctx.store.tasks(deployment_id) if self.lost_race else self.tasks()

    def _keep(self, task: DeploymentTask | None) -> None:
        if task is None:
            self.lost_race = True
        else:
            self.by_id[task.task_id] = task

    # deletion -------------------------------------------------------------------------------------------------

    def delete(self, deployment: ModelDeployment) -> ModelDeployment:
        """Stop every live task; once all have ended, the deployment deleted and its reservation given back."""
        for task in self.tasks():
            if task.status in LIVE and task.status != TaskStatus.STOPPING:
                self._keep(stop(self.ctx, task, RetireReason.DELETED, "spothub: deployment deleted"))
        if any(not t.status.ended for t in self.tasks()):
            return deployment  # stopping: their stops are seen by a later run's health step
        gone = deployment.model_copy(update={"expires_at": int(self.ctx.now + DEPLOYMENT_RECORD_TTL_SECONDS)})
        # release_reservation's condition (not deleted yet) gives the tenant's GPUs back once, however many runs
        # get here: only the run that released records the event.
        if self.ctx.store.release_reservation(gone):
            record_event(
                self.ctx,
                deployment,
                ScalingTrigger.MANUAL,
                "deleted",
                before=deployment.replicas,
                after=0,
                result=ScalingResult.APPLIED,
            )
        return self.ctx.store.get_deployment(deployment.deployment_id) or gone

    # slots ----------------------------------------------------------------------------------------------------

    def scale_down(self, deployment: ModelDeployment) -> None:
        for task in self.tasks():
            if task.slot < deployment.replicas or task.status not in LIVE or task.status == TaskStatus.STOPPING:
                continue
            if task.retire in (RetireReason.SCALE_DOWN, RetireReason.DELETED):
                continue  # stopped already, or its stop is the health step's (a lost update)
            self._keep(stop(self.ctx, task, RetireReason.SCALE_DOWN, "spothub: scale-down"))

    def fill_slots(self, deployment: ModelDeployment) -> None:
        for slot in range(deployment.replicas):
            tasks = self.tasks()
            if slot_occupied(tasks, slot) or slot_gave_up(tasks, slot, deployment.restart_generation):
                continue
            task = DeploymentTask(
                deployment_id=deployment.deployment_id,
                task_id=new_task_id(self.ctx.now),
                slot=slot,
                generation=deployment.restart_generation,
                gpus=deployment.gpus,
                created_at=self.ctx.now,
            )
            if self.ctx.store.put_task(task):
                self._keep(task)
                self.ctx.say(f"{deployment.deployment_id}: task {task.task_id} for slot {slot}")

    # autoscaling ----------------------------------------------------------------------------------------------

    def autoscale(self, deployment: ModelDeployment, nodes: dict[str, GpuNode]) -> ModelDeployment:
        """Decide, apply within the tenant's quota, record; the deployment as stored after it."""
        policy = deployment.autoscale
        if policy is None:
            return deployment
        tasks = self.tasks()
        serving = [t for t in tasks if t.status == TaskStatus.RUNNING and t.slot < deployment.replicas]
        running = len({t.slot for t in serving})
        waiting = sum(
            1
            for slot in range(deployment.replicas)
            if slot not in {t.slot for t in serving} and not slot_gave_up(tasks, slot, deployment.restart_generation)
        )
        decision = autoscale_decision(
            replicas=deployment.replicas,
            running=running,
            waiting=waiting,
            utilization=deployment_utilization(serving, nodes, self.ctx.now),
            target=policy.target_gpu_utilization,
            min_replicas=deployment.min_replicas,
            max_replicas=deployment.max_replicas,
            now=self.ctx.now,
            last_scaled_at=deployment.last_scaled_at,
            cooldown_s=policy.cooldown_s,
        )
        if decision is None:
            return deployment
        store = self.ctx.store
        quota = self.ctx.settings.quota_of(deployment.tenant)
        stamp = {"last_scaled_at": self.ctx.now, "updated_at": self.ctx.now}
        before = deployment.replicas
        outcome = store.change_replicas(deployment, decision.desired, quota=quota, fields=stamp)
        after, reason = decision.desired, decision.reason
        result = ScalingResult.CAPPED if decision.capped else ScalingResult.APPLIED
        if outcome is CreateOutcome.OVER_QUOTA:
            # Only a scale-up reserves more: as many replicas as the quota still has room for, if any.
            room = (quota - store.tenant(deployment.tenant).gpus_reserved) // deployment.gpus
            after = before + max(0, min(room, decision.desired - before))
            quota_note = f"tenant {deployment.tenant} quota {quota} GPUs"
            if after > before and store.change_replicas(deployment, after, quota=quota, fields=stamp) is (
                CreateOutcome.CREATED
            ):
                reason, result = f"{reason}; capped at {after} by {quota_note}", ScalingResult.CAPPED
            else:
                after = before
                reason, result = f"{reason}; refused: over {quota_note}", ScalingResult.REFUSED
                # The cooldown runs from a refusal too: else every run would ask (and record) again.
                store.update_deployment(deployment.deployment_id, stamp, expect=AUTOSCALED_STATUSES)
        elif outcome is None:
            # Another change of the replicas won the race (a manual scale): this decision was made on stale counts.
            return store.get_deployment(deployment.deployment_id) or deployment
        record_event(self.ctx, deployment, ScalingTrigger.AUTOSCALE, reason, before=before, after=after, result=result)
        return store.get_deployment(deployment.deployment_id) or deployment

    # status ---------------------------------------------------------------------------------------------------

    def write_status(self, deployment: ModelDeployment) -> ModelDeployment:
        verdict = rollup(deployment, self.tasks(), self.ctx.now)
        if verdict.status == deployment.status and verdict.last_error == deployment.last_error:
            return deployment
        # The race with a DELETE: a deployment being deleted is never brought back to running.
        written = self.ctx.store.update_deployment(
            deployment.deployment_id,
            {"status": verdict.status, "last_error": verdict.last_error, "updated_at": self.ctx.now},
            expect=ROLLUP_STATUSES,
        )
        if written is None:
            return self.ctx.store.get_deployment(deployment.deployment_id) or deployment
        if written.status != deployment.status:
            self.ctx.say(
                f"{deployment.deployment_id}: {deployment.status} → {written.status}"
                + (f" ({verdict.last_error})" if verdict.last_error else "")
            )
        return written

"""The deployment controller's health step for one deployment: what ECS says of its tasks, and what the nodes they
run on are doing, turned into task moves, restarts and replacements (the controller run calls `observe`, then
deployment_scaling.reconcile, then placement).

In order, each a conditional move of one task, so a second run over the same facts (a redelivered ECS event, a
run that saw a stale list) changes nothing twice:
1. ECS states. A starting task whose container is RUNNING and HEALTHY → running (endpoint, GPU ids); running ↔
   unhealthy as the health check says. A starting task not healthy within DEPLOYMENT_TASK_HEALTHY_WITHIN_SECONDS
   is stopped (retire unhealthy): when it has stopped, it counts as a failure of its slot. A placed task whose
   ECS task stopped (or that ECS no longer knows, or whose node is gone) without having been asked to stop ends
   (stopped, its GPUs back: end_task, whose condition makes this happen once) and its slot restarts after the
   backoff of logic/restart_backoff.py — or, restarts exhausted, ends failed and the slot gives up. A stopping
   task whose ECS task stopped ends (its GPUs back).
2. A task healthy for DEPLOYMENT_RESTART_RESET_SECONDS wipes its slot's consecutive failures.
3. Nodes draining or interrupted: each task there gets a replacement in its slot (placement takes ready nodes
   only, so elsewhere) and is retired (drain, interrupted): make before break.
4. Retired tasks are stopped: at once when nothing replaces them (scale-down, delete, unhealthy) or their node is
   interrupted or gone; else once their slot's current task is running (healthy). A retired task whose
   replacement gave up keeps serving.
5. Rolling restart: tasks of a generation older than the deployment's restart_generation are replaced one slot
   at a time (a second only once the first's replacement is healthy and the old one stopping).

The slot model (models/deployment_records.py): a slot's *current* task is its live task with no retire; the
retired ones wait to stop. A slot *gave up* when its newest task failed in the current generation: nothing
starts there again until a rolling restart (a new generation) retries it. Tasks never placed (pending) are
placement's (logic/deployment_placement.py), except a pending task's generation, which a restart renews.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from spothub_core.logic.deployment_context import ControllerContext
from spothub_core.logic.deployment_ids import new_event_id, new_task_id
from spothub_core.logic.restart_backoff import failures_after, gives_up, resets, restart_delay
from spothub_core.models.deployment_ecs import TaskState
from spothub_core.models.deployment_records import (
    DeploymentStatus,
    DeploymentTask,
    GpuNode,
    ModelDeployment,
    NodeStatus,
    RetireReason,
    ScalingEvent,
    ScalingResult,
    ScalingTrigger,
    TaskStatus,
)
from spothub_core.timings import (
    DEPLOYMENT_RECORD_TTL_SECONDS,
    DEPLOYMENT_TASK_HEALTHY_WITHIN_SECONDS,
    DEPLOYMENT_UNHEALTHY_REPLACE_SECONDS,
)

# Placed and not asked to stop: what a stop, a health verdict or a retire applies to.
ACTIVE = (TaskStatus.STARTING, TaskStatus.RUNNING, TaskStatus.UNHEALTHY)
LIVE = (TaskStatus.PENDING, *ACTIVE, TaskStatus.STOPPING)
# Retired with a replacement: stopped once the slot's current task is healthy.
MAKE_BEFORE_BREAK = (RetireReason.RESTART, RetireReason.DRAIN, RetireReason.INTERRUPTED)
# Retired with nothing to wait for.
STOP_AT_ONCE = (RetireReason.SCALE_DOWN, RetireReason.DELETED, RetireReason.UNHEALTHY)
# Nodes whose tasks move elsewhere, and the retire that says why.
LEAVING_NODES = {NodeStatus.DRAINING: RetireReason.DRAIN, NodeStatus.INTERRUPTED: RetireReason.INTERRUPTED}
# Nodes whose tasks stop at once: the instance is (about to be) terminated, there is nothing to keep serving on.
DOOMED_NODES = (NodeStatus.INTERRUPTED, NodeStatus.GONE)
# DescribeTasks may not know a task StartTask has just accepted: unknown to ECS counts as stopped only this long
# after the placement.
UNKNOWN_TASK_GRACE_SECONDS = 60


# --- the slot model (read by deployment_scaling too) ---------------------------------------------------------


def current_tasks(tasks: Iterable[DeploymentTask], slot: int) -> list[DeploymentTask]:
    """The slot's live tasks that are not retired: normally one (pending, starting, running or unhealthy)."""
    return [t for t in tasks if t.slot == slot and not t.status.ended and t.retire is None]


def slot_gave_up(tasks: Iterable[DeploymentTask], slot: int, generation: int) -> DeploymentTask | None:
    """The failed task when the slot's newest task (task ids sort by creation) failed in `generation` or later."""
    of_slot = [t for t in tasks if t.slot == slot]
    if not of_slot:
        return None
    newest = max(of_slot, key=lambda t: t.task_id)
    return newest if newest.status == TaskStatus.FAILED and newest.generation >= generation else None


def slot_occupied(tasks: Iterable[DeploymentTask], slot: int) -> bool:
    """Whether the slot has a task that serves it or will: any live task but those retired for good (scale-down,
    delete). A task retired for a drain or a restart holds the slot until its replacement takes over; an unhealthy
    one until its stop is seen, when its slot's restart is decided."""
    return any(
        t.slot == slot and not t.status.ended and t.retire not in (RetireReason.SCALE_DOWN, RetireReason.DELETED)
        for t in tasks
    )


def record_event(
    ctx: ControllerContext,
    deployment: ModelDeployment,
    trigger: ScalingTrigger,
    reason: str,
    *,
    before: int,
    after: int,
    result: ScalingResult,
) -> ScalingEvent:
    event = ScalingEvent(
        event_id=new_event_id(ctx.now),
        deployment_id=deployment.deployment_id,
        trigger=trigger,
        reason=reason,
        before=before,
        after=after,
        result=result,
        at=ctx.now,
        expires_at=int(ctx.now + DEPLOYMENT_RECORD_TTL_SECONDS),
    )
    ctx.store.add_event(event)
    ctx.say(f"{deployment.deployment_id}: {trigger} {result}: {reason}")
    return event


def end(ctx: ControllerContext, task: DeploymentTask, status: TaskStatus, **fields: object) -> DeploymentTask | None:
    """The task stopped or failed, its GPUs back to its node (once: end_task's condition on the status read)."""
    return ctx.store.end_task(
        task, status, dict(fields), now=ctx.now, expires_at=int(ctx.now + DEPLOYMENT_RECORD_TTL_SECONDS)
    )


def stop(ctx: ControllerContext, task: DeploymentTask, retire: RetireReason, reason: str) -> DeploymentTask | None:
    """Stop a task on purpose: a pending one (or one placed whose ECS task was never recorded) simply ends; a
    running one is asked of ECS to stop and is stopping (its GPUs stay allocated until its stop is seen). None when
    another run moved it first."""
    if task.status == TaskStatus.PENDING or (task.status in ACTIVE and not task.ecs_task_arn):
        return end(ctx, task, TaskStatus.STOPPED, retire=retire)
    if task.status not in ACTIVE or not task.region or not task.ecs_task_arn:
        return None
    # StopTask first, then the record. A run cut off between them leaves an active record of a task ECS stopped
    # (with our reason); the next run still ends it as expected: a drain's or restart's retire was set before, a
    # scale-down's slot is surplus, a deletion is deleting, and an unhealthy task is its slot's failure anyway.
    ctx.region(task.region).ecs.stop_task(task.ecs_task_arn, reason)
    fields: dict[str, object] = {"status": TaskStatus.STOPPING, "retire": retire}
    if retire == RetireReason.UNHEALTHY:
        fields["last_error"] = reason
    moved = ctx.store.update_task(task, fields, expect=ACTIVE)  # a task another run ended stays ended
    if moved is not None:
        ctx.say(f"{task.deployment_id}: stopping task {task.task_id} (slot {task.slot}, {retire}): {reason}")
    return moved


def stop_reason(task: DeploymentTask, state: TaskState | None, node: GpuNode | None) -> str:
    """Why a task ended, in ECS's words: "CannotPullContainerError: ...", "Essential container in task exited
    (exit 137)"."""
    if node is not None and node.status == NodeStatus.GONE:
        return f"node {node.instance_id} is gone"
    if state is None:
        return "ECS no longer knows the task"
    reason = state.stopped_reason or state.stop_code or "stopped"
    if state.exit_code is not None and f"exit {state.exit_code}" not in reason:
        reason = f"{reason} (exit {state.exit_code})"
    return reason


def endpoint_of(node: GpuNode | None, state: TaskState) -> str | None:
    if node is None or not node.private_ip or state.host_port is None:
        return None
    return f"http://{node.private_ip}:{state.host_port}"


# --- the step ------------------------------------------------------------------------------------------------


def observe(
    ctx: ControllerContext,
    deployment: ModelDeployment,
    tasks: list[DeploymentTask],
    states: dict[str, TaskState],
    nodes: dict[str, GpuNode],
    *,
    unreachable_regions: Collection[str] = (),
) -> list[DeploymentTask]:
    """Apply ECS's task states and the nodes' statuses to the deployment's tasks; the tasks as they are now, oldest
    first. `states`: by task ARN, for the tasks with one (an ARN absent: ECS does not know it); `nodes`: by instance
    id. The tasks of `unreachable_regions` (whose DescribeTasks failed this run) are left as they are: absent from
    `states` there means nothing."""
    step = _Observe(ctx, deployment, tasks, nodes)
    step.apply_states(states, set(unreachable_regions))
    step.reset_counts()
    if deployment.status != DeploymentStatus.DELETING:
        step.move_off_leaving_nodes()
    step.stop_retired()
    if deployment.status != DeploymentStatus.DELETING:
        step.rolling_restart()
    return step.final()


class _Observe:
    def __init__(
        self,
        ctx: ControllerContext,
        deployment: ModelDeployment,
        tasks: list[DeploymentTask],
        nodes: dict[str, GpuNode],
    ) -> None:
        self.ctx = ctx
        self.deployment = deployment
        self.nodes: dict[str, GpuNode] = nodes
        self.tasks: dict[str, DeploymentTask] = {t.task_id: t for t in tasks}
        self.lost_race = False

    def result(self) -> list[DeploymentTask]:
        return sorted(self.tasks.values(), key=lambda t: t.task_id)

    def final(self) -> list[DeploymentTask]:
        """The tasks as they are now: as read and written here, or as stored when a write found one moved."""
        if self.lost_race:
            return self.ctx.store.tasks(self.deployment.deployment_id)
        return self.result()

    def _keep(self, task: DeploymentTask | None) -> DeploymentTask | None:
        if task is None:
            self.lost_race = True  # another run (or a stale list) moved it: what it is now is as stored
        else:
            self.tasks[task.task_id] = task
        return task

    def _snapshot(self, *statuses: TaskStatus) -> list[DeploymentTask]:
        return [t for t in self.result() if t.status in statuses]

    def _node(self, task: DeploymentTask) -> GpuNode | None:
        return self.nodes.get(task.instance_id) if task.instance_id else None

    # 1. ECS states ------------------------------------------------------------------------------------------

    def apply_states(self, states: dict[str, TaskState], unreachable: set[str]) -> None:
        for task in self._snapshot(*ACTIVE, TaskStatus.STOPPING):
            if task.region in unreachable:
                continue
            node = self._node(task)
            node_gone = node is not None and node.status == NodeStatus.GONE
            state = states.get(task.ecs_task_arn) if task.ecs_task_arn else None
            if task.ecs_task_arn:
                unknown = state is None and self.ctx.now - (task.placed_at or task.created_at) >= (
                    UNKNOWN_TASK_GRACE_SECONDS
                )
                stopped = node_gone or unknown or (state is not None and state.stopped)
            else:
                # Placed, its StartTask not recorded (a run cut off): only its node's end says it will never run.
                stopped = node_gone
            if stopped:
                self._stopped(task, stop_reason(task, state, node))
            elif state is not None:
                self._alive(task, state, node)
            elif task.status == TaskStatus.STARTING and not task.ecs_task_arn and self._stuck(task):
                self._keep(end(self.ctx, task, TaskStatus.STOPPED, last_error="its ECS task never started"))

    def _stopped(self, task: DeploymentTask, reason: str) -> None:
        if task.retire == RetireReason.UNHEALTHY:
            # Stopped for not becoming healthy: a failure of its slot, for the reason found then.
            self._failed(task, task.last_error or reason)
        elif task.status == TaskStatus.STOPPING or task.retire is not None:
            # Asked to stop, or going anyway (its slot's replacement exists): the end that was expected.
            if self._keep(end(self.ctx, task, TaskStatus.STOPPED)) is not None:
                self.ctx.say(f"{task.deployment_id}: task {task.task_id} (slot {task.slot}) stopped: {reason}")
        else:
            self._failed(task, reason)

    def _failed(self, task: DeploymentTask, reason: str) -> None:
        """An unexpected stop: the task ends, and its slot restarts after its backoff or gives up."""
        deployment = self.deployment
        if deployment.status == DeploymentStatus.DELETING or task.slot >= deployment.replicas:
            self._keep(end(self.ctx, task, TaskStatus.STOPPED, last_error=reason))
            return
        healthy_since = task.healthy_at if task.status == TaskStatus.RUNNING else None
        failures = failures_after(task.failures, healthy_since, self.ctx.now)
        if gives_up(failures):
            message = f"gave up after {failures - 1} restarts: {reason}"
            if self._keep(end(self.ctx, task, TaskStatus.FAILED, last_error=message, failures=failures)) is None:
                return  # another run saw this stop first
            replaced = self.tasks.get(task.replaces) if task.replaces else None
            serving = f"; task {replaced.task_id} keeps serving" if replaced and not replaced.status.ended else ""
            record_event(
                self.ctx,
                deployment,
                ScalingTrigger.RECOVERY,
                f"slot {task.slot}: {message}{serving}",
                before=deployment.replicas,
                after=deployment.replicas,
                result=ScalingResult.GAVE_UP,
            )
            return
        if self._keep(end(self.ctx, task, TaskStatus.STOPPED, last_error=reason)) is None:
            return  # another run saw this stop first (and restarted the slot)
        delay = restart_delay(failures)
        replaced = self.tasks.get(task.replaces) if task.replaces else None
        replacement = self._new_task(
            task.slot,
            failures=failures,
            restarts=task.restarts + 1,
            not_before=self.ctx.now + delay,
            # The replacement of a replacement still replaces the task that keeps serving meanwhile.
            replaces=replaced.task_id if replaced is not None and not replaced.status.ended else None,
            last_error=reason,
        )
        when = "at once" if delay == 0 else f"in {delay:.0f} s"
        record_event(
            self.ctx,
            deployment,
            ScalingTrigger.RECOVERY,
            f"slot {task.slot}: task {task.task_id} stopped ({reason}); restart {replacement.restarts} {when}",
            before=deployment.replicas,
            after=deployment.replicas,
            result=ScalingResult.APPLIED,
        )

    def _unhealthy_too_long(self, task: DeploymentTask) -> bool:
        since = task.unhealthy_since if task.unhealthy_since is not None else self.ctx.now
        return self.ctx.now - since >= DEPLOYMENT_UNHEALTHY_REPLACE_SECONDS

    def _stuck(self, task: DeploymentTask) -> bool:
        return self.ctx.now - (task.placed_at or task.created_at) >= DEPLOYMENT_TASK_HEALTHY_WITHIN_SECONDS

    def _alive(self, task: DeploymentTask, state: TaskState, node: GpuNode | None) -> None:
        healthy = state.last_status == "RUNNING" and state.health_status == "HEALTHY"
        if task.status == TaskStatus.STARTING:
            if healthy:
                fields: dict[str, object] = {"status": TaskStatus.RUNNING, "healthy_at": self.ctx.now}
                if endpoint := endpoint_of(node, state):
                    fields["endpoint"] = endpoint
                if state.gpu_ids:
                    fields["gpu_ids"] = list(state.gpu_ids)
                # The race with a stop: a task another run stopped is not marked healthy.
                if self._keep(self.ctx.store.update_task(task, fields, expect=[TaskStatus.STARTING])):
                    self.ctx.say(f"{task.deployment_id}: task {task.task_id} (slot {task.slot}) healthy")
            elif self._stuck(task):
                minutes = DEPLOYMENT_TASK_HEALTHY_WITHIN_SECONDS // 60
                reason = (
                    f"health check: not healthy within {minutes} min "
                    f"(ECS {state.last_status.lower()}, health {state.health_status.lower()})"
                )
                # A retired task (replaced already) just stops; its slot's current one is the slot's failure.
                self._keep(stop(self.ctx, task, task.retire or RetireReason.UNHEALTHY, reason))
        elif task.status == TaskStatus.RUNNING and state.health_status == "UNHEALTHY":
            fields = {"status": TaskStatus.UNHEALTHY, "unhealthy_since": self.ctx.now}
            self._keep(self.ctx.store.update_task(task, fields, expect=[TaskStatus.RUNNING]))
        elif task.status == TaskStatus.UNHEALTHY and healthy:
            # Healthy again: its healthy time (the reset of its slot's failures) counts from now.
            fields = {"status": TaskStatus.RUNNING, "healthy_at": self.ctx.now, "unhealthy_since": None}
            self._keep(self.ctx.store.update_task(task, fields, expect=[TaskStatus.UNHEALTHY]))
        elif task.status == TaskStatus.UNHEALTHY and self._unhealthy_too_long(task):
            minutes = DEPLOYMENT_UNHEALTHY_REPLACE_SECONDS // 60
            reason = f"health check: failing for {minutes} min"
            # Stopped as a failure of its slot (retire unhealthy): its restart follows once ECS says it stopped.
            self._keep(stop(self.ctx, task, task.retire or RetireReason.UNHEALTHY, reason))

    # 2. the reset of consecutive failures ---------------------------------------------------------------------

    def reset_counts(self) -> None:
        for task in self._snapshot(TaskStatus.RUNNING):
            if task.failures > 0 and resets(task.healthy_at, self.ctx.now):
                self._keep(self.ctx.store.update_task(task, {"failures": 0}, expect=[TaskStatus.RUNNING]))

    # 3. draining and interrupted nodes ------------------------------------------------------------------------

    def move_off_leaving_nodes(self) -> None:
        moving: dict[str, int] = {}
        for task in self._snapshot(*ACTIVE):
            node = self._node(task)
            if node is None or node.status not in LEAVING_NODES or task.slot >= self.deployment.replicas:
                continue
            if not self._needs_replacement(task, movable=(None, *MAKE_BEFORE_BREAK)):
                continue
            self._replace(task, LEAVING_NODES[node.status])
            moving[node.instance_id] = moving.get(node.instance_id, 0) + 1
        for instance_id, count in moving.items():
            verb = "interrupted" if self.nodes[instance_id].status == NodeStatus.INTERRUPTED else "drained"
            record_event(
                self.ctx,
                self.deployment,
                ScalingTrigger.DRAIN,
                f"node {instance_id} {verb}: {count} task{'s' if count != 1 else ''} moving",
                before=self.deployment.replicas,
                after=self.deployment.replicas,
                result=ScalingResult.APPLIED,
            )

    def _needs_replacement(self, task: DeploymentTask, *, movable: tuple[RetireReason | None, ...]) -> bool:
        """A task to replace: not retired yet, or retired (for a move) and its replacement lost; never in a slot
        that gave up (its last replacement failed: this one keeps serving)."""
        if task.retire not in movable:
            return False
        if task.retire is None:
            return True
        tasks = self.tasks.values()
        return not current_tasks(tasks, task.slot) and not slot_gave_up(
            tasks, task.slot, self.deployment.restart_generation
        )

    def _replace(self, task: DeploymentTask, retire: RetireReason) -> None:
        """Make before break: the replacement first, then the retire, so a run cut off between the two leaves a
        slot with a replacement (this task is then retired by the next run: it has one), never a retired task
        with none."""
        replacement = self._new_task(
            task.slot, failures=task.failures, restarts=task.restarts, not_before=None, replaces=task.task_id
        )
        if task.retire is None:
            self._keep(self.ctx.store.update_task(task, {"retire": retire}, expect=ACTIVE))
        self.ctx.say(
            f"{task.deployment_id}: task {replacement.task_id} replaces {task.task_id} (slot {task.slot}, {retire})"
        )

    def _new_task(
        self,
        slot: int,
        *,
        failures: int,
        restarts: int,
        not_before: float | None,
        replaces: str | None,
        last_error: str | None = None,
    ) -> DeploymentTask:
        task = DeploymentTask(
            deployment_id=self.deployment.deployment_id,
            task_id=new_task_id(self.ctx.now),
            slot=slot,
            generation=self.deployment.restart_generation,
            gpus=self.deployment.gpus,
            created_at=self.ctx.now,
            not_before=not_before,
            failures=failures,
            restarts=restarts,
            replaces=replaces,
            last_error=last_error,
        )
        self.ctx.store.put_task(task)
        self._keep(task)
        return task

    # 4. retired tasks -----------------------------------------------------------------------------------------

    def stop_retired(self) -> None:
        for task in self._snapshot(TaskStatus.PENDING, *ACTIVE):
            if task.retire is None:
                continue
            node = self._node(task)
            if task.retire in STOP_AT_ONCE or (node is not None and node.status in DOOMED_NODES):
                self._keep(stop(self.ctx, task, task.retire, f"spothub: {task.retire}"))
            elif any(
                t.status == TaskStatus.RUNNING and t.task_id != task.task_id
                for t in current_tasks(self.tasks.values(), task.slot)
            ):
                self._keep(stop(self.ctx, task, task.retire, f"spothub: {task.retire}, replacement healthy"))

    # 5. rolling restart ---------------------------------------------------------------------------------------

    def rolling_restart(self) -> None:
        generation = self.deployment.restart_generation
        old = [t for t in self.result() if t.generation < generation and t.slot < self.deployment.replicas]
        for task in old:
            if task.status == TaskStatus.PENDING and task.retire is None:
                # Never started: it starts as the new generation would.
                self._keep(self.ctx.store.update_task(task, {"generation": generation}, expect=[TaskStatus.PENDING]))
        if self._restart_in_flight():
            return
        for task in sorted(old, key=lambda t: (t.slot, t.task_id)):
            if task.status in ACTIVE and self._needs_replacement(task, movable=(None, RetireReason.RESTART)):
                self._replace(task, RetireReason.RESTART)
                return

    def _restart_in_flight(self) -> bool:
        """A task retired for the restart still serving while its slot's replacement is not healthy yet."""
        tasks = self.tasks.values()
        return any(
            t.retire == RetireReason.RESTART and t.status in ACTIVE and current_tasks(tasks, t.slot) for t in tasks
        )

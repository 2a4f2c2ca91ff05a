"""The search monitor: every searchHealthInterval a sweep of the search launches, and the search region's spot
interruption warnings.

The sweep, for each live launch record (the rules are logic/search_rules.py):
- terminating: its instance terminated (or unknown to EC2) → terminated; still alive → terminated again (the
  termination that ended the record may have been cut short); the slot released if it still holds it;
- its instance gone from EC2 → terminated (reason gone), slot released;
- launching or starting for too long (its execution ended without its failure step) → ended (launch-failed), its
  instance terminated, slot released;
- failed (a replacement cut short) → the replacement resumed;
- routable: idle or past its maximum runtime → terminated while no query is in flight, slot released (no
  relaunch); otherwise its health checked through the router, and after SEARCH_HEALTH_MISSES misses in a row
  failed, a replacement started on its slot, the instance terminated.
Then the slot: held by a launch with no record (or a terminated one) → released. Then the reconciliation: an
alive instance tagged for the volume that no record knows is adopted when it passes a health check and the slot
is free; one tagged with the launch id of a launch that gave it up is terminated.

Every step is a conditional move of the record or the slot, so a sweep overlapping another sweep, a delivery of
an interruption warning (twice, late) or the API's scale-down changes nothing twice: the loser of each race finds
the record moved and leaves it. A failure on one record is logged and counted; the sweep goes on with the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from spothub_core.consumers import Dispatch, Target
from spothub_core.contracts import InstanceFacts, InstanceTag, SpotNoticeDetail
from spothub_core.dal.search_instances import SearchInstances
from spothub_core.dal.search_router import SearchRouter
from spothub_core.dal.search_store import ENDED, ROUTABLE, SearchStore
from spothub_core.logic.search_launches import Launcher, new_launch_id, start_launch
from spothub_core.logic.search_rules import (
    GONE_STATES,
    SearchLimits,
    instance_gone,
    is_idle,
    over_max_runtime,
    stale_launch,
    termination_done,
    unhealthy,
)
from spothub_core.models.base import Model
from spothub_core.models.search_records import EndReason, SearchInstance, SearchStatus
from spothub_core.timings import SEARCH_HEALTH_TIMEOUT_SECONDS

logger = logging.getLogger(__name__)

NOT_ENDED = tuple(s for s in SearchStatus if s not in ENDED)
# A launch (or an adoption) claims the slot, then writes its record: a slot held by a launch with no record is
# left this long before it counts as abandoned.
SLOT_CLAIM_GRACE_SECONDS = 60
# Failed for one of these reasons, an instance is replaced; for any other, only retired.
REPLACED_REASONS = (EndReason.UNHEALTHY, EndReason.INTERRUPTED)


class Sweep(Model):
    """The schedule's input."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["sweep"] = "sweep"


class SweepSummary(Model):
    """What one sweep did: launch ids (instance ids for the reconciliation), and counts."""

    records: int = 0  # live launch records swept
    healthy: int = 0  # health checks passed
    missed: int = 0  # health checks missed
    failed: list[str] = Field(default_factory=list)  # failed (unhealthy) and replaced
    replacements: list[str] = Field(default_factory=list)  # launches started to replace a failed instance
    retired_idle: list[str] = Field(default_factory=list)
    retired_max_runtime: list[str] = Field(default_factory=list)
    stale: list[str] = Field(default_factory=list)  # launches that never finished, ended
    gone: list[str] = Field(default_factory=list)  # records whose instance EC2 no longer has
    terminated: list[str] = Field(default_factory=list)  # terminating → terminated
    slot_released: str | None = None  # an abandoned holder of the slot
    adopted: list[str] = Field(default_factory=list)  # instance ids
    orphans_terminated: list[str] = Field(default_factory=list)  # instance ids
    errors: int = 0  # records (or steps) that failed and are left to the next sweep


@dataclass(frozen=True)
class MonitorServices:
    store: SearchStore
    launcher: Launcher  # starts the replacements; its volume is the one swept
    router: SearchRouter
    instances: SearchInstances
    limits: SearchLimits
    port: int  # the search service's port and health path on the instance
    health_path: str


dispatch: Dispatch[MonitorServices] = Dispatch(Target.SEARCH_MONITOR)


# --- the sweep ---------------------------------------------------------------------------------------------------


def sweep(services: MonitorServices, *, now: float) -> SweepSummary:
    summary = SweepSummary()
    records = services.store.live()
    summary.records = len(records)
    states = _states(services, records, summary)
    for record in records:
        try:
            _sweep_record(services, record, states, summary, now=now)
        except Exception:
            summary.errors += 1
            logger.exception("search launch not swept this time", extra={"launch_id": record.launch_id})
    for step in (_free_abandoned_slot, _reconcile):
        try:
            step(services, summary, now=now)
        except Exception:
            summary.errors += 1
            logger.exception("search sweep step left to the next sweep", extra={"step": step.__name__})
    return summary


def _states(services: MonitorServices, records: list[SearchInstance], summary: SweepSummary) -> dict[str, str] | None:
    """EC2's state of every recorded instance; None when EC2 did not answer (nothing is then judged gone)."""
    try:
        return services.instances.states([r.instance_id for r in records if r.instance_id])
    except Exception:
        summary.errors += 1
        logger.exception("search instances not described: no record is judged gone this time")
        return None


def _sweep_record(
    services: MonitorServices,
    record: SearchInstance,
    states: dict[str, str] | None,
    summary: SweepSummary,
    *,
    now: float,
) -> None:
    state = states.get(record.instance_id) if states is not None and record.instance_id else None
    if record.status == SearchStatus.TERMINATING:
        _finish_termination(services, record, state, states is not None, summary, now=now)
    elif states is not None and instance_gone(record, state, now):
        _forget(services, record, state, summary, now=now)
    elif record.status.launching:
        if stale_launch(record, now, services.limits):
            _end_stale(services, record, summary, now=now)
    elif record.status == SearchStatus.FAILED:
        _resume_failure(services, record, summary, now=now)
    elif record.status.routable and not _retire_if_due(services, record, summary, now=now):
        _check_health(services, record, summary, now=now)


def _finish_termination(
    services: MonitorServices,
    record: SearchInstance,
    state: str | None,
    described: bool,
    summary: SweepSummary,
    *,
    now: float,
) -> None:
    if record.instance_id and state is not None and state not in GONE_STATES:
        services.instances.terminate([record.instance_id])
    services.store.release_slot(record.launch_id)
    if described and termination_done(record, state, now, services.limits):
        reason = record.reason or EndReason.GONE
        if services.store.end(
            record.launch_id, SearchStatus.TERMINATED, reason, now, expected=(SearchStatus.TERMINATING,)
        ):
            summary.terminated.append(record.launch_id)


def _forget(
    services: MonitorServices, record: SearchInstance, state: str | None, summary: SweepSummary, *, now: float
) -> None:
    error = f"instance {record.instance_id} gone (EC2: {state or 'unknown'})"
    if services.store.end(record.launch_id, SearchStatus.TERMINATED, EndReason.GONE, now, error, expected=NOT_ENDED):
        summary.gone.append(record.launch_id)
    services.store.release_slot(record.launch_id)


def _end_stale(services: MonitorServices, record: SearchInstance, summary: SweepSummary, *, now: float) -> None:
    """The launch's execution is over without its failure step: do that step's work."""
    error = f"still {record.status} {now - record.created_at:.0f} s after the launch began"
    # With an instance, terminating until EC2 says it is terminated (the next sweeps); without, done now.
    status = SearchStatus.TERMINATING if record.instance_id else SearchStatus.TERMINATED
    ended = services.store.end(
        record.launch_id,
        status,
        EndReason.LAUNCH_FAILED,
        now,
        error,
        expected=(SearchStatus.LAUNCHING, SearchStatus.STARTING),
    )
    if ended is None:
        return
    if record.instance_id:
        services.instances.terminate([record.instance_id])
    services.store.release_slot(record.launch_id)
    summary.stale.append(record.launch_id)
    logger.warning("stale search launch ended", extra={"launch_id": record.launch_id, "error": error})


def _resume_failure(services: MonitorServices, record: SearchInstance, summary: SweepSummary, *, now: float) -> None:
    """A failed record the sweep (or an interruption) did not finish with: replace it, or only retire it."""
    reason = record.reason or EndReason.UNHEALTHY
    if reason in REPLACED_REASONS:
        replacement, _ = replace_instance(services, record, reason, now=now)
        if replacement is not None:
            summary.replacements.append(replacement.launch_id)
        return
    if services.store.end(record.launch_id, SearchStatus.TERMINATING, reason, now, expected=(SearchStatus.FAILED,)):
        if record.instance_id:
            services.instances.terminate([record.instance_id])
        services.store.release_slot(record.launch_id)


def _retire_if_due(services: MonitorServices, record: SearchInstance, summary: SweepSummary, *, now: float) -> bool:
    """Idle or past its maximum runtime: terminated, the slot released, nothing relaunched (the next query or
    scale-up launches). A query that began meanwhile keeps it (the condition of terminate_if_quiet)."""
    if is_idle(record, now, services.limits):
        reason, retired = EndReason.IDLE, summary.retired_idle
    elif over_max_runtime(record, now, services.limits):
        reason, retired = EndReason.MAX_RUNTIME, summary.retired_max_runtime
    else:
        return False
    if services.store.terminate_if_quiet(record.launch_id, reason, now) is None:
        return False
    if record.instance_id:
        services.instances.terminate([record.instance_id])
    services.store.release_slot(record.launch_id)
    retired.append(record.launch_id)
    logger.info("search instance retired", extra={"launch_id": record.launch_id, "reason": str(reason)})
    return True


def _check_health(services: MonitorServices, record: SearchInstance, summary: SweepSummary, *, now: float) -> None:
    """A router that cannot be invoked raises (DependencyUnavailable): no miss is counted against the instance."""
    if record.private_ip:
        answer = services.router.health(
            record.private_ip, services.port, services.health_path, SEARCH_HEALTH_TIMEOUT_SECONDS
        )
        healthy, error = answer.ok, None if answer.ok else (answer.error or f"HTTP {answer.status_code}")
    else:
        healthy, error = False, "no private address"
    checked = services.store.record_health(record.launch_id, healthy, now, error)
    if checked is None:
        return
    if healthy:
        summary.healthy += 1
        return
    summary.missed += 1
    if not unhealthy(checked, services.limits):
        return
    # Failed first: no query is routed to it from here on, and the slot stays held, so no query starts a launch.
    failed = services.store.update(
        record.launch_id, {"status": SearchStatus.FAILED, "reason": EndReason.UNHEALTHY}, expected=ROUTABLE, now=now
    )
    if failed is None:
        return
    logger.warning(
        "search instance failed its health checks",
        extra={"launch_id": record.launch_id, "misses": checked.health_failures, "error": error},
    )
    replacement, _ = replace_instance(services, failed, EndReason.UNHEALTHY, now=now)
    summary.failed.append(record.launch_id)
    if replacement is not None:
        summary.replacements.append(replacement.launch_id)


def replace_instance(
    services: MonitorServices, record: SearchInstance, reason: EndReason, *, now: float
) -> tuple[SearchInstance | None, SearchInstance | None]:
    """Start the replacement on the record's slot, then end the record (terminating) and terminate its instance.
    The replacement takes the slot over from the record with no moment free between (no query can start a second
    launch meanwhile); it is None when the record no longer holds the slot (a second delivery, a scale-down).
    The record is ended before its instance is terminated so that no query is routed to an instance going away;
    a termination cut short is done again by the next sweep (the record is terminating). Returns the
    replacement and the ended record (None: it had ended already)."""
    replacement = start_launch(services.launcher, now, replaces=record.launch_id)
    ended = services.store.end(record.launch_id, SearchStatus.TERMINATING, reason, now, expected=NOT_ENDED)
    if record.instance_id:
        services.instances.terminate([record.instance_id])
    logger.info(
        "search instance replaced",
        extra={
            "launch_id": record.launch_id,
            "reason": str(reason),
            "replacement": replacement.launch_id if replacement else None,
        },
    )
    return replacement, ended


def _free_abandoned_slot(services: MonitorServices, summary: SweepSummary, *, now: float) -> None:
    """A slot held by a launch with no record (its claim's writer died before the record) or a terminated one
    would block every launch for good."""
    slot = services.store.slot()
    if slot.launch_id is None:
        return
    holder = services.store.get(slot.launch_id)
    if holder is not None and holder.status != SearchStatus.TERMINATED:
        return
    if holder is None and now - (slot.claimed_at or 0) < SLOT_CLAIM_GRACE_SECONDS:
        return
    if services.store.release_slot(slot.launch_id):
        summary.slot_released = slot.launch_id
        logger.warning("abandoned search slot released", extra={"launch_id": slot.launch_id})


# --- the reconciliation ------------------------------------------------------------------------------------------


def _reconcile(services: MonitorServices, summary: SweepSummary, *, now: float) -> None:
    tagged = services.instances.tagged(services.launcher.volume_id)
    if not tagged:
        return
    records = services.store.all()
    known = {r.instance_id for r in records if r.instance_id and r.status != SearchStatus.TERMINATED}
    by_launch = {r.launch_id: r for r in records}
    for facts, tags in tagged:
        if facts.instance_id in known:
            continue
        try:
            launch = by_launch.get(tags.get(InstanceTag.LAUNCH, ""))
            if launch is None:
                _adopt(services, facts, summary, now=now)
            elif not (launch.status.launching and launch.instance_id is None):
                # Launched by a launch that has given it up (ended, or on another instance): nobody will end it.
                services.instances.terminate([facts.instance_id])
                summary.orphans_terminated.append(facts.instance_id)
                logger.warning(
                    "orphaned search instance terminated",
                    extra={"instance_id": facts.instance_id, "launch_id": launch.launch_id, "status": launch.status},
                )
            # else its launch is between RunInstances and recording the instance: it is that launch's.
        except Exception:
            summary.errors += 1
            logger.exception("tagged search instance not reconciled", extra={"instance_id": facts.instance_id})


def _adopt(services: MonitorServices, facts: InstanceFacts, summary: SweepSummary, *, now: float) -> None:
    """An instance of the volume spothub has no record of (a restored table, a manual launch): taken on as the
    volume's instance if the slot is free and it serves."""
    holder = services.store.slot().launch_id
    if holder is not None:
        logger.warning(
            "a tagged search instance no record knows is left alone: another launch holds the slot",
            extra={"instance_id": facts.instance_id, "slot": holder},
        )
        return
    if not facts.private_ip:
        return
    answer = services.router.health(
        facts.private_ip, services.port, services.health_path, SEARCH_HEALTH_TIMEOUT_SECONDS
    )
    if not answer.ok:
        logger.warning(
            "a tagged search instance no record knows does not serve: not adopted",
            extra={"instance_id": facts.instance_id, "error": answer.error, "status_code": answer.status_code},
        )
        return
    launch_id = new_launch_id(now)
    if not services.store.claim_slot(launch_id, now):
        return
    services.store.create(
        SearchInstance(
            launch_id=launch_id,
            status=SearchStatus.READY,
            volume_id=services.launcher.volume_id,
            instance_id=facts.instance_id,
            instance_type=facts.instance_type,
            capacity_type=facts.capacity_type,
            availability_zone=facts.availability_zone,
            private_ip=facts.private_ip,
            public_ip=facts.public_ip,
            created_at=now,
            started_at=_epoch(facts.launched_at) or now,
            ready_at=now,
            last_health_at=now,
            adopted=True,
            updated_at=now,
        )
    )
    summary.adopted.append(facts.instance_id)
    logger.info("search instance adopted", extra={"instance_id": facts.instance_id, "launch_id": launch_id})


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


# --- interruption warnings -----------------------------------------------------------------------------------------


@dispatch.on(SpotNoticeDetail)
def on_interruption(services: MonitorServices, notice: SpotNoticeDetail, *, now: float) -> str:
    """Replace the search instance at once: its replacement's attach waits for the volume, which the warned
    instance gives up as it terminates (the agent stops the service and unmounts on SIGTERM)."""
    record = services.store.by_instance(notice.instance_id)
    if record is None:
        return "ignored: not the search instance"
    if record.status in ENDED:
        return f"ignored: {record.launch_id} is {record.status} already"
    replacement, ended = replace_instance(services, record, EndReason.INTERRUPTED, now=now)
    if replacement is not None:
        return f"{record.launch_id} interrupted; replaced by {replacement.launch_id}"
    if ended is None:
        return f"ignored: {record.launch_id} ended meanwhile"
    return f"{record.launch_id} interrupted; not replaced: it no longer held the slot"

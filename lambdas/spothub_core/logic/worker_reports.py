"""The reports the hub consumes from its bus: worker regions' launch and teardown outcomes, capacity notices
(worker and agent), drains, unhealthy instances, and Auto Scaling's failed launches (forwarded AWS events).

Each report names its request; the token is looked up in the state table, and the first report that moves
a request out of `pending` is the one that answers Step Functions. Duplicates, late and out-of-order
reports find nothing pending and change nothing, except that a launch that succeeds after it was given up
is torn down, so no instance runs unaccounted for.

A replica's warm standby (spothub_core.logic.standby_watch) sees each report first: a notice records a signal and
may promote the standby (no replacement launch) or release it; a standby launch's reports are its own (no task
token waits on them); after a notice or a capacity failure the risk check runs for every replica at once.

Every consumer is registered on `dispatch` by the model of what it consumes (spothub_core.consumers) and
is called with the hub's services, the validated detail, `now`, and `region`: the region the event comes
from (its envelope's), which AWS events need and spothub's own reports also carry in their detail.
"""

from __future__ import annotations

from spothub_core.consumers import Dispatch, Target
from spothub_core.contracts import (
    CapacityNotice,
    DrainCompleted,
    InstanceUnhealthy,
    InterruptionWarningDetail,
    LaunchFailed,
    LaunchProgress,
    LaunchSucceeded,
    LaunchUnsuccessfulDetail,
    NoticeKind,
    RebalanceRecommendationDetail,
    SpotNoticeDetail,
    TaskError,
    TeardownCompleted,
)
from spothub_core.dal.provisioning import LAUNCH, TEARDOWN
from spothub_core.dal.task_tokens import send_failure, send_heartbeat, send_success
from spothub_core.errors import DependencyUnavailable
from spothub_core.logic.hub_services import (
    CANCEL_PREFIX,
    HubServices,
    cancel_launch,
    teardown_orphan,
    withdraw_endpoint,
)
from spothub_core.logic.launch_errors import LaunchFailure, classify_launch_error
from spothub_core.logic.region_exclusions import exclude_after_failure
from spothub_core.logic.region_reservations import release
from spothub_core.logic.replacements import start_replacement
from spothub_core.logic.standby import SignalKind
from spothub_core.logic.standby_ports import HubStandbyPorts
from spothub_core.logic.standby_watch import StandbyWatch
from spothub_core.models.records import InstanceStatus, Remediation, RequestStatus
from spothub_core.observability import logger

dispatch: Dispatch[HubServices] = Dispatch(Target.CAPACITY_HANDLER)

# A quota fails the orchestrator's launch as a capacity error does: it moves on to the next region.
ERROR_BY_CLASS = {
    LaunchFailure.CAPACITY: TaskError.CAPACITY,
    LaunchFailure.QUOTA: TaskError.CAPACITY,
    LaunchFailure.TRANSIENT: TaskError.TRANSIENT,
    LaunchFailure.FATAL: TaskError.FATAL,
}


@dispatch.on(LaunchProgress)
def on_launch_progress(hub: HubServices, report: LaunchProgress, *, now: float, region: str = "") -> str:
    launch = hub.store.request(LAUNCH, report.launch_id)
    if not launch or launch.status != RequestStatus.PENDING or not launch.task_token:
        return "ignored: no pending launch"
    send_heartbeat(hub.sfn, launch.task_token)
    return f"heartbeat: {report.step}"


def standby_watch(hub: HubServices) -> StandbyWatch | None:
    """The warm standby's watch over the hub's state; None where the hub keeps no standby state."""
    return None if hub.standbys is None else StandbyWatch(hub.store, hub.standbys, HubStandbyPorts(hub))


def _check_standbys(watch: StandbyWatch | None, now: float) -> None:
    """A signal may raise (or a released standby lower) any replica's risk: check them all now, not in a minute."""
    if watch is None:
        return
    try:
        watch.assess_all(now)
    except DependencyUnavailable as exc:  # best effort: the minute's check runs it again
        logger.warning("standby check after a signal failed", extra={"error": str(exc)})


@dispatch.on(LaunchSucceeded)
def on_launch_succeeded(hub: HubServices, report: LaunchSucceeded, *, now: float, region: str = "") -> str:
    instance_id = report.instance.instance_id
    watch = standby_watch(hub)
    if watch is not None:
        facts = report.instance
        outcome = watch.on_launch_succeeded(
            report.launch_id,
            instance_id=instance_id,
            zone=facts.availability_zone or None,
            public_ip=facts.public_ip,
            private_ip=facts.private_ip,
            now=now,
        )
        if outcome is not None:
            return outcome
    resolved = hub.store.resolve_request(
        LAUNCH, report.launch_id, RequestStatus.SUCCEEDED, instance_id=instance_id, resolved_at=now
    )
    if resolved is None:
        launch = hub.store.request(LAUNCH, report.launch_id)
        if launch and launch.status == RequestStatus.SUCCEEDED and launch.instance_id == instance_id:
            return "ignored: duplicate"
        # Given up (timeout, capacity event first, disabled) yet an instance came up: do not leave it running.
        teardown_orphan(hub, report.region, instance_id, f"late success of {report.launch_id}")
        return "late: orphan instance torn down"
    if not send_success(hub.sfn, resolved.task_token or "", report.model_dump_json()):
        teardown_orphan(hub, report.region, instance_id, f"orchestrator of {report.launch_id} gone")
        return "orchestrator gone: instance torn down"
    return "launch succeeded"


@dispatch.on(LaunchFailed)
def on_launch_failed(hub: HubServices, report: LaunchFailed, *, now: float, region: str = "") -> str:
    return _fail_launch(hub, report.launch_id, report.region, report.error_class, report.code, report.message, now)


@dispatch.on(LaunchUnsuccessfulDetail)
def on_launch_unsuccessful(hub: HubServices, detail: LaunchUnsuccessfulDetail, *, now: float, region: str) -> str:
    """Auto Scaling could not launch in a worker region (forwarded AWS event): fail that region's pending launch.
    Only the serving group's: a batch job's group (`<prefix>-job-...`) fails no replica's launch and excludes no
    region for serving (the batch supervisor hears of its failures from the region's fleet reports)."""
    if detail.group_name and detail.group_name != serving_group_name(hub.prefix):
        return f"ignored: {detail.group_name} is not the serving group"
    message = detail.status_message or detail.description
    failure = classify_launch_error(None, message)
    pending = [launch for launch in hub.store.pending(LAUNCH) if launch.region == region]
    standbys = [s for s in hub.standbys.standbys() if s.region == region and not s.ready] if hub.standbys else []
    # A standby's refusal excludes no region for the replicas' placement (the standby's zones are retried apart).
    if failure in (LaunchFailure.CAPACITY, LaunchFailure.QUOTA) and (pending or not standbys):
        capacity_type = pending[0].capacity_type if pending else None
        exclude_after_failure(
            hub, region, failure.value, "LaunchUnsuccessful", message, now=now, capacity_type=capacity_type
        )
    if not pending and not standbys:
        return "ignored: no pending launch in the region"
    outcomes = [
        _fail_launch(hub, launch_id, region, failure.value, "LaunchUnsuccessful", message, now)
        for launch_id in [launch.launch_id for launch in pending] + [s.launch_id for s in standbys]
    ]
    for launch_id in [launch.launch_id for launch in pending] + [s.launch_id for s in standbys]:
        cancel_launch(hub, region, launch_id)
    return "; ".join(outcomes)


@dispatch.on(TeardownCompleted)
def on_teardown_completed(hub: HubServices, report: TeardownCompleted, *, now: float, region: str = "") -> str:
    """The instance (or, naming none, every instance of the region) is gone: it leaves the endpoint name, then
    is recorded terminated. A launch's cancellation names no instance either, yet tears down none recorded."""
    cancelled_launch = report.instance_id is None and report.teardown_id.startswith(CANCEL_PREFIX)
    for instance in [] if cancelled_launch else hub.store.instances():
        if instance.region != report.region or instance.status == InstanceStatus.TERMINATED:
            continue
        if report.instance_id is None or instance.instance_id == report.instance_id:
            # Withdrawn first: a redelivery after a failed withdrawal finds the instance not yet terminated.
            withdraw_endpoint(hub, instance)
            hub.store.put_instance(instance.instance_id, {"status": InstanceStatus.TERMINATED, "updated_at": int(now)})
    resolved = hub.store.resolve_request(TEARDOWN, report.teardown_id, RequestStatus.COMPLETED, resolved_at=now)
    if resolved is None:
        return "ignored: no pending teardown"
    if resolved.task_token:
        send_success(hub.sfn, resolved.task_token, report.model_dump_json())
    return "teardown completed"


@dispatch.on(CapacityNotice)
def on_capacity_notice(hub: HubServices, notice: CapacityNotice, *, now: float, region: str = "") -> str:
    """A rebalance recommendation or an interruption warning, from the worker region or the agent: the
    replica moves, make before break; whichever of the two arrives second finds the replacement started."""
    instance = hub.store.instance(notice.instance_id)
    if instance and instance.status in (InstanceStatus.SERVING, InstanceStatus.AT_RISK):
        status = InstanceStatus.INTERRUPTED if notice.kind == "interruption" else InstanceStatus.AT_RISK
        hub.store.put_instance(notice.instance_id, {"status": status, "notice": notice.kind, "updated_at": int(now)})
    # Before any replacement: a ready standby serves at once, a launching one becomes the replacement, a warned
    # standby (which has no instance record) is released.
    watch = standby_watch(hub)
    handled = watch.on_notice(notice.instance_id, notice.kind, region=notice.region, now=now) if watch else None
    if handled is not None:
        outcome = handled
    elif not instance:
        return "ignored: not an instance spothub placed"
    else:
        outcome = start_replacement(hub, instance.replica_id, notice.instance_id, notice.region, notice.kind, now=now)
    _check_standbys(watch, now)
    return outcome


@dispatch.on(InterruptionWarningDetail)
def on_interruption_warning(hub: HubServices, warning: InterruptionWarningDetail, *, now: float, region: str) -> str:
    """EC2's interruption warning, forwarded raw from the worker region: for any spot instance there, so an
    instance spothub did not place is ignored by its record (none)."""
    return _on_spot_notice(hub, warning, NoticeKind.INTERRUPTION, now=now, region=region)


@dispatch.on(RebalanceRecommendationDetail)
def on_rebalance_recommendation(
    hub: HubServices, recommendation: RebalanceRecommendationDetail, *, now: float, region: str
) -> str:
    return _on_spot_notice(hub, recommendation, NoticeKind.REBALANCE, now=now, region=region)


def _on_spot_notice(hub: HubServices, detail: SpotNoticeDetail, kind: NoticeKind, *, now: float, region: str) -> str:
    notice = CapacityNotice(
        region=region, instance_id=detail.instance_id, kind=kind, notice_id=f"{kind}-{detail.instance_id}"
    )
    return on_capacity_notice(hub, notice, now=now, region=region)


@dispatch.on(DrainCompleted)
def on_drain_completed(hub: HubServices, report: DrainCompleted, *, now: float, region: str = "") -> str:
    hub.health.record_drain(report.instance_id, report.model_dump(exclude={"version"}), now=now)
    return f"drain recorded: {report.outcome}"


@dispatch.on(InstanceUnhealthy)
def on_instance_unhealthy(hub: HubServices, report: InstanceUnhealthy, *, now: float, region: str = "") -> str:
    remediation = Remediation(
        instance_id=report.instance_id,
        notice_id=report.notice_id,
        at=now,
        region=report.region,
        reason=report.reason,
        alarm_name=report.alarm_name,
    )
    if not hub.health.record_remediation(remediation):
        return "ignored: this alarm firing was remediated already"
    instance = hub.store.instance(report.instance_id)
    if not instance or instance.status == InstanceStatus.TERMINATED:
        return "recorded: not a serving instance spothub placed"
    hub.store.put_instance(
        report.instance_id, {"status": InstanceStatus.UNHEALTHY, "notice": report.reason[:300], "updated_at": int(now)}
    )
    # A replica's instance lost without a warning: its standby takes over, as on a warning.
    watch = standby_watch(hub)
    handled = watch.on_notice(report.instance_id, "unhealthy", region=report.region, now=now) if watch else None
    if handled is not None:
        return handled
    return start_replacement(hub, instance.replica_id, report.instance_id, report.region, "unhealthy", now=now)


def serving_group_name(prefix: str) -> str:
    """The worker regions' serving group, as the worker stack names it (stacks/constructs/gpu_capacity.py)."""
    return f"{prefix}-gpu"


def _fail_launch(  # noqa: PLR0917 (one report's fields)
    hub: HubServices, launch_id: str, region: str, error_class: str, code: str, message: str, now: float
) -> str:
    watch = standby_watch(hub)
    if watch is not None:
        standby_outcome = watch.on_launch_failed(launch_id, error_class=error_class, now=now)
        if standby_outcome is not None:
            return standby_outcome
        if error_class == LaunchFailure.CAPACITY.value:
            # The replica's own launch refused for capacity: a risk signal for the region (no zone: the group
            # tried the region's zones).
            watch.record_signal(
                SignalKind.CAPACITY_ERROR, region=region, zone=None, source=f"capacity#{launch_id}", now=now
            )
    resolved = hub.store.resolve_request(
        LAUNCH, launch_id, RequestStatus.FAILED, error=f"{error_class}: {code} {message}"[:1000], resolved_at=now
    )
    # Also for a duplicate: a retried report still releases what a first one that broke off did not.
    release(hub, region, launch_id, now=now)
    if resolved is None:
        # A duplicate, or a late report for a launch that ended otherwise (it may serve in that region now).
        return "ignored: no pending launch"
    exclude_after_failure(hub, region, error_class, code, message, now=now, capacity_type=resolved.capacity_type)
    send_failure(
        hub.sfn,
        resolved.task_token or "",
        error=str(ERROR_BY_CLASS.get(error_class, TaskError.TRANSIENT)),
        cause=f"{region}: {code} {message}"[:32000],
    )
    if error_class == LaunchFailure.CAPACITY.value:
        _check_standbys(watch, now)
    return f"launch failed ({error_class})"

"""The hub's side of the conversation with worker regions: commands out, reports in.

Commands (launch, teardown) are dispatched from the orchestrator's task-token steps: the token is
stored with the request in the state table, and only the request's id travels. Reports come back on
the hub bus; each names its request, the token is looked up here, and the first report that moves a
request out of `pending` is the one that answers Step Functions. Duplicates, late and out-of-order
reports find nothing pending and change nothing, except that a launch that succeeds after it was
given up is torn down, so no instance runs unaccounted for.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.contracts import (
    CapacityNotice,
    DrainCompleted,
    HubCommand,
    InstanceUnhealthy,
    LaunchFailed,
    LaunchProgress,
    LaunchRequested,
    LaunchSucceeded,
    Source,
    TaskError,
    TeardownCompleted,
    TeardownRequested,
)
from spothub_core.dal.alerts import publish_alert
from spothub_core.dal.event_bus import put_event
from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.dal.executions import start_named
from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.dal.provisioning import LAUNCH, TEARDOWN, ProvisioningStore
from spothub_core.dal.state_table import reason_of
from spothub_core.errors import DependencyUnavailable, RegionTaken, Superseded
from spothub_core.logic.launch_errors import LaunchFailure, classify_launch_error
from spothub_core.logic.provisioning import orchestrator_input
from spothub_core.logic.quotas import quota_alert
from spothub_core.logic.spot_finder import NOT_PLACED
from spothub_core.timings import EXCLUSION_SECONDS

logger = logging.getLogger(__name__)

# A quota fails the orchestrator's launch as a capacity error does: it moves on to the next region.
ERROR_BY_CLASS = {
    "capacity": TaskError.CAPACITY,
    "quota": TaskError.CAPACITY,
    "transient": TaskError.TRANSIENT,
    "fatal": TaskError.FATAL,
}


@dataclass(frozen=True)
class HubServices:
    store: ProvisioningStore
    exclusions: ExclusionStore
    sfn: Any
    events: Any
    ssm: Any
    route53: Any
    bus_name: str
    orchestrator_arn: str
    active_instance_parameter: str
    hosted_zone_id: str | None = None
    endpoint_name: str | None = None
    # The operator's alerts topic (SNS client and ARN), and the instance types the worker groups launch: a quota
    # alert names the quotas of their families.
    alerts: Any = None
    alerts_topic_arn: str | None = None
    instance_types: tuple[str, ...] = ()
    prefix: str = "spothub"


# --- commands, dispatched from the orchestrator --------------------------------------------------


def dispatch_launch(hub: HubServices, request: dict[str, Any], *, now: float) -> dict[str, Any]:
    config = hub.store.config()
    if config.get("status") != "enabled" or int(config.get("generation", 0)) != int(request["generation"]):
        raise Superseded(f"provisioning is {config.get('status')} at generation {config.get('generation')}")
    command = LaunchRequested(
        launch_id=request["launch_id"],
        replica_id=request["replica_id"],
        region=request["region"],
        capacity_type=request.get("capacity_type", "spot"),
    )
    fields = {**command.model_dump(exclude={"version"}), "generation": int(request["generation"])}
    # Reserved before anything is dispatched: a replica that ranked at the same time finds the region taken.
    holder = _reserve(hub, command.region, command.replica_id, command.launch_id, now=now)
    if holder != command.replica_id:
        raise RegionTaken(f"{command.region} is reserved for {holder}; {command.replica_id} looks again")
    if not hub.store.put_request(LAUNCH, command.launch_id, fields, token=request["token"], now=now):
        _release(hub, command.region, command.launch_id, now=now)
        raise Superseded(f"launch {command.launch_id} was already answered")
    hub.store.update_replica(
        command.replica_id,
        {"target_region": command.region, "launch_id": command.launch_id, "capacity_type": command.capacity_type},
    )
    put_command(hub, HubCommand.LAUNCH_REQUESTED, command.model_dump())
    return {"launch_id": command.launch_id}


def dispatch_teardown(hub: HubServices, request: dict[str, Any], *, now: float) -> dict[str, Any]:
    command = TeardownRequested(
        teardown_id=request["teardown_id"],
        region=request["region"],
        instance_id=request.get("instance_id"),
        reason=request.get("reason", ""),
    )
    hub.store.put_request(
        TEARDOWN, command.teardown_id, command.model_dump(exclude={"version"}), token=request["token"], now=now
    )
    if command.instance_id:
        hub.store.put_instance(command.instance_id, {"status": "terminating", "updated_at": int(now)})
    put_command(hub, HubCommand.TEARDOWN_REQUESTED, command.model_dump())
    return {"teardown_id": command.teardown_id}


def abandon_launch(hub: HubServices, request: dict[str, Any], *, now: float) -> dict[str, Any]:
    """The orchestrator gave up waiting (timeout): exclude the region for a while, cancel the launch there."""
    launch = hub.store.resolve_request(LAUNCH, request["launch_id"], "abandoned", {"error": request.get("cause", "")})
    region = request["region"]
    _release(hub, region, request["launch_id"], now=now)
    hub.exclusions.exclude(region, now + EXCLUSION_SECONDS["timeout"], f"launch {request['launch_id']} timed out")
    _cancel(hub, region, request["launch_id"])
    return {"abandoned": launch is not None}


def record_instance(hub: HubServices, request: dict[str, Any], *, now: float) -> dict[str, Any]:
    """The replacement is healthy: record it, publish it, move the endpoint; return what to retire."""
    instance = request["instance"]
    region = request["region"]
    fields = {
        "region": region,
        "instance_id": instance["instance_id"],
        "capacity_type": instance.get("capacity_type", request.get("capacity_type", "spot")),
        "placed_at": int(now),
        "reason": request.get("reason") or "",
        "target_region": None,
    }
    replacing = request.get("replacing") or None
    if not hub.store.replica_serving(request["replica_id"], generation=int(request["generation"]), fields=fields):
        # Disabled (or re-enabled) while this launch ran: the new instance is not wanted.
        _release(hub, region, request["launch_id"], now=now)
        return {"retire": {"instance_id": instance["instance_id"], "region": region}, "superseded": True}
    # It serves here now: the region it leaves (make before break) is free for another replica.
    hub.store.release_regions(request["replica_id"], now=now, keep=region)
    hub.store.put_instance(
        instance["instance_id"],
        {
            **{k: v for k, v in instance.items() if k != "instance_id"},
            "region": region,
            "replica_id": request["replica_id"],
            "launch_id": request["launch_id"],
            "status": "serving",
            "updated_at": int(now),
        },
    )
    _publish_active(hub, region, instance)
    retire = None
    if replacing and replacing.get("instance_id") and replacing["instance_id"] != instance["instance_id"]:
        retire = {"instance_id": replacing["instance_id"], "region": replacing["region"]}
    return {"retire": retire, "superseded": False}


def replica_failed(hub: HubServices, request: dict[str, Any], *, now: float) -> dict[str, Any]:
    error = request.get("error") or {}
    hub.store.replica_status(
        request["replica_id"],
        "failed",
        {"error": f"{error.get('Error', 'error')}: {error.get('Cause', '')}"[:1000], "updated_at": int(now)},
    )
    hub.store.release_regions(request["replica_id"], now=now)
    return {"replica_id": request["replica_id"], "status": "failed"}


def continue_as_new(hub: HubServices, request: dict[str, Any], *, now: float) -> dict[str, Any]:
    """Start a fresh orchestrator execution for a replica whose execution has looped long (history cap).

    A spot watch (`state.watch_spot`) goes on only while it still watches: its replica serves on
    on-demand under this generation and this execution; otherwise it ends here (`continued_as` None)."""
    if request["state"].get("watch_spot") and not _watches(
        hub.store.config(), hub.store.replica(request["replica_id"]) or {}, request
    ):
        return {"continued_as": None}
    name = f"{request['replica_id']}-g{request['generation']}-c{int(now)}"
    start_execution(hub, name, {**request["state"], "attempt": 0})
    hub.store.update_replica(request["replica_id"], {"execution": name})
    return {"continued_as": name}


def return_to_spot(hub: HubServices, request: dict[str, Any], *, now: float) -> dict[str, Any]:
    """A replica serving on on-demand found a spot region: replace its on-demand instance, make before
    break, with a spot-only replacement (it never falls back to on-demand; with no spot region left it
    ends in `keep_on_demand`). Nothing starts when the replica no longer serves on on-demand under this
    generation and this watch (replaced, disabled, re-enabled meanwhile); the watch then ends."""
    replica = hub.store.replica(request["replica_id"]) or {}
    instance_id = replica.get("instance_id")
    # One name per look: a retried invocation of the same look reuses it, a later look never does.
    name = f"{request['replica_id']}-s-{instance_id}-{_epoch(request.get('looked_at'), now)}"
    retried = replica.get("status") == "replacing" and replica.get("execution") == name
    if not (retried or _watches(hub.store.config(), replica, request)):
        return {"started": False, "outcome": "ignored: the replica no longer serves on on-demand under this watch"}
    outcome = start_replacement(
        hub,
        {**(hub.store.instance(instance_id) or {}), "replica_id": request["replica_id"]},
        instance_id,
        replica["region"],
        "return-to-spot",
        now=now,
        spot_only=True,
        name=name,
    )
    return {"started": outcome.startswith("replacement started"), "outcome": outcome}


def keep_on_demand(hub: HubServices, request: dict[str, Any], *, now: float) -> dict[str, Any]:
    """A spot-only replacement found no spot region: the replica keeps serving on its on-demand instance
    (back from `replacing` to `serving`), and a new execution watches for spot again."""
    replica_id = request["replica_id"]
    generation = int(request["generation"])
    instance_id = request["replacing"]["instance_id"]
    watch = f"{request['execution']}-w"
    instance = hub.store.instance(instance_id) or {}
    kept = hub.store.keep_serving(
        replica_id,
        generation=generation,
        instance_id=instance_id,
        execution=request["execution"],
        watch=watch,
        # What the spot-only launches overwrote (dispatch_launch notes its target), back to the instance's.
        fields={
            "capacity_type": instance.get("capacity_type") or "on-demand",
            "launch_id": instance.get("launch_id"),
            "target_region": None,
            "updated_at": int(now),
        },
    )
    if not kept:
        return {"kept": False, "watch": None}
    start_execution(hub, watch, {"replica_id": replica_id, "generation": generation, "watch_spot": True})
    return {"kept": True, "watch": watch}


# --- reports, from the hub bus ----------------------------------------------------------------


def on_launch_progress(hub: HubServices, report: LaunchProgress, *, now: float) -> str:
    launch = hub.store.request(LAUNCH, report.launch_id)
    if not launch or launch.get("status") != "pending":
        return "ignored: no pending launch"
    _task_call(hub.sfn.send_task_heartbeat, taskToken=launch["task_token"])
    return f"heartbeat: {report.step}"


def on_launch_succeeded(hub: HubServices, report: LaunchSucceeded, *, now: float) -> str:
    resolved = hub.store.resolve_request(
        LAUNCH, report.launch_id, "succeeded", {"instance_id": report.instance.instance_id, "resolved_at": int(now)}
    )
    if resolved is None:
        launch = hub.store.request(LAUNCH, report.launch_id) or {}
        if launch.get("status") == "succeeded" and launch.get("instance_id") == report.instance.instance_id:
            return "ignored: duplicate"
        # Given up (timeout, capacity event first, disabled) yet an instance came up: do not leave it running.
        _teardown_orphan(hub, report.region, report.instance.instance_id, f"late success of {report.launch_id}")
        return "late: orphan instance torn down"
    output = report.model_dump(mode="json")
    if not _task_call(hub.sfn.send_task_success, taskToken=resolved["task_token"], output=json.dumps(output)):
        _teardown_orphan(hub, report.region, report.instance.instance_id, f"orchestrator of {report.launch_id} gone")
        return "orchestrator gone: instance torn down"
    return "launch succeeded"


def on_launch_failed(hub: HubServices, report: LaunchFailed, *, now: float) -> str:
    return _fail_launch(hub, report.launch_id, report.region, report.error_class, report.code, report.message, now)


def on_launch_unsuccessful(hub: HubServices, event: dict[str, Any], *, now: float) -> str:
    """Auto Scaling could not launch in a worker region (forwarded AWS event): fail that region's pending launch."""
    region = event.get("region", "")
    detail = event.get("detail") or {}
    message = str(detail.get("StatusMessage") or detail.get("Description") or "")
    failure = classify_launch_error(None, message)
    pending = [launch for launch in hub.store.pending(LAUNCH) if launch.get("region") == region]
    if failure in (LaunchFailure.CAPACITY, LaunchFailure.QUOTA):
        capacity_type = pending[0].get("capacity_type") if pending else None
        _exclude(hub, region, failure.value, "LaunchUnsuccessful", message, now=now, capacity_type=capacity_type)
    if not pending:
        return "ignored: no pending launch in the region"
    outcomes = [
        _fail_launch(hub, launch["id"], region, failure.value, "LaunchUnsuccessful", message, now) for launch in pending
    ]
    for launch in pending:
        _cancel(hub, region, launch["id"])
    return "; ".join(outcomes)


def on_teardown_completed(hub: HubServices, report: TeardownCompleted, *, now: float) -> str:
    resolved = hub.store.resolve_request(TEARDOWN, report.teardown_id, "completed", {"resolved_at": int(now)})
    for instance in hub.store.instances():
        if instance.get("region") != report.region or instance.get("status") == "terminated":
            continue
        if report.instance_id is None or instance["instance_id"] == report.instance_id:
            hub.store.put_instance(instance["instance_id"], {"status": "terminated", "updated_at": int(now)})
    if resolved is None:
        return "ignored: no pending teardown"
    if resolved.get("task_token"):
        _task_call(hub.sfn.send_task_success, taskToken=resolved["task_token"], output=report.model_dump_json())
    return "teardown completed"


def on_capacity_notice(hub: HubServices, notice: CapacityNotice, *, now: float) -> str:
    instance = hub.store.instance(notice.instance_id)
    if not instance:
        return "ignored: not an instance spothub placed"
    if instance.get("status") in ("serving", "at-risk"):
        status = "interrupted" if notice.kind == "interruption" else "at-risk"
        hub.store.put_instance(notice.instance_id, {"status": status, "notice": notice.kind, "updated_at": int(now)})
    return start_replacement(hub, instance, notice.instance_id, notice.region, notice.kind, now=now)


def start_replacement(
    hub: HubServices,
    instance: dict[str, Any],
    instance_id: str,
    region: str,
    why: str,
    *,
    now: float,
    spot_only: bool = False,
    name: str | None = None,
) -> str:
    """Replace a serving instance, make before break: a new launch, preferring the same region, then the
    old instance retired once the new one is healthy. One replacement per replica at a time.

    `spot_only`: the replacement launches spot or nothing (a return to spot). `name`: the caller's own
    execution name for this one request; a retry of it finds the replica replacing under that very name
    and starts the execution again (a no-op by name when the first try did start it)."""
    replica_id = instance.get("replica_id")
    config = hub.store.config()
    if not replica_id or config.get("status") != "enabled":
        return "ignored: provisioning is disabled"
    retried = name is not None
    name = name or f"{replica_id}-r-{instance_id}"
    if not hub.store.start_replacing(replica_id, instance_id=instance_id, execution=name, now=now):
        replica = hub.store.replica(replica_id) or {}
        if not (retried and replica.get("status") == "replacing" and replica.get("execution") == name):
            return "ignored: the replica is already being replaced or has moved"
    start_execution(
        hub,
        name,
        {
            "replica_id": replica_id,
            "generation": int(config["generation"]),
            "attempt": 0,
            "prefer_region": region,
            "replacing": {"instance_id": instance_id, "region": region, "notice": why},
            "spot_only": spot_only,
        },
    )
    return f"replacement started: {name}"


# --- helpers ---------------------------------------------------------------------------------------


def put_command(hub: HubServices, detail_type: str, detail: dict[str, Any]) -> None:
    put_event(hub.events, hub.bus_name, Source.HUB, detail_type, detail)


def start_execution(hub: HubServices, name: str, state: dict[str, Any]) -> bool:
    return start_named(hub.sfn, hub.orchestrator_arn, name, orchestrator_input(state))


def _fail_launch(  # noqa: PLR0917 (one report's fields)
    hub: HubServices, launch_id: str, region: str, error_class: str, code: str, message: str, now: float
) -> str:
    resolved = hub.store.resolve_request(
        LAUNCH, launch_id, "failed", {"error": f"{error_class}: {code} {message}"[:1000], "resolved_at": int(now)}
    )
    # Also for a duplicate: a retried report still releases what a first one that broke off did not.
    _release(hub, region, launch_id, now=now)
    if resolved is None:
        # A duplicate, or a late report for a launch that ended otherwise (it may serve in that region now).
        return "ignored: no pending launch"
    _exclude(hub, region, error_class, code, message, now=now, capacity_type=resolved.get("capacity_type"))
    _task_call(
        hub.sfn.send_task_failure,
        taskToken=resolved["task_token"],
        error=str(ERROR_BY_CLASS.get(error_class, TaskError.TRANSIENT)),
        cause=f"{region}: {code} {message}"[:32000],
    )
    return f"launch failed ({error_class})"


def _exclude(
    hub: HubServices,
    region: str,
    error_class: str,
    code: str,
    message: str,
    *,
    now: float,
    capacity_type: str | None = None,
) -> None:
    """Leave the region out for as long as its failure's class says; tell the operator of a quota, once per
    exclusion (the worker's report and Auto Scaling's event of one failure find the same exclusion)."""
    if error_class not in EXCLUSION_SECONDS:
        return
    reason = f"{error_class}: {code} {message}"[:300]
    until = now + EXCLUSION_SECONDS[error_class]
    if error_class != LaunchFailure.QUOTA:
        hub.exclusions.exclude(region, until, reason)
        return
    if not hub.exclusions.exclude_once(region, until, reason, kind=error_class, now=now):
        return
    alert = quota_alert(
        hub.prefix,
        region,
        capacity_type=capacity_type,
        instance_types=list(hub.instance_types),
        code=code,
        message=message,
        now=now,
    )
    if hub.alerts is None or not hub.alerts_topic_arn:
        logger.error("quota alert (no alerts topic)", extra={"subject": alert.subject, "alert": alert.message})
        return
    try:
        publish_alert(hub.alerts, hub.alerts_topic_arn, alert.subject, alert.message)
    except DependencyUnavailable:
        # The exclusion stands either way; a retried report would find it and not alert, so say it here.
        logger.exception("quota alert not published", extra={"subject": alert.subject, "alert": alert.message})


def _reserve(hub: HubServices, region: str, replica_id: str, launch_id: str, *, now: float) -> str:
    """Reserve `region` for the replica's launch; the replica that holds it afterwards (another one: taken)."""
    if hub.store.reserve_region(region, replica_id=replica_id, launch_id=launch_id, now=now):
        return replica_id
    held = hub.store.reservation(region) or {}
    holder = held.get("replica_id")
    placed = holder and (hub.store.replica(holder) or {}).get("status", "stopped") not in NOT_PLACED
    if not placed and hub.store.reserve_region(
        region, replica_id=replica_id, launch_id=launch_id, now=now, taking_over=held.get("launch_id")
    ):
        # Left behind by a replica no longer placed (stopped while it reserved, a release that never ran).
        return replica_id
    return str(holder or "another replica")


def _release(hub: HubServices, region: str, launch_id: str, *, now: float) -> None:
    """`launch_id` will not serve in `region`: free it for other replicas, unless its replica serves there
    already (a failed replacement in the replica's own region keeps the region)."""
    held = hub.store.reservation(region) or {}
    if held.get("launch_id") != launch_id:
        return
    replica = hub.store.replica(held["replica_id"]) or {}
    if replica.get("region") == region and replica.get("instance_id") and replica.get("status") not in NOT_PLACED:
        return
    hub.store.release_region(region, launch_id=launch_id, now=now)


def _watches(config: dict[str, Any], replica: dict[str, Any], request: dict[str, Any]) -> bool:
    """Whether the spot watch making `request` still has something to watch: its replica serves on
    on-demand, under the current generation and under this very execution (else the watch is stale)."""
    generation = int(request["generation"])
    return (
        config.get("status") == "enabled"
        and int(config.get("generation", 0)) == generation
        and int(replica.get("generation", -1)) == generation
        and replica.get("status") == "serving"
        and replica.get("capacity_type") == "on-demand"
        and bool(replica.get("instance_id"))
        and replica.get("execution") == request["execution"]
    )


def _epoch(timestamp: str | None, default: float) -> int:
    """Epoch seconds of a Step Functions timestamp (ISO 8601, `Z` or an offset); `default` without one."""
    return int(datetime.fromisoformat(timestamp).timestamp()) if timestamp else int(default)


def _cancel(hub: HubServices, region: str, launch_id: str) -> None:
    command = TeardownRequested(
        teardown_id=f"cancel-{launch_id}", region=region, launch_id=launch_id, reason=f"cancel {launch_id}"
    )
    put_command(hub, HubCommand.TEARDOWN_REQUESTED, command.model_dump())


def _teardown_orphan(hub: HubServices, region: str, instance_id: str, reason: str) -> None:
    command = TeardownRequested(
        teardown_id=f"orphan-{instance_id}", region=region, instance_id=instance_id, reason=reason
    )
    put_command(hub, HubCommand.TEARDOWN_REQUESTED, command.model_dump())


def _publish_active(hub: HubServices, region: str, instance: dict[str, Any]) -> None:
    value = json.dumps({"region": region, **{k: instance.get(k) for k in ("instance_id", "public_ip", "private_ip")}})
    try:
        hub.ssm.put_parameter(Name=hub.active_instance_parameter, Value=value, Type="String", Overwrite=True)
        address = instance.get("public_ip") or instance.get("private_ip")
        if hub.hosted_zone_id and hub.endpoint_name and address:
            hub.route53.change_resource_record_sets(
                HostedZoneId=hub.hosted_zone_id,
                ChangeBatch={
                    "Comment": f"spothub: {instance['instance_id']} in {region}",
                    "Changes": [
                        {
                            "Action": "UPSERT",
                            "ResourceRecordSet": {
                                "Name": hub.endpoint_name,
                                "Type": "A",
                                "TTL": 30,
                                "ResourceRecords": [{"Value": address}],
                            },
                        }
                    ],
                },
            )
    except (ClientError, BotoCoreError) as exc:
        raise DependencyUnavailable(f"could not publish the active instance: {reason_of(exc)}") from exc


def _task_call(method: Any, **kwargs: Any) -> bool:
    """Answer Step Functions; False when the execution no longer waits (stopped, timed out)."""
    try:
        method(**kwargs)
    except ClientError as exc:
        code = exc.response["Error"].get("Code", "")
        if code in ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist", "ExecutionDoesNotExist"):
            logger.info("task token no longer valid", extra={"code": code})
            return False
        raise DependencyUnavailable(f"Step Functions refused the answer: {reason_of(exc)}") from exc
    return True


# --- reports of instance health -------------------------------------------------------------------------


def on_drain_completed(health: InstanceHealthStore, report: DrainCompleted, *, now: float) -> str:
    health.record_drain(report.instance_id, report.model_dump(exclude={"version"}), now=now)
    return f"drain recorded: {report.outcome}"


def on_instance_unhealthy(
    hub: HubServices, health: InstanceHealthStore, report: InstanceUnhealthy, *, now: float
) -> str:
    if not health.record_remediation(
        report.instance_id,
        report.notice_id,
        {"region": report.region, "reason": report.reason, "alarm_name": report.alarm_name},
        now=now,
    ):
        return "ignored: this alarm firing was remediated already"
    instance = hub.store.instance(report.instance_id)
    if not instance or instance.get("status") == "terminated":
        return "recorded: not a serving instance spothub placed"
    hub.store.put_instance(
        report.instance_id, {"status": "unhealthy", "notice": report.reason[:300], "updated_at": int(now)}
    )
    return start_replacement(hub, instance, report.instance_id, report.region, "unhealthy", now=now)

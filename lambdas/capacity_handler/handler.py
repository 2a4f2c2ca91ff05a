"""Capacity handler: the hub's side of every launch and teardown.

Two kinds of callers, told apart by the event's shape:
- the orchestrator state machine, with `{"action": ...}`: each action's input is validated against its
  model (spothub_core.models.orchestrator_tasks) and its output model answered as JSON
  (spothub_core.logic.orchestrator_tasks);
- the minute's schedule, with `{"action": "check_standbys"}`: the warm standby's risk check of every replica
  (spothub_core.logic.standby_watch), sampling the zones' placement scores when due;
- EventBridge, with worker and agent reports and forwarded AWS events from the hub bus, dispatched on the
  consumers declared for this function (spothub_core.logic.worker_reports); kinds it does not consume are
  logged and ignored.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from spothub_core import aws_clients
from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.dal.standby import StandbyStore
from spothub_core.dal.zone_scores import observe_zones
from spothub_core.logic.hub_services import HubServices
from spothub_core.logic.orchestrator_tasks import TASKS
from spothub_core.logic.spot_finder import SpotFinder
from spothub_core.logic.standby_ports import HubStandbyPorts
from spothub_core.logic.standby_watch import StandbyWatch, ZoneObservation
from spothub_core.logic.worker_reports import dispatch
from spothub_core.observability import logger, metrics, tracer
from spothub_core.settings import HubSettings, load_settings


class CapacityHandlerSettings(HubSettings):
    hub_bus_name: str = Field(alias="SPOTHUB_HUB_BUS", min_length=1)
    orchestrator_arn: str = Field(alias="SPOTHUB_ORCHESTRATOR_ARN", min_length=1)
    active_instance_parameter: str = Field(alias="SPOTHUB_ACTIVE_INSTANCE_PARAMETER", min_length=1)
    hosted_zone_id: str | None = Field(None, alias="SPOTHUB_HOSTED_ZONE_ID")
    endpoint_name: str | None = Field(None, alias="SPOTHUB_ENDPOINT_NAME")
    # Which address the endpoint's records hold: the instances' public one ("true") or their private one.
    serving_public_ip: bool = Field(alias="SPOTHUB_SERVING_PUBLIC_IP")
    alerts_topic_arn: str = Field(alias="SPOTHUB_ALERTS_TOPIC_ARN", min_length=1)
    instance_types: list[str] = Field(alias="SPOTHUB_INSTANCE_TYPES", min_length=1)


settings = load_settings(CapacityHandlerSettings)
table = aws_clients.table(settings.state_table_name)


ec2_for = aws_clients.per_region("ec2")


store, exclusions, standbys = ProvisioningStore(table), ExclusionStore(table), StandbyStore(table)
hub = HubServices(
    store=store,
    exclusions=exclusions,
    health=InstanceHealthStore(table),
    sfn=aws_clients.client("stepfunctions"),
    events=aws_clients.client("events"),
    ssm=aws_clients.client("ssm"),
    route53=aws_clients.client("route53"),
    bus_name=settings.hub_bus_name,
    orchestrator_arn=settings.orchestrator_arn,
    active_instance_parameter=settings.active_instance_parameter,
    hosted_zone_id=settings.hosted_zone_id or None,
    endpoint_name=settings.endpoint_name or None,
    serving_public_ip=settings.serving_public_ip,
    alerts=aws_clients.client("sns"),
    alerts_topic_arn=settings.alerts_topic_arn,
    instance_types=tuple(settings.instance_types),
    prefix=settings.prefix,
    standbys=standbys,
    # A replacement's first ranking, in-process: no spot finder invocation between a notice and the launch.
    spot_finder=SpotFinder.for_hub(
        settings,
        instance_types=settings.instance_types,
        provisioning=store,
        exclusions=exclusions,
        ec2_for=ec2_for,
    ),
)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = time.time()
    if event.get("action") == CHECK_STANDBYS:
        return _check_standbys(now)
    if "action" in event:
        return _act(event, now)
    outcome = dispatch.consume(hub, event, now=now, region=str(event.get("region", "")))
    kind = (str(event.get("source")), str(event.get("detail-type")))
    if outcome is None:
        logger.info("ignored event of a kind the capacity handler does not consume", extra={"kind": kind})
        return {"outcome": "ignored: unknown kind"}
    metrics.add_metric(name="WorkerReports", unit="Count", value=1)
    logger.info("event consumed", extra={"kind": kind, "event_id": event.get("id"), "outcome": outcome})
    return {"outcome": outcome}


CHECK_STANDBYS = "check_standbys"


def _observe_zones() -> ZoneObservation:
    return observe_zones(
        ec2_for,
        scoring_region=settings.hub_region,
        regions=settings.worker_regions,
        instance_types=settings.instance_types,
        target_capacity=1,
    )


def _check_standbys(now: float) -> dict[str, Any]:
    """The minute's risk check: a standby started where the risk rose, released where it fell."""
    assessments = StandbyWatch(store, standbys, HubStandbyPorts(hub)).assess_all(now, observe=_observe_zones)
    result = {
        "checked": len(assessments),
        "actions": {a.replica_id: a.action.value for a in assessments},
        "reasons": {a.replica_id: list(a.reasons) for a in assessments if a.reasons},
    }
    logger.info("standby check", extra=result)
    return result


def _act(event: dict[str, Any], now: float) -> dict[str, Any]:
    """One orchestrator action; a ValidationError naming the field when its input breaks the action's model."""
    name = event["action"]
    if name not in TASKS:
        raise ValueError(f"unknown action {name!r}; known: {', '.join(TASKS)}")
    model, task = TASKS[name]
    request = model.model_validate({k: v for k, v in event.items() if k != "action"})
    result = task(hub, request, now=now).model_dump(mode="json")
    logger.info("action done", extra={"action": name, "result": result})
    return result

"""Capacity handler: the hub's side of every launch and teardown.

Two kinds of callers, told apart by the event's shape:
- the orchestrator state machine, with `{"action": ...}` (dispatch a launch or teardown with its task
  token, record a healthy instance, give up a launch, mark a replica failed, continue as new, return a
  replica on on-demand to spot, keep it on on-demand when no spot region is left);
- EventBridge, with worker and agent reports and forwarded AWS events from the hub bus, dispatched by a
  registry keyed on (source, detail-type); kinds it does not know are logged and ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from spothub_core.contracts import AWS_EVENT_SOURCES, REPORT_MODELS, AwsEvent, Source, WorkerReport
from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.logic import capacity
from spothub_core.observability import logger, metrics, tracer
from spothub_core.settings import HubSettings, load_settings


class CapacityHandlerSettings(HubSettings):
    hub_bus_name: str = Field(alias="SPOTHUB_HUB_BUS", min_length=1)
    orchestrator_arn: str = Field(alias="SPOTHUB_ORCHESTRATOR_ARN", min_length=1)
    active_instance_parameter: str = Field(alias="SPOTHUB_ACTIVE_INSTANCE_PARAMETER", min_length=1)
    hosted_zone_id: str | None = Field(None, alias="SPOTHUB_HOSTED_ZONE_ID")
    endpoint_name: str | None = Field(None, alias="SPOTHUB_ENDPOINT_NAME")
    alerts_topic_arn: str = Field(alias="SPOTHUB_ALERTS_TOPIC_ARN", min_length=1)
    instance_types: list[str] = Field(alias="SPOTHUB_INSTANCE_TYPES", min_length=1)


settings = load_settings(CapacityHandlerSettings)
table = boto3.resource("dynamodb").Table(settings.state_table_name)
hub = capacity.HubServices(
    store=ProvisioningStore(table),
    exclusions=ExclusionStore(table),
    sfn=boto3.client("stepfunctions"),
    events=boto3.client("events"),
    ssm=boto3.client("ssm"),
    route53=boto3.client("route53"),
    bus_name=settings.hub_bus_name,
    orchestrator_arn=settings.orchestrator_arn,
    active_instance_parameter=settings.active_instance_parameter,
    hosted_zone_id=settings.hosted_zone_id or None,
    endpoint_name=settings.endpoint_name or None,
    alerts=boto3.client("sns"),
    alerts_topic_arn=settings.alerts_topic_arn,
    instance_types=tuple(settings.instance_types),
    prefix=settings.prefix,
)

health = InstanceHealthStore(table)

ACTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "dispatch_launch": capacity.dispatch_launch,
    "dispatch_teardown": capacity.dispatch_teardown,
    "abandon_launch": capacity.abandon_launch,
    "record_instance": capacity.record_instance,
    "replica_failed": capacity.replica_failed,
    "continue_as_new": capacity.continue_as_new,
    "return_to_spot": capacity.return_to_spot,
    "keep_on_demand": capacity.keep_on_demand,
}


def _report(kind: WorkerReport, consume: Callable[..., str], *services: Any) -> Callable[[dict[str, Any], float], str]:
    model: type[BaseModel] = REPORT_MODELS[kind]
    return lambda event, now: consume(*(services or (hub,)), model.model_validate(event["detail"]), now=now)


EVENT_CONSUMERS: dict[tuple[str, str], Callable[[dict[str, Any], float], str]] = {
    (Source.WORKER, WorkerReport.LAUNCH_PROGRESS): _report(WorkerReport.LAUNCH_PROGRESS, capacity.on_launch_progress),
    (Source.WORKER, WorkerReport.LAUNCH_SUCCEEDED): _report(
        WorkerReport.LAUNCH_SUCCEEDED, capacity.on_launch_succeeded
    ),
    (Source.WORKER, WorkerReport.LAUNCH_FAILED): _report(WorkerReport.LAUNCH_FAILED, capacity.on_launch_failed),
    (Source.WORKER, WorkerReport.TEARDOWN_COMPLETED): _report(
        WorkerReport.TEARDOWN_COMPLETED, capacity.on_teardown_completed
    ),
    (Source.WORKER, WorkerReport.CAPACITY_NOTICE): _report(WorkerReport.CAPACITY_NOTICE, capacity.on_capacity_notice),
    # The agent sees the same notices first hand; whichever arrives second finds the replacement started.
    (Source.AGENT, WorkerReport.CAPACITY_NOTICE): _report(WorkerReport.CAPACITY_NOTICE, capacity.on_capacity_notice),
    (Source.AGENT, WorkerReport.DRAIN_COMPLETED): _report(
        WorkerReport.DRAIN_COMPLETED, capacity.on_drain_completed, health
    ),
    (Source.WORKER, WorkerReport.INSTANCE_UNHEALTHY): _report(
        WorkerReport.INSTANCE_UNHEALTHY, capacity.on_instance_unhealthy, hub, health
    ),
    (AWS_EVENT_SOURCES[AwsEvent.LAUNCH_UNSUCCESSFUL], AwsEvent.LAUNCH_UNSUCCESSFUL): lambda event, now: (
        capacity.on_launch_unsuccessful(hub, event, now=now)
    ),
}


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = time.time()
    if "action" in event:
        action = ACTIONS.get(event["action"])
        if action is None:
            raise ValueError(f"unknown action {event['action']!r}; known: {', '.join(ACTIONS)}")
        result = action(hub, event, now=now)
        logger.info("action done", extra={"action": event["action"], "result": result})
        return result
    key = (str(event.get("source")), str(event.get("detail-type")))
    consume = EVENT_CONSUMERS.get(key)
    if consume is None:
        logger.info("ignored event of a kind the capacity handler does not consume", extra={"kind": key})
        return {"outcome": "ignored: unknown kind"}
    outcome = consume(event, now)
    metrics.add_metric(name="WorkerReports", unit="Count", value=1)
    logger.info("event consumed", extra={"kind": key, "event_id": event.get("id"), "outcome": outcome})
    return {"outcome": outcome}

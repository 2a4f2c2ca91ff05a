"""Batch supervisor: batch jobs' timeouts, workers, completion, release and notification (hub).

Two kinds of callers, told apart by the event's shape:
- the schedule (every minute, `{"action": "supervise"}`: every live job) and the listing state machine's last
  step (`{"action": "supervise", "job_id": ...}`: that job at once), validated against Supervise and answered
  with Supervised (spothub_core.models.batch_tasks);
- EventBridge, with the worker regions' fleet reports from the hub bus, dispatched on the consumers declared for
  this function (spothub_core.logic.batch_supervisor); kinds it does not consume are logged and ignored.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field, field_validator

from spothub_core import aws_clients
from spothub_core.dal.batch_fleet import FleetStore
from spothub_core.dal.batch_jobs import JobStore
from spothub_core.dal.batch_queue import BatchQueue
from spothub_core.dal.batch_workers import WorkerStore
from spothub_core.dal.spot_finder_function import invoke_spot_finder
from spothub_core.logic.batch_scaling import ScalingPolicy
from spothub_core.logic.batch_supervisor import SupervisorServices, dispatch, supervise
from spothub_core.models.batch_tasks import SUPERVISOR_ACTIONS
from spothub_core.observability import logger, metrics, tracer
from spothub_core.settings import HubSettings, load_settings

# The group's maximum size in each worker region when the stacks name none (batchMaxWorkersPerRegion's default).
DEFAULT_MAX_WORKERS_PER_REGION = 20


class SupervisorSettings(HubSettings):
    jobs_table_name: str = Field(alias="SPOTHUB_JOBS_TABLE", min_length=1)
    hub_bus_name: str = Field(alias="SPOTHUB_HUB_BUS", min_length=1)
    jobs_topic_arn: str = Field(alias="SPOTHUB_JOBS_TOPIC_ARN", min_length=1)
    spot_finder_function: str = Field(alias="SPOTHUB_SPOT_FINDER_FUNCTION", min_length=1)
    instance_types: list[str] = Field(alias="SPOTHUB_BATCH_INSTANCE_TYPES", min_length=1)
    ses_sender: str | None = Field(None, alias="SPOTHUB_SES_SENDER")
    max_workers_per_region: int = Field(DEFAULT_MAX_WORKERS_PER_REGION, alias="SPOTHUB_BATCH_MAX_WORKERS", ge=1)

    @field_validator("ses_sender")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None


settings = load_settings(SupervisorSettings)
table = aws_clients.table(settings.jobs_table_name)
services = SupervisorServices(
    jobs=JobStore(table),
    queue=BatchQueue(table),
    workers=WorkerStore(table),
    fleets=FleetStore(table),
    events=aws_clients.client("events"),
    sns=aws_clients.client("sns"),
    ses=aws_clients.client("ses") if settings.ses_sender else None,
    find=partial(invoke_spot_finder, aws_clients.client("lambda"), settings.spot_finder_function),
    bus_name=settings.hub_bus_name,
    topic_arn=settings.jobs_topic_arn,
    ses_sender=settings.ses_sender,
    policy=ScalingPolicy(
        max_workers_per_region=settings.max_workers_per_region, capacity_fallback=settings.capacity_fallback
    ),
    instance_types=tuple(settings.instance_types),
)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = time.time()
    if "action" in event:
        return _act(event, now)
    outcome = dispatch.consume(services, event, now=now)
    kind = (str(event.get("source")), str(event.get("detail-type")))
    if outcome is None:
        logger.info("ignored event of a kind the batch supervisor does not consume", extra={"kind": kind})
        return {"outcome": "ignored: unknown kind"}
    metrics.add_metric(name="BatchFleetReports", unit="Count", value=1)
    logger.info("event consumed", extra={"kind": kind, "event_id": event.get("id"), "outcome": outcome})
    return {"outcome": outcome}


def _act(event: dict[str, Any], now: float) -> dict[str, Any]:
    """A ValidationError naming the field when the input breaks the action's model."""
    name = event["action"]
    if name not in SUPERVISOR_ACTIONS:
        raise ValueError(f"unknown action {name!r}; known: {', '.join(SUPERVISOR_ACTIONS)}")
    task = SUPERVISOR_ACTIONS[name].model_validate({k: v for k, v in event.items() if k != "action"})
    result = supervise(services, task, now=now)
    metrics.add_metric(name="BatchJobsSupervised", unit="Count", value=result.jobs)
    metrics.add_metric(name="BatchWorkersRequested", unit="Count", value=result.workers_requested)
    metrics.add_metric(name="BatchesTimedOut", unit="Count", value=result.timed_out)
    logger.info("supervised", extra={"result": result.model_dump(mode="json")})
    return result.model_dump(mode="json")

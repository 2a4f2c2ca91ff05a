"""Worker region function: the hub's BatchFleetRequested (from the worker bus) applied to the job's Auto Scaling
group (created on first use, grown, members released, deleted on release), then the group as it is reported back
(BatchFleetReport on the worker bus, source spothub.worker, forwarded to the hub like the other reports).

A request that cannot be applied for now (throttling, a member between lifecycle states) raises: EventBridge
delivers it again. Capacity, quota and fatal refusals are reported instead, so the hub asks elsewhere.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from spothub_core import aws_clients
from spothub_core.consumers import Dispatch, Target
from spothub_core.contracts import BatchFleetRequested, Source, WorkerReport
from spothub_core.dal.event_bus import put_event
from spothub_core.dal.job_groups import GroupTemplate, JobGroups
from spothub_core.logic.batch_fleet import FleetRegion, apply_request
from spothub_core.observability import logger, tracer
from spothub_core.settings import BaseSettings, load_settings


class BatchFleetSettings(BaseSettings):
    region: str = Field(alias="AWS_REGION", min_length=1)
    hub_region: str = Field(alias="SPOTHUB_HUB_REGION", min_length=1)
    worker_bus_name: str = Field(alias="SPOTHUB_WORKER_BUS", min_length=1)
    launch_template_id: str = Field(alias="SPOTHUB_BATCH_LAUNCH_TEMPLATE_ID", min_length=1)
    subnets: list[str] = Field(alias="SPOTHUB_BATCH_SUBNETS", min_length=1)
    instance_types: list[str] = Field(alias="SPOTHUB_BATCH_INSTANCE_TYPES", min_length=1)
    max_workers: int = Field(alias="SPOTHUB_BATCH_MAX_WORKERS", ge=1)


settings = load_settings(BatchFleetSettings)
events = aws_clients.client("events")
fleet = FleetRegion(
    region=settings.region,
    prefix=settings.prefix,
    hub_region=settings.hub_region,
    groups=JobGroups(
        aws_clients.client("autoscaling"),
        GroupTemplate(settings.launch_template_id, tuple(settings.subnets), settings.max_workers),
        settings.region,
    ),
    instance_types=tuple(settings.instance_types),
)

commands: Dispatch[FleetRegion] = Dispatch(Target.BATCH_FLEET)


@commands.on(BatchFleetRequested)
def on_fleet_requested(region: FleetRegion, request: BatchFleetRequested) -> str:
    applied = apply_request(region, request, now=time.time())
    if applied.report is not None:
        put_event(
            events,
            settings.worker_bus_name,
            Source.WORKER,
            WorkerReport.BATCH_FLEET_REPORT,
            applied.report.model_dump(mode="json"),
        )
    return applied.outcome


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    outcome = commands.consume(fleet, event)
    if outcome is None:
        logger.info("ignored event", extra={"source": event.get("source"), "detail_type": event.get("detail-type")})
        return {"outcome": "ignored: unknown kind"}
    logger.info("fleet request applied", extra={"detail": event.get("detail"), "outcome": outcome})
    return {"outcome": outcome}

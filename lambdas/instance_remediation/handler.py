"""Worker region function: an instance alarm changed state (CloudWatch Alarm State Change on the default
bus) → when it is an ALARM of one of spothub's instances, ask the hub to replace that instance."""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from spothub_core.contracts import AWS_EVENT_SOURCES, AwsEvent
from spothub_core.logic.remediation import on_alarm
from spothub_core.logic.worker_region import WorkerRegion
from spothub_core.observability import logger, tracer
from spothub_core.settings import BaseSettings, load_settings


class RemediationSettings(BaseSettings):
    region: str = Field(alias="AWS_REGION", min_length=1)
    group_name: str = Field(alias="SPOTHUB_GROUP_NAME", min_length=1)
    worker_bus_name: str = Field(alias="SPOTHUB_WORKER_BUS", min_length=1)


settings = load_settings(RemediationSettings)
worker = WorkerRegion(
    region=settings.region,
    group_name=settings.group_name,
    cluster_name="",
    task_definition="",
    autoscaling=boto3.client("autoscaling"),
    ec2=boto3.client("ec2"),
    ecs=None,
    sfn=None,
    cloudwatch=boto3.client("cloudwatch"),
    prefix=settings.prefix,
)
events = boto3.client("events")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    kind = (event.get("source"), event.get("detail-type"))
    if kind != (AWS_EVENT_SOURCES[AwsEvent.ALARM_STATE_CHANGE], AwsEvent.ALARM_STATE_CHANGE.value):
        logger.info("ignored event of a kind remediation does not consume", extra={"kind": kind})
        return {"outcome": "ignored: unknown kind"}
    outcome = on_alarm(worker, events, settings.worker_bus_name, event.get("detail") or {})
    logger.info("alarm handled", extra={"alarm": (event.get("detail") or {}).get("alarmName"), "outcome": outcome})
    return {"outcome": outcome}

"""Worker region function: an instance alarm changed state (CloudWatch Alarm State Change on the default
bus) → when it is an ALARM of one of spothub's instances, ask the hub to replace that instance."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from spothub_core import aws_clients
from spothub_core.consumers import Dispatch, Target
from spothub_core.contracts import AlarmStateChangeDetail
from spothub_core.dal.auto_scaling_group import AutoScalingGroup
from spothub_core.dal.ec2_instances import Ec2Instances
from spothub_core.dal.instance_alarms import InstanceAlarms
from spothub_core.logic.remediation import RemediationServices, on_alarm
from spothub_core.observability import logger, tracer
from spothub_core.settings import BaseSettings, load_settings


class RemediationSettings(BaseSettings):
    region: str = Field(alias="AWS_REGION", min_length=1)
    group_name: str = Field(alias="SPOTHUB_GROUP_NAME", min_length=1)
    worker_bus_name: str = Field(alias="SPOTHUB_WORKER_BUS", min_length=1)


settings = load_settings(RemediationSettings)
autoscaling = aws_clients.client("autoscaling")
events = aws_clients.client("events")
services = RemediationServices(
    region=settings.region,
    prefix=settings.prefix,
    group=AutoScalingGroup(autoscaling, settings.group_name, settings.region),
    instances=Ec2Instances(aws_clients.client("ec2")),
    alarms=InstanceAlarms(aws_clients.client("cloudwatch")),
    events=events,
    bus_name=settings.worker_bus_name,
)

alarms: Dispatch[RemediationServices] = Dispatch(Target.INSTANCE_REMEDIATION)
alarms.on(AlarmStateChangeDetail)(on_alarm)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    outcome = alarms.consume(services, event)
    if outcome is None:
        kind = (event.get("source"), event.get("detail-type"))
        logger.info("ignored event of a kind remediation does not consume", extra={"kind": kind})
        return {"outcome": "ignored: unknown kind"}
    logger.info("alarm handled", extra={"alarm": (event.get("detail") or {}).get("alarmName"), "outcome": outcome})
    return {"outcome": outcome}

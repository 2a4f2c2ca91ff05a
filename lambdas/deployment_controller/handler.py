"""Deployment controller (hub): every deployment reconciled with ECS and the node groups of the worker regions.

Two kinds of callers, told apart by the event's shape:
- the schedule, every minute: the bare Scheduled Event of a rule given no input (source aws.events);
- EventBridge, with what the controller consumes from the hub bus (spothub_core.consumers,
  Target.DEPLOYMENT_CONTROLLER), dispatched on the functions of spothub_core.logic.deployment_controller: the
  deployments API's nudge, a deployment task's ECS state change, an agent's capacity notice for a node (marked
  interrupted first). Each leads to a run; a notice for an instance that is no node is ignored, and so is a kind
  the controller does not consume.
A run (logic/deployment_controller.run) takes the controller's lease; one that finds it held marks it for the
holder's next pass and returns.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from spothub_core import aws_clients
from spothub_core.contracts import DeploymentMetric
from spothub_core.dal.deployment_store import DeploymentStore
from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.dal.node_groups import RegionNodeGroups
from spothub_core.dal.spot_finder_function import invoke_spot_finder
from spothub_core.dal.worker_ecs import RegionEcs
from spothub_core.logic.deployment_context import RegionClients
from spothub_core.logic.deployment_controller import IGNORED, ControllerServices, RunSummary, dispatch, run
from spothub_core.observability import logger, metrics, tracer
from spothub_core.settings import DeploymentSettings, load_settings

# What EventBridge delivers for a scheduled rule with no input of its own.
SCHEDULED_EVENT = ("aws.events", "Scheduled Event")


class ControllerSettings(DeploymentSettings):
    spot_finder_function: str = Field(alias="SPOTHUB_SPOT_FINDER_FUNCTION", min_length=1)
    # The deployments' task roles, created once in the hub stack (IAM is global): every task definition names them.
    execution_role_arn: str = Field(alias="SPOTHUB_DEPLOYMENT_EXECUTION_ROLE_ARN", min_length=1)
    task_role_arn: str = Field(alias="SPOTHUB_DEPLOYMENT_TASK_ROLE_ARN", min_length=1)


settings = load_settings(ControllerSettings)


@functools.cache
def region_clients(region: str) -> RegionClients:
    """A worker region's ECS, EC2 and Auto Scaling, created on first use."""
    return RegionClients(
        ecs=RegionEcs(
            aws_clients.client("ecs", region_name=region),
            aws_clients.client("ec2", region_name=region),
            region=region,
            prefix=settings.prefix,
            node_classes=settings.node_classes,
            execution_role_arn=settings.execution_role_arn,
            task_role_arn=settings.task_role_arn,
        ),
        groups=RegionNodeGroups(
            aws_clients.client("autoscaling", region_name=region), region=region, prefix=settings.prefix
        ),
    )


dynamodb = aws_clients.resource("dynamodb")
services = ControllerServices(
    store=DeploymentStore(aws_clients.table(settings.deployments_table_name, dynamodb)),
    settings=settings,
    region=region_clients,
    find=functools.partial(invoke_spot_finder, aws_clients.client("lambda"), settings.spot_finder_function),
    agents=InstanceHealthStore(aws_clients.table(settings.state_table_name, dynamodb)).agents,
)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    kind = (str(event.get("source")), str(event.get("detail-type")))
    if kind == SCHEDULED_EVENT:
        outcome = "run: schedule"
    else:
        consumed = dispatch.consume(services, event, now=time.time())
        if consumed is None:
            logger.info("ignored event of a kind the deployment controller does not consume", extra={"kind": kind})
            return {"outcome": "ignored: unknown kind"}
        outcome = consumed
        logger.info("event consumed", extra={"kind": kind, "event_id": event.get("id"), "outcome": outcome})
        if outcome.startswith(IGNORED):
            return {"outcome": outcome}
    summary = run(
        services,
        holder=context.aws_request_id,
        clock=time.time,
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
    )
    _emit(summary)
    logger.info("deployments reconciled", extra={"summary": summary.model_dump(mode="json", exclude={"log"})})
    for line in summary.log:
        logger.info(line)
    return {"outcome": outcome, "summary": summary.model_dump(mode="json")}


def _emit(summary: RunSummary) -> None:
    if summary.lease != "taken":
        return  # the holder's run reports
    last = summary.last
    for name, value in (
        (DeploymentMetric.GPUS_TOTAL, last.gpus_total),
        (DeploymentMetric.GPUS_ALLOCATED, last.gpus_allocated),
        (DeploymentMetric.TASKS_HEALTHY, last.tasks_healthy),
        (DeploymentMetric.TASKS_PENDING, last.tasks_pending),
        (DeploymentMetric.TASK_RESTARTS, summary.task_restarts),
        (DeploymentMetric.NODES_ASKED, summary.nodes_asked),
    ):
        metrics.add_metric(name=str(name), unit="Count", value=value)

"""Worker region function: the launch, teardown and capacity-monitor state machines' tasks, and the
receiver of the hub's commands.

- EventBridge delivers a hub command (launch or teardown requested) from the worker bus: it starts the
  matching state machine with the command's id as the execution name, so a command delivered twice
  starts one execution.
- A state machine task calls it with `{"action": ...}`; errors are raised as CapacityError,
  TransientError or FatalError, the names the ASL retries and catches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from spothub_core.contracts import COMMAND_MODELS, HubCommand, Source
from spothub_core.dal.executions import start_named
from spothub_core.logic import capacity_monitor, launch_instance, teardown_instance
from spothub_core.logic.launch_errors import describe_error
from spothub_core.logic.worker_region import WorkerRegion
from spothub_core.observability import logger, tracer
from spothub_core.settings import BaseSettings, load_settings


class WorkerSettings(BaseSettings):
    region: str = Field(alias="AWS_REGION", min_length=1)
    group_name: str = Field(alias="SPOTHUB_GROUP_NAME", min_length=1)
    cluster_name: str = Field(alias="SPOTHUB_CLUSTER_NAME", min_length=1)
    task_definition: str = Field(alias="SPOTHUB_TASK_DEFINITION", min_length=1)
    launch_state_machine_arn: str = Field(alias="SPOTHUB_LAUNCH_STATE_MACHINE_ARN", min_length=1)
    teardown_state_machine_arn: str = Field(alias="SPOTHUB_TEARDOWN_STATE_MACHINE_ARN", min_length=1)
    alerts_topic_arn: str = Field(alias="SPOTHUB_ALERTS_TOPIC_ARN", min_length=1)


settings = load_settings(WorkerSettings)
worker = WorkerRegion(
    region=settings.region,
    group_name=settings.group_name,
    cluster_name=settings.cluster_name,
    task_definition=settings.task_definition,
    autoscaling=boto3.client("autoscaling"),
    ec2=boto3.client("ec2"),
    ecs=boto3.client("ecs"),
    sfn=boto3.client("stepfunctions"),
    launch_state_machine_arn=settings.launch_state_machine_arn,
    cloudwatch=boto3.client("cloudwatch"),
    prefix=settings.prefix,
    alerts_topic_arn=settings.alerts_topic_arn,
)

ACTIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "scale_out": lambda e: launch_instance.scale_out(worker, e["launch_id"], e.get("capacity_type", "spot")),
    "claim_instance": lambda e: launch_instance.claim_instance(worker, e["launch_id"], e["replica_id"], e["since"]),
    "start_workload": lambda e: launch_instance.start_workload(worker, e["launch_id"], e["instance_id"]),
    "workload_status": lambda e: launch_instance.workload_status(worker, e["task_arn"], e["instance_id"]),
    "watch_instance": lambda e: launch_instance.watch_instance(worker, e["instance_id"]),
    "describe_failure": lambda e: describe_error(e.get("error")),
    "cleanup": lambda e: launch_instance.cleanup(worker, e["launch_id"]),
    "teardown": lambda e: teardown_instance.teardown(worker, e.get("instance_id"), e.get("launch_id")),
    "teardown_status": lambda e: teardown_instance.teardown_status(worker, e.get("waiting_for") or []),
    "identify": lambda e: capacity_monitor.identify(worker, e["instance_id"], e["kind"]),
}
STATE_MACHINE_BY_COMMAND = {
    HubCommand.LAUNCH_REQUESTED: (settings.launch_state_machine_arn, "launch_id"),
    HubCommand.TEARDOWN_REQUESTED: (settings.teardown_state_machine_arn, "teardown_id"),
}


def _start_command(event: dict[str, Any]) -> dict[str, Any]:
    kind = HubCommand(event["detail-type"])
    command = COMMAND_MODELS[kind].model_validate(event["detail"])
    state_machine_arn, id_field = STATE_MACHINE_BY_COMMAND[kind]
    name = getattr(command, id_field)
    started = start_named(worker.sfn, state_machine_arn, name, command.model_dump(mode="json"))
    logger.info("command received", extra={"kind": kind.value, "execution": name, "started": started})
    return {"execution": name, "started": started}


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "action" in event:
        action = ACTIONS.get(event["action"])
        if action is None:
            raise ValueError(f"unknown action {event['action']!r}; known: {', '.join(ACTIONS)}")
        result = action(event)
        logger.info("task done", extra={"action": event["action"], "result": result})
        return result
    if event.get("source") == Source.HUB and event.get("detail-type") in set(HubCommand):
        return _start_command(event)
    logger.info("ignored event", extra={"source": event.get("source"), "detail_type": event.get("detail-type")})
    return {"outcome": "ignored: unknown kind"}

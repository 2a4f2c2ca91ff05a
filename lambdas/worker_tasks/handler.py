"""Worker region function: the launch, teardown and capacity-monitor state machines' tasks, and the
receiver of the hub's commands.

- EventBridge delivers a hub command (launch or teardown requested) from the worker bus: it starts the
  matching state machine with the command's id as the execution name, so a command delivered twice
  starts one execution. A launch's group is scaled out here, before its execution starts, so that the
  launch call follows the hub's command with no other function invocation between them (a failover's
  path: see tests/sandbox/test_failover_hops.py); when that fails, the launch's ScaleOut state does it.
- A state machine task calls it with `{"action": ..., ...}`: the rest is the action's input model
  (spothub_core.models.worker_tasks), what it returns the action's result model. Errors are raised as
  CapacityError, TransientError or FatalError, the names the ASL retries and catches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from spothub_core import aws_clients
from spothub_core.consumers import Dispatch, Target
from spothub_core.contracts import LaunchRequested, TeardownRequested
from spothub_core.dal.auto_scaling_group import AutoScalingGroup
from spothub_core.dal.ec2_instances import Ec2Instances
from spothub_core.dal.executions import exists, start_named
from spothub_core.dal.instance_alarms import InstanceAlarms
from spothub_core.dal.launch_executions import LaunchExecutions
from spothub_core.dal.serving_tasks import ServingTasks
from spothub_core.errors import SpothubError
from spothub_core.logic import capacity_monitor, launch_instance, teardown_instance
from spothub_core.logic.worker_region import WorkerRegion
from spothub_core.models import worker_tasks as task_models
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
autoscaling = aws_clients.client("autoscaling")
sfn = aws_clients.client("stepfunctions")
worker = WorkerRegion(
    region=settings.region,
    group=AutoScalingGroup(autoscaling, settings.group_name, settings.region),
    instances=Ec2Instances(aws_clients.client("ec2")),
    tasks=ServingTasks(aws_clients.client("ecs"), settings.cluster_name, settings.task_definition),
    alarms=InstanceAlarms(aws_clients.client("cloudwatch")),
    launches=LaunchExecutions(sfn, settings.launch_state_machine_arn),
    prefix=settings.prefix,
    alerts_topic_arn=settings.alerts_topic_arn,
)

TaskFunction = Callable[[WorkerRegion, Any], BaseModel]
ACTIONS: dict[str, tuple[type[BaseModel], TaskFunction]] = {
    "scale_out": (task_models.ScaleOut, launch_instance.scale_out),
    "claim_instance": (task_models.ClaimInstance, launch_instance.claim_instance),
    "start_workload": (task_models.StartWorkload, launch_instance.start_workload),
    "workload_status": (task_models.WorkloadStatus, launch_instance.workload_status),
    "watch_instance": (task_models.WatchInstance, launch_instance.watch_instance),
    "describe_failure": (task_models.DescribeFailure, launch_instance.describe_failure),
    "cleanup": (task_models.Cleanup, launch_instance.cleanup),
    "teardown": (task_models.Teardown, teardown_instance.teardown),
    "teardown_status": (task_models.TeardownStatus, teardown_instance.teardown_status),
    "identify": (task_models.Identify, capacity_monitor.identify),
}


@dataclass(frozen=True)
class StateMachines:
    """What a hub command starts: the region's launch and teardown state machines."""

    sfn: Any
    launch_arn: str
    teardown_arn: str


state_machines = StateMachines(sfn, settings.launch_state_machine_arn, settings.teardown_state_machine_arn)
commands: Dispatch[StateMachines] = Dispatch(Target.WORKER_TASKS)


def _start(sfn_client: Any, state_machine_arn: str, name: str, state: dict[str, Any]) -> str:
    if start_named(sfn_client, state_machine_arn, name, state):
        return f"started {name}"
    return f"{name} was started before: not started again"


@commands.on(LaunchRequested)
def start_launch(machines: StateMachines, command: LaunchRequested) -> str:
    # Looked up first: a command delivered again after its launch failed and shrank the group must not grow it.
    if exists(machines.sfn, machines.launch_arn, command.launch_id):
        return f"{command.launch_id} was started before: not started again"
    state = command.model_dump(mode="json")
    task = task_models.ScaleOut(launch_id=command.launch_id, capacity_type=command.capacity_type)
    try:
        state["scaled"] = {"started_at": launch_instance.scale_out(worker, task).started_at}
    except SpothubError as exc:
        logger.warning("scale-out left to the launch", extra={"launch_id": command.launch_id, "error": str(exc)})
    return _start(machines.sfn, machines.launch_arn, command.launch_id, state)


@commands.on(TeardownRequested)
def start_teardown(machines: StateMachines, command: TeardownRequested) -> str:
    return _start(machines.sfn, machines.teardown_arn, command.teardown_id, command.model_dump(mode="json"))


def run_task(event: dict[str, Any]) -> dict[str, Any]:
    name = event["action"]
    if name not in ACTIONS:
        raise ValueError(f"unknown action {name!r}; known: {', '.join(ACTIONS)}")
    model, task = ACTIONS[name]
    result = task(worker, model.model_validate({k: v for k, v in event.items() if k != "action"}))
    return result.model_dump(mode="json")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "action" in event:
        result = run_task(event)
        logger.info("task done", extra={"action": event["action"], "result": result})
        return result
    outcome = commands.consume(state_machines, event)
    if outcome is None:
        logger.info("ignored event", extra={"source": event.get("source"), "detail_type": event.get("detail-type")})
        return {"outcome": "ignored: unknown kind"}
    logger.info("command consumed", extra={"kind": event.get("detail-type"), "outcome": outcome})
    return {"outcome": outcome}

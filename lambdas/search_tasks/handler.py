"""Hub function: the search launcher's tasks (statemachines/search_launcher.asl.json).

Each task calls it with `{"action": ...}`: the rest is the action's input model (spothub_core.models.search_tasks),
what it returns the action's result model. The search region's EC2, SSM (the SearchHost parameter) and router are
called across regions; the search table is the hub's. Errors are raised as CapacityError, QuotaError,
TransientError, FatalError or Superseded, the names the state machine retries and catches.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from spothub_core import aws_clients
from spothub_core.dal.search_instances import SearchInstances
from spothub_core.dal.search_placement import SearchPlacement
from spothub_core.dal.search_router import SearchRouter
from spothub_core.dal.search_store import SearchStore
from spothub_core.logic.search_launcher import TASKS, SearchLauncher
from spothub_core.observability import logger, tracer
from spothub_core.settings import SearchSettings, load_settings

settings = load_settings(SearchSettings)
ec2 = aws_clients.client("ec2", region_name=settings.search_region)
launcher = SearchLauncher(
    store=SearchStore(aws_clients.table(settings.search_table_name)),
    placement=SearchPlacement(
        ec2, aws_clients.client("ssm", region_name=settings.search_region), settings.host_parameter
    ),
    instances=SearchInstances(ec2),
    router=SearchRouter(aws_clients.client("lambda", region_name=settings.search_region), settings.router_arn),
    prefix=settings.prefix,
    hub_region=settings.hub_region,
    instance_type=settings.instance_type,
    spot_max_price=settings.spot_max_price,
    port=settings.port,
    health_path=settings.health_path,
)


def run_task(event: dict[str, Any], now: float) -> dict[str, Any]:
    name = event.get("action")
    if name not in TASKS:
        raise ValueError(f"unknown action {name!r}; known: {', '.join(TASKS)}")
    model, task = TASKS[name]
    return task(launcher, model.model_validate(event), now=now).model_dump(mode="json")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = run_task(event, time.time())
    logger.info(
        "task done", extra={"action": event.get("action"), "launch_id": event.get("launch_id"), "result": result}
    )
    return result

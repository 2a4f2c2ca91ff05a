"""POST /agents/{instance_id}/register and /heartbeat: the agents on the instances check in.

Called by the agent with its instance role (IAM auth; the role may invoke these two routes only).
A heartbeat from an agent the control plane does not know is a 404: the agent registers, then beats.
"""

# No `from __future__ import annotations` here: powertools reads the route's parameter and return types at
# runtime.
import time
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from spothub_core import aws_clients
from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.http import build_resolver, error_answers
from spothub_core.logic.instance_health import check_caller, heartbeat, register
from spothub_core.models.agent import (
    INSTANCE_ID_PATTERN,
    AgentRegistered,
    Heartbeat,
    HeartbeatAccepted,
    Registration,
)
from spothub_core.observability import logger, tracer
from spothub_core.settings import HubSettings, load_settings

settings = load_settings(HubSettings)
health = InstanceHealthStore(aws_clients.table(settings.state_table_name))
app = build_resolver()
InstanceId = Annotated[str, Path(pattern=INSTANCE_ID_PATTERN)]


@app.post("/agents/<instance_id>/register")
@tracer.capture_method
def post_register(instance_id: InstanceId, registration: Annotated[Registration, Body()]) -> AgentRegistered:
    check_caller(app.current_event.request_context.identity.user_arn, instance_id)
    result = register(health, instance_id, registration, now=time.time())
    logger.info("agent registered", extra={"instance_id": instance_id, **registration.model_dump()})
    return result


@app.post(
    "/agents/<instance_id>/heartbeat", responses=error_answers({404: "the instance is not registered: register first"})
)
@tracer.capture_method
def post_heartbeat(instance_id: InstanceId, beat: Annotated[Heartbeat, Body()]) -> HeartbeatAccepted:
    check_caller(app.current_event.request_context.identity.user_arn, instance_id)
    return heartbeat(health, instance_id, beat, now=time.time())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

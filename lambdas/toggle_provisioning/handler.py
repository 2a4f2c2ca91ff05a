"""POST /spot-provisioning: enable or disable spot provisioning (optionally tearing everything down)."""

# No `from __future__ import annotations` here: powertools reads the route's parameter types at
# runtime, through the tracer's wrapper, whose globals cannot resolve a string annotation.
import time
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from spothub_core import aws_clients
from spothub_core.dal.event_bus import put_event
from spothub_core.dal.executions import start_named, stop_named
from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.http import build_resolver, error_answers
from spothub_core.logic.provisioning import Orchestration, toggle
from spothub_core.models.api import ToggleRequest, ToggleResponse
from spothub_core.observability import logger, tracer
from spothub_core.settings import HubSettings, load_settings


class ToggleSettings(HubSettings):
    instance_types: list[str] = Field(alias="SPOTHUB_INSTANCE_TYPES", min_length=1)
    orchestrator_arn: str = Field(alias="SPOTHUB_ORCHESTRATOR_ARN", min_length=1)
    hub_bus_name: str = Field(alias="SPOTHUB_HUB_BUS", min_length=1)


settings = load_settings(ToggleSettings)
store = ProvisioningStore(aws_clients.table(settings.state_table_name))
sfn = aws_clients.client("stepfunctions")
events = aws_clients.client("events")
app = build_resolver()


orchestration = Orchestration(
    start_execution=lambda name, state: start_named(
        sfn, settings.orchestrator_arn, name, state.model_dump(mode="json")
    ),
    stop_execution=lambda name, cause: stop_named(sfn, settings.orchestrator_arn, name, cause),
    put_command=lambda detail_type, source, detail: put_event(
        events, settings.hub_bus_name, source, detail_type, detail
    ),
)


@app.post(
    "/spot-provisioning",
    responses=error_answers({409: "provisioning was changed by another request at the same time: try again"}),
)
@tracer.capture_method
def post_spot_provisioning(request: Annotated[ToggleRequest, Body()]) -> ToggleResponse:
    result = toggle(
        request,
        store=store,
        orchestration=orchestration,
        worker_regions=settings.worker_regions,
        default_instance_types=settings.instance_types,
        now=time.time(),
    )
    logger.info("spot provisioning toggled", extra={"request": request.model_dump(), "result": result.model_dump()})
    return result


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

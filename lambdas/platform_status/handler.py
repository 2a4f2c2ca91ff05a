"""GET /status: the control plane's shape and health, for operators and readiness checks; GET /regions: the
spot finder's ranking now, asked of the finder function without changing anything; GET /events: what happened
recently (launches, failures, teardowns, notices, remediations, exclusions), newest first."""

# No `from __future__ import annotations` here: powertools reads the route's return type at runtime (it is
# the response model the OpenAPI document describes).
import time
from functools import partial
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from pydantic import Field

from spothub_core import aws_clients
from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.dal.spot_finder_function import invoke_spot_finder
from spothub_core.dal.standby import StandbyStore
from spothub_core.dal.state_table import StateTable
from spothub_core.errors import InvalidRequest
from spothub_core.http import build_resolver, error_answers
from spothub_core.logic.events_timeline import read_events
from spothub_core.logic.regions import read_regions
from spothub_core.logic.status import read_status
from spothub_core.models.api import ControlPlaneStatus, EventsView, RegionsView, iso_utc
from spothub_core.observability import logger, tracer
from spothub_core.settings import HubSettings, load_settings


class PlatformStatusSettings(HubSettings):
    spot_finder_function: str = Field(alias="SPOTHUB_SPOT_FINDER_FUNCTION", min_length=1)


settings = load_settings(PlatformStatusSettings)
table = aws_clients.table(settings.state_table_name)
state_table = StateTable(table)
# Two tries of 12 s at most: a 503 that says why, before API Gateway's 29 s integration timeout answers a 504.
finder_client = aws_clients.client(
    "lambda", config=Config(connect_timeout=5, read_timeout=12, retries={"mode": "standard", "max_attempts": 2})
)
app = build_resolver()


@app.get("/status")
@tracer.capture_method
def get_status() -> ControlPlaneStatus:
    return read_status(settings, state_table)


@app.get(
    "/regions",
    responses=error_answers({503: "the spot finder could not be asked, or failed (EC2's spot data did not answer)"}),
)
@tracer.capture_method
def get_regions() -> RegionsView:
    return read_regions(partial(invoke_spot_finder, finder_client, settings.spot_finder_function))


@app.get("/events", responses=error_answers({400: "since is not an ISO 8601 time"}))
@tracer.capture_method
def get_events(
    since: Annotated[str | None, Query(description="only events after this ISO 8601 time")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EventsView:
    after = None
    if since is not None:
        try:
            after = _epoch(since)
        except ValueError as exc:
            raise InvalidRequest(f"since: {since!r} is not an ISO 8601 time") from exc
    return read_events(
        ProvisioningStore(table),
        InstanceHealthStore(table),
        ExclusionStore(table),
        StandbyStore(table),
        now=time.time(),
        since=after,
        limit=limit,
    )


def _epoch(moment: str) -> float:
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(iso_utc(moment).replace("Z", "+00:00")).timestamp()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

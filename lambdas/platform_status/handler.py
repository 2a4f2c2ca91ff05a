"""GET /status: the control plane's shape and health, for operators and readiness checks; GET /regions: the
spot finder's ranking now, asked of the finder function without changing anything."""

# No `from __future__ import annotations` here: powertools reads the route's return type at runtime (it is
# the response model the OpenAPI document describes).
from functools import partial
from typing import Any

import boto3
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from pydantic import Field

from spothub_core.dal.spot_finder_function import invoke_spot_finder
from spothub_core.dal.state_table import StateTable
from spothub_core.http import build_resolver, error_answers
from spothub_core.logic.regions import read_regions
from spothub_core.logic.status import read_status
from spothub_core.models.api import ControlPlaneStatus, RegionsView
from spothub_core.observability import logger, tracer
from spothub_core.settings import HubSettings, load_settings


class PlatformStatusSettings(HubSettings):
    spot_finder_function: str = Field(alias="SPOTHUB_SPOT_FINDER_FUNCTION", min_length=1)


settings = load_settings(PlatformStatusSettings)
state_table = StateTable(boto3.resource("dynamodb").Table(settings.state_table_name))
# Two tries of 12 s at most: a 503 that says why, before API Gateway's 29 s integration timeout answers a 504.
finder_client = boto3.client(
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


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

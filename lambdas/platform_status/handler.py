"""GET /status: the control plane's shape and health, for operators and readiness checks."""

# No `from __future__ import annotations` here: powertools reads the route's return type at runtime (it is
# the response model the OpenAPI document describes).
from typing import Any

import boto3
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from spothub_core.dal.state_table import StateTable
from spothub_core.http import build_resolver
from spothub_core.logic.status import read_status
from spothub_core.models.api import ControlPlaneStatus
from spothub_core.observability import logger, tracer
from spothub_core.settings import HubSettings, load_settings

settings = load_settings(HubSettings)
state_table = StateTable(boto3.resource("dynamodb").Table(settings.state_table_name))
app = build_resolver()


@app.get("/status")
@tracer.capture_method
def get_status() -> ControlPlaneStatus:
    return read_status(settings, state_table)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

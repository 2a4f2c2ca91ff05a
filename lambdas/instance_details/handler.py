"""GET /spot-instances: the replicas, their instances and the provisioning switch."""

# No `from __future__ import annotations` here: powertools reads the route's return type at runtime (it is
# the response model the OpenAPI document describes).
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from spothub_core import aws_clients
from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.dal.standby import StandbyStore
from spothub_core.http import build_resolver
from spothub_core.logic.endpoints import Serving
from spothub_core.logic.instance_details import describe
from spothub_core.models.api import SpotInstances
from spothub_core.observability import logger, tracer
from spothub_core.settings import HubSettings, load_settings


class InstanceDetailsSettings(HubSettings):
    """How clients reach the model: the serving port, which address (public or private), the endpoint name."""

    serving_port: int = Field(alias="SPOTHUB_SERVING_PORT", ge=1, le=65535)
    serving_public_ip: bool = Field(alias="SPOTHUB_SERVING_PUBLIC_IP")
    endpoint_name: str | None = Field(None, alias="SPOTHUB_ENDPOINT_NAME")


settings = load_settings(InstanceDetailsSettings)
table = aws_clients.table(settings.state_table_name)
store = ProvisioningStore(table)
health = InstanceHealthStore(table)
standbys = StandbyStore(table)
serving = Serving(
    port=settings.serving_port, public_ip=settings.serving_public_ip, endpoint_name=settings.endpoint_name or None
)
app = build_resolver()


@app.get("/spot-instances")
@tracer.capture_method
def get_spot_instances() -> SpotInstances:
    return describe(store, health, serving, standbys)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

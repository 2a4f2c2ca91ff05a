"""Spot finder: rank the worker regions for a spot launch (placement score, price, exclusions).

Invoked by the orchestrator state machine with an optional request (and synchronously by the batch
supervisor and by GET /regions); returns the ranking with the reasons. It only reads: the switch, the
replicas and reservations, the exclusions, EC2's spot data. EC2 failing to answer raises
SpotDataUnavailable, which the state machine retries.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from spothub_core import aws_clients
from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.logic.spot_finder import SpotFinder
from spothub_core.models.orchestrator_tasks import FindRequest
from spothub_core.observability import logger, metrics, tracer
from spothub_core.settings import HubSettings, load_settings


class SpotFinderSettings(HubSettings):
    instance_types: list[str] = Field(alias="SPOTHUB_INSTANCE_TYPES", min_length=1)


settings = load_settings(SpotFinderSettings)
table = aws_clients.table(settings.state_table_name)


ec2_for = aws_clients.per_region("ec2")


finder = SpotFinder.for_hub(
    settings,
    instance_types=settings.instance_types,
    provisioning=ProvisioningStore(table),
    exclusions=ExclusionStore(table),
    ec2_for=ec2_for,
)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    answer = finder.find(FindRequest.model_validate(event or {}), now=time.time())
    result = answer.model_dump(mode="json")
    metrics.add_metric(name="RegionsRanked", unit="Count", value=len(answer.ranked))
    logger.info(
        "ranked regions", extra={"best": result["best"], "ranked": result["ranked"], "left_out": result["left_out"]}
    )
    return result

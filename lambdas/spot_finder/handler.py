"""Spot finder: rank the worker regions for a spot launch (placement score, price, exclusions).

Invoked by the orchestrator state machine with an optional request (and synchronously by the batch
supervisor and by GET /regions); returns the ranking with the reasons. It only reads: the switch, the
replicas and reservations, the exclusions, EC2's spot data. EC2 failing to answer raises
SpotDataUnavailable, which the state machine retries.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.logic.region_reservations import held_regions, occupied_regions
from spothub_core.logic.spot_finder import find_regions
from spothub_core.models.orchestrator_tasks import FindRequest
from spothub_core.observability import logger, metrics, tracer
from spothub_core.settings import HubSettings, load_settings


class SpotFinderSettings(HubSettings):
    instance_types: list[str] = Field(alias="SPOTHUB_INSTANCE_TYPES", min_length=1)


settings = load_settings(SpotFinderSettings)
table = boto3.resource("dynamodb").Table(settings.state_table_name)
exclusions = ExclusionStore(table)
provisioning = ProvisioningStore(table)


@cache
def ec2_for(region: str) -> Any:
    return boto3.client("ec2", region_name=region)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = FindRequest.model_validate(event or {})
    switch = provisioning.config()
    # The operator's choices on the switch apply unless the caller named its own.
    request = request.model_copy(
        update={
            "instance_types": request.instance_types or switch.instance_types,
            "allowed_regions": request.allowed_regions or switch.allowed_regions,
            "denied_regions": request.denied_regions or switch.denied_regions,
        }
    )
    occupied: dict[str, str] = {}
    held: dict[str, list[str]] = {}
    if request.survey or not request.share_regions:
        replicas, reservations = provisioning.replicas(), provisioning.reservations()
        if not request.share_regions:
            occupied = occupied_regions(request.replica_id, replicas, reservations)
        if request.survey:
            held = held_regions(replicas, reservations)
    answer = find_regions(
        request,
        occupied=occupied,
        held=held,
        on_demand_fallback=settings.capacity_fallback == "on-demand",
        worker_regions=settings.worker_regions,
        default_instance_types=settings.instance_types,
        scoring_region=settings.hub_region,
        ec2_for=ec2_for,
        exclusions=exclusions,
        now=time.time(),
    )
    result = answer.model_dump(mode="json")
    metrics.add_metric(name="RegionsRanked", unit="Count", value=len(answer.ranked))
    logger.info(
        "ranked regions", extra={"best": result["best"], "ranked": result["ranked"], "left_out": result["left_out"]}
    )
    return result

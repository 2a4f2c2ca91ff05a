"""The listing state machine's tasks (statemachines/batch_listing.asl.json): list a job's input prefix into
batches, then hand the job to its workers, or fail it.

Each task calls it with `{"action": ..., ...}`: the rest is the action's input model
(spothub_core.models.batch_tasks.LISTING_ACTIONS), what it returns the action's result model. S3 refusing the
listing is raised as FatalError (the state machine fails the job at once), S3 failing as TransientError
(retried), DynamoDB failing as DependencyUnavailable (retried).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from spothub_core import aws_clients
from spothub_core.dal.batch_jobs import JobStore
from spothub_core.dal.batch_queue import BatchQueue
from spothub_core.logic import batch_listing
from spothub_core.models.batch_tasks import LISTING_ACTIONS
from spothub_core.observability import logger, tracer
from spothub_core.settings import HubSettings, load_settings


class ListingSettings(HubSettings):
    jobs_table_name: str = Field(alias="SPOTHUB_JOBS_TABLE", min_length=1)


settings = load_settings(ListingSettings)
table = aws_clients.table(settings.jobs_table_name)
listing = batch_listing.Listing(jobs=JobStore(table), queue=BatchQueue(table), s3=aws_clients.client("s3"))

TASKS: dict[str, Callable[..., BaseModel]] = {
    "list_pages": batch_listing.list_pages,
    "finish_listing": batch_listing.finish_listing,
    "fail_listing": batch_listing.fail_listing,
}


def run_task(event: dict[str, Any]) -> dict[str, Any]:
    name = event.get("action")
    if name not in LISTING_ACTIONS:
        raise ValueError(f"unknown action {name!r}; known: {', '.join(LISTING_ACTIONS)}")
    task = LISTING_ACTIONS[name].model_validate({k: v for k, v in event.items() if k != "action"})
    return TASKS[name](listing, task, now=time.time()).model_dump(mode="json")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = run_task(event)
    # The carry is the file names of a part batch: its length says enough.
    logged = {key: (len(value) if key == "carry" else value) for key, value in result.items()}
    logger.info("task done", extra={"action": event.get("action"), "result": logged})
    return result

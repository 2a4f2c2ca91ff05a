"""The worker API of batch jobs: the agent in batch mode registers, asks for work, acknowledges and reports.

POST /workers/register               -> the worker id (registering again is the same worker)
GET  /workers/{worker_id}/assignment -> a batch, or {"command": "wait", "retry_after_s"} or {"command": "shutdown"}
POST /workers/{worker_id}/ack        -> the batch, processing
POST /workers/{worker_id}/status     -> the batch after the report (processing, completed, failed, shutting-down)

Called by the agent with its instance role: an instance speaks only for itself (the worker id ends in its
instance id). A late or duplicate call changes nothing: a duplicate is answered `changed: false`, a call about a
batch the worker no longer holds 409 saying what became of it. The queue's logic: logic/batch_queue.py.
"""

# No `from __future__ import annotations` here: powertools reads the route's parameter and return types at
# runtime.
import time
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from spothub_core import aws_clients
from spothub_core.dal.batch_jobs import JobStore
from spothub_core.dal.batch_queue import BatchQueue
from spothub_core.dal.batch_workers import WorkerStore
from spothub_core.http import build_resolver, error_answers
from spothub_core.logic import batch_queue
from spothub_core.logic.instance_health import check_caller
from spothub_core.models.batch_workers import (
    WORKER_ID_PATTERN,
    BatchAck,
    BatchAssignment,
    BatchStatusReport,
    BatchUpdate,
    WorkerCommand,
    WorkerRegistered,
    WorkerRegistration,
    parse_worker_id,
)
from spothub_core.observability import logger, tracer
from spothub_core.settings import HubSettings, load_settings


class WorkersApiSettings(HubSettings):
    jobs_table_name: str = Field(alias="SPOTHUB_JOBS_TABLE", min_length=1)


settings = load_settings(WorkersApiSettings)
table = aws_clients.table(settings.jobs_table_name)
api = batch_queue.WorkerApi(jobs=JobStore(table), queue=BatchQueue(table), workers=WorkerStore(table))
app = build_resolver()
WorkerId = Annotated[str, Path(pattern=WORKER_ID_PATTERN)]
NO_JOB = "no job with this id"
NOT_REGISTERED = "no job with this id, or the worker is not registered"
NO_BATCH = "no job, worker or batch with these ids"
NOT_HELD = "the worker does not hold the batch (any more): the message says what became of it"


def _caller_is(worker_id: str) -> None:
    check_caller(app.current_event.request_context.identity.user_arn, parse_worker_id(worker_id)[1])


@app.post("/workers/register", responses=error_answers({404: NO_JOB}))
@tracer.capture_method
def post_register(registration: Annotated[WorkerRegistration, Body()]) -> WorkerRegistered:
    check_caller(app.current_event.request_context.identity.user_arn, registration.instance_id)
    registered = batch_queue.register(api, registration, now=time.time())
    logger.info("worker registered", extra={**registration.model_dump(), "new": registered.registered})
    return registered


@app.get("/workers/<worker_id>/assignment", responses=error_answers({404: NOT_REGISTERED}))
@tracer.capture_method
def get_assignment(worker_id: WorkerId) -> BatchAssignment | WorkerCommand:
    _caller_is(worker_id)
    answer = batch_queue.assignment(api, worker_id, now=time.time())
    if isinstance(answer, BatchAssignment):
        logger.info(
            "batch assigned", extra={"worker_id": worker_id, "batch_id": answer.batch_id, "attempt": answer.attempt}
        )
    elif answer.command == "shutdown":
        logger.info("worker told to shut down", extra={"worker_id": worker_id, "reason": answer.reason})
    return answer


@app.post("/workers/<worker_id>/ack", responses=error_answers({404: NO_BATCH, 409: NOT_HELD}))
@tracer.capture_method
def post_ack(worker_id: WorkerId, body: Annotated[BatchAck, Body()]) -> BatchUpdate:
    _caller_is(worker_id)
    return batch_queue.ack(api, worker_id, body.batch_id, now=time.time())


@app.post("/workers/<worker_id>/status", responses=error_answers({404: NO_BATCH, 409: NOT_HELD}))
@tracer.capture_method
def post_status(worker_id: WorkerId, report: Annotated[BatchStatusReport, Body()]) -> BatchUpdate:
    _caller_is(worker_id)
    update = batch_queue.status(api, worker_id, report, now=time.time())
    logger.info(
        "batch status reported",
        extra={
            "worker_id": worker_id,
            "batch_id": report.batch_id,
            "reported": report.status,
            "error": report.error,
            "batch_status": update.status,
            "changed": update.changed,
            "outcome": update.message,
        },
    )
    return update


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

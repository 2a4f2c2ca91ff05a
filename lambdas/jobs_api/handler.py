"""The jobs API: submit a batch job, list the jobs, show one, cancel one.

POST   /jobs            -> 202 {"job_id", "status": "listing"}; listing and partitioning run in the listing
                           state machine, the supervisor brings up workers once the batches are written
GET    /jobs            ?limit=1..100 (20)&next_token= -> newest first
GET    /jobs/{job_id}   -> the job, its batches by status, workers, capacity by region and errors
DELETE /jobs/{job_id}   -> the job, cancelled (or as it was, once finished)
"""

# No `from __future__ import annotations` here: powertools reads the route's parameter and return types at
# runtime.
import time
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from spothub_core import aws_clients
from spothub_core.dal.batch_fleet import FleetStore
from spothub_core.dal.batch_jobs import JobStore
from spothub_core.dal.batch_queue import BatchQueue
from spothub_core.dal.batch_workers import WorkerStore
from spothub_core.http import build_resolver, error_answers
from spothub_core.logic import batch_jobs
from spothub_core.models.batch_api import JobAccepted, JobRequest, JobsPage, JobView
from spothub_core.models.batch_workers import JOB_ID_PATTERN
from spothub_core.observability import logger, tracer
from spothub_core.settings import HubSettings, load_settings


class JobsApiSettings(HubSettings):
    jobs_table_name: str = Field(alias="SPOTHUB_JOBS_TABLE", min_length=1)
    input_buckets: list[str] = Field(alias="SPOTHUB_BATCH_INPUT_BUCKETS")  # empty: every job is refused
    output_buckets: list[str] = Field(alias="SPOTHUB_BATCH_OUTPUT_BUCKETS")
    listing_state_machine_arn: str = Field(alias="SPOTHUB_LISTING_STATE_MACHINE_ARN", min_length=1)
    jobs_topic_arn: str = Field(alias="SPOTHUB_JOBS_TOPIC_ARN", min_length=1)


settings = load_settings(JobsApiSettings)
table = aws_clients.table(settings.jobs_table_name)
deployment = batch_jobs.JobsDeployment(
    jobs=JobStore(table),
    queue=BatchQueue(table),
    workers=WorkerStore(table),
    fleet=FleetStore(table),
    s3=aws_clients.client("s3"),
    sns=aws_clients.client("sns"),
    sfn=aws_clients.client("stepfunctions"),
    listing_state_machine_arn=settings.listing_state_machine_arn,
    jobs_topic_arn=settings.jobs_topic_arn,
    input_buckets=tuple(settings.input_buckets),
    output_buckets=tuple(settings.output_buckets),
)
app = build_resolver()
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN)]
NO_JOB = "no job with this id"


@app.post("/jobs", responses=error_answers({}, status=HTTPStatus.ACCEPTED))
@tracer.capture_method
def post_job(request: Annotated[JobRequest, Body()]) -> Response[JobAccepted]:
    accepted = batch_jobs.submit(deployment, request, now=time.time())
    # The request without notify_email: an address is not for the logs.
    logger.info(
        "job submitted",
        extra={"job_id": accepted.job_id, "request": request.model_dump(exclude_none=True, exclude={"notify_email"})},
    )
    return Response(status_code=HTTPStatus.ACCEPTED.value, content_type=content_types.APPLICATION_JSON, body=accepted)


@app.get("/jobs")
@tracer.capture_method
def get_jobs(
    limit: Annotated[int, Query(ge=1, le=batch_jobs.MAX_PAGE_SIZE)] = batch_jobs.DEFAULT_PAGE_SIZE,
    next_token: Annotated[str | None, Query(min_length=1, max_length=4096)] = None,
) -> JobsPage:
    return batch_jobs.list_jobs(deployment.jobs, limit=limit, next_token=next_token)


@app.get("/jobs/<job_id>", responses=error_answers({404: NO_JOB}))
@tracer.capture_method
def get_job(job_id: JobId) -> JobView:
    return batch_jobs.view(deployment, job_id)


@app.delete("/jobs/<job_id>", responses=error_answers({404: NO_JOB}))
@tracer.capture_method
def delete_job(job_id: JobId) -> JobView:
    caller = app.current_event.request_context.identity.user_arn or "an unknown caller"
    job = batch_jobs.cancel(deployment, job_id, caller=caller, now=time.time())
    logger.info("job cancel asked", extra={"job_id": job_id, "caller": caller, "status": job.status})
    return job


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

"""The jobs API's decisions: submit a job, list the jobs, show one, cancel one.

Submitting validates the request (and the config file it names), checks the buckets against the deployment's
allowed ones, records the job (listing), subscribes its notify_email to the jobs topic and starts the listing
state machine, named by the job id. Listing and partitioning run there (logic/batch_listing.py); the supervisor
brings up workers once the batches are written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from spothub_core.dal.batch_fleet import FleetStore
from spothub_core.dal.batch_jobs import JobStore
from spothub_core.dal.batch_queue import BatchQueue
from spothub_core.dal.batch_s3 import read_object
from spothub_core.dal.batch_workers import WorkerStore
from spothub_core.dal.executions import execution_arn, start_named, stop_named
from spothub_core.dal.job_subscriptions import subscribe_job
from spothub_core.errors import DependencyUnavailable, Forbidden, InvalidRequest, NotFound
from spothub_core.models.batch_api import (
    CONFIG_URI,
    JobAccepted,
    JobErrorView,
    JobRequest,
    JobsPage,
    JobSummary,
    JobView,
    RegionFleetView,
    WorkerView,
)
from spothub_core.models.batch_records import Job, JobSpec, JobStatus
from spothub_core.timings import BATCH_ACK_TIMEOUT_SECONDS, BATCH_PROCESSING_TIMEOUT_SECONDS

# The deployment's context keys (cdk.json) that list the buckets jobs may read and write.
INPUT_BUCKETS_KEY = "batchInputBuckets"
OUTPUT_BUCKETS_KEY = "batchOutputBuckets"
REQUIRED_FIELDS = ("input_bucket", "output_bucket", "image")
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# A job's defaults that come from the timings module (the rest are JobSpec's own).
TIMING_DEFAULTS: dict[str, Any] = {
    "ack_timeout_s": BATCH_ACK_TIMEOUT_SECONDS,
    "processing_timeout_s": BATCH_PROCESSING_TIMEOUT_SECONDS,
}
# What notify_email will hear, by what subscribe_job did.
NOTIFICATIONS = {
    "subscribed": "{email} hears of this job once it confirms the subscription mail SNS sent it",
    "added": "{email} hears of this job (its subscription is confirmed)",
    "unfiltered": "{email} hears of every job already",
    "pending": (
        "{email} will not hear of this job: it has not confirmed an earlier job's subscription mail; once it does, "
        "the jobs submitted after that reach it"
    ),
}
# The jobs that may still be cancelled; a finished job is answered as it is.
CANCELLABLE = (JobStatus.LISTING, JobStatus.RUNNING)


@dataclass(frozen=True)
class JobsDeployment:
    """What the jobs API works with: the jobs table's stores, the AWS clients it calls through the dal, and the
    deployment's settings for jobs."""

    jobs: JobStore
    queue: BatchQueue
    workers: WorkerStore
    fleet: FleetStore
    s3: Any
    sns: Any
    sfn: Any
    listing_state_machine_arn: str
    jobs_topic_arn: str
    input_buckets: Sequence[str]
    output_buckets: Sequence[str]


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


# --- POST /jobs ------------------------------------------------------------------------------------------


def submit(deployment: JobsDeployment, request: JobRequest, *, now: float, job_id: str | None = None) -> JobAccepted:
    """Record the job and start its listing; InvalidRequest (400) says what is wrong with the request or its
    config file, DependencyUnavailable (503) that the job could not be started (it is then failed)."""
    fields = request.given()
    if request.config_uri is not None:
        fields = {**read_config(deployment, request.config_uri), **fields}
    spec = job_spec(fields, request.config_uri)
    check_bucket("input_bucket", spec.input_bucket, deployment.input_buckets, INPUT_BUCKETS_KEY)
    check_bucket("output_bucket", spec.output_bucket, deployment.output_buckets, OUTPUT_BUCKETS_KEY)

    job_id = job_id or new_job_id()
    arn = deployment.listing_state_machine_arn
    deployment.jobs.create(
        Job(job_id=job_id, spec=spec, created_at=now, updated_at=now, listing_execution=execution_arn(arn, job_id))
    )
    notification = None
    try:
        if spec.notify_email:
            subscribed = subscribe_job(deployment.sns, deployment.jobs_topic_arn, spec.notify_email, job_id)
            notification = NOTIFICATIONS[subscribed].format(email=spec.notify_email)
        start_named(deployment.sfn, arn, job_id, {"job_id": job_id})
    except DependencyUnavailable as exc:
        deployment.jobs.transition(
            job_id, JobStatus.FAILED, allowed_from=(JobStatus.LISTING,), now=now, reason=str(exc), finished_at=now
        )
        raise
    return JobAccepted(job_id=job_id, status=JobStatus.LISTING, notification=notification)


def read_config(deployment: JobsDeployment, uri: str) -> dict[str, Any]:
    """The job fields of the config file at `uri` (s3://bucket/key, a JSON object); InvalidRequest naming what is
    wrong with it."""
    match = CONFIG_URI.match(uri)
    if match is None:
        raise InvalidRequest("config_uri: must be s3://<bucket>/<key>")
    bucket, key = match["bucket"], match["key"]
    check_bucket("config_uri", bucket, deployment.input_buckets, INPUT_BUCKETS_KEY)
    try:
        raw = read_object(deployment.s3, bucket, key)
    except (NotFound, Forbidden, ValueError) as exc:
        raise InvalidRequest(f"config_uri: {exc}") from exc
    try:
        content = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"config_uri: {uri} is not a JSON file: {exc}") from exc
    if not isinstance(content, dict):
        raise InvalidRequest(f"config_uri: {uri} holds a JSON {type(content).__name__}, not an object of job fields")
    if "config_uri" in content:
        raise InvalidRequest(f"config_uri: {uri}: field config_uri: a config file cannot name another")
    try:
        # Validated as a request naming itself: the file may leave out what the request gives beside it.
        return JobRequest.model_validate({**content, "config_uri": uri}).given()
    except ValidationError as exc:
        raise InvalidRequest(f"config_uri: {uri}: {describe_errors(exc)}") from exc


def job_spec(fields: dict[str, Any], config_uri: str | None) -> JobSpec:
    missing = [name for name in REQUIRED_FIELDS if name not in fields]
    if missing:
        raise InvalidRequest(
            f"config_uri: {config_uri}: {', '.join(missing)} missing: give them in the file or beside config_uri"
        )
    return JobSpec.model_validate({**TIMING_DEFAULTS, **fields})


def check_bucket(field: str, bucket: str, allowed: Sequence[str], context_key: str) -> None:
    if not allowed:
        raise InvalidRequest(
            f"{field}: bucket {bucket} is not allowed: this deployment allows no bucket here; set the context key "
            f"{context_key} (cdk.json) to the buckets jobs may use, and deploy"
        )
    if bucket not in allowed:
        raise InvalidRequest(
            f"{field}: bucket {bucket} is not among the deployment's allowed buckets ({', '.join(allowed)}); "
            f"add it to the context key {context_key} (cdk.json) and deploy"
        )


def describe_errors(exc: ValidationError) -> str:
    """pydantic's errors as "field batch_size: Input should be ..." parts, the way the API's 400s name fields."""
    parts = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "invalid"))
        parts.append(f"field {location}: {message}" if location else message)
    return "; ".join(parts)


# --- GET /jobs, GET /jobs/{job_id} -------------------------------------------------------------------------


def list_jobs(jobs: JobStore, *, limit: int, next_token: str | None) -> JobsPage:
    try:
        found, token = jobs.page(limit, next_token)
    except ValueError as exc:
        raise InvalidRequest(f"next_token: {exc}") from exc
    return JobsPage(jobs=[summary(job) for job in found], next_token=token)


def summary(job: Job) -> JobSummary:
    return JobSummary(
        job_id=job.job_id,
        status=job.status,
        files=job.files,
        image=job.spec.image,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )


def view(deployment: JobsDeployment, job_id: str) -> JobView:
    job = deployment.jobs.get(job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job_view(deployment, job)


def job_view(deployment: JobsDeployment, job: Job) -> JobView:
    spec = job.spec
    return JobView(
        job_id=job.job_id,
        status=job.status,
        reason=job.reason,
        input_bucket=spec.input_bucket,
        input_prefix=spec.input_prefix,
        output_bucket=spec.output_bucket,
        output_prefix=spec.output_prefix,
        image=spec.image,
        files=job.files,
        batches=deployment.queue.counts(job.job_id),
        max_workers=spec.max_workers,
        workers=[
            WorkerView(
                worker_id=worker.worker_id,
                instance_id=worker.instance_id,
                region=worker.region,
                status=worker.status,
                batch_id=worker.batch_id,
                last_seen=worker.last_seen,
                capacity_type=worker.capacity_type,
                instance_type=worker.instance_type,
            )
            for worker in deployment.workers.list(job.job_id)
        ],
        fleet=[
            RegionFleetView(
                region=fleet.region,
                desired=fleet.desired,
                in_service=fleet.in_service,
                capacity_type=fleet.capacity_type,
                error=fleet.error,
                excluded_until=fleet.excluded_until,
            )
            for fleet in deployment.fleet.list(job.job_id)
        ],
        errors=[
            JobErrorView(batch_id=error.batch_id, worker_id=error.worker_id, error=error.error, at=error.at)
            for error in deployment.queue.errors(job.job_id)
        ],
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


# --- DELETE /jobs/{job_id} ---------------------------------------------------------------------------------


def cancel(deployment: JobsDeployment, job_id: str, *, caller: str, now: float) -> JobView:
    """Cancel a listing or running job: its workers are told to shut down at their next poll and the supervisor
    releases its capacity. A finished job is answered as it is (cancelling twice changes nothing)."""
    job = deployment.jobs.get(job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    if job.status in CANCELLABLE:
        reason = f"cancelled by {caller}"
        cancelled = deployment.jobs.transition(
            job_id, JobStatus.CANCELLED, allowed_from=CANCELLABLE, now=now, reason=reason, finished_at=now
        )
        if cancelled and job.status is JobStatus.LISTING:
            # Should the stop fail, the listing's next task reads the job, sees it cancelled and stops there.
            with suppress(DependencyUnavailable):
                stop_named(deployment.sfn, deployment.listing_state_machine_arn, job_id, reason)
        job = deployment.jobs.get(job_id) or job
    return job_view(deployment, job)

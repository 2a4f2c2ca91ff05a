"""The jobs API: what an operator sends to /jobs and what it is answered.

POST   /jobs            JobRequest          -> 202 JobAccepted
GET    /jobs            ?limit=&next_token= -> JobsPage (newest first)
GET    /jobs/{job_id}                       -> JobView
DELETE /jobs/{job_id}                       -> JobView (cancelled, or as it was when already finished)
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from spothub_core.contracts import BatchCounts
from spothub_core.models.api import INSTANCE_TYPE_PATTERN, UtcTime
from spothub_core.models.base import Model
from spothub_core.models.batch_records import JobStatus, WorkerStatus

# S3's bucket naming rules (general purpose buckets): 3-63 characters, lower case, digits, dots, hyphens.
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
CONFIG_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>.+)$")
MAX_BATCH_SIZE = 1000
MAX_WORKERS = 500
MAX_ATTEMPTS = 10
# An image reference: [registry/]repository[:tag][@digest]; docker's own grammar is looser, this refuses spaces
# and shell characters so the reference is safe to hand to `docker run` as one argument.
IMAGE_PATTERN = r"^[a-z0-9][a-z0-9._/:@+-]{0,254}$"


class JobRequest(Model):
    """POST /jobs: the job's fields, or `config_uri` naming a config file holding them (the classic
    configuration/config.json: input_bucket, input_prefix, output_bucket, output_prefix, plus optional fields).
    Fields given beside config_uri override the file's."""

    model_config = ConfigDict(extra="forbid")

    config_uri: str | None = Field(None, description="s3://bucket/key of a JSON config file")
    input_bucket: str | None = Field(None, pattern=BUCKET_PATTERN)
    input_prefix: str | None = Field(None, max_length=1024)
    output_bucket: str | None = Field(None, pattern=BUCKET_PATTERN)
    output_prefix: str | None = Field(None, max_length=1024)
    image: str | None = Field(None, pattern=IMAGE_PATTERN, description="the container image each batch runs in")
    command: list[str] | None = Field(None, max_length=64, description="the container's command (default: its own)")
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH_SIZE, description="files per batch (default 10)")
    max_workers: int | None = Field(None, ge=1, le=MAX_WORKERS, description="most workers at once (default 10)")
    max_attempts: int | None = Field(None, ge=1, le=MAX_ATTEMPTS, description="tries per batch (default 3)")
    ack_timeout_s: int | None = Field(None, ge=10, le=3600, description="to acknowledge an assignment (300)")
    processing_timeout_s: int | None = Field(None, ge=30, le=86400, description="to finish a batch (3600)")
    instance_types: list[str] | None = Field(None, min_length=1, max_length=20)
    notify_email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)

    @field_validator("config_uri")
    @classmethod
    def _s3_uri(cls, value: str | None) -> str | None:
        if value is not None and not CONFIG_URI.match(value):
            raise ValueError("config_uri must be s3://<bucket>/<key>")
        return value

    @field_validator("instance_types")
    @classmethod
    def _instance_type_names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            bad = [name for name in value if not INSTANCE_TYPE_PATTERN.match(name)]
            if bad:
                raise ValueError(f"not EC2 instance type names: {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _fields_or_file(self) -> JobRequest:
        if self.config_uri is None:
            missing = [name for name in ("input_bucket", "output_bucket", "image") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"{', '.join(missing)} required (or config_uri naming a config file)")
        return self

    def given(self) -> dict[str, Any]:
        """The fields given, without config_uri: what overrides the config file's."""
        return self.model_dump(exclude_none=True, exclude={"config_uri"})


class JobAccepted(Model):
    job_id: str
    status: JobStatus
    notification: str | None = Field(None, description="what notify_email will hear, when one was given")


class WorkerView(Model):
    worker_id: str
    instance_id: str
    region: str
    status: WorkerStatus
    batch_id: str | None = None
    last_seen: UtcTime | None = None
    capacity_type: str | None = None
    instance_type: str = ""


class JobErrorView(Model):
    batch_id: str
    worker_id: str | None = None
    error: str
    at: UtcTime


class RegionFleetView(Model):
    region: str
    desired: int
    in_service: int
    capacity_type: str
    error: str | None = None
    excluded_until: UtcTime | None = None


class JobView(Model):
    """GET /jobs/{job_id}: the job, its batches by status, its workers and what went wrong."""

    job_id: str
    status: JobStatus
    reason: str | None = None
    input_bucket: str
    input_prefix: str
    output_bucket: str
    output_prefix: str
    image: str
    files: int
    batches: BatchCounts
    max_workers: int
    workers: list[WorkerView] = Field(default_factory=list)
    fleet: list[RegionFleetView] = Field(default_factory=list)
    errors: list[JobErrorView] = Field(default_factory=list)
    created_at: UtcTime
    started_at: UtcTime | None = None
    finished_at: UtcTime | None = None


class JobSummary(Model):
    job_id: str
    status: JobStatus
    files: int
    image: str
    created_at: UtcTime
    finished_at: UtcTime | None = None


class JobsPage(Model):
    jobs: list[JobSummary]
    next_token: str | None = Field(None, description="pass as next_token for the next page; absent on the last")

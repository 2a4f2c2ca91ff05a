"""What the jobs table stores for batch jobs, one model per item kind, with status enums.

Key layout (the dal owns keys and condition expressions; dal/batch_*.py):
  pk=JOB#<job_id>  sk=JOB               the job (Job)
  pk=JOB#<job_id>  sk=BATCH#<seq:07d>   one batch of file names (Batch)
  pk=JOB#<job_id>  sk=WORKER#<instance> one worker of the job (Worker)
  pk=JOB#<job_id>  sk=FLEET#<region>    the job's capacity in one worker region (RegionFleet)
  pk=JOB#<job_id>  sk=ERROR#<at>#<batch> one error a worker reported (JobError), kept for the job view

Indexes (both sparse: an item is in an index only while it carries the index's key attribute):
  by_status  pk=status_key ("<job_id>#<batch status>" on batches, "JOBS#<job status>" on jobs), sk=sk;
             projects deadline, worker_id, attempt. "Next pending batch" is a Query on
             "<job_id>#pending"; timeouts a Query on "<job_id>#assigned" / "#processing"; counts are
             Select=COUNT on each; the supervisor finds the jobs it still has work on under "JOBS#<status>"
             (a job keeps its status_key until settled: finished, notified, its groups released).
  by_time    pk=list_key ("JOBS", jobs only), sk=created_key ("<created ISO>#<job_id>"): GET /jobs, newest first.

Times are epoch seconds, as stored; the API shows ISO 8601.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from spothub_core.contracts import CapacityType
from spothub_core.models.base import Model


class JobsIndex(StrEnum):
    """The jobs table's global secondary indexes (the stack declares them, the dal queries them)."""

    BY_STATUS = "by_status"
    BY_TIME = "by_time"


# Each index's partition and sort key attributes, and what by_status projects beyond the keys (what the claim
# and the timeouts read without going back to the item).
JOBS_INDEX_KEYS: dict[JobsIndex, tuple[str, str]] = {
    JobsIndex.BY_STATUS: ("status_key", "sk"),
    JobsIndex.BY_TIME: ("list_key", "created_key"),
}
BY_STATUS_PROJECTION = ("deadline", "worker_id", "attempt")


class JobStatus(StrEnum):
    LISTING = "listing"  # the listing state machine partitions the prefix into batches
    RUNNING = "running"  # batches are handed out; workers come and go
    COMPLETED = "completed"  # every batch completed, the workers gone
    FAILED = "failed"  # listing failed (empty prefix, unreadable bucket) or some batch failed for good
    CANCELLED = "cancelled"  # DELETE /jobs/{id}: workers told to shut down, capacity released

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class BatchStatus(StrEnum):
    PENDING = "pending"  # waiting for a worker (in the by_status index under "<job>#pending")
    ASSIGNED = "assigned"  # claimed by a worker, not acknowledged yet (ack deadline)
    PROCESSING = "processing"  # acknowledged (processing deadline)
    COMPLETED = "completed"
    FAILED = "failed"  # failed max_attempts times; its last error kept

    @property
    def in_flight(self) -> bool:
        return self in (BatchStatus.ASSIGNED, BatchStatus.PROCESSING)


class WorkerStatus(StrEnum):
    ACTIVE = "active"  # registered, polling or working
    UNAVAILABLE = "unavailable"  # missed an ack or processing deadline: no more work; its instance is released
    SHUTTING_DOWN = "shutting-down"  # told to shut down, or said it is (interruption, fatal error)
    GONE = "gone"  # its instance is terminated


class _Record(Model):
    model_config = ConfigDict(extra="ignore", use_enum_values=False)


class JobSpec(_Record):
    """What the job runs and on what: fixed at submission (POST /jobs, or the config file it names)."""

    input_bucket: str
    input_prefix: str = ""
    output_bucket: str
    output_prefix: str = ""
    image: str
    command: list[str] = Field(default_factory=list)
    batch_size: int = 10
    max_workers: int = 10
    max_attempts: int = 3
    ack_timeout_s: int = 300
    processing_timeout_s: int = 3600
    instance_types: list[str] = Field(default_factory=list)  # empty: the deployment's batch instance types
    notify_email: str | None = None


class Job(_Record):
    """JOB#<job_id> / JOB."""

    job_id: str
    status: JobStatus = JobStatus.LISTING
    spec: JobSpec
    files: int = 0  # files listed so far (all of them once running)
    batches: int = 0  # batches written so far
    reason: str | None = None  # why it failed or was cancelled
    listing_execution: str | None = None  # the listing state machine's execution ARN
    created_at: float
    started_at: float | None = None  # listing finished, batches handed out from now
    finished_at: float | None = None
    notified_at: float | None = None  # the completion notification and event went out
    settled_at: float | None = None  # finished, notified and every region's group released: off by_status
    updated_at: float | None = None


class Batch(_Record):
    """JOB#<job_id> / BATCH#<seq>: a batch of files, handed to one worker at a time."""

    job_id: str
    batch_id: str  # "b-<seq:07d>"
    file_names: list[str]  # keys relative to the job's input prefix
    status: BatchStatus = BatchStatus.PENDING
    attempt: int = 0  # how many times it was handed out (the assignment's `attempt` is this after the claim)
    failures: int = 0  # failed reports and timeouts; at max_attempts the batch is failed
    worker_id: str | None = None  # the worker holding it (assigned/processing)
    deadline: float | None = None  # ack deadline (assigned) or processing deadline (processing)
    last_error: str | None = None
    # The worker it was last taken back from, and why ("ack timeout", "processing timeout", "reported failed",
    # "worker shutting down", "instance gone"): a late call of that worker is answered saying so.
    taken_from: str | None = None
    taken_because: str | None = None
    updated_at: float | None = None


class Worker(_Record):
    """JOB#<job_id> / WORKER#<instance_id>: one instance working for a job; worker_id "<job_id>.<instance_id>"."""

    job_id: str
    worker_id: str
    instance_id: str
    region: str = ""
    availability_zone: str = ""
    instance_type: str = ""
    capacity_type: CapacityType | None = None
    status: WorkerStatus = WorkerStatus.ACTIVE
    batch_id: str | None = None  # the batch it holds, if any
    registered_at: float | None = None
    last_seen: float | None = None
    reason: str | None = None  # why it is unavailable or shutting down


class RegionFleet(_Record):
    """JOB#<job_id> / FLEET#<region>: the capacity the job asked of one worker region, and what it answered."""

    job_id: str
    region: str
    desired: int = 0  # what the hub last asked for (the group only ever grows by the hub's hand)
    capacity_type: CapacityType = "spot"
    in_service: int = 0  # the region's last report
    instance_ids: list[str] = Field(default_factory=list)  # the group's members in the region's last report
    error: str | None = None  # the region's last launch failure, as Auto Scaling said it
    error_class: str | None = None  # capacity | quota | transient | fatal
    excluded_until: float | None = None  # no more (spot) workers asked of this region until then
    on_demand_excluded_until: float | None = None  # the same for on-demand workers (after an on-demand failure)
    released: bool = False  # the job's group in the region is deleted
    requested_at: float | None = None  # the hub's latest request of any kind (growth, look, release)
    reported_at: float | None = None
    grown_at: float | None = None  # the hub's latest request that grew the group: boot grace and errors count from it
    group_desired: int | None = None  # the group's desired capacity, as the region's last report said
    reported_for: float | None = None  # the request (its requested_at) the recorded report answered


class JobError(_Record):
    """JOB#<job_id> / ERROR#<at>#<batch_id>: what a worker reported when a batch failed or timed out."""

    job_id: str
    batch_id: str
    worker_id: str | None = None
    error: str
    at: float

"""The listing of a job's input prefix into batches: the tasks of statemachines/batch_listing.asl.json.

ListPages lists pages (ListObjectsV2, 1,000 keys a page) from where the last call stopped, for a time budget,
and writes the whole batches they make in listing order; the files short of a whole batch travel in the state
(`carry`) to the next call. FinishListing writes the carry as the last batch and hands the job to the workers
(running), or fails it when the prefix held no files. FailListing fails the job with the error that stopped
the listing. A job cancelled meanwhile stays cancelled: ListPages stops listing it, FinishListing and
FailListing leave it as it is.

A task retried by the state machine (a Lambda error after some writes) starts again from its input: it writes
the same batches under the same keys, and FinishListing sets the job's counts from the state, not by adding.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spothub_core.dal.batch_jobs import JobStore
from spothub_core.dal.batch_queue import BatchQueue
from spothub_core.dal.batch_s3 import list_page, s3_uri
from spothub_core.dal.batch_table import batch_id_of
from spothub_core.errors import FatalError, TransientError
from spothub_core.models.batch_records import Batch, Job, JobStatus
from spothub_core.models.batch_tasks import (
    FailListing,
    FinishListing,
    ListingFailed,
    ListingFinished,
    ListPages,
    PagesListed,
)
from spothub_core.timings import BATCH_LISTING_BUDGET_SECONDS

# A batch's file names, at most, in UTF-8 bytes: the batch item stays well under DynamoDB's 400 KB, whatever
# the job's batch_size and however long its keys (S3 allows 1,024 bytes). A batch closes early at this size.
BATCH_MAX_BYTES = 128 * 1024
# The carry travels in the state machine's state (256 KB at most, JSON-escaped): one larger than this is
# written as a short batch instead.
CARRY_MAX_JSON_BYTES = 160 * 1024
MAX_REASON_LENGTH = 1000


@dataclass(frozen=True)
class Listing:
    """What the listing works with: the jobs table, S3, and a clock for its time budget."""

    jobs: JobStore
    queue: BatchQueue
    s3: Any
    clock: Callable[[], float] = field(default=time.monotonic)
    budget_s: float = BATCH_LISTING_BUDGET_SECONDS


def relative_names(keys: Sequence[str], prefix: str) -> list[str]:
    """The file names under `prefix`, relative to it, in listing order; "directory" keys (ending in "/", as the
    console creates them) and the prefix itself are not files."""
    return [
        key[len(prefix) :]
        for key in keys
        if key.startswith(prefix) and len(key) > len(prefix) and not key.endswith("/")
    ]


def partition(
    names: Sequence[str], batch_size: int, *, max_bytes: int = BATCH_MAX_BYTES
) -> tuple[list[list[str]], list[str]]:
    """`names` in order, cut into whole batches of `batch_size` names (fewer where `max_bytes` of names is
    reached first); the names after the last whole batch are returned apart, to be carried."""
    batches: list[list[str]] = []
    current: list[str] = []
    size = 0
    for name in names:
        weight = len(name.encode("utf-8"))
        if current and size + weight > max_bytes:
            batches.append(current)
            current, size = [], 0
        current.append(name)
        size += weight
        if len(current) == batch_size:
            batches.append(current)
            current, size = [], 0
    return batches, current


def carry_fits(carry: Sequence[str]) -> bool:
    return len(json.dumps(list(carry))) <= CARRY_MAX_JSON_BYTES


def list_pages(listing: Listing, task: ListPages, *, now: float) -> PagesListed:
    job = _job(listing, task.job_id)
    if job.status is not JobStatus.LISTING:  # cancelled meanwhile: stop listing, FinishListing leaves it so
        return PagesListed(**task.model_dump(), done=True)
    spec = job.spec
    started = listing.clock()
    token, seq, carry = task.continuation_token, task.next_seq, list(task.carry)
    listed = written = 0
    while True:
        keys, token = list_page(listing.s3, spec.input_bucket, spec.input_prefix, token)
        names = relative_names(keys, spec.input_prefix)
        listed += len(names)
        whole, carry = partition([*carry, *names], spec.batch_size)
        _write(listing, job.job_id, seq, whole)
        seq += len(whole)
        written += len(whole)
        if token is None or listing.clock() - started >= listing.budget_s:
            break
    if carry and not carry_fits(carry):
        _write(listing, job.job_id, seq, [carry])
        seq, written, carry = seq + 1, written + 1, []
    if listed or written:
        listing.jobs.add_listed(job.job_id, files=listed, batches=written, now=now)
    return PagesListed(
        job_id=job.job_id,
        continuation_token=token,
        next_seq=seq,
        carry=carry,
        files=task.files + listed,
        done=token is None,
    )


def finish_listing(listing: Listing, task: FinishListing, *, now: float) -> ListingFinished:
    job = _job(listing, task.job_id)
    if job.status is not JobStatus.LISTING:  # cancelled meanwhile, or this task ran before (a retry)
        return _finished(job)
    batches = task.next_seq
    if task.carry:
        _write(listing, job.job_id, task.next_seq, [task.carry])
        batches += 1
    if task.files == 0:
        to = JobStatus.FAILED
        fields: dict[str, Any] = {
            "reason": f"no files under {s3_uri(job.spec.input_bucket, job.spec.input_prefix)}",
            "files": 0,
            "batches": 0,
            "finished_at": now,
        }
    else:
        to = JobStatus.RUNNING
        fields = {"files": task.files, "batches": batches, "started_at": now}
    if listing.jobs.transition(job.job_id, to, allowed_from=(JobStatus.LISTING,), now=now, **fields):
        return ListingFinished(job_id=job.job_id, status=to.value, files=fields["files"], batches=fields["batches"])
    return _finished(_job(listing, task.job_id))  # cancelled between our read and our write: it stays so


def fail_listing(listing: Listing, task: FailListing, *, now: float) -> ListingFailed:
    reason = failure_reason(task.error, task.cause)
    job = listing.jobs.get(task.job_id)
    if job is None:
        return ListingFailed(job_id=task.job_id, status="unknown", reason=reason)
    if job.status is JobStatus.LISTING and listing.jobs.transition(
        job.job_id, JobStatus.FAILED, allowed_from=(JobStatus.LISTING,), now=now, reason=reason, finished_at=now
    ):
        return ListingFailed(job_id=job.job_id, status=JobStatus.FAILED.value, reason=reason)
    job = listing.jobs.get(task.job_id) or job
    return ListingFailed(job_id=job.job_id, status=job.status.value, reason=job.reason or reason)


def failure_reason(error: str, cause: str) -> str:
    """What stopped the listing, for the job's reason: the message our own errors carry ("AccessDenied: Access
    Denied (listing s3://b/p)"), else the error's name and what Step Functions or Lambda said."""
    try:
        detail = json.loads(cause) if cause else None
    except ValueError:
        detail = None
    if isinstance(detail, dict) and detail.get("errorMessage"):
        kind = str(detail.get("errorType") or error)
        message = str(detail["errorMessage"])
        reason = message if kind in (FatalError.__name__, TransientError.__name__) else f"{kind}: {message}"
    elif cause:
        reason = f"{error}: {cause}" if error else cause
    else:
        reason = error or "the listing failed"
    return reason[:MAX_REASON_LENGTH]


def _job(listing: Listing, job_id: str) -> Job:
    job = listing.jobs.get(job_id)
    if job is None:
        raise FatalError(f"no job {job_id}")
    return job


def _write(listing: Listing, job_id: str, first_seq: int, batches: list[list[str]]) -> None:
    if batches:
        listing.queue.put_batches(
            job_id,
            [
                Batch(job_id=job_id, batch_id=batch_id_of(first_seq + offset), file_names=names)
                for offset, names in enumerate(batches)
            ],
        )


def _finished(job: Job) -> ListingFinished:
    return ListingFinished(job_id=job.job_id, status=job.status.value, files=job.files, batches=job.batches)

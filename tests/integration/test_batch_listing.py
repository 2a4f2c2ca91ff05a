"""The listing of a job's prefix into batches, task by task as the state machine runs them, against S3 and the
jobs table in moto: a prefix of many pages over several calls, the carry across pages and calls, an empty
prefix, a bucket S3 refuses or does not have, a job cancelled while listing, a task run twice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from spothub_core.dal.batch_jobs import JobStore
from spothub_core.dal.batch_queue import BatchQueue
from spothub_core.errors import FatalError, TransientError
from spothub_core.logic import batch_listing
from spothub_core.logic.batch_listing import Listing
from spothub_core.models.batch_records import Job, JobSpec, JobStatus
from spothub_core.models.batch_tasks import FailListing, FinishListing, ListingFinished, ListPages, PagesListed
from tests.integration.batch_fixtures import jobs_table  # noqa: F401 (a fixture)
from tests.integration.conftest import HUB_ENVIRONMENT, ApiCalls, load_handler, set_environment

REGION = "us-east-1"
BUCKET = "spothub-input"
NOW = 1_700_000_000.0
JOB_ID = "job-0123456789ab"


class Clock:
    """A monotonic clock that moves one second each time it is read: a listing call with a budget of
    `n` seconds lists `n` pages."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def s3(jobs_table: Any) -> Any:  # noqa: F811
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def jobs(jobs_table: Any) -> JobStore:  # noqa: F811
    return JobStore(jobs_table)


@pytest.fixture
def queue(jobs_table: Any) -> BatchQueue:  # noqa: F811
    return BatchQueue(jobs_table)


def listing_of(jobs: JobStore, queue: BatchQueue, s3: Any, *, pages_per_call: int = 2) -> Listing:
    # The clock is read once before the first page and once after each: `pages_per_call` pages a call.
    return Listing(jobs=jobs, queue=queue, s3=s3, clock=Clock(), budget_s=pages_per_call)


def put_files(s3: Any, prefix: str, count: int, *, directories: bool = True) -> list[str]:
    """`count` files under `prefix` (and "directory" keys among them); their names relative to the prefix, in
    S3's listing order."""
    names = [f"part-{n // 100:03d}/file-{n:05d}.txt" for n in range(count)]
    for name in names:
        s3.put_object(Bucket=BUCKET, Key=prefix + name, Body=b"x")
    if directories:
        for folder in sorted({name.split("/")[0] for name in names}):
            s3.put_object(Bucket=BUCKET, Key=f"{prefix}{folder}/", Body=b"")
        s3.put_object(Bucket=BUCKET, Key=prefix, Body=b"")
    return sorted(names)


def s3_keys(s3: Any, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def submit(jobs: JobStore, *, prefix: str = "in/", batch_size: int = 7, bucket: str = BUCKET) -> Job:
    spec = JobSpec(input_bucket=bucket, input_prefix=prefix, output_bucket="spothub-output", image="acme/job:1")
    job = Job(job_id=JOB_ID, spec=spec.model_copy(update={"batch_size": batch_size}), created_at=NOW)
    jobs.create(job)
    return job


def run_listing(listing: Listing, job_id: str = JOB_ID) -> tuple[list[PagesListed], ListingFinished]:
    """What the state machine does: ListPages until done (each answer is the next call's input), FinishListing."""
    calls: list[PagesListed] = []
    state = ListPages(job_id=job_id)
    while True:
        listed = batch_listing.list_pages(listing, state, now=NOW)
        calls.append(listed)
        if listed.done:
            break
        state = ListPages.model_validate(listed.model_dump(exclude={"done"}))
    finished = batch_listing.finish_listing(
        listing,
        FinishListing(job_id=job_id, next_seq=listed.next_seq, carry=listed.carry, files=listed.files),
        now=NOW + 1,
    )
    return calls, finished


def batches_of(queue: BatchQueue, job_id: str, count: int) -> list[Any]:
    from spothub_core.dal.batch_table import batch_id_of  # noqa: PLC0415

    found = [queue.get(job_id, batch_id_of(seq)) for seq in range(count + 1)]
    assert found[-1] is None, "a batch beyond the last"
    return found[:-1]


# --- a prefix of many pages -----------------------------------------------------------------------------------


def test_a_prefix_of_many_pages_becomes_batches_in_listing_order_over_several_calls(
    jobs: JobStore, queue: BatchQueue, s3: Any
) -> None:
    names = put_files(s3, "in/", 2_500)
    submit(jobs, batch_size=7)
    recorder = ApiCalls(s3, "ListObjectsV2")

    calls, finished = run_listing(listing_of(jobs, queue, s3, pages_per_call=2))

    # 2,500 files and 26 "directory" keys: 3 pages of 1,000 at most, two calls of two pages at most.
    assert [call["MaxKeys"] for call in recorder.of("ListObjectsV2")] == [1000, 1000, 1000]
    assert [call.done for call in calls] == [False, True]
    keys = sorted(s3_keys(s3, "in/"))
    assert len(keys) == 2_526
    assert calls[0].files == len([key for key in keys[:2_000] if not key.endswith("/")])
    assert calls[0].carry and len(calls[0].carry) < 7  # the files short of a batch, carried to the next call
    assert finished == ListingFinished(job_id=JOB_ID, status="running", files=2_500, batches=358)

    batches = batches_of(queue, JOB_ID, 358)
    assert [name for batch in batches for name in batch.file_names] == names
    assert {len(batch.file_names) for batch in batches[:-1]} == {7}
    assert len(batches[-1].file_names) == 2_500 - 357 * 7
    assert {batch.status.value for batch in batches} == {"pending"}
    job = jobs.get(JOB_ID)
    assert job is not None
    assert (job.status, job.files, job.batches, job.started_at) == (JobStatus.RUNNING, 2_500, 358, NOW + 1)
    assert queue.counts(JOB_ID).pending == 358


def test_the_carry_crosses_pages_within_a_call_and_between_calls(jobs: JobStore, queue: BatchQueue, s3: Any) -> None:
    names = put_files(s3, "in/", 2_100, directories=False)
    submit(jobs, batch_size=300)  # 1,000 = 3 x 300 + 100: every page leaves a carry

    calls, finished = run_listing(listing_of(jobs, queue, s3, pages_per_call=1))

    assert [len(call.carry) for call in calls] == [100, 200, 0]
    assert [call.next_seq for call in calls] == [3, 6, 7]
    assert finished.batches == 7 and finished.files == 2_100
    batches = batches_of(queue, JOB_ID, 7)
    assert [name for batch in batches for name in batch.file_names] == names
    assert [len(batch.file_names) for batch in batches] == [300] * 7


def test_a_prefix_that_fits_one_batch_is_one_batch_written_at_the_finish(
    jobs: JobStore, queue: BatchQueue, s3: Any
) -> None:
    names = put_files(s3, "in/", 3)
    submit(jobs, batch_size=10)

    calls, finished = run_listing(listing_of(jobs, queue, s3))

    assert calls[0].carry == names and calls[0].next_seq == 0
    assert finished.status == "running" and finished.batches == 1
    (batch,) = batches_of(queue, JOB_ID, 1)
    assert batch.file_names == names and batch.batch_id == "b-0000000"


def test_a_carry_too_large_for_the_state_is_written_as_a_short_batch(
    jobs: JobStore, queue: BatchQueue, s3: Any
) -> None:
    for n in range(100):
        s3.put_object(Bucket=BUCKET, Key=f"in/{'é' * 300}{n:04d}", Body=b"x")
    submit(jobs, batch_size=1000)

    calls, finished = run_listing(listing_of(jobs, queue, s3))

    assert calls[-1].carry == [] and calls[-1].next_seq == 1
    assert finished.batches == 1 and finished.files == 100
    assert len(batches_of(queue, JOB_ID, 1)[0].file_names) == 100


def test_a_task_run_again_writes_the_same_batches_and_the_finish_counts_from_the_state(
    jobs: JobStore, queue: BatchQueue, s3: Any
) -> None:
    put_files(s3, "in/", 1_500, directories=False)
    submit(jobs, batch_size=100)
    listing = listing_of(jobs, queue, s3, pages_per_call=1)

    first = batch_listing.list_pages(listing, ListPages(job_id=JOB_ID), now=NOW)
    again = batch_listing.list_pages(listing, ListPages(job_id=JOB_ID), now=NOW)  # a retry after a lost answer
    assert again == first
    last = batch_listing.list_pages(listing, ListPages.model_validate(first.model_dump(exclude={"done"})), now=NOW)
    assert last.done
    finished = batch_listing.finish_listing(
        listing, FinishListing(job_id=JOB_ID, next_seq=last.next_seq, carry=last.carry, files=last.files), now=NOW
    )
    assert (finished.files, finished.batches) == (1_500, 15)
    job = jobs.get(JOB_ID)
    assert job is not None and (job.files, job.batches) == (1_500, 15)
    assert queue.counts(JOB_ID).pending == 15


# --- no files, no listing -------------------------------------------------------------------------------------


def test_an_empty_prefix_fails_the_job_saying_where_it_looked(jobs: JobStore, queue: BatchQueue, s3: Any) -> None:
    put_files(s3, "other/", 5)
    s3.put_object(Bucket=BUCKET, Key="empty/", Body=b"")  # a folder holds no files
    submit(jobs, prefix="empty/")

    calls, finished = run_listing(listing_of(jobs, queue, s3))

    assert [call.files for call in calls] == [0]
    assert finished.status == "failed"
    job = jobs.get(JOB_ID)
    assert job is not None
    assert job.status is JobStatus.FAILED
    assert job.reason == f"no files under s3://{BUCKET}/empty/"
    assert job.finished_at == NOW + 1
    assert queue.counts(JOB_ID).pending == 0


def _fail(listing: Listing, exc: Exception) -> Any:
    """What the state machine does with an exception the task raised: Lambda's error, caught, to FailListing."""
    cause = json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__, "stackTrace": []})
    return batch_listing.fail_listing(
        listing, FailListing(job_id=JOB_ID, error=type(exc).__name__, cause=cause), now=NOW + 2
    )


def test_a_bucket_that_does_not_exist_fails_the_job_at_once(jobs: JobStore, queue: BatchQueue, s3: Any) -> None:
    submit(jobs, bucket="spothub-nowhere")
    listing = listing_of(jobs, queue, s3)

    with pytest.raises(FatalError) as raised:
        batch_listing.list_pages(listing, ListPages(job_id=JOB_ID), now=NOW)
    assert str(raised.value).startswith("NoSuchBucket: ")
    assert str(raised.value).endswith("(listing s3://spothub-nowhere/in/)")

    failed = _fail(listing, raised.value)
    assert failed.status == "failed"
    job = jobs.get(JOB_ID)
    assert job is not None and job.status is JobStatus.FAILED
    assert job.reason == str(raised.value) and job.finished_at == NOW + 2


def test_a_bucket_that_refuses_the_listing_fails_the_job_with_s3s_words(
    jobs: JobStore, queue: BatchQueue, s3: Any
) -> None:
    put_files(s3, "in/", 5)
    submit(jobs)
    ApiCalls(s3, "ListObjectsV2").answer("ListObjectsV2", error=("AccessDenied", "Access Denied"))
    listing = listing_of(jobs, queue, s3)

    with pytest.raises(FatalError) as raised:
        batch_listing.list_pages(listing, ListPages(job_id=JOB_ID), now=NOW)
    _fail(listing, raised.value)

    job = jobs.get(JOB_ID)
    assert job is not None and job.status is JobStatus.FAILED
    assert job.reason == f"AccessDenied: Access Denied (listing s3://{BUCKET}/in/)"


def test_s3_slowing_down_is_transient_for_the_state_machine_to_retry(
    jobs: JobStore, queue: BatchQueue, s3: Any
) -> None:
    submit(jobs)
    ApiCalls(s3, "ListObjectsV2").answer("ListObjectsV2", error=("SlowDown", "Please reduce your request rate."))
    with pytest.raises(TransientError, match="SlowDown"):
        batch_listing.list_pages(listing_of(jobs, queue, s3), ListPages(job_id=JOB_ID), now=NOW)
    job = jobs.get(JOB_ID)
    assert job is not None and job.status is JobStatus.LISTING


def test_a_job_that_is_not_there_is_a_fatal_error(jobs: JobStore, queue: BatchQueue, s3: Any) -> None:
    with pytest.raises(FatalError, match=f"no job {JOB_ID}"):
        batch_listing.list_pages(listing_of(jobs, queue, s3), ListPages(job_id=JOB_ID), now=NOW)
    failed = _fail(listing_of(jobs, queue, s3), FatalError(f"no job {JOB_ID}"))
    assert failed.status == "unknown"


# --- cancelled while listing ----------------------------------------------------------------------------------


def _cancel(jobs: JobStore) -> None:
    assert jobs.transition(
        JOB_ID,
        JobStatus.CANCELLED,
        allowed_from=(JobStatus.LISTING, JobStatus.RUNNING),
        now=NOW,
        reason="cancelled by test",
        finished_at=NOW,
    )


def test_a_job_cancelled_while_listing_stops_the_listing_and_stays_cancelled(
    jobs: JobStore, queue: BatchQueue, s3: Any
) -> None:
    put_files(s3, "in/", 2_500, directories=False)
    submit(jobs, batch_size=10)
    listing = listing_of(jobs, queue, s3, pages_per_call=1)
    first = batch_listing.list_pages(listing, ListPages(job_id=JOB_ID), now=NOW)
    assert not first.done and first.next_seq == 100
    _cancel(jobs)
    recorder = ApiCalls(s3, "ListObjectsV2")

    second = batch_listing.list_pages(listing, ListPages.model_validate(first.model_dump(exclude={"done"})), now=NOW)
    assert second.done and second.next_seq == 100  # stopped where it was, without listing
    assert recorder.of("ListObjectsV2") == []
    finished = batch_listing.finish_listing(
        listing, FinishListing(job_id=JOB_ID, next_seq=second.next_seq, carry=second.carry, files=second.files), now=NOW
    )
    assert finished.status == "cancelled"
    job = jobs.get(JOB_ID)
    assert job is not None
    assert (job.status, job.reason) == (JobStatus.CANCELLED, "cancelled by test")
    assert batches_of(queue, JOB_ID, 100)  # what was written stays; workers are told to shut down


def test_a_listing_failing_after_a_cancel_leaves_the_job_cancelled(jobs: JobStore, queue: BatchQueue, s3: Any) -> None:
    submit(jobs)
    _cancel(jobs)
    failed = _fail(listing_of(jobs, queue, s3), FatalError("AccessDenied: Access Denied (listing s3://b/in/)"))
    assert failed.status == "cancelled" and failed.reason == "cancelled by test"
    job = jobs.get(JOB_ID)
    assert job is not None and job.status is JobStatus.CANCELLED


def test_finishing_twice_changes_nothing_the_second_time(jobs: JobStore, queue: BatchQueue, s3: Any) -> None:
    put_files(s3, "in/", 25, directories=False)
    submit(jobs, batch_size=10)
    listing = listing_of(jobs, queue, s3)
    calls, finished = run_listing(listing)
    again = batch_listing.finish_listing(
        listing, FinishListing(job_id=JOB_ID, next_seq=2, carry=calls[-1].carry, files=25), now=NOW + 5
    )
    assert again == finished
    job = jobs.get(JOB_ID)
    assert job is not None and job.started_at == NOW + 1


# --- the function ---------------------------------------------------------------------------------------------


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch, jobs_table: Any) -> Iterator[Any]:  # noqa: F811
    set_environment(
        monkeypatch,
        {
            **HUB_ENVIRONMENT,
            "POWERTOOLS_SERVICE_NAME": "spothub-batch-listing",
            "SPOTHUB_JOBS_TABLE": jobs_table.name,
            "AWS_DEFAULT_REGION": REGION,
        },
    )
    yield load_handler("batch_listing.handler")


def test_the_function_runs_each_action_of_the_state_machine(handler: Any, jobs: JobStore, s3: Any) -> None:
    from spothub_core.models.batch_tasks import LISTING_ACTIONS  # noqa: PLC0415
    from tests.integration.conftest import asl_actions  # noqa: PLC0415
    from tests.lambda_events import FakeLambdaContext  # noqa: PLC0415

    assert set(handler.TASKS) == set(LISTING_ACTIONS) == asl_actions("batch_listing") - {"supervise"}
    put_files(s3, "in/", 12, directories=False)
    submit(jobs, batch_size=5)
    listed = handler.lambda_handler({"action": "list_pages", "job_id": JOB_ID}, FakeLambdaContext())
    assert listed == {
        "job_id": JOB_ID,
        "continuation_token": None,
        "next_seq": 2,
        "carry": listed["carry"],
        "files": 12,
        "done": True,
    }
    assert len(listed["carry"]) == 2
    finish = {key: listed[key] for key in ("job_id", "next_seq", "carry", "files")}
    finished = handler.lambda_handler({"action": "finish_listing", **finish}, FakeLambdaContext())
    assert finished == {"job_id": JOB_ID, "status": "running", "files": 12, "batches": 3}
    failed = handler.lambda_handler(
        {"action": "fail_listing", "job_id": JOB_ID, "error": "States.Timeout", "cause": ""}, FakeLambdaContext()
    )
    assert failed == {"job_id": JOB_ID, "status": "running", "reason": "States.Timeout"}


def test_the_function_refuses_an_unknown_action_or_field(handler: Any) -> None:
    from pydantic import ValidationError  # noqa: PLC0415

    from tests.lambda_events import FakeLambdaContext  # noqa: PLC0415

    with pytest.raises(ValueError, match="unknown action 'list'"):
        handler.lambda_handler({"action": "list", "job_id": JOB_ID}, FakeLambdaContext())
    with pytest.raises(ValidationError, match="token"):
        handler.lambda_handler({"action": "list_pages", "job_id": JOB_ID, "token": "x"}, FakeLambdaContext())

"""The queue of batch jobs against moto's DynamoDB (the jobs table with both indexes): the stores, the worker
calls of logic/batch_queue.py and the supervisor's timeouts and take backs, with every late, duplicate and
out-of-order call a worker can make."""

from __future__ import annotations

import random
from typing import Any

import pytest

from spothub_core.dal.batch_jobs import JobStore
from spothub_core.dal.batch_queue import BatchQueue
from spothub_core.dal.batch_table import batch_id_of
from spothub_core.dal.batch_workers import WorkerStore
from spothub_core.errors import Conflict, DependencyUnavailable, InvalidRequest, NotFound
from spothub_core.logic import batch_queue
from spothub_core.logic.batch_queue import WorkerApi
from spothub_core.models.batch_records import (
    Batch,
    BatchStatus,
    Job,
    JobError,
    JobSpec,
    JobStatus,
    Worker,
    WorkerStatus,
)
from spothub_core.models.batch_workers import (
    BatchAssignment,
    BatchStatusReport,
    WorkerCommand,
    WorkerRegistration,
    worker_id_of,
)
from tests.integration.batch_fixtures import jobs_table  # noqa: F401 (a fixture)

JOB = "job-0123456789ab"
NOW = 1_700_000_000.0
ONE = "i-0000000000000001"
TWO = "i-0000000000000002"
W1 = worker_id_of(JOB, ONE)
W2 = worker_id_of(JOB, TWO)
SPEC = JobSpec(
    input_bucket="in",
    input_prefix="p/",
    output_bucket="out",
    output_prefix="o/",
    image="acme/x:1",
    command=["run"],
    max_attempts=2,
    ack_timeout_s=60,
    processing_timeout_s=600,
)


def seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 (reproducible spreads of the claims; no secret)


@pytest.fixture
def api(jobs_table: Any) -> WorkerApi:  # noqa: F811
    return WorkerApi(
        jobs=JobStore(jobs_table), queue=BatchQueue(jobs_table, rng=seeded(7)), workers=WorkerStore(jobs_table)
    )


def start_job(api: WorkerApi, *, batches: int = 3, status: JobStatus = JobStatus.RUNNING, spec: JobSpec = SPEC) -> Job:
    api.jobs.create(Job(job_id=JOB, spec=spec, created_at=NOW, files=batches, batches=batches))
    api.queue.put_batches(
        JOB, [Batch(job_id=JOB, batch_id=batch_id_of(n), file_names=[f"f{n}.txt"]) for n in range(batches)]
    )
    if status is not JobStatus.LISTING:
        assert api.jobs.transition(JOB, status, allowed_from=(JobStatus.LISTING,), now=NOW)
    return api.jobs.get(JOB)  # type: ignore[return-value]


def join(api: WorkerApi, instance_id: str = ONE) -> str:
    registration = WorkerRegistration(job_id=JOB, instance_id=instance_id, region="us-west-2", capacity_type="spot")
    return batch_queue.register(api, registration, now=NOW).worker_id


def take(api: WorkerApi, worker_id: str = W1, *, now: float = NOW) -> BatchAssignment:
    answer = batch_queue.assignment(api, worker_id, now=now)
    assert isinstance(answer, BatchAssignment), answer
    return answer


def report(api: WorkerApi, worker_id: str, status: str, batch_id: str | None, error: str | None = None, **kw: Any):
    return batch_queue.status(
        api, worker_id, BatchStatusReport(batch_id=batch_id, status=status, error=error), now=kw.get("now", NOW + 5)
    )


def batch(api: WorkerApi, batch_id: str) -> Batch:
    found = api.queue.get(JOB, batch_id)
    assert found is not None
    return found


def worker(api: WorkerApi, instance_id: str = ONE) -> Worker:
    found = api.workers.get(JOB, instance_id)
    assert found is not None
    return found


# --- register -----------------------------------------------------------------------------------------------


def test_a_worker_registers_once_and_registering_again_keeps_what_the_hub_decided(api: WorkerApi) -> None:
    start_job(api)
    registration = WorkerRegistration(
        job_id=JOB, instance_id=ONE, region="us-west-2", instance_type="g5.xlarge", capacity_type="spot"
    )
    first = batch_queue.register(api, registration, now=NOW)
    assert (first.worker_id, first.registered) == (W1, True)
    recorded = worker(api)
    assert (recorded.region, recorded.capacity_type, recorded.status, recorded.registered_at) == (
        "us-west-2",
        "spot",
        WorkerStatus.ACTIVE,
        NOW,
    )
    api.workers.set_status(JOB, ONE, WorkerStatus.UNAVAILABLE, now=NOW + 1, reason="ack timeout of b-0000000")

    again = batch_queue.register(api, registration, now=NOW + 2)

    assert again.registered is False
    assert (worker(api).status, worker(api).last_seen) == (WorkerStatus.UNAVAILABLE, NOW + 2)
    assert batch_queue.assignment(api, W1, now=NOW + 3) == WorkerCommand(
        command="shutdown", reason="this worker is unavailable: ack timeout of b-0000000"
    )


def test_registering_for_an_unknown_job_is_not_found(api: WorkerApi) -> None:
    with pytest.raises(NotFound, match=f"no job {JOB}"):
        join(api)


def test_a_worker_of_a_finished_job_registers_and_is_told_to_shut_down(api: WorkerApi) -> None:
    start_job(api)
    api.jobs.transition(JOB, JobStatus.CANCELLED, allowed_from=(JobStatus.RUNNING,), now=NOW)
    assert join(api) == W1
    assert batch_queue.assignment(api, W1, now=NOW) == WorkerCommand(command="shutdown", reason="the job is cancelled")
    assert api.queue.counts(JOB).pending == 3


# --- assignment ---------------------------------------------------------------------------------------------


def test_a_claim_assigns_one_pending_batch_to_the_worker(api: WorkerApi) -> None:
    start_job(api)
    join(api)

    assigned = take(api)

    assert assigned.model_dump() == {
        "batch_id": assigned.batch_id,
        "file_names": [f"f{int(assigned.batch_id[2:])}.txt"],
        "input_bucket": "in",
        "input_prefix": "p/",
        "output_bucket": "out",
        "output_prefix": "o/",
        "attempt": 1,
        "image": "acme/x:1",
        "command": ["run"],
        "ack_timeout_s": 60,
        "processing_timeout_s": 600,
    }
    held = batch(api, assigned.batch_id)
    assert (held.status, held.worker_id, held.deadline, held.attempt) == (BatchStatus.ASSIGNED, W1, NOW + 60, 1)
    assert worker(api).batch_id == assigned.batch_id
    assert api.queue.counts(JOB).model_dump() == {
        "pending": 2,
        "assigned": 1,
        "processing": 0,
        "completed": 0,
        "failed": 0,
    }


def test_writing_the_same_batches_again_leaves_the_claimed_ones_as_they_are(api: WorkerApi) -> None:
    # A listing task retried after it wrote: its batches come again while a worker holds one of them.
    start_job(api, batches=30)
    join(api)
    assigned = take(api)
    again = [Batch(job_id=JOB, batch_id=batch_id_of(n), file_names=[f"f{n}.txt"]) for n in range(30)]

    api.queue.put_batches(JOB, again)

    held = batch(api, assigned.batch_id)
    assert (held.status, held.worker_id) == (BatchStatus.ASSIGNED, W1)
    assert api.queue.counts(JOB).model_dump()["pending"] == 29


def test_a_lost_answer_gets_the_same_batch_again_not_a_second_one(api: WorkerApi) -> None:
    start_job(api)
    join(api)
    first = take(api)
    assert take(api, now=NOW + 1) == first
    batch_queue.ack(api, W1, first.batch_id, now=NOW + 2)
    assert take(api, now=NOW + 3) == first  # processing: the agent restarted and lost track of it
    assert api.queue.counts(JOB).pending == 2


def test_every_batch_is_handed_out_once_then_the_workers_wait_then_shut_down(api: WorkerApi) -> None:
    start_job(api, batches=3)
    join(api)
    join(api, TWO)
    handed = []
    for _ in range(3):
        handed.append(take(api).batch_id)
        report(api, W1, "completed", handed[-1])
    assert sorted(handed) == [batch_id_of(n) for n in range(3)]
    assert batch_queue.assignment(api, W2, now=NOW) == WorkerCommand(command="shutdown", reason="no batches left")


def test_nothing_pending_but_a_batch_in_flight_elsewhere_is_a_wait(api: WorkerApi) -> None:
    start_job(api, batches=1)
    join(api)
    join(api, TWO)
    take(api)

    answer = batch_queue.assignment(api, W2, now=NOW + 100)

    assert answer == WorkerCommand(
        command="wait", retry_after_s=15, reason="no batch pending; batches in flight elsewhere may come back"
    )
    assert worker(api, TWO).last_seen == NOW + 100  # a waiting worker is seen, now and then


def test_a_listing_job_with_nothing_pending_yet_is_a_wait(api: WorkerApi) -> None:
    start_job(api, batches=0, status=JobStatus.LISTING)
    join(api)
    answer = batch_queue.assignment(api, W1, now=NOW)
    assert isinstance(answer, WorkerCommand) and (answer.command, answer.reason) == (
        "wait",
        "the job's files are still being listed",
    )


def test_a_listing_job_hands_out_what_is_listed_already(api: WorkerApi) -> None:
    start_job(api, batches=2, status=JobStatus.LISTING)
    join(api)
    assert take(api).attempt == 1


def test_a_worker_stopped_between_the_read_and_the_claim_puts_the_batch_back(api: WorkerApi) -> None:
    start_job(api, batches=1)
    join(api)
    stale = api.workers.get_with_job(JOB, ONE)
    api.workers.set_status(JOB, ONE, WorkerStatus.UNAVAILABLE, now=NOW, reason="processing timeout of b-0000009")

    class StaleWorkers(WorkerStore):
        def get_with_job(self, job_id: str, instance_id: str) -> tuple[Job | None, Worker | None]:
            return stale

    racing = WorkerApi(jobs=api.jobs, queue=api.queue, workers=StaleWorkers(api.queue._table))

    answer = batch_queue.assignment(racing, W1, now=NOW)

    assert answer == WorkerCommand(command="shutdown", reason="this worker is no longer active")
    back = batch(api, batch_id_of(0))
    assert (back.status, back.worker_id, back.failures) == (BatchStatus.PENDING, None, 0)
    assert worker(api).batch_id is None


def test_unknown_jobs_and_workers_are_not_found(api: WorkerApi) -> None:
    with pytest.raises(NotFound, match=f"no job {JOB}"):
        batch_queue.assignment(api, W1, now=NOW)
    start_job(api)
    with pytest.raises(NotFound, match="is not registered"):
        batch_queue.assignment(api, W1, now=NOW)
    with pytest.raises(NotFound, match=f"no batch b-0000099 in job {JOB}"):
        batch_queue.ack(api, W1, "b-0000099", now=NOW)


# --- ack ------------------------------------------------------------------------------------------------------


def test_an_ack_starts_the_processing_deadline_and_twice_changes_nothing(api: WorkerApi) -> None:
    start_job(api)
    join(api)
    batch_id = take(api).batch_id

    first = batch_queue.ack(api, W1, batch_id, now=NOW + 10)
    again = batch_queue.ack(api, W1, batch_id, now=NOW + 20)

    assert (first.status, first.changed) == ("processing", True)
    assert (again.status, again.changed) == ("processing", False)
    assert again.message == f"already done: batch {batch_id} is processing by this worker"
    held = batch(api, batch_id)
    assert (held.status, held.deadline) == (BatchStatus.PROCESSING, NOW + 10 + 600)
    assert report(api, W1, "processing", batch_id).changed is False  # the status route's "processing" is an ack


def test_an_ack_after_the_batch_was_taken_back_is_a_conflict_saying_so(api: WorkerApi) -> None:
    job = start_job(api, batches=1)
    join(api)
    batch_id = take(api).batch_id
    assert batch_queue.time_out(api.queue, api.workers, job, now=NOW + 61) == 1

    with pytest.raises(Conflict) as refused:
        batch_queue.ack(api, W1, batch_id, now=NOW + 62)

    assert str(refused.value) == f"batch {batch_id} was taken back from this worker (ack timeout) and is now pending"
    assert batch(api, batch_id).status is BatchStatus.PENDING


def test_an_ack_of_a_batch_taken_back_and_claimed_by_another_worker_is_a_conflict(api: WorkerApi) -> None:
    job = start_job(api, batches=1)
    join(api)
    join(api, TWO)
    batch_id = take(api).batch_id
    batch_queue.time_out(api.queue, api.workers, job, now=NOW + 61)
    assert take(api, W2, now=NOW + 62).attempt == 2

    with pytest.raises(Conflict, match=r"taken back from this worker \(ack timeout\) and is now assigned to another"):
        batch_queue.ack(api, W1, batch_id, now=NOW + 63)
    assert batch(api, batch_id).worker_id == W2


def test_an_ack_of_a_batch_never_the_workers_is_a_conflict(api: WorkerApi) -> None:
    start_job(api, batches=2)
    join(api)
    mine = take(api).batch_id
    other = next(batch_id_of(n) for n in range(2) if batch_id_of(n) != mine)
    with pytest.raises(Conflict, match=f"batch {other} is not this worker's: it is pending"):
        batch_queue.ack(api, W1, other, now=NOW)


# --- completed --------------------------------------------------------------------------------------------------


def test_a_completion_frees_the_worker_and_twice_changes_nothing(api: WorkerApi) -> None:
    start_job(api)
    join(api)
    batch_id = take(api).batch_id
    batch_queue.ack(api, W1, batch_id, now=NOW + 1)

    first = report(api, W1, "completed", batch_id, now=NOW + 9)
    again = report(api, W1, "completed", batch_id, now=NOW + 10)

    assert (first.status, first.changed, again.status, again.changed) == ("completed", True, "completed", False)
    done = batch(api, batch_id)
    assert (done.status, done.worker_id, done.deadline) == (BatchStatus.COMPLETED, W1, None)
    assert (worker(api).batch_id, worker(api).last_seen) == (None, NOW + 9)
    # A late ack after the completion changes nothing either.
    assert batch_queue.ack(api, W1, batch_id, now=NOW + 11).changed is False


def test_a_completion_without_an_ack_is_taken(api: WorkerApi) -> None:
    start_job(api)
    join(api)
    batch_id = take(api).batch_id
    assert report(api, W1, "completed", batch_id).changed is True


def test_a_completion_after_a_processing_timeout_is_a_conflict_and_the_batch_stays_queued(api: WorkerApi) -> None:
    job = start_job(api, batches=1)
    join(api)
    batch_id = take(api).batch_id
    batch_queue.ack(api, W1, batch_id, now=NOW + 1)
    assert batch_queue.time_out(api.queue, api.workers, job, now=NOW + 602) == 1

    with pytest.raises(Conflict) as refused:
        report(api, W1, "completed", batch_id, now=NOW + 603)

    assert str(refused.value) == (
        f"batch {batch_id} was taken back from this worker (processing timeout) and is now pending"
    )
    assert api.queue.counts(JOB).model_dump() == {
        "pending": 1,
        "assigned": 0,
        "processing": 0,
        "completed": 0,
        "failed": 0,
    }
    assert worker(api).status is WorkerStatus.UNAVAILABLE


def test_a_completion_of_a_batch_another_worker_completed_is_a_conflict(api: WorkerApi) -> None:
    job = start_job(api, batches=1)
    join(api)
    join(api, TWO)
    batch_id = take(api).batch_id
    batch_queue.time_out(api.queue, api.workers, job, now=NOW + 61)
    take(api, W2, now=NOW + 62)
    report(api, W2, "completed", batch_id, now=NOW + 63)

    with pytest.raises(Conflict, match="is now completed by another worker"):
        report(api, W1, "completed", batch_id, now=NOW + 64)
    assert batch(api, batch_id).worker_id == W2


# --- failed -------------------------------------------------------------------------------------------------------


def test_a_failure_puts_the_batch_back_and_records_the_error(api: WorkerApi) -> None:
    start_job(api, batches=1)
    join(api)
    batch_id = take(api).batch_id

    update = report(api, W1, "failed", batch_id, error="exit 1: out of memory", now=NOW + 7)

    assert (update.status, update.changed) == ("pending", True)
    assert update.message == f"batch {batch_id} is pending again (1 of 2 failures)"
    back = batch(api, batch_id)
    assert (back.status, back.failures, back.last_error, back.worker_id) == (
        BatchStatus.PENDING,
        1,
        "exit 1: out of memory",
        None,
    )
    assert api.queue.errors(JOB) == [
        JobError(job_id=JOB, batch_id=batch_id, worker_id=W1, error="exit 1: out of memory", at=NOW + 7)
    ]
    assert worker(api).batch_id is None and worker(api).status is WorkerStatus.ACTIVE
    # The same report again (its answer was lost) changes nothing.
    again = report(api, W1, "failed", batch_id, error="exit 1: out of memory", now=NOW + 8)
    assert (again.status, again.changed) == ("pending", False)
    assert len(api.queue.errors(JOB)) == 1


def test_the_max_attempts_th_failure_fails_the_batch_for_good_with_its_last_error(api: WorkerApi) -> None:
    start_job(api, batches=1)
    join(api)
    batch_id = take(api).batch_id
    report(api, W1, "failed", batch_id, error="first")
    assert take(api, now=NOW + 10).attempt == 2

    update = report(api, W1, "failed", batch_id, error="second", now=NOW + 11)

    assert (update.status, update.changed) == ("failed", True)
    assert update.message == f"batch {batch_id} failed for good after 2 failures"
    gone = batch(api, batch_id)
    assert (gone.status, gone.failures, gone.last_error, gone.worker_id) == (BatchStatus.FAILED, 2, "second", None)
    assert api.queue.counts(JOB).failed == 1
    assert [e.error for e in api.queue.errors(JOB)] == ["second", "first"]
    assert report(api, W1, "failed", batch_id, error="second").changed is False
    assert batch_queue.assignment(api, W1, now=NOW + 12) == WorkerCommand(command="shutdown", reason="no batches left")


def test_a_failure_after_the_batch_was_taken_back_is_a_conflict(api: WorkerApi) -> None:
    job = start_job(api, batches=1)
    join(api)
    batch_id = take(api).batch_id
    batch_queue.time_out(api.queue, api.workers, job, now=NOW + 61)
    with pytest.raises(Conflict, match=r"taken back from this worker \(ack timeout\)"):
        report(api, W1, "failed", batch_id, error="late")
    assert batch(api, batch_id).failures == 1  # the timeout's failure only


def test_a_completion_of_a_batch_the_worker_reported_failed_is_a_conflict(api: WorkerApi) -> None:
    start_job(api, batches=1)
    join(api)
    batch_id = take(api).batch_id
    report(api, W1, "failed", batch_id, error="boom")
    with pytest.raises(Conflict, match=f"batch {batch_id} was reported failed by this worker and is now pending"):
        report(api, W1, "completed", batch_id)


def test_a_report_without_its_batch_is_invalid(api: WorkerApi) -> None:
    start_job(api)
    join(api)
    with pytest.raises(InvalidRequest, match="batch_id"):
        report(api, W1, "completed", None)


# --- shutting down --------------------------------------------------------------------------------------------


def test_shutting_down_with_a_batch_returns_it_at_once_without_counting_a_failure(api: WorkerApi) -> None:
    start_job(api, batches=1)
    join(api)
    batch_id = take(api).batch_id
    batch_queue.ack(api, W1, batch_id, now=NOW + 1)

    update = report(api, W1, "shutting-down", batch_id, error="spot interruption notice", now=NOW + 30)

    assert (update.status, update.changed, update.message) == ("pending", True, f"batch {batch_id} is pending again")
    back = batch(api, batch_id)
    assert (back.status, back.failures, back.worker_id, back.taken_because) == (
        BatchStatus.PENDING,
        0,
        None,
        "worker shutting down",
    )
    assert api.queue.errors(JOB) == []
    stopped = worker(api)
    assert (stopped.status, stopped.reason, stopped.batch_id) == (
        WorkerStatus.SHUTTING_DOWN,
        "spot interruption notice",
        None,
    )
    assert batch_queue.assignment(api, W1, now=NOW + 31) == WorkerCommand(
        command="shutdown", reason="this worker is shutting-down: spot interruption notice"
    )
    again = report(api, W1, "shutting-down", batch_id, now=NOW + 32)
    assert (again.changed, again.status) == (False, "pending")
    assert "was not this worker's any more" in again.message


def test_shutting_down_without_a_batch_still_returns_the_one_the_hub_believes_it_holds(api: WorkerApi) -> None:
    start_job(api, batches=1)
    join(api)
    batch_id = take(api).batch_id

    update = report(api, W1, "shutting-down", None)

    assert (update.batch_id, update.status, update.changed) == (None, "shutting-down", True)
    assert batch(api, batch_id).status is BatchStatus.PENDING
    again = report(api, W1, "shutting-down", None)
    assert (again.changed, again.message) == (False, "worker already shutting-down")


def test_shutting_down_after_a_failure_report_changes_only_the_worker(api: WorkerApi) -> None:
    start_job(api, batches=1)
    join(api)
    batch_id = take(api).batch_id
    report(api, W1, "failed", batch_id, error="image pull failed")

    update = report(api, W1, "shutting-down", batch_id, error="fatal: the image will not start")

    assert (update.status, update.changed) == ("pending", True)
    assert batch(api, batch_id).failures == 1
    assert worker(api).status is WorkerStatus.SHUTTING_DOWN


# --- the supervisor's timeouts and take backs ---------------------------------------------------------------------


def test_timeouts_take_back_only_overdue_batches_and_mark_their_workers_unavailable(api: WorkerApi) -> None:
    job = start_job(api, batches=3)
    join(api)
    join(api, TWO)
    late = take(api).batch_id
    working = take(api, W2).batch_id
    batch_queue.ack(api, W2, working, now=NOW + 30)

    assert batch_queue.time_out(api.queue, api.workers, job, now=NOW + 61) == 1

    back = batch(api, late)
    assert (back.status, back.failures, back.last_error, back.taken_from) == (
        BatchStatus.PENDING,
        1,
        "ack timeout",
        W1,
    )
    assert batch(api, working).status is BatchStatus.PROCESSING
    assert (worker(api).status, worker(api).reason, worker(api).batch_id) == (
        WorkerStatus.UNAVAILABLE,
        f"ack timeout of {late}",
        None,
    )
    assert worker(api, TWO).status is WorkerStatus.ACTIVE
    assert api.queue.errors(JOB) == [
        JobError(job_id=JOB, batch_id=late, worker_id=W1, error="ack timeout", at=NOW + 61)
    ]
    assert batch_queue.time_out(api.queue, api.workers, job, now=NOW + 62) == 0  # nothing twice


def test_a_timeout_at_max_attempts_fails_the_batch(api: WorkerApi) -> None:
    job = start_job(api, batches=1)
    join(api)
    join(api, TWO)
    batch_id = take(api).batch_id
    batch_queue.time_out(api.queue, api.workers, job, now=NOW + 61)
    take(api, W2, now=NOW + 62)
    batch_queue.ack(api, W2, batch_id, now=NOW + 63)

    assert batch_queue.time_out(api.queue, api.workers, job, now=NOW + 63 + 601) == 1

    gone = batch(api, batch_id)
    assert (gone.status, gone.failures, gone.last_error) == (BatchStatus.FAILED, 2, "processing timeout")
    assert api.queue.counts(JOB).failed == 1


def test_a_timeout_loses_to_an_ack_that_landed_after_the_index_was_read(api: WorkerApi) -> None:
    job = start_job(api, batches=1)
    join(api)
    batch_id = take(api).batch_id
    (seen,) = api.queue.overdue(JOB, NOW + 61)
    assert (seen.batch_id, seen.status, seen.worker_id, seen.deadline) == (batch_id, BatchStatus.ASSIGNED, W1, NOW + 60)
    batch_queue.ack(api, W1, batch_id, now=NOW + 60.5)

    taken = api.queue.take_back(
        JOB, batch_id, W1, now=NOW + 61, reason="ack timeout", max_attempts=2, statuses=(seen.status,), overdue=True
    )

    assert taken is None
    assert batch_queue.time_out(api.queue, api.workers, job, now=NOW + 61) == 0
    assert worker(api).status is WorkerStatus.ACTIVE


def test_a_gone_instance_s_batch_is_taken_back_without_a_failure(api: WorkerApi) -> None:
    job = start_job(api, batches=1)
    join(api)
    batch_id = take(api).batch_id

    assert batch_queue.take_back_from(api.queue, api.workers, job, ONE, reason="instance gone", now=NOW + 5) == batch_id

    back = batch(api, batch_id)
    assert (back.status, back.failures, back.taken_because) == (BatchStatus.PENDING, 0, "instance gone")
    assert worker(api).batch_id is None
    assert batch_queue.take_back_from(api.queue, api.workers, job, ONE, reason="instance gone", now=NOW + 6) is None
    assert batch_queue.take_back_from(api.queue, api.workers, job, TWO, reason="instance gone", now=NOW + 6) is None
    with pytest.raises(Conflict, match=r"taken back from this worker \(instance gone\) and is now pending"):
        report(api, W1, "completed", batch_id)


# --- the stores ---------------------------------------------------------------------------------------------------


def test_batches_left_unprocessed_are_written_again_with_backoff(jobs_table: Any) -> None:  # noqa: F811
    sleeps: list[float] = []
    queue = BatchQueue(jobs_table, sleep=sleeps.append)
    client = jobs_table.meta.client
    real = client.batch_write_item
    calls = []

    def flaky(RequestItems: dict[str, Any]) -> dict[str, Any]:
        calls.append(sum(len(r) for r in RequestItems.values()))
        if len(calls) <= 2:
            (name, requests), *_ = RequestItems.items()
            if len(requests) > 3:
                real(RequestItems={name: requests[:-3]})
            return {"UnprocessedItems": {name: requests[-3:]}}
        return real(RequestItems=RequestItems)

    client.batch_write_item = flaky
    try:
        queue.put_batches(JOB, [Batch(job_id=JOB, batch_id=batch_id_of(n), file_names=["f"]) for n in range(30)])
    finally:
        client.batch_write_item = real

    assert calls == [25, 3, 3, 5]
    assert sleeps == [0.05, 0.1]
    assert queue.counts(JOB).pending == 30


def test_batches_dynamodb_keeps_refusing_fail_the_write(jobs_table: Any) -> None:  # noqa: F811
    sleeps: list[float] = []
    queue = BatchQueue(jobs_table, sleep=sleeps.append)
    client = jobs_table.meta.client
    real = client.batch_write_item
    client.batch_write_item = lambda RequestItems: {"UnprocessedItems": RequestItems}
    try:
        with pytest.raises(DependencyUnavailable, match="2 left unprocessed after 8 tries"):
            queue.put_batches(JOB, [Batch(job_id=JOB, batch_id=batch_id_of(n), file_names=["f"]) for n in range(2)])
    finally:
        client.batch_write_item = real
    assert sleeps == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]


def test_the_errors_shown_are_the_newest_fifty(api: WorkerApi) -> None:
    for n in range(55):
        api.queue.add_error(JobError(job_id=JOB, batch_id=batch_id_of(n), error=f"e{n}", at=NOW + n * 100))
    shown = api.queue.errors(JOB)
    assert [e.error for e in shown] == [f"e{n}" for n in reversed(range(5, 55))]


def test_a_job_moves_only_from_the_statuses_allowed_and_is_settled_once(api: WorkerApi) -> None:
    start_job(api, status=JobStatus.LISTING)
    with pytest.raises(Conflict, match=f"job {JOB} exists already"):
        api.jobs.create(Job(job_id=JOB, spec=SPEC, created_at=NOW))
    assert not api.jobs.transition(JOB, JobStatus.COMPLETED, allowed_from=(JobStatus.RUNNING,), now=NOW)
    assert api.jobs.transition(
        JOB, JobStatus.RUNNING, allowed_from=(JobStatus.LISTING,), now=NOW + 1, started_at=NOW + 1
    )
    assert api.jobs.transition(
        JOB,
        JobStatus.FAILED,
        allowed_from=(JobStatus.RUNNING,),
        now=NOW + 2,
        reason="1 of 3 batches failed",
        finished_at=NOW + 2,
    )
    job = api.jobs.get(JOB)
    assert job is not None
    assert (job.status, job.reason, job.started_at, job.finished_at) == (
        JobStatus.FAILED,
        "1 of 3 batches failed",
        NOW + 1,
        NOW + 2,
    )
    assert [j.job_id for j in api.jobs.unsettled()] == [JOB]
    assert api.jobs.mark_notified(JOB, NOW + 3) and not api.jobs.mark_notified(JOB, NOW + 4)
    api.jobs.settle(JOB, NOW + 5)
    assert api.jobs.unsettled() == []
    settled = api.jobs.get(JOB)
    assert settled is not None and (settled.notified_at, settled.settled_at) == (NOW + 3, NOW + 5)
    assert not api.jobs.transition("job-00000000dead", JobStatus.RUNNING, allowed_from=(JobStatus.LISTING,), now=NOW)
    api.jobs.add_listed("job-00000000dead", files=1, batches=1, now=NOW)
    assert api.jobs.get("job-00000000dead") is None


def test_jobs_are_paged_newest_first_and_a_foreign_token_refused(api: WorkerApi) -> None:
    for n in range(5):
        api.jobs.create(Job(job_id=f"job-{n:012x}", spec=SPEC, created_at=NOW + n))
    seen, token = [], None
    while True:
        page, token = api.jobs.page(2, token)
        seen += [job.job_id for job in page]
        if token is None:
            break
    assert seen == [f"job-{n:012x}" for n in reversed(range(5))]
    for bad in ("%%%", "bm90LWpzb24", "eyJub3QiOiAidGhlIGtleSJ9"):
        with pytest.raises(ValueError, match="not a token"):
            api.jobs.page(2, bad)


def test_a_worker_s_status_only_moves_forward(api: WorkerApi) -> None:
    start_job(api)
    join(api)
    assert api.workers.set_status(JOB, ONE, WorkerStatus.SHUTTING_DOWN, now=NOW)
    assert not api.workers.set_status(JOB, ONE, WorkerStatus.UNAVAILABLE, now=NOW)
    assert not api.workers.set_status(JOB, ONE, WorkerStatus.ACTIVE, now=NOW)
    assert api.workers.set_status(JOB, ONE, WorkerStatus.GONE, now=NOW, reason="its instance left the group")
    assert not api.workers.set_status(JOB, ONE, WorkerStatus.SHUTTING_DOWN, now=NOW)
    assert (worker(api).status, worker(api).reason) == (WorkerStatus.GONE, "its instance left the group")
    assert not api.workers.set_status(JOB, TWO, WorkerStatus.GONE, now=NOW)
    assert api.workers.get(JOB, TWO) is None
    assert [w.worker_id for w in api.workers.list(JOB)] == [W1]

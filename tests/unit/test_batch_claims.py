"""The claim, ack and status decisions of the batch queue, without DynamoDB: where a claim looks (a random point
of the queue, then its start), what it does with candidates others took first, and what a worker is answered when
its call finds the batch in a state it did not expect (a duplicate, or a conflict saying what happened)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from botocore.exceptions import ClientError

from spothub_core.dal.batch_queue import CLAIM_CANDIDATES, CLAIM_ROUNDS, BatchQueue
from spothub_core.errors import Conflict
from spothub_core.logic.batch_queue import (
    ACK_TIMEOUT,
    REPORTED_FAILED,
    SHUTTING_DOWN,
    assignment_of,
    failure_message,
    idle_command,
    late_call,
    stop_command,
)
from spothub_core.models.batch_records import Batch, BatchStatus, Job, JobSpec, JobStatus, Worker, WorkerStatus
from spothub_core.models.batch_workers import BatchUpdate, WorkerCommand

JOB = "job-0123456789ab"
ME = f"{JOB}.i-0000000000000001"
OTHER = f"{JOB}.i-0000000000000002"
SPEC = JobSpec(input_bucket="in", output_bucket="out", image="acme/x:1", max_attempts=3)


def seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 (reproducible spreads of the claims; no secret)


def a_batch(status: BatchStatus = BatchStatus.PENDING, **fields: Any) -> Batch:
    return Batch(job_id=JOB, batch_id="b-0000003", file_names=["a", "b/c"], status=status, **fields)


def a_job(status: JobStatus = JobStatus.RUNNING) -> Job:
    return Job(job_id=JOB, status=status, spec=SPEC, created_at=0.0, batches=10)


def a_worker(status: WorkerStatus = WorkerStatus.ACTIVE, reason: str | None = None) -> Worker:
    return Worker(job_id=JOB, worker_id=ME, instance_id="i-0000000000000001", status=status, reason=reason)


# --- where a claim looks -------------------------------------------------------------------------------------


class FakeTable:
    """A jobs table that answers the claim's index queries from a list of pending sort keys and refuses the
    conditional writes on the keys in `taken` (others won them)."""

    name = "jobs"

    def __init__(self, pending: list[int], taken: set[int] | None = None) -> None:
        self.pending = [f"BATCH#{seq:07d}" for seq in pending]
        self.taken = {f"BATCH#{seq:07d}" for seq in taken or set()}
        self.queries: list[str | None] = []  # the sk a query started from
        self.writes: list[str] = []

    def query(self, **arguments: Any) -> dict[str, Any]:
        condition = arguments["KeyConditionExpression"].get_expression()
        start = None
        if condition["operator"] == "AND":  # status_key = ... AND sk >= ...
            start = condition["values"][1].get_expression()["values"][1]
        self.queries.append(start)
        found = [sk for sk in self.pending if start is None or sk >= start][: arguments["Limit"]]
        return {"Items": [{"sk": sk} for sk in found]}

    def update_item(self, **arguments: Any) -> dict[str, Any]:
        sk = arguments["Key"]["sk"]
        self.writes.append(sk)
        if sk in self.taken:
            raise ClientError({"Error": {"Code": "ConditionalCheckFailedException", "Message": "taken"}}, "UpdateItem")
        values = arguments["ExpressionAttributeValues"]
        return {
            "Attributes": {
                "job_id": JOB,
                "batch_id": f"b-{sk.removeprefix('BATCH#')}",
                "file_names": ["f"],
                "status": "assigned",
                "worker_id": values[":worker"],
                "attempt": 1,
            }
        }


def test_a_claim_looks_from_a_random_point_of_the_queue() -> None:
    table = FakeTable(pending=list(range(100)))
    expected = seeded(3).randrange(100)

    claimed = BatchQueue(table, rng=seeded(3)).claim(JOB, ME, now=0, ack_timeout_s=60, batches=100)

    assert table.queries == [f"BATCH#{expected:07d}"]
    assert claimed is not None and claimed.worker_id == ME
    assert int(claimed.batch_id[2:]) in range(expected, expected + CLAIM_CANDIDATES)


def test_spread_claims_start_all_over_the_queue() -> None:
    queue = BatchQueue(FakeTable(pending=list(range(1000))), rng=seeded(1))
    firsts = {queue.claim(JOB, ME, now=0, ack_timeout_s=60, batches=1000).batch_id for _ in range(50)}  # type: ignore[union-attr]
    assert len(firsts) > 40  # 50 workers at once rarely want the same batch


def test_nothing_past_the_random_point_looks_again_from_the_start() -> None:
    table = FakeTable(pending=[2, 3])
    queue = BatchQueue(table, rng=seeded(0))
    claimed = queue.claim(JOB, ME, now=0, ack_timeout_s=60, batches=900)
    assert table.queries[1:] == [None] and table.queries[0] > "BATCH#0000003"
    assert claimed is not None and claimed.batch_id in ("b-0000002", "b-0000003")


def test_a_job_of_one_batch_or_unknown_size_looks_from_the_start() -> None:
    for batches in (0, 1):
        table = FakeTable(pending=[0])
        assert BatchQueue(table).claim(JOB, ME, now=0, ack_timeout_s=60, batches=batches) is not None
        assert table.queries == [None]


def test_candidates_others_took_first_are_passed_over() -> None:
    table = FakeTable(pending=[0, 1, 2, 3, 4], taken={0, 1, 2, 3})
    claimed = BatchQueue(table, rng=seeded(5)).claim(JOB, ME, now=0, ack_timeout_s=60)
    assert claimed is not None and claimed.batch_id == "b-0000004"
    assert sorted(table.writes) == sorted({*table.writes}) and table.writes[-1] == "BATCH#0000004"


def test_a_claim_that_loses_every_candidate_every_round_gets_nothing() -> None:
    table = FakeTable(pending=list(range(8)), taken=set(range(8)))
    assert BatchQueue(table, rng=seeded(2)).claim(JOB, ME, now=0, ack_timeout_s=60, batches=8) is None
    assert len(table.writes) <= CLAIM_ROUNDS * CLAIM_CANDIDATES
    assert len(table.queries) >= CLAIM_ROUNDS


def test_an_empty_queue_is_one_look() -> None:
    table = FakeTable(pending=[])
    assert BatchQueue(table).claim(JOB, ME, now=0, ack_timeout_s=60) is None
    assert (table.queries, table.writes) == ([None], [])


# --- what the worker is told when it has no batch ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "worker", "reason"),
    [
        (a_job(JobStatus.COMPLETED), a_worker(), "the job is completed"),
        (a_job(JobStatus.CANCELLED), a_worker(), "the job is cancelled"),
        (a_job(JobStatus.FAILED), a_worker(), "the job is failed"),
        (
            a_job(),
            a_worker(WorkerStatus.UNAVAILABLE, "ack timeout of b-0000001"),
            "this worker is unavailable: ack timeout of b-0000001",
        ),
        (a_job(), a_worker(WorkerStatus.GONE), "this worker is gone"),
        (a_job(), a_worker(WorkerStatus.SHUTTING_DOWN), "this worker is shutting-down"),
    ],
)
def test_a_finished_job_or_a_worker_no_longer_active_is_told_to_shut_down(
    job: Job, worker: Worker, reason: str
) -> None:
    assert stop_command(job, worker) == WorkerCommand(command="shutdown", reason=reason)


def test_an_active_worker_of_a_live_job_may_work() -> None:
    assert stop_command(a_job(), a_worker()) is None
    assert stop_command(a_job(JobStatus.LISTING), a_worker()) is None


@pytest.mark.parametrize(
    ("status", "in_flight", "pending", "command"),
    [
        (JobStatus.LISTING, False, False, "wait"),
        (JobStatus.RUNNING, True, False, "wait"),
        (JobStatus.RUNNING, False, True, "wait"),
        (JobStatus.RUNNING, False, False, "shutdown"),
    ],
)
def test_nothing_to_claim_is_a_wait_while_more_may_come(
    status: JobStatus, in_flight: bool, pending: bool, command: str
) -> None:
    answer = idle_command(a_job(status), in_flight=in_flight, pending=pending)
    assert answer.command == command
    assert answer.retry_after_s == (15 if command == "wait" else None)


def test_an_assignment_carries_the_batch_and_the_job_s_spec() -> None:
    assignment = assignment_of(a_job(), a_batch(BatchStatus.ASSIGNED, attempt=2, worker_id=ME))
    assert (assignment.batch_id, assignment.file_names, assignment.attempt) == ("b-0000003", ["a", "b/c"], 2)
    assert (assignment.input_bucket, assignment.output_bucket, assignment.image) == ("in", "out", "acme/x:1")
    assert (assignment.ack_timeout_s, assignment.processing_timeout_s) == (300, 3600)


# --- late, duplicate and out-of-order calls -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "asked", "status"),
    [
        (a_batch(BatchStatus.PROCESSING, worker_id=ME), BatchStatus.PROCESSING, "processing"),  # ack twice
        (a_batch(BatchStatus.COMPLETED, worker_id=ME), BatchStatus.PROCESSING, "completed"),  # ack after done
        (a_batch(BatchStatus.COMPLETED, worker_id=ME), BatchStatus.COMPLETED, "completed"),  # completed twice
        (a_batch(taken_from=ME, taken_because=REPORTED_FAILED, failures=1), BatchStatus.FAILED, "pending"),
        (a_batch(BatchStatus.FAILED, taken_from=ME, taken_because=REPORTED_FAILED), BatchStatus.FAILED, "failed"),
        (
            a_batch(BatchStatus.ASSIGNED, worker_id=OTHER, taken_from=ME, taken_because=REPORTED_FAILED),
            BatchStatus.FAILED,
            "assigned",
        ),
    ],
)
def test_a_duplicate_changes_nothing_and_says_so(batch: Batch, asked: BatchStatus, status: str) -> None:
    answer = late_call(batch, ME, asked)
    assert answer == BatchUpdate(
        worker_id=ME, batch_id="b-0000003", status=status, changed=False, message=answer.message
    )
    assert answer.message.startswith("already done: batch b-0000003 ")


@pytest.mark.parametrize(
    ("batch", "asked", "message"),
    [
        (
            a_batch(taken_from=ME, taken_because=ACK_TIMEOUT),
            BatchStatus.PROCESSING,
            "batch b-0000003 was taken back from this worker (ack timeout) and is now pending",
        ),
        (
            a_batch(BatchStatus.ASSIGNED, worker_id=OTHER, taken_from=ME, taken_because=ACK_TIMEOUT),
            BatchStatus.COMPLETED,
            "batch b-0000003 was taken back from this worker (ack timeout) and is now assigned to another worker",
        ),
        (
            a_batch(BatchStatus.PROCESSING, worker_id=OTHER, taken_from=ME, taken_because="processing timeout"),
            BatchStatus.FAILED,
            "batch b-0000003 was taken back from this worker (processing timeout) and is now being processed by "
            "another worker",
        ),
        (
            a_batch(BatchStatus.COMPLETED, worker_id=OTHER, taken_from=ME, taken_because=SHUTTING_DOWN),
            BatchStatus.COMPLETED,
            "batch b-0000003 was taken back from this worker (worker shutting down) and is now completed by another "
            "worker",
        ),
        (
            a_batch(BatchStatus.FAILED, taken_from=ME, taken_because=ACK_TIMEOUT, last_error="ack timeout"),
            BatchStatus.COMPLETED,
            "batch b-0000003 was taken back from this worker (ack timeout) and is now failed for good (ack timeout)",
        ),
        (
            a_batch(taken_from=ME, taken_because=REPORTED_FAILED),
            BatchStatus.COMPLETED,
            "batch b-0000003 was reported failed by this worker and is now pending",
        ),
        (a_batch(), BatchStatus.PROCESSING, "batch b-0000003 is not this worker's: it is pending"),
        (
            a_batch(BatchStatus.ASSIGNED, worker_id=OTHER),
            BatchStatus.PROCESSING,
            "batch b-0000003 is not this worker's: it is assigned to another worker",
        ),
        (
            a_batch(BatchStatus.COMPLETED, worker_id=ME),
            BatchStatus.FAILED,
            "batch b-0000003 is completed by this worker",
        ),
    ],
)
def test_a_call_about_a_batch_the_worker_does_not_hold_is_a_conflict_saying_what_happened(
    batch: Batch, asked: BatchStatus, message: str
) -> None:
    with pytest.raises(Conflict) as refused:
        late_call(batch, ME, asked)
    assert str(refused.value) == message


def test_a_failure_says_whether_the_batch_comes_back() -> None:
    assert failure_message(a_batch(failures=1), 3) == "batch b-0000003 is pending again (1 of 3 failures)"
    assert (
        failure_message(a_batch(BatchStatus.FAILED, failures=3), 3)
        == "batch b-0000003 failed for good after 3 failures"
    )

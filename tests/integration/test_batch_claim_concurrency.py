"""Many workers claiming at once against moto's DynamoDB: zero double assignments, every batch claimed once.

moto does not make a conditional write atomic (it checks the condition, then writes, without a lock: two threads
can both pass it), so the tests run its item operations one at a time (`atomic_items`), as DynamoDB makes each item
write atomic. Claims then never meet inside one request; they do meet between a claim's index query and its
conditional write, which is the race the condition closes. The workers collide on purpose (the same random points
of the queue), and the conditional writes themselves show the condition refused the losers: each batch was won by
one write, every lost write was for a batch another worker had won.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from spothub_core.dal.batch_jobs import JobStore
from spothub_core.dal.batch_queue import BatchQueue
from spothub_core.dal.batch_table import batch_id_of
from spothub_core.dal.batch_workers import WorkerStore
from spothub_core.logic import batch_queue
from spothub_core.logic.batch_queue import WorkerApi
from spothub_core.models.batch_records import Batch, BatchStatus, Job, JobSpec, JobStatus
from spothub_core.models.batch_workers import BatchAssignment, BatchStatusReport, WorkerRegistration, worker_id_of
from tests.integration.batch_fixtures import JOBS_REGION, atomic_items, jobs_table  # noqa: F401 (a fixture)

JOB = "job-00000000c1a1"


def seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 (reproducible spreads of the claims; no secret)


@pytest.fixture(autouse=True)
def _atomic_items() -> Iterator[None]:
    with atomic_items():
        yield


NOW = 1_700_000_000.0


class ClaimLedger:
    """Every claim write the workers made, won or lost, as DynamoDB answered it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.won: list[tuple[str, str]] = []  # (sort key, worker)
        self.lost: list[tuple[str, str]] = []


class RecordingTable:
    """A boto3 Table that notes each claim's conditional write (the one conditioned on ":pending_key")."""

    def __init__(self, table: Any, ledger: ClaimLedger) -> None:
        self._table = table
        self._ledger = ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def update_item(self, **arguments: Any) -> Any:
        if ":pending_key" not in arguments.get("ConditionExpression", ""):
            return self._table.update_item(**arguments)
        entry = (arguments["Key"]["sk"], arguments["ExpressionAttributeValues"][":worker"])
        try:
            answer = self._table.update_item(**arguments)
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            with self._ledger.lock:
                self._ledger.lost.append(entry)
            raise
        with self._ledger.lock:
            self._ledger.won.append(entry)
        return answer


def thread_api(name: str, ledger: ClaimLedger, seed: int) -> WorkerApi:
    # boto3 resources are not thread-safe: a session and a table of its own for each worker.
    table = boto3.session.Session().resource("dynamodb", region_name=JOBS_REGION).Table(name)
    recording = RecordingTable(table, ledger)
    return WorkerApi(
        jobs=JobStore(table), queue=BatchQueue(recording, rng=seeded(seed)), workers=WorkerStore(recording)
    )


def start_job(table: Any, batches: int) -> None:
    jobs = JobStore(table)
    spec = JobSpec(input_bucket="in", output_bucket="out", image="acme/x:1")
    jobs.create(Job(job_id=JOB, spec=spec, created_at=NOW, files=batches, batches=batches))
    BatchQueue(table).put_batches(
        JOB, [Batch(job_id=JOB, batch_id=batch_id_of(n), file_names=[f"f{n}"]) for n in range(batches)]
    )
    assert jobs.transition(JOB, JobStatus.RUNNING, allowed_from=(JobStatus.LISTING,), now=NOW)


def test_many_workers_process_every_batch_once(jobs_table: Any) -> None:  # noqa: F811
    batches, workers = 160, 24
    start_job(jobs_table, batches)
    ledger = ClaimLedger()
    processed: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(workers)

    def work(n: int) -> None:
        api = thread_api(jobs_table.name, ledger, seed=n % 3)  # three seeds: workers pick the same points
        instance_id = f"i-{n:017x}"
        worker_id = worker_id_of(JOB, instance_id)
        batch_queue.register(api, WorkerRegistration(job_id=JOB, instance_id=instance_id, region="us-west-2"), now=NOW)
        start.wait()
        while True:
            answer = batch_queue.assignment(api, worker_id, now=NOW)
            if not isinstance(answer, BatchAssignment):
                if answer.command == "shutdown":
                    return
                continue  # wait: claims lost to others, or batches in flight elsewhere
            assert batch_queue.ack(api, worker_id, answer.batch_id, now=NOW).changed
            with lock:
                processed.append(answer.batch_id)
            done = BatchStatusReport(batch_id=answer.batch_id, status="completed")
            assert batch_queue.status(api, worker_id, done, now=NOW).changed

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, range(workers)))

    assert len(processed) == batches and sorted(processed) == [batch_id_of(n) for n in range(batches)]
    # Each batch was won by exactly one claim write; every lost write was for a batch some worker had won.
    won = Counter(sk for sk, _ in ledger.won)
    assert len(won) == batches and set(won.values()) == {1}
    assert ledger.lost, "the workers never collided: the test proves nothing"
    assert {sk for sk, _ in ledger.lost} <= set(won)
    assert all(worker != dict(ledger.won)[sk] for sk, worker in ledger.lost)
    counts = BatchQueue(jobs_table).counts(JOB)
    assert (counts.completed, counts.pending, counts.assigned, counts.processing) == (batches, 0, 0, 0)


def test_workers_racing_for_a_single_batch_one_wins(jobs_table: Any) -> None:  # noqa: F811
    workers = 16
    start_job(jobs_table, 1)
    ledger = ClaimLedger()
    start = threading.Barrier(workers)

    def claim(n: int) -> Batch | None:
        api = thread_api(jobs_table.name, ledger, seed=n)
        start.wait()
        return api.queue.claim(JOB, worker_id_of(JOB, f"i-{n:017x}"), now=NOW, ack_timeout_s=60, batches=1)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(claim, range(workers)))

    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and len(ledger.won) == 1
    held = BatchQueue(jobs_table).get(JOB, batch_id_of(0))
    assert held is not None and held.status is BatchStatus.ASSIGNED and held.worker_id == winners[0].worker_id
    assert held.attempt == 1  # one claim write went through, not several

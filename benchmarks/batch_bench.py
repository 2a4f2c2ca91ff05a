"""The batch queue under load: 10,000 files in batches of 10 (1,000 batches), 50 workers claiming at once.

    .venv/bin/python benchmarks/batch_bench.py [--files 10000] [--batch-size 10] [--workers 50]

Runs the worker API's logic (spothub_core/logic/batch_queue.py: assignment, ack, status completed) from one
thread per worker against the emulator's DynamoDB (moto, in process), with the jobs table as the hub stack makes
it (both indexes). Each worker asks for work, acknowledges the batch and reports it completed, until it is told
to shut down. DynamoDB requests are counted with a botocore `before-call` hook on each worker's client.

Prints: claims per second (batches handed out per second of the whole run, wall clock), DynamoDB requests per
batch on the way through (the assignment that got the batch + the ack + the completion) and in all (with the
workers' idle polls at the end and the claims lost to other workers), lost claim writes, and duplicates (a batch
handed to two workers; must be 0). moto runs one request at a time (`atomic_items`, as DynamoDB makes each item
write atomic), so the rate is the emulator's, not DynamoDB's; the requests per batch are DynamoDB's.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "lambdas")]

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

from spothub_core.dal.batch_jobs import JobStore  # noqa: E402
from spothub_core.dal.batch_queue import BatchQueue  # noqa: E402
from spothub_core.dal.batch_table import batch_id_of  # noqa: E402
from spothub_core.dal.batch_workers import WorkerStore  # noqa: E402
from spothub_core.logic import batch_queue  # noqa: E402
from spothub_core.models.batch_records import Batch, Job, JobSpec, JobStatus  # noqa: E402
from spothub_core.models.batch_workers import (  # noqa: E402
    BatchAssignment,
    BatchStatusReport,
    WorkerRegistration,
    worker_id_of,
)
from tests.integration.batch_fixtures import JOBS_REGION, atomic_items, create_jobs_table  # noqa: E402

JOB = "job-0000000be0c4"


class RequestCounter:
    """DynamoDB requests by phase (what the worker was doing) and operation, and the claim writes lost."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.lost_claims = 0
        self.local = threading.local()

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call.dynamodb", self._before)
        client.meta.events.register("after-call.dynamodb.UpdateItem", self._after_update)

    def begin(self, phase: str) -> None:
        """The calling thread's next requests are `phase`'s."""
        self.local.phase, self.local.operations = phase, []

    def relabel(self, phase: str) -> None:
        """The requests since `begin` were `phase`'s after all (an assignment that found no batch: an idle poll)."""
        with self.lock:
            for operation in self.local.operations:
                self.requests[(self.local.phase, operation)] -= 1
                self.requests[(phase, operation)] += 1
        self.local.phase = phase

    def _before(self, model: Any, **_: Any) -> None:
        phase = getattr(self.local, "phase", "setup")
        getattr(self.local, "operations", []).append(model.name)
        with self.lock:
            self.requests[(phase, model.name)] += 1

    def _after_update(self, parsed: dict[str, Any], **_: Any) -> None:
        if parsed.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            with self.lock:
                self.lost_claims += getattr(self.local, "phase", "") == "assignment"

    def total(self, *phases: str) -> int:
        return sum(n for (phase, _), n in self.requests.items() if phase in phases)


def run(files: int, batch_size: int, workers: int, seed: int) -> dict[str, Any]:
    table = create_jobs_table()
    names = [f"inputs/file-{n:06d}.txt" for n in range(files)]
    batches = [names[i : i + batch_size] for i in range(0, files, batch_size)]
    jobs = JobStore(table)
    spec = JobSpec(input_bucket="in", output_bucket="out", image="acme/x:1", batch_size=batch_size)
    jobs.create(Job(job_id=JOB, spec=spec, created_at=time.time(), files=files, batches=len(batches)))
    started = time.perf_counter()
    BatchQueue(table).put_batches(
        JOB, [Batch(job_id=JOB, batch_id=batch_id_of(n), file_names=b) for n, b in enumerate(batches)]
    )
    written_in = time.perf_counter() - started
    jobs.transition(JOB, JobStatus.RUNNING, allowed_from=(JobStatus.LISTING,), now=time.time())

    counter = RequestCounter()
    handed: list[tuple[str, str]] = []  # (batch, worker), each time a batch was handed out anew
    handed_lock = threading.Lock()
    ready = threading.Barrier(workers + 1)

    def work(n: int) -> int:
        # boto3 resources are not thread-safe: a session and a table for each worker, as each Lambda has its own.
        own = boto3.session.Session().resource("dynamodb", region_name=JOBS_REGION).Table(table.name)
        counter.attach(own.meta.client)
        api = batch_queue.WorkerApi(
            jobs=JobStore(own),
            queue=BatchQueue(own, rng=random.Random(seed + n)),  # noqa: S311 (spreads the claims)
            workers=WorkerStore(own),
        )
        instance_id = f"i-{n:017x}"
        worker_id = worker_id_of(JOB, instance_id)
        counter.begin("register")
        batch_queue.register(api, WorkerRegistration(job_id=JOB, instance_id=instance_id, region="us-west-2"), now=0)
        ready.wait()
        done = 0
        while True:
            counter.begin("assignment")
            answer = batch_queue.assignment(api, worker_id, now=time.time())
            if not isinstance(answer, BatchAssignment):
                counter.relabel("idle")  # the poll found nothing: counted apart from the batches' requests
                if answer.command == "shutdown":
                    return done
                continue
            with handed_lock:
                handed.append((answer.batch_id, worker_id))
            counter.begin("ack")
            batch_queue.ack(api, worker_id, answer.batch_id, now=time.time())
            counter.begin("status")
            report = BatchStatusReport(batch_id=answer.batch_id, status="completed")
            batch_queue.status(api, worker_id, report, now=time.time())
            done += 1

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = [pool.submit(work, n) for n in range(workers)]
        ready.wait()
        started = time.perf_counter()
        completed = sum(future.result() for future in results)
    elapsed = time.perf_counter() - started

    by_batch = Counter(batch_id for batch_id, _ in handed)
    counts = BatchQueue(table).counts(JOB)
    return {
        "files": files,
        "batches": len(batches),
        "workers": workers,
        "written_in": written_in,
        "elapsed": elapsed,
        "completed": completed,
        "counts": counts,
        "counter": counter,
        # A batch handed out more than once (to two workers, or twice to one) is a duplicate.
        "duplicates": sum(n - 1 for n in by_batch.values()),
        "per_worker": sorted(Counter(w for _, w in handed).values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--seed", type=int, default=14)
    arguments = parser.parse_args()
    with mock_aws(), atomic_items():
        result = run(arguments.files, arguments.batch_size, arguments.workers, arguments.seed)
    counter: RequestCounter = result["counter"]
    batches = result["batches"]
    through = counter.total("assignment", "ack", "status")
    every = counter.total("assignment", "ack", "status", "idle")
    print(
        f"batch queue: {result['files']:,} files in {batches:,} batches of {arguments.batch_size}, "
        f"{result['workers']} workers (moto in process, one request at a time)"
    )
    print(f"  batches written          {result['written_in']:.1f} s (BatchWriteItem, 25 a request)")
    print(f"  claims per second        {result['completed'] / result['elapsed']:.0f}  ({result['elapsed']:.1f} s)")
    print(f"  requests per batch       {through / batches:.2f}  (claim + ack + completed; lost claims included)")
    for phase in ("assignment", "ack", "status"):
        operations = ", ".join(
            f"{op} {n / batches:.2f}" for (p, op), n in sorted(counter.requests.items()) if p == phase
        )
        print(f"    {phase:<12} {counter.total(phase) / batches:.2f}  ({operations})")
    print(f"  requests per batch, all  {every / batches:.2f}  (with the idle polls at the end)")
    print(f"  claim writes lost        {counter.lost_claims}")
    print(f"  batches completed        {result['counts'].completed:,} of {batches:,}")
    print(f"  batches per worker       {result['per_worker'][0]}..{result['per_worker'][-1]}")
    print(f"  duplicates               {result['duplicates']}")


if __name__ == "__main__":
    main()

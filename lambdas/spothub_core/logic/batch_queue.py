"""The queue of a batch job as its workers see it (register, assignment, ack, status) and as the supervisor
tends it (`time_out`, `take_back_from`).

Every change of a batch is one conditional write on the batch item (dal/batch_queue.py), so no two workers ever
hold one batch, and a late, duplicate or out-of-order call finds the batch in a state its condition refuses.
That refusal is then explained from the batch as it is (`late_call`): the state the call asks for, reached by
this worker already, is a duplicate (200, `changed: false`); a batch taken back from this worker (a timeout, an
interruption), held by another or never this worker's is a 409 saying what happened.

DynamoDB requests per batch on the way through (claim + ack + completed), with no contention:
  assignment  BatchGetItem (job + worker), Query (pending candidates), UpdateItem (claim the batch),
              UpdateItem (the worker holds it)                                                          4
  ack         UpdateItem (assigned -> processing; the processing timeout is kept on the batch)         1
  completed   UpdateItem (-> completed), UpdateItem (the worker holds nothing)                          2
7 in all; a failure adds a GetItem (the job's max_attempts) and a PutItem (the error), a lost race one Query and
one UpdateItem a round, a late call one GetItem (to say what happened).

Why not powertools' idempotency utility for the status calls: it makes a handler return the answer it gave to
the first of identical requests, keyed in a table of its own. Here the batch item already is that record: each
call is a conditional write to a state, and a duplicate finds the batch in the state it asks for (done by this
worker) and is answered `changed: false` without writing anything. The utility would add a write (and a read)
per call to every status call, and close no race: the races are between different calls (a completion against
a timeout, two workers' claims), which the conditions on the batch item decide, never between identical ones.
It would even answer wrongly: a replay of an ack after the batch was taken back would get the first answer
(200) from its cache instead of the 409 that tells the agent to drop the batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from spothub_core.dal.batch_jobs import JobStore
from spothub_core.dal.batch_queue import IN_FLIGHT, BatchQueue
from spothub_core.dal.batch_workers import WorkerStore
from spothub_core.errors import Conflict, InvalidRequest, NotFound
from spothub_core.models.batch_records import Batch, BatchStatus, Job, JobError, JobStatus, Worker, WorkerStatus
from spothub_core.models.batch_workers import (
    BatchAssignment,
    BatchStatusReport,
    BatchUpdate,
    WorkerCommand,
    WorkerRegistered,
    WorkerRegistration,
    parse_worker_id,
    worker_id_of,
)
from spothub_core.timings import BATCH_WAIT_RETRY_SECONDS

logger = logging.getLogger(__name__)

# Why a batch was taken back from its worker (Batch.taken_because), as the late calls of that worker are told.
ACK_TIMEOUT = "ack timeout"
PROCESSING_TIMEOUT = "processing timeout"
REPORTED_FAILED = "reported failed"
SHUTTING_DOWN = "worker shutting down"
NO_LONGER_ACTIVE = "worker no longer active"
# A waiting worker's last_seen is written at most this often (a write per poll would double the idle cost).
LAST_SEEN_RESOLUTION_SECONDS = 60


@dataclass(frozen=True)
class WorkerApi:
    jobs: JobStore
    queue: BatchQueue
    workers: WorkerStore


# --- POST /workers/register -------------------------------------------------------------------------------------


def register(api: WorkerApi, registration: WorkerRegistration, *, now: float) -> WorkerRegistered:
    """Record the worker (once: registering again changes nothing the hub decided). A worker of a finished job is
    registered too; its first assignment tells it to shut down."""
    job_id, instance_id = registration.job_id, registration.instance_id
    if api.jobs.get(job_id) is None:
        raise NotFound(f"no job {job_id}")
    worker_id = worker_id_of(job_id, instance_id)
    worker = Worker(
        job_id=job_id,
        worker_id=worker_id,
        instance_id=instance_id,
        region=registration.region,
        availability_zone=registration.availability_zone,
        instance_type=registration.instance_type,
        capacity_type=registration.capacity_type or None,
        registered_at=now,
        last_seen=now,
    )
    new = api.workers.register(worker)
    if not new:
        api.workers.touch(job_id, instance_id, now=now)
    return WorkerRegistered(worker_id=worker_id, job_id=job_id, registered=new)


# --- GET /workers/{worker_id}/assignment -------------------------------------------------------------------------


def assignment(api: WorkerApi, worker_id: str, *, now: float) -> BatchAssignment | WorkerCommand:
    """The batch the worker holds (its answer was lost), else a newly claimed one, else `wait` or `shutdown`."""
    job_id, instance_id = parse_worker_id(worker_id)
    job, worker = api.workers.get_with_job(job_id, instance_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    if worker is None:
        raise NotFound(f"worker {worker_id} is not registered: register first")
    stop = stop_command(job, worker)
    if stop is not None:
        return stop
    if worker.batch_id is not None:
        held = api.queue.get(job_id, worker.batch_id)
        if held is not None and held.worker_id == worker_id and held.status.in_flight:
            return assignment_of(job, held)
    batch = api.queue.claim(
        job_id,
        worker_id,
        now=now,
        ack_timeout_s=job.spec.ack_timeout_s,
        processing_timeout_s=job.spec.processing_timeout_s,
        batches=job.batches,
    )
    if batch is not None:
        if api.workers.hold(job_id, instance_id, batch.batch_id, now=now):
            return assignment_of(job, batch)
        # The supervisor stopped the worker between our read and the claim: the batch goes back untouched.
        api.queue.take_back(job_id, batch.batch_id, worker_id, now=now, reason=NO_LONGER_ACTIVE)
        return WorkerCommand(command="shutdown", reason="this worker is no longer active")
    in_flight = api.queue.any_in(job_id, IN_FLIGHT)
    # The index lags: a batch taken back while we looked may show neither pending nor in flight; one more look.
    pending = not in_flight and api.queue.any_in(job_id, (BatchStatus.PENDING,))
    command = idle_command(job, in_flight=in_flight, pending=pending)
    if command.command == "wait" and (worker.last_seen or 0) <= now - LAST_SEEN_RESOLUTION_SECONDS:
        api.workers.touch(job_id, instance_id, now=now)
    return command


def stop_command(job: Job, worker: Worker) -> WorkerCommand | None:
    """`shutdown` when the job is over or the worker may work no more; None when it may."""
    if job.status.finished:
        return WorkerCommand(command="shutdown", reason=f"the job is {job.status}")
    if worker.status is not WorkerStatus.ACTIVE:
        because = f": {worker.reason}" if worker.reason else ""
        return WorkerCommand(command="shutdown", reason=f"this worker is {worker.status}{because}")
    return None


def idle_command(job: Job, *, in_flight: bool, pending: bool) -> WorkerCommand:
    """No batch for the worker: `wait` while more may come (the listing goes on, batches held elsewhere may come
    back, one just came back), else `shutdown`."""
    if job.status is JobStatus.LISTING:
        reason = "the job's files are still being listed"
    elif in_flight:
        reason = "no batch pending; batches in flight elsewhere may come back"
    elif pending:
        reason = "a batch was just put back"
    else:
        return WorkerCommand(command="shutdown", reason="no batches left")
    return WorkerCommand(command="wait", retry_after_s=BATCH_WAIT_RETRY_SECONDS, reason=reason)


def assignment_of(job: Job, batch: Batch) -> BatchAssignment:
    spec = job.spec
    return BatchAssignment(
        batch_id=batch.batch_id,
        file_names=batch.file_names,
        input_bucket=spec.input_bucket,
        input_prefix=spec.input_prefix,
        output_bucket=spec.output_bucket,
        output_prefix=spec.output_prefix,
        attempt=batch.attempt,
        image=spec.image,
        command=spec.command,
        ack_timeout_s=spec.ack_timeout_s,
        processing_timeout_s=spec.processing_timeout_s,
    )


# --- POST /workers/{worker_id}/ack and /status ------------------------------------------------------------------


def ack(api: WorkerApi, worker_id: str, batch_id: str, *, now: float) -> BatchUpdate:
    """The worker starts on the batch: assigned -> processing (the processing deadline from now)."""
    job_id, _ = parse_worker_id(worker_id)
    batch = api.queue.ack(job_id, batch_id, worker_id, now=now)
    if batch is not None:
        return BatchUpdate(worker_id=worker_id, batch_id=batch_id, status=batch.status, changed=True)
    return late_call(_current(api, job_id, batch_id), worker_id, BatchStatus.PROCESSING)


def status(api: WorkerApi, worker_id: str, report: BatchStatusReport, *, now: float) -> BatchUpdate:
    """What the worker says of its batch: processing (as an ack), completed, failed (back to pending, or failed
    for good at the job's max_attempts), or that the worker is shutting down (its batch back at once, no failure
    counted)."""
    if report.status == "shutting-down":
        return shutting_down(api, worker_id, report, now=now)
    if report.batch_id is None:
        raise InvalidRequest(f"batch_id: a {report.status} report names its batch")
    if report.status == "processing":
        return ack(api, worker_id, report.batch_id, now=now)
    if report.status == "completed":
        return completed(api, worker_id, report.batch_id, now=now)
    return failed(api, worker_id, report.batch_id, report.error, now=now)


def completed(api: WorkerApi, worker_id: str, batch_id: str, *, now: float) -> BatchUpdate:
    job_id, instance_id = parse_worker_id(worker_id)
    batch = api.queue.complete(job_id, batch_id, worker_id, now=now)
    if batch is None:
        return late_call(_current(api, job_id, batch_id), worker_id, BatchStatus.COMPLETED)
    api.workers.let_go(job_id, instance_id, batch_id, now=now, seen=True)
    return BatchUpdate(worker_id=worker_id, batch_id=batch_id, status=batch.status, changed=True)


def failed(api: WorkerApi, worker_id: str, batch_id: str, error: str | None, *, now: float) -> BatchUpdate:
    job_id, instance_id = parse_worker_id(worker_id)
    job = api.jobs.get(job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    error = error or "the worker reported a failure without saying why"
    batch = api.queue.take_back(
        job_id, batch_id, worker_id, now=now, reason=REPORTED_FAILED, error=error, max_attempts=job.spec.max_attempts
    )
    if batch is None:
        return late_call(_current(api, job_id, batch_id), worker_id, BatchStatus.FAILED)
    api.queue.add_error(JobError(job_id=job_id, batch_id=batch_id, worker_id=worker_id, error=error, at=now))
    api.workers.let_go(job_id, instance_id, batch_id, now=now, seen=True)
    return BatchUpdate(
        worker_id=worker_id,
        batch_id=batch_id,
        status=batch.status,
        changed=True,
        message=failure_message(batch, job.spec.max_attempts),
    )


def failure_message(batch: Batch, max_attempts: int) -> str:
    if batch.status is BatchStatus.FAILED:
        return f"batch {batch.batch_id} failed for good after {batch.failures} failures"
    return f"batch {batch.batch_id} is pending again ({batch.failures} of {max_attempts} failures)"


def shutting_down(api: WorkerApi, worker_id: str, report: BatchStatusReport, *, now: float) -> BatchUpdate:
    """The worker leaves (interruption notice, fatal error, told to): it is marked shutting down and the batch it
    holds goes back to pending at once, without counting a failure (the batch is not at fault)."""
    job_id, instance_id = parse_worker_id(worker_id)
    worker = api.workers.get(job_id, instance_id)
    if worker is None:
        raise _missing(api, job_id, f"worker {worker_id} is not registered")
    returned: dict[str, Batch] = {}
    # The batch it names, and the one the hub believes it holds, should they differ (the agent lost track).
    for batch_id in dict.fromkeys(b for b in (report.batch_id, worker.batch_id) if b is not None):
        batch = api.queue.take_back(job_id, batch_id, worker_id, now=now, reason=SHUTTING_DOWN)
        if batch is not None:
            returned[batch_id] = batch
            api.workers.let_go(job_id, instance_id, batch_id, now=now)
    reason = report.error or "the worker said it is shutting down"
    stopped = api.workers.set_status(job_id, instance_id, WorkerStatus.SHUTTING_DOWN, now=now, reason=reason, seen=True)
    changed = stopped or bool(returned)
    if report.batch_id is None:
        message = "worker shutting down" if stopped else f"worker already {worker.status}"
        return BatchUpdate(worker_id=worker_id, status=WorkerStatus.SHUTTING_DOWN, changed=changed, message=message)
    batch = returned.get(report.batch_id) or api.queue.get(job_id, report.batch_id)
    if batch is None:
        message = f"no batch {report.batch_id} in job {job_id}"
        return BatchUpdate(
            worker_id=worker_id, batch_id=report.batch_id, status="unknown", changed=changed, message=message
        )
    if report.batch_id in returned:
        message = f"batch {report.batch_id} is pending again"
    else:
        message = f"batch {report.batch_id} was not this worker's any more: {whereabouts(batch, worker_id)}"
    return BatchUpdate(
        worker_id=worker_id, batch_id=report.batch_id, status=batch.status, changed=changed, message=message
    )


def late_call(batch: Batch, worker_id: str, asked: BatchStatus) -> BatchUpdate:
    """A call whose write found the batch in a state it refuses: a duplicate (the worker's own call reached the
    batch already) is answered `changed: false`; anything else is a Conflict saying what happened."""
    mine = batch.worker_id == worker_id
    duplicate = (
        (asked is BatchStatus.PROCESSING and mine and batch.status in (BatchStatus.PROCESSING, BatchStatus.COMPLETED))
        or (asked is BatchStatus.COMPLETED and mine and batch.status is BatchStatus.COMPLETED)
        or (asked is BatchStatus.FAILED and batch.taken_from == worker_id and batch.taken_because == REPORTED_FAILED)
    )
    if duplicate:
        return BatchUpdate(
            worker_id=worker_id,
            batch_id=batch.batch_id,
            status=batch.status,
            changed=False,
            message=f"already done: {whereabouts(batch, worker_id)}",
        )
    raise Conflict(whereabouts(batch, worker_id))


def whereabouts(batch: Batch, worker_id: str) -> str:
    """Where the batch stands, as the worker asking is told."""
    name = f"batch {batch.batch_id}"
    if batch.worker_id == worker_id:
        return f"{name} is {batch.status} by this worker"
    if batch.taken_from == worker_id:
        if batch.taken_because == REPORTED_FAILED:
            return f"{name} was reported failed by this worker and is now {_now(batch)}"
        return f"{name} was taken back from this worker ({batch.taken_because}) and is now {_now(batch)}"
    return f"{name} is not this worker's: it is {_now(batch)}"


def _now(batch: Batch) -> str:
    if batch.status is BatchStatus.FAILED:
        return f"failed for good ({batch.last_error})" if batch.last_error else "failed for good"
    if batch.worker_id is None:
        return str(batch.status)
    return {
        BatchStatus.ASSIGNED: "assigned to another worker",
        BatchStatus.PROCESSING: "being processed by another worker",
    }.get(batch.status, f"{batch.status} by another worker")


# --- the supervisor's ---------------------------------------------------------------------------------------------


def time_out(queue: BatchQueue, workers: WorkerStore, job: Job, *, now: float) -> int:
    """Take back every batch of the job past its ack or processing deadline (a failure: back to pending, or
    failed for good at max_attempts) and mark its worker unavailable; how many were taken back."""
    taken_back = 0
    for seen in queue.overdue(job.job_id, now):
        if seen.worker_id is None:
            continue
        reason = ACK_TIMEOUT if seen.status is BatchStatus.ASSIGNED else PROCESSING_TIMEOUT
        batch = queue.take_back(
            job.job_id,
            seen.batch_id,
            seen.worker_id,
            now=now,
            reason=reason,
            max_attempts=job.spec.max_attempts,
            statuses=(seen.status,),
            overdue=True,
        )
        if batch is None:
            continue  # acknowledged, finished or taken back since the index showed it
        taken_back += 1
        queue.add_error(
            JobError(job_id=job.job_id, batch_id=seen.batch_id, worker_id=seen.worker_id, error=reason, at=now)
        )
        logger.info(
            "batch timed out",
            extra={"job_id": job.job_id, "batch_id": seen.batch_id, "worker_id": seen.worker_id, "reason": reason},
        )
        try:
            _, instance_id = parse_worker_id(seen.worker_id)
        except ValueError:
            continue
        workers.let_go(job.job_id, instance_id, seen.batch_id, now=now)
        workers.set_status(
            job.job_id, instance_id, WorkerStatus.UNAVAILABLE, now=now, reason=f"{reason} of {seen.batch_id}"
        )
    return taken_back


def take_back_from(
    queue: BatchQueue, workers: WorkerStore, job: Job, instance_id: str, *, reason: str, now: float
) -> str | None:
    """Put the batch the worker on `instance_id` holds back to pending at once, without counting a failure (its
    instance was interrupted or is gone: not the batch's fault); the batch id, None when it held none. The worker's
    own status is the caller's to set."""
    worker = workers.get(job.job_id, instance_id)
    if worker is None or worker.batch_id is None:
        return None
    batch = queue.take_back(job.job_id, worker.batch_id, worker.worker_id, now=now, reason=reason)
    workers.let_go(job.job_id, instance_id, worker.batch_id, now=now)
    if batch is None:
        return None
    logger.info("batch taken back", extra={"job_id": job.job_id, "batch_id": worker.batch_id, "reason": reason})
    return worker.batch_id


# --- helpers ------------------------------------------------------------------------------------------------------


def _current(api: WorkerApi, job_id: str, batch_id: str) -> Batch:
    batch = api.queue.get(job_id, batch_id)
    if batch is None:
        raise _missing(api, job_id, f"no batch {batch_id} in job {job_id}")
    return batch


def _missing(api: WorkerApi, job_id: str, what: str) -> NotFound:
    return NotFound(f"no job {job_id}" if api.jobs.get(job_id) is None else what)

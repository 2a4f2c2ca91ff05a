"""The batch supervisor: every minute for each live job (or at once for one job, at the end of its listing), and
for each fleet report a worker region sends back.

Per job: batches past their ack or processing deadline go back to the queue (their workers unavailable); a
running job with nothing pending or in flight ends (completed, or failed when some batch failed); an unfinished
job's workers are scaled to the work left (logic/batch_scaling.py: the requests to the regions); a finished one's
groups are released in every region; once they are (or BATCH_RELEASE_WAIT_SECONDS after the end), the end is told
once (the jobs topic, SES where configured, `Spothub Job Finished` on the hub bus), and the job is settled: off the
supervisor's list.

A fleet report is recorded (an older one than recorded changes nothing); a capacity, quota or fatal failure of
the region's latest growth excludes the region for the job; workers whose instance the report no longer lists
are gone, and whatever batch they held goes back to the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from spothub_core.consumers import Dispatch, Target
from spothub_core.contracts import (
    BatchCounts,
    BatchFleetReport,
    BatchFleetRequested,
    HubCommand,
    HubEvent,
    JobFinished,
    Source,
)
from spothub_core.dal.batch_fleet import FleetStore
from spothub_core.dal.batch_jobs import JobStore
from spothub_core.dal.batch_queue import BatchQueue
from spothub_core.dal.batch_workers import WorkerStore
from spothub_core.dal.event_bus import put_command, put_event
from spothub_core.dal.job_notifications import publish_job_message, send_email
from spothub_core.errors import DependencyUnavailable
from spothub_core.logic import batch_queue
from spothub_core.logic.batch_scaling import (
    ScalingPolicy,
    exclusion_after,
    plan,
    release_requests,
    workers_needed,
)
from spothub_core.models.batch_records import Job, JobStatus, RegionFleet, Worker, WorkerStatus
from spothub_core.models.batch_tasks import Supervise, Supervised
from spothub_core.models.orchestrator_tasks import FindAnswer, FindRequest
from spothub_core.timings import BATCH_LISTING_TIMEOUT_SECONDS, BATCH_RELEASE_WAIT_SECONDS

logger = logging.getLogger(__name__)

# Why a gone worker's batch went back to the queue, as its late calls are told.
INSTANCE_GONE = "instance gone"
# The most instances a spot placement score is asked for (the finder's FindRequest.target_capacity).
MAX_TARGET_CAPACITY = 1000


@dataclass(frozen=True)
class SupervisorServices:
    jobs: JobStore
    queue: BatchQueue
    workers: WorkerStore
    fleets: FleetStore
    events: Any
    sns: Any
    ses: Any
    find: Callable[[FindRequest], FindAnswer]  # the spot finder function
    bus_name: str  # the hub bus: commands to worker regions, the Job Finished event
    topic_arn: str  # the jobs topic
    ses_sender: str | None
    policy: ScalingPolicy
    instance_types: tuple[str, ...]  # the deployment's batch instance types: a job naming none is ranked for these


@dataclass(frozen=True)
class JobSupervised:
    timed_out: int = 0
    workers_requested: int = 0
    finished: bool = False  # this run ended the job (completed or failed)


dispatch: Dispatch[SupervisorServices] = Dispatch(Target.BATCH_SUPERVISOR)


def supervise(services: SupervisorServices, task: Supervise, *, now: float) -> Supervised:
    """Every unsettled job, or the one asked; a job whose run fails is logged and left to the next run."""
    if task.job_id is not None:
        job = services.jobs.get(task.job_id)
        jobs = [job] if job is not None and job.settled_at is None else []
    else:
        jobs = services.jobs.unsettled()
    results = []
    for job in jobs:
        try:
            results.append((job.job_id, supervise_job(services, job, now=now)))
        except DependencyUnavailable:
            logger.exception("job not supervised this time", extra={"job_id": job.job_id})
    return Supervised(
        jobs=len(jobs),
        timed_out=sum(r.timed_out for _, r in results),
        workers_requested=sum(r.workers_requested for _, r in results),
        finished=[job_id for job_id, r in results if r.finished],
    )


def supervise_job(services: SupervisorServices, job: Job, *, now: float) -> JobSupervised:
    timed_out = 0
    if not job.status.finished:
        timed_out = batch_queue.time_out(services.queue, services.workers, job, now=now)
    counts = services.queue.counts(job.job_id)
    finished = False
    if job.status == JobStatus.RUNNING and all_batches_done(job, counts):
        finished = end_job(services, job, counts, now=now)
        job = services.jobs.get(job.job_id) or job
    elif listing_stuck(job, now):
        finished = fail_stuck_listing(services, job, now=now)
        job = services.jobs.get(job.job_id) or job
    fleets = services.fleets.list(job.job_id)
    if not job.status.finished:
        requested = scale(services, job, counts, fleets, now=now)
        return JobSupervised(timed_out=timed_out, workers_requested=requested, finished=finished)
    send_requests(services, release_requests(job, fleets, now), now=now)
    released = all(f.released for f in fleets)
    if job.notified_at is None and (released or _release_wait_over(job, now)):
        notify(services, job, counts, now=now)
        job = services.jobs.get(job.job_id) or job
    if job.notified_at is not None and released:
        services.jobs.settle(job.job_id, now)
        logger.info("job settled", extra={"job_id": job.job_id, "status": job.status})
    return JobSupervised(timed_out=timed_out, finished=finished)


# --- completion ------------------------------------------------------------------------------------------------


def all_batches_done(job: Job, counts: BatchCounts) -> bool:
    """Every batch written is completed or failed. Counted on an index that lags the writes by a moment, so the
    finished ones must add up to the job's batches as well: a batch just put back to pending is never missed."""
    in_queue = counts.pending + counts.assigned + counts.processing
    return in_queue == 0 and counts.completed + counts.failed >= job.batches


def listing_stuck(job: Job, now: float) -> bool:
    """Listing past the listing state machine's whole budget: its execution ended without a word (its own failure
    step failed after every retry) and nothing else would ever move the job on."""
    return job.status == JobStatus.LISTING and now - job.created_at > BATCH_LISTING_TIMEOUT_SECONDS


def fail_stuck_listing(services: SupervisorServices, job: Job, *, now: float) -> bool:
    reason = f"the listing did not finish within {BATCH_LISTING_TIMEOUT_SECONDS // 60} minutes"
    failed = services.jobs.transition(
        job.job_id, JobStatus.FAILED, allowed_from=(JobStatus.LISTING,), now=now, reason=reason, finished_at=now
    )
    if failed:
        logger.warning("listing stuck: job failed", extra={"job_id": job.job_id})
    return failed


def end_status(counts: BatchCounts) -> JobStatus:
    return JobStatus.FAILED if counts.failed else JobStatus.COMPLETED


def end_job(services: SupervisorServices, job: Job, counts: BatchCounts, *, now: float) -> bool:
    """Completed, or failed when any batch failed for good; False when another run ended it first."""
    status = end_status(counts)
    reason = f"{counts.failed} of {job.batches} batches failed" if status == JobStatus.FAILED else None
    ended = services.jobs.transition(
        job.job_id, status, allowed_from=(JobStatus.RUNNING,), now=now, reason=reason, finished_at=now
    )
    if ended:
        logger.info("job ended", extra={"job_id": job.job_id, "status": status, "batches": counts.model_dump()})
    return ended


# --- scaling ---------------------------------------------------------------------------------------------------


def scale(services: SupervisorServices, job: Job, counts: BatchCounts, fleets: list[RegionFleet], *, now: float) -> int:
    """Ask the regions for the workers the job lacks; the number asked for."""
    workers = services.workers.list(job.job_id)
    ranking = None
    needed = workers_needed(job, counts, workers, fleets, now)
    if needed:
        request = FindRequest(
            instance_types=list(job.spec.instance_types or services.instance_types) or None,
            target_capacity=min(needed, MAX_TARGET_CAPACITY),
            share_regions=True,
        )
        try:
            ranking = services.find(request)
        except DependencyUnavailable:
            logger.exception("no ranking: no workers asked this time", extra={"job_id": job.job_id})
    decided = plan(job, counts, workers, fleets, ranking, now, services.policy)
    send_requests(services, list(decided.requests), now=now)
    if decided.requests or needed:
        logger.info(
            "job scaled",
            extra={
                "job_id": job.job_id,
                "note": decided.note,
                "requests": [r.model_dump(mode="json", exclude={"version"}) for r in decided.requests],
            },
        )
    return decided.added


def send_requests(services: SupervisorServices, requests: list[BatchFleetRequested], *, now: float) -> None:
    """Recorded first, then sent: a request that could not be sent shows as asked until the region's next report
    says otherwise; a request sent but not recorded would be asked for again, doubling the workers."""
    for request in requests:
        growth = request.desired > 0
        recorded = services.fleets.request(
            request.job_id,
            request.region,
            requested_at=now,
            desired=request.desired if growth else None,
            capacity_type=request.capacity_type,
        )
        if not recorded:
            continue  # a later run asked already: its request stands
        put_command(services.events, services.bus_name, HubCommand.BATCH_FLEET_REQUESTED, request)


# --- notification ----------------------------------------------------------------------------------------------


def notify(services: SupervisorServices, job: Job, counts: BatchCounts, *, now: float) -> bool:
    """Tell the end once: the first run to mark the job notified sends; False when another did. A channel that
    fails is logged (boto3 has retried it); the others still go."""
    if not services.jobs.mark_notified(job.job_id, now):
        return False
    subject, body = job_message(job, counts, now=now)
    sends: list[tuple[str, Callable[[], object]]] = [
        ("topic", lambda: publish_job_message(services.sns, services.topic_arn, job.job_id, subject, body)),
        (
            "event",
            lambda: put_event(
                services.events,
                services.bus_name,
                Source.HUB,
                HubEvent.JOB_FINISHED,
                job_finished(job, counts, now=now).model_dump(mode="json"),
            ),
        ),
    ]
    if services.ses_sender and job.spec.notify_email:
        sender, recipient = services.ses_sender, job.spec.notify_email
        sends.append(("email", lambda: send_email(services.ses, sender, recipient, subject, body)))
    for channel, send in sends:
        try:
            send()
        except DependencyUnavailable:
            logger.exception("job end not told", extra={"job_id": job.job_id, "channel": channel})
    return True


def job_finished(job: Job, counts: BatchCounts, *, now: float) -> JobFinished:
    return JobFinished(
        job_id=job.job_id,
        status=job.status.value,  # type: ignore[arg-type]  # a finished status
        files=job.files,
        batches=counts,
        output_bucket=job.spec.output_bucket,
        output_prefix=job.spec.output_prefix,
        reason=job.reason,
        finished_at=_iso(job.finished_at or now),
    )


def job_message(job: Job, counts: BatchCounts, *, now: float) -> tuple[str, str]:
    """The notification's subject and plain-text body."""
    spec = job.spec
    lines = [
        f"spothub batch job {job.job_id} {job.status.value}.",
        "",
        f"Input:    s3://{spec.input_bucket}/{spec.input_prefix}",
        f"Output:   s3://{spec.output_bucket}/{spec.output_prefix}",
        f"Image:    {spec.image}",
        f"Files:    {job.files}",
        f"Batches:  {counts.completed} completed, {counts.failed} failed"
        + (
            f", {counts.pending} pending, {counts.assigned + counts.processing} in flight"
            if counts.pending + counts.assigned + counts.processing
            else ""
        )
        + f" (of {job.batches})",
    ]
    if job.reason:
        lines.append(f"Reason:   {job.reason}")
    lines.append(f"Finished: {_iso(job.finished_at or now)}")
    return f"spothub job {job.job_id} {job.status.value}", "\n".join(lines) + "\n"


def _release_wait_over(job: Job, now: float) -> bool:
    ended = job.finished_at or job.updated_at or job.created_at
    return now >= ended + BATCH_RELEASE_WAIT_SECONDS


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- fleet reports ---------------------------------------------------------------------------------------------


@dispatch.on(BatchFleetReport)
def on_fleet_report(services: SupervisorServices, report: BatchFleetReport, *, now: float) -> str:
    job = services.jobs.get(report.job_id)
    if job is None:
        return "ignored: no such job"
    fleet = services.fleets.record_report(report, now)
    if fleet is None:
        return "ignored: a report of a later request is recorded"
    outcomes = ["released" if report.released else f"{report.in_service} in service of {report.desired}"]
    until = failure_exclusion(fleet, report)
    if until is not None and until > now:
        reason = f"{report.error_class}: {report.error}"
        # The failure is of the latest growth: of the capacity type that growth asked for.
        if services.fleets.exclude(job.job_id, report.region, until, reason, capacity_type=fleet.capacity_type):
            outcomes.append(f"{fleet.capacity_type} excluded for {until - now:.0f}s ({report.error_class})")
    for worker in workers_gone(services.workers.list(job.job_id), report):
        batch_queue.take_back_from(
            services.queue, services.workers, job, worker.instance_id, reason=INSTANCE_GONE, now=now
        )
        services.workers.set_status(
            job.job_id, worker.instance_id, WorkerStatus.GONE, now=now, reason="its instance left the group"
        )
        outcomes.append(f"{worker.worker_id} gone")
    return "; ".join(outcomes)


def failure_exclusion(fleet: RegionFleet, report: BatchFleetReport) -> float | None:
    """Until when the report's failure excludes the region for the job: only a failure of the latest growth (an
    older one was acted on, or its exclusion is over); measured from the failure, so a report repeating it
    extends nothing."""
    if report.error_class is None or report.released:
        return None
    failed_at = report.error_at if report.error_at is not None else report.requested_at
    if failed_at < (fleet.grown_at or 0):
        return None
    return exclusion_after(report.error_class, failed_at)


def workers_gone(workers: list[Worker], report: BatchFleetReport) -> list[Worker]:
    """The region's workers whose instance the report no longer lists; only those registered before the request
    it answers (an instance that joined after the report's look is not in it, yet not gone)."""
    listed = set(report.instance_ids)
    return [
        w
        for w in workers
        if w.region == report.region
        and w.status != WorkerStatus.GONE
        and (w.registered_at or 0) < report.requested_at
        and w.instance_id not in listed
    ]

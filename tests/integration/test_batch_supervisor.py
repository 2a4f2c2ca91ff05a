"""The batch supervisor through its Lambda entry point, against the jobs table, the hub bus, SNS and SES in moto:
timeouts, scaling requests to the worker regions, completion (SNS, SES, the Job Finished event, settling),
cancellation's release, and the regions' fleet reports (duplicates and out of order included).

The workers' side is driven through the queue's own logic (spothub_core.logic.batch_queue), as the worker API
calls it. The spot finder (a Lambda moto cannot run) is a stand-in returning a fixed ranking; the commands and
events the supervisor puts on the hub bus are caught by a rule on that bus.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import boto3
import pytest
from moto import mock_aws

from spothub_core.consumers import Target, consumed_by
from spothub_core.contracts import BatchCounts
from spothub_core.dal.batch_fleet import FleetStore
from spothub_core.dal.batch_jobs import JobStore
from spothub_core.dal.batch_queue import BatchQueue
from spothub_core.dal.batch_workers import WorkerStore
from spothub_core.dal.spot_finder_function import invoke_spot_finder
from spothub_core.errors import DependencyUnavailable
from spothub_core.logic import batch_queue
from spothub_core.logic.batch_queue import WorkerApi
from spothub_core.models.batch_records import Batch, Job, JobSpec, JobStatus, WorkerStatus
from spothub_core.models.batch_workers import BatchStatusReport, WorkerRegistration
from spothub_core.models.orchestrator_tasks import FindAnswer, FindRequest, RankedRegionView
from spothub_core.timings import (
    BATCH_LISTING_TIMEOUT_SECONDS,
    BATCH_RELEASE_WAIT_SECONDS,
    BATCH_WORKER_BOOT_SECONDS,
    CAPACITY_EXCLUSION_SECONDS,
)
from tests.integration.batch_fixtures import JOBS_TABLE, create_jobs_table
from tests.integration.conftest import (
    HUB_ENVIRONMENT,
    ApiCalls,
    BusRecorder,
    eventbridge_event,
    load_handler,
    set_environment,
)
from tests.lambda_events import FakeLambdaContext

NOW = 1_700_000_000.0
JOB = "job-0123456789ab"
BEST, SECOND = "us-west-2", "eu-west-1"
HUB_BUS = "spothub-hub"
SENDER = "jobs@example.com"
RECIPIENT = "someone@example.com"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Finder:
    """The spot finder function: the regions it ranks, and the requests it was asked."""

    def __init__(self, *regions: str) -> None:
        self.regions = list(regions)
        self.asked: list[FindRequest] = []
        self.failing = False

    def __call__(self, request: FindRequest) -> FindAnswer:
        self.asked.append(request)
        if self.failing:
            raise DependencyUnavailable("the spot finder failed: EC2 did not answer")
        return FindAnswer(
            best=self.regions[0] if self.regions else None,
            reason="stand-in",
            on_demand_region=None,
            ranked=[
                RankedRegionView(region=r, rank=i, placement_score=9, spot_price=1.0, reason="stand-in")
                for i, r in enumerate(self.regions, start=1)
            ],
            left_out=[],
            instance_types=request.instance_types or [],
            target_capacity=request.target_capacity,
            observed_at=NOW,
        )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def finder() -> Finder:
    return Finder(BEST, SECOND)


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch, clock: Clock, finder: Finder) -> Iterator[ModuleType]:
    set_environment(
        monkeypatch,
        {
            **HUB_ENVIRONMENT,
            "POWERTOOLS_SERVICE_NAME": "spothub-batch-supervisor",
            "SPOTHUB_JOBS_TABLE": JOBS_TABLE,
            "SPOTHUB_HUB_BUS": HUB_BUS,
            "SPOTHUB_SPOT_FINDER_FUNCTION": "spothub-spot-finder",
            "SPOTHUB_BATCH_INSTANCE_TYPES": "g5.xlarge,g6.xlarge",
            "SPOTHUB_SES_SENDER": SENDER,
            "SPOTHUB_BATCH_MAX_WORKERS": "20",
        },
    )
    with mock_aws():
        create_jobs_table()
        boto3.client("events").create_event_bus(Name=HUB_BUS)
        monkeypatch.setenv("SPOTHUB_JOBS_TOPIC_ARN", boto3.client("sns").create_topic(Name="spothub-jobs")["TopicArn"])
        boto3.client("ses").verify_email_identity(EmailAddress=SENDER)
        module = load_handler("batch_supervisor.handler")
        monkeypatch.setattr(module, "time", SimpleNamespace(time=clock))
        monkeypatch.setattr(module, "services", dataclasses.replace(module.services, find=finder))
        yield module


@pytest.fixture
def bus(handler: ModuleType) -> BusRecorder:
    return BusRecorder(HUB_BUS)


@pytest.fixture
def sns(handler: ModuleType) -> ApiCalls:
    return ApiCalls(handler.services.sns, "Publish")


@pytest.fixture
def ses(handler: ModuleType) -> ApiCalls:
    return ApiCalls(handler.services.ses, "SendEmail")


@pytest.fixture
def stores(handler: ModuleType) -> SimpleNamespace:
    table = boto3.resource("dynamodb").Table(JOBS_TABLE)
    return SimpleNamespace(
        jobs=JobStore(table), queue=BatchQueue(table), workers=WorkerStore(table), fleets=FleetStore(table)
    )


@pytest.fixture
def api(stores: SimpleNamespace) -> WorkerApi:
    return WorkerApi(jobs=stores.jobs, queue=stores.queue, workers=stores.workers)


# --- helpers -------------------------------------------------------------------------------------------------


def submit(stores: SimpleNamespace, *, batches: int = 3, status: JobStatus = JobStatus.RUNNING, **spec: Any) -> Job:
    """A job listed into `batches` batches of one file each (running, unless told otherwise)."""
    fields = {"max_workers": 5, "ack_timeout_s": 300, "processing_timeout_s": 3600, **spec}
    job = Job(
        job_id=JOB,
        spec=JobSpec(
            input_bucket="in",
            input_prefix="data/",
            output_bucket="out",
            output_prefix="results/",
            image="img:1",
            **fields,
        ),
        created_at=NOW - 600,
    )
    stores.jobs.create(job)
    stores.queue.put_batches(
        JOB, [Batch(job_id=JOB, batch_id=f"b-{i:07d}", file_names=[f"f{i}.txt"]) for i in range(batches)]
    )
    stores.jobs.add_listed(JOB, files=batches, batches=batches, now=NOW - 500)
    if status != JobStatus.LISTING:
        stores.jobs.transition(
            JOB, JobStatus.RUNNING, allowed_from=(JobStatus.LISTING,), now=NOW - 400, started_at=NOW - 400
        )
    return stores.jobs.get(JOB)  # type: ignore[return-value]


def instance(n: int) -> str:
    return f"i-{n:016x}"


def register(api: WorkerApi, n: int, region: str = BEST, *, now: float = NOW - 300) -> str:
    registration = WorkerRegistration(job_id=JOB, instance_id=instance(n), region=region, capacity_type="spot")
    return batch_queue.register(api, registration, now=now).worker_id


def work(api: WorkerApi, worker_id: str, outcome: str = "completed", *, now: float = NOW - 200) -> str:
    """The worker takes a batch and reports it; the batch's id."""
    assigned = batch_queue.assignment(api, worker_id, now=now)
    batch_id = assigned.batch_id  # type: ignore[union-attr]
    batch_queue.ack(api, worker_id, batch_id, now=now)
    report = BatchStatusReport(batch_id=batch_id, status=outcome, error="boom" if outcome == "failed" else None)
    batch_queue.status(api, worker_id, report, now=now)
    return batch_id


def supervise(handler: ModuleType, job_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"action": "supervise"}
    if job_id:
        event["job_id"] = job_id
    return handler.lambda_handler(event, FakeLambdaContext())


def report(handler: ModuleType, region: str = BEST, **fields: Any) -> str:
    detail = {"job_id": JOB, "region": region, "group_name": f"spothub-{JOB}", **fields}
    event = eventbridge_event("spothub.worker", "Spothub Batch Fleet Report", detail, region=region)
    return str(handler.lambda_handler(event, FakeLambdaContext())["outcome"])


def commands(bus: BusRecorder) -> list[dict[str, Any]]:
    found = []
    for event in bus.events():
        if event["detail-type"] == "Spothub Batch Fleet Requested":
            assert event["source"] == "spothub.hub"
            found.append(event["detail"])
    return found


def finished_events(bus: BusRecorder) -> list[dict[str, Any]]:
    return [e["detail"] for e in bus.events() if e["detail-type"] == "Spothub Job Finished"]


# --- wiring ---------------------------------------------------------------------------------------------------


def test_every_kind_the_supervisor_consumes_has_a_consumer_registered(handler: ModuleType) -> None:
    assert handler.dispatch.unregistered() == []
    assert set(handler.dispatch.entries) == set(consumed_by(Target.BATCH_SUPERVISOR))


def test_an_event_of_another_kind_is_ignored(handler: ModuleType) -> None:
    event = eventbridge_event(
        "spothub.worker", "Spothub Launch Progress", {"launch_id": "x", "region": BEST, "step": "s"}
    )
    assert handler.lambda_handler(event, FakeLambdaContext()) == {"outcome": "ignored: unknown kind"}


def test_an_unknown_action_or_field_is_refused(handler: ModuleType) -> None:
    with pytest.raises(ValueError, match="unknown action"):
        handler.lambda_handler({"action": "scale"}, FakeLambdaContext())
    with pytest.raises(ValueError, match="jobid"):
        handler.lambda_handler({"action": "supervise", "jobid": JOB}, FakeLambdaContext())


def test_the_spot_finder_is_invoked_with_its_request_and_its_failure_is_a_dependency_failure() -> None:
    lambda_client = MagicMock(name="lambda")
    answer = Finder(BEST)(FindRequest(target_capacity=2)).model_dump(mode="json")
    lambda_client.invoke.return_value = {"Payload": io.BytesIO(json.dumps(answer).encode())}
    found = invoke_spot_finder(lambda_client, "spothub-spot-finder", FindRequest(instance_types=["g5.xlarge"]))
    assert found.best == BEST
    call = lambda_client.invoke.call_args.kwargs
    assert (call["FunctionName"], call["InvocationType"]) == ("spothub-spot-finder", "RequestResponse")
    assert json.loads(call["Payload"]) == {
        "instance_types": ["g5.xlarge"],
        "target_capacity": 1,
        "denied_regions": [],
        "spot_only": False,
        "share_regions": False,
        "survey": False,
    }
    lambda_client.invoke.return_value = {
        "FunctionError": "Unhandled",
        "Payload": io.BytesIO(b'{"errorType": "SpotDataUnavailable"}'),
    }
    with pytest.raises(DependencyUnavailable, match="SpotDataUnavailable"):
        invoke_spot_finder(lambda_client, "spothub-spot-finder", FindRequest())


# --- scaling ----------------------------------------------------------------------------------------------------


def test_a_running_job_asks_the_best_region_for_a_worker_per_batch(
    handler: ModuleType, stores: SimpleNamespace, bus: BusRecorder, finder: Finder
) -> None:
    submit(stores, batches=3, instance_types=["g6.xlarge"])
    result = supervise(handler)
    assert result == {"jobs": 1, "timed_out": 0, "workers_requested": 3, "finished": []}
    (command,) = commands(bus)
    assert (command["region"], command["desired"], command["capacity_type"]) == (BEST, 3, "spot")
    assert command["instance_types"] == ["g6.xlarge"] and command["requested_at"] == NOW
    (asked,) = finder.asked
    assert (asked.instance_types, asked.target_capacity) == (["g6.xlarge"], 3)
    (fleet,) = stores.fleets.list(JOB)
    assert (fleet.region, fleet.desired, fleet.grown_at, fleet.requested_at) == (BEST, 3, NOW, NOW)


def test_workers_booting_are_not_asked_for_again_but_their_region_is_looked_at(
    handler: ModuleType, stores: SimpleNamespace, bus: BusRecorder, clock: Clock, finder: Finder
) -> None:
    submit(stores, batches=3)
    supervise(handler)
    bus.events()
    clock.now += 60
    assert supervise(handler)["workers_requested"] == 0
    (look,) = commands(bus)
    assert (look["region"], look["desired"], look["release"]) == (BEST, 0, False)
    assert len(finder.asked) == 1  # nothing lacking: the finder is not asked
    # Past the boot grace, workers that never registered are asked for again.
    clock.now += BATCH_WORKER_BOOT_SECONDS
    assert supervise(handler)["workers_requested"] == 3
    (again,) = commands(bus)
    # The three that never came are not counted again: the region raises its group to the larger of its size and
    # this, so the growth fills their slots.
    assert again["desired"] == 3


def test_a_job_with_its_deployments_types_is_ranked_for_the_batch_instance_types(
    handler: ModuleType, stores: SimpleNamespace, finder: Finder
) -> None:
    submit(stores, batches=1)
    supervise(handler)
    assert finder.asked[0].instance_types == ["g5.xlarge", "g6.xlarge"]


def test_a_failing_finder_asks_for_no_workers_this_time(
    handler: ModuleType, stores: SimpleNamespace, bus: BusRecorder, finder: Finder
) -> None:
    submit(stores, batches=2)
    finder.failing = True
    assert supervise(handler)["workers_requested"] == 0
    assert commands(bus) == []


def test_the_listings_call_scales_its_job_at_once_from_the_batches_written(
    handler: ModuleType, stores: SimpleNamespace, bus: BusRecorder
) -> None:
    submit(stores, batches=2, status=JobStatus.LISTING)
    assert supervise(handler, JOB)["workers_requested"] == 2
    assert supervise(handler, "job-ffffffffffff") == {"jobs": 0, "timed_out": 0, "workers_requested": 0, "finished": []}


def test_a_capacity_failure_of_the_growth_excludes_the_region_and_the_next_run_asks_the_next(
    handler: ModuleType, stores: SimpleNamespace, bus: BusRecorder, clock: Clock
) -> None:
    submit(stores, batches=2)
    supervise(handler)
    bus.events()
    failure = {
        "desired": 2,
        "error": "We currently do not have sufficient g5.xlarge capacity (InsufficientInstanceCapacity).",
        "error_class": "capacity",
        "error_at": NOW + 20,
        "requested_at": NOW,
    }
    clock.now += 30
    outcome = report(handler, **failure)
    assert "spot excluded for" in outcome
    (fleet,) = stores.fleets.list(JOB)
    assert fleet.excluded_until == NOW + 20 + CAPACITY_EXCLUSION_SECONDS
    assert fleet.error_class == "capacity" and fleet.group_desired == 2
    # A duplicate changes nothing more; the exclusion is measured from the failure.
    assert "excluded" not in report(handler, **failure)
    assert stores.fleets.list(JOB)[0].excluded_until == NOW + 20 + CAPACITY_EXCLUSION_SECONDS
    clock.now += 30
    supervise(handler)
    (command,) = commands(bus)
    assert (command["region"], command["desired"]) == (SECOND, 2)


def test_an_older_failure_than_the_latest_growth_excludes_nothing(
    handler: ModuleType, stores: SimpleNamespace, clock: Clock
) -> None:
    submit(stores, batches=2)
    supervise(handler)
    outcome = report(handler, desired=2, error="old", error_class="capacity", error_at=NOW - 100, requested_at=NOW)
    assert "excluded" not in outcome
    assert stores.fleets.list(JOB)[0].excluded_until is None


def test_no_spot_region_left_falls_back_to_on_demand(
    handler: ModuleType, stores: SimpleNamespace, bus: BusRecorder, clock: Clock
) -> None:
    submit(stores, batches=2)
    for region in (BEST, SECOND):
        stores.fleets.exclude(JOB, region, NOW + 900, "capacity: none")
    supervise(handler)
    (command,) = commands(bus)
    assert (command["region"], command["capacity_type"], command["desired"]) == (BEST, "on-demand", 2)
    assert stores.fleets.list(JOB)[1].capacity_type == "on-demand"  # FLEET#us-west-2 sorts after FLEET#eu-west-1


def test_an_older_report_than_the_one_recorded_is_ignored(
    handler: ModuleType, stores: SimpleNamespace, clock: Clock
) -> None:
    submit(stores, batches=2)
    supervise(handler)
    assert report(handler, desired=2, in_service=2, requested_at=NOW + 60) == "2 in service of 2"
    assert report(handler, desired=1, in_service=0, requested_at=NOW) == (
        "ignored: a report of a later request is recorded"
    )
    (fleet,) = stores.fleets.list(JOB)
    assert (fleet.in_service, fleet.group_desired, fleet.reported_for) == (2, 2, NOW + 60)


def test_a_report_for_an_unknown_job_is_ignored(handler: ModuleType, stores: SimpleNamespace) -> None:
    assert report(handler, requested_at=NOW) == "ignored: no such job"
    assert stores.fleets.list(JOB) == []


# --- timeouts and gone workers -----------------------------------------------------------------------------------


def test_an_ack_timeout_takes_the_batch_back_and_releases_the_workers_instance(
    handler: ModuleType, stores: SimpleNamespace, api: WorkerApi, bus: BusRecorder, clock: Clock
) -> None:
    submit(stores, batches=1, max_workers=1)
    supervise(handler)  # one worker asked of the best region
    worker_id = register(api, 1, now=NOW + 100)
    batch_queue.assignment(api, worker_id, now=NOW + 100)  # claimed, never acknowledged
    bus.events()
    clock.now = NOW + 100 + 301
    assert supervise(handler)["timed_out"] == 1
    assert stores.queue.counts(JOB) == BatchCounts(pending=1)
    worker = stores.workers.get(JOB, instance(1))
    assert worker.status == WorkerStatus.UNAVAILABLE  # type: ignore[union-attr]
    # The same run releases its instance and, the worker no longer counting, asks for one more.
    (command,) = commands(bus)
    assert command["region"] == BEST and command["release_instances"] == [instance(1)]
    assert command["desired"] == 1  # no active worker, none booting: one more, after the release
    (error,) = stores.queue.errors(JOB)
    assert error.error == "ack timeout"


def test_workers_whose_instance_a_report_no_longer_lists_are_gone_and_their_batch_goes_back(
    handler: ModuleType, stores: SimpleNamespace, api: WorkerApi, clock: Clock
) -> None:
    submit(stores, batches=2)
    supervise(handler)
    first, second = register(api, 1, now=NOW + 10), register(api, 2, now=NOW + 10)
    batch_queue.assignment(api, first, now=NOW + 20)
    clock.now = NOW + 60
    stores.fleets.request(JOB, BEST, requested_at=NOW + 60)
    outcome = report(handler, desired=1, in_service=1, instance_ids=[instance(2)], requested_at=NOW + 60)
    assert outcome == f"1 in service of 1; {first} gone"
    assert stores.workers.get(JOB, instance(1)).status == WorkerStatus.GONE  # type: ignore[union-attr]
    assert stores.workers.get(JOB, instance(2)).status == WorkerStatus.ACTIVE  # type: ignore[union-attr]
    assert stores.queue.counts(JOB).pending == 2  # its batch is back, no failure counted
    # A worker registered after the look the report answers is not in it, and not gone.
    register(api, 3, now=NOW + 70)
    assert report(handler, desired=2, instance_ids=[instance(2)], requested_at=NOW + 65).endswith("of 2")
    assert stores.workers.get(JOB, instance(3)).status == WorkerStatus.ACTIVE  # type: ignore[union-attr]
    assert second


# --- completion, release, notification -----------------------------------------------------------------------


def test_completion_releases_the_groups_then_notifies_once_and_settles(  # noqa: PLR0917 (fixtures)
    handler: ModuleType,
    stores: SimpleNamespace,
    api: WorkerApi,
    bus: BusRecorder,
    sns: ApiCalls,
    ses: ApiCalls,
    clock: Clock,
) -> None:
    submit(stores, batches=2, notify_email=RECIPIENT)
    supervise(handler)
    worker_id = register(api, 1, now=NOW + 10)
    work(api, worker_id, now=NOW + 20)
    work(api, worker_id, now=NOW + 30)
    bus.events()
    clock.now = NOW + 60
    result = supervise(handler)
    assert result["finished"] == [JOB]
    job = stores.jobs.get(JOB)
    assert job.status == JobStatus.COMPLETED and job.finished_at == NOW + 60  # type: ignore[union-attr]
    (release,) = commands(bus)
    assert (release["region"], release["release"]) == (BEST, True)
    assert sns.calls == [] and ses.calls == []  # not before the workers are gone
    clock.now += 30
    assert report(handler, released=True, requested_at=NOW + 60) == f"released; {worker_id} gone"
    assert stores.fleets.list(JOB)[0].released
    clock.now += 30
    assert supervise(handler)["finished"] == []
    (published,) = sns.of("Publish")
    assert published["MessageAttributes"] == {"job_id": {"DataType": "String", "StringValue": JOB}}
    assert published["Subject"] == f"spothub job {JOB} completed"
    message = published["Message"]
    assert "Files:    2" in message and "2 completed, 0 failed (of 2)" in message
    assert "s3://out/results/" in message
    (email,) = ses.of("SendEmail")
    assert (email["Source"], email["Destination"]["ToAddresses"]) == (SENDER, [RECIPIENT])
    assert email["Message"]["Body"]["Text"]["Data"] == message
    (finished,) = finished_events(bus)
    assert finished["job_id"] == JOB and finished["status"] == "completed" and finished["files"] == 2
    assert finished["batches"]["completed"] == 2 and finished["output_bucket"] == "out"
    assert finished["finished_at"] == "2023-11-14T22:14:20Z"
    assert stores.jobs.unsettled() == []
    assert stores.jobs.get(JOB).settled_at is not None  # type: ignore[union-attr]
    # Settled: nothing more is sent.
    clock.now += 60
    assert supervise(handler)["jobs"] == 0
    assert len(sns.of("Publish")) == 1 and bus.events() == []


def test_a_batch_failed_for_good_fails_the_job_with_the_reason(  # noqa: PLR0917 (fixtures)
    handler: ModuleType, stores: SimpleNamespace, api: WorkerApi, bus: BusRecorder, sns: ApiCalls, clock: Clock
) -> None:
    submit(stores, batches=2, max_attempts=1)
    worker_id = register(api, 1, now=NOW + 10)
    work(api, worker_id, now=NOW + 20)
    work(api, worker_id, "failed", now=NOW + 30)
    clock.now = NOW + 60
    supervise(handler)
    job = stores.jobs.get(JOB)
    assert job.status == JobStatus.FAILED and job.reason == "1 of 2 batches failed"  # type: ignore[union-attr]
    # No region was ever asked: nothing to release, the end is told at once.
    (published,) = sns.of("Publish")
    assert "failed" in published["Subject"] and "Reason:   1 of 2 batches failed" in published["Message"]
    assert finished_events(bus)[0]["status"] == "failed"
    assert stores.jobs.unsettled() == []


def test_nothing_in_the_queue_but_batches_missing_from_the_counts_does_not_end_the_job(
    handler: ModuleType, stores: SimpleNamespace, api: WorkerApi
) -> None:
    submit(stores, batches=1)
    work(api, register(api, 1), now=NOW - 100)
    # One more batch than the index shows finished (it lags the writes): nothing pending or in flight, not done.
    stores.jobs.add_listed(JOB, files=1, batches=1, now=NOW)
    assert stores.queue.counts(JOB) == BatchCounts(completed=1)
    supervise(handler)
    assert stores.jobs.get(JOB).status == JobStatus.RUNNING  # type: ignore[union-attr]


def test_a_cancelled_job_releases_every_region_until_each_reports_it_released(
    handler: ModuleType, stores: SimpleNamespace, bus: BusRecorder, sns: ApiCalls, clock: Clock
) -> None:
    submit(stores, batches=3)
    stores.fleets.request(JOB, BEST, requested_at=NOW - 100, desired=2)
    stores.fleets.request(JOB, SECOND, requested_at=NOW - 100, desired=1)
    stores.jobs.transition(
        JOB, JobStatus.CANCELLED, allowed_from=(JobStatus.RUNNING,), now=NOW, reason="cancelled", finished_at=NOW
    )
    supervise(handler)
    assert sorted((c["region"], c["release"]) for c in commands(bus)) == [(SECOND, True), (BEST, True)]
    report(handler, BEST, released=True, requested_at=NOW)
    clock.now += 60
    supervise(handler)
    # The region that has not answered is asked again; the end waits for it.
    assert [c["region"] for c in commands(bus)] == [SECOND]
    assert sns.calls == []
    report(handler, SECOND, released=True, requested_at=NOW + 60)
    # A late report of the group as it was before its release changes nothing.
    assert report(handler, SECOND, desired=1, requested_at=NOW - 100).startswith("ignored")
    clock.now += 60
    supervise(handler)
    (published,) = sns.of("Publish")
    assert published["Subject"] == f"spothub job {JOB} cancelled"
    assert stores.jobs.unsettled() == []


def test_a_region_that_never_answers_the_release_holds_up_the_notification_only_so_long(
    handler: ModuleType, stores: SimpleNamespace, bus: BusRecorder, sns: ApiCalls, clock: Clock
) -> None:
    submit(stores, batches=1)
    stores.fleets.request(JOB, BEST, requested_at=NOW - 100, desired=1)
    stores.jobs.transition(JOB, JobStatus.CANCELLED, allowed_from=(JobStatus.RUNNING,), now=NOW, finished_at=NOW)
    supervise(handler)
    assert sns.calls == []
    clock.now = NOW + BATCH_RELEASE_WAIT_SECONDS
    supervise(handler)
    assert len(sns.of("Publish")) == 1
    # Still unsettled: its release is asked every run until the region answers.
    assert [j.job_id for j in stores.jobs.unsettled()] == [JOB]
    bus.events()
    clock.now += 60
    supervise(handler)
    assert [c["release"] for c in commands(bus)] == [True]
    assert len(sns.of("Publish")) == 1


def test_a_job_whose_listing_failed_is_told_and_settled_at_once(
    handler: ModuleType, stores: SimpleNamespace, bus: BusRecorder, sns: ApiCalls, ses: ApiCalls
) -> None:
    submit(stores, batches=0, status=JobStatus.LISTING)
    stores.jobs.transition(
        JOB,
        JobStatus.FAILED,
        allowed_from=(JobStatus.LISTING,),
        now=NOW,
        reason="no files under s3://in/data/",
        finished_at=NOW,
    )
    supervise(handler)
    (published,) = sns.of("Publish")
    assert "Reason:   no files under s3://in/data/" in published["Message"]
    assert ses.calls == []  # the job named no one to e-mail
    assert finished_events(bus)[0]["reason"] == "no files under s3://in/data/"
    assert stores.jobs.unsettled() == []


def test_a_job_left_listing_past_the_listings_budget_is_failed_and_told(
    handler: ModuleType, stores: SimpleNamespace, clock: Clock, sns: ApiCalls
) -> None:
    submit(stores, batches=2, status=JobStatus.LISTING)
    supervise(handler)
    assert stores.jobs.get(JOB).status == JobStatus.LISTING  # within the budget: the listing is at work

    clock.now = NOW - 600 + BATCH_LISTING_TIMEOUT_SECONDS + 1
    supervise(handler)

    job = stores.jobs.get(JOB)
    assert job.status == JobStatus.FAILED
    assert job.reason == f"the listing did not finish within {BATCH_LISTING_TIMEOUT_SECONDS // 60} minutes"

"""The jobs API through the real handler: DynamoDB, S3, SNS and Step Functions in moto.

POST /jobs (fields, or a config file: every way it can be wrong), the buckets a deployment allows, the listing
execution it starts (and a start that fails), the notify_email subscription; GET /jobs (pages, newest first),
GET /jobs/{job_id} (the job with its batches, workers, fleet and errors), DELETE /jobs/{job_id} (cancel, twice).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest

from spothub_core.dal.batch_jobs import JobStore
from spothub_core.dal.batch_queue import BatchQueue
from spothub_core.models.batch_records import Batch, Job, JobError, JobSpec, JobStatus, Worker
from tests.integration.batch_fixtures import jobs_table  # noqa: F401 (a fixture)
from tests.integration.conftest import (
    HUB_ENVIRONMENT,
    ApiCalls,
    create_state_machine,
    executions,
    load_handler,
    set_environment,
)
from tests.lambda_events import FakeLambdaContext, rest_proxy_event

REGION = "us-east-1"
INPUT = "spothub-input"
OUTPUT = "spothub-output"
OTHER = "someone-elses-bucket"
LISTING = "spothub-batch-listing"
TOPIC = "spothub-jobs"
CONFIG_KEY = "configuration/config.json"
CONFIG_URI = f"s3://{INPUT}/{CONFIG_KEY}"
OPERATOR = "arn:aws:iam::123456789012:user/operator"
FIELDS = {"input_bucket": INPUT, "input_prefix": "in/", "output_bucket": OUTPUT, "image": "acme/transform:1"}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, jobs_table: Any) -> dict[str, str]:  # noqa: F811
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (INPUT, OUTPUT, OTHER):
        s3.create_bucket(Bucket=bucket)
    topic_arn = boto3.client("sns", region_name=REGION).create_topic(Name=TOPIC)["TopicArn"]
    environment = {
        **HUB_ENVIRONMENT,
        "POWERTOOLS_SERVICE_NAME": "spothub-jobs-api",
        "AWS_DEFAULT_REGION": REGION,
        "SPOTHUB_JOBS_TABLE": jobs_table.name,
        "SPOTHUB_BATCH_INPUT_BUCKETS": f"{INPUT},spothub-more-input",
        "SPOTHUB_BATCH_OUTPUT_BUCKETS": OUTPUT,
        "SPOTHUB_LISTING_STATE_MACHINE_ARN": create_state_machine(LISTING),
        "SPOTHUB_JOBS_TOPIC_ARN": topic_arn,
    }
    set_environment(monkeypatch, environment)
    return environment


@pytest.fixture
def handler(environment: dict[str, str]) -> Iterator[ModuleType]:
    yield load_handler("jobs_api.handler")


@pytest.fixture
def jobs(jobs_table: Any) -> JobStore:  # noqa: F811
    return JobStore(jobs_table)


def call(
    handler: ModuleType, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    resource = "/jobs/{job_id}" if path.count("/") == 2 else path
    event = rest_proxy_event(method, path, body, resource=resource)
    if resource != path:
        event["pathParameters"] = {"job_id": path.rsplit("/", 1)[1]}
    if query:
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {key: [value] for key, value in query.items()}
    response = handler.lambda_handler(event, FakeLambdaContext())
    assert "Traceback" not in response["body"]
    return response["statusCode"], json.loads(response["body"])


def put_config(content: Any, *, key: str = CONFIG_KEY, raw: bytes | None = None) -> None:
    body = raw if raw is not None else json.dumps(content).encode()
    boto3.client("s3", region_name=REGION).put_object(Bucket=INPUT, Key=key, Body=body)


def fields_of(answer: dict[str, Any]) -> list[str]:
    return [detail["field"] for detail in answer.get("details", [])]


# --- POST /jobs -----------------------------------------------------------------------------------------------


def test_a_job_is_accepted_recorded_listing_and_its_listing_started(
    handler: ModuleType, jobs: JobStore, environment: dict[str, str]
) -> None:
    status, answer = call(handler, "POST", "/jobs", {**FIELDS, "command": ["python", "run.py"], "batch_size": 25})

    assert status == 202
    assert answer == {"job_id": answer["job_id"], "status": "listing", "notification": None}
    job_id = answer["job_id"]
    assert job_id.startswith("job-") and len(job_id) == 16
    job = jobs.get(job_id)
    assert job is not None and job.status is JobStatus.LISTING
    assert job.spec == JobSpec(
        **FIELDS, command=["python", "run.py"], batch_size=25, ack_timeout_s=300, processing_timeout_s=3600
    )
    arn = environment["SPOTHUB_LISTING_STATE_MACHINE_ARN"]
    assert job.listing_execution == arn.replace(":stateMachine:", ":execution:") + f":{job_id}"
    assert executions(arn) == {job_id: {"status": "RUNNING", "input": {"job_id": job_id}}}


def test_the_defaults_are_the_timings_and_the_specs(handler: ModuleType, jobs: JobStore) -> None:
    from spothub_core import timings  # noqa: PLC0415

    _, answer = call(handler, "POST", "/jobs", FIELDS)
    job = jobs.get(answer["job_id"])
    assert job is not None
    spec = job.spec
    assert (spec.ack_timeout_s, spec.processing_timeout_s) == (
        timings.BATCH_ACK_TIMEOUT_SECONDS,
        timings.BATCH_PROCESSING_TIMEOUT_SECONDS,
    )
    assert (spec.batch_size, spec.max_workers, spec.max_attempts, spec.command, spec.instance_types) == (
        10,
        10,
        3,
        [],
        [],
    )
    assert (spec.output_prefix, spec.notify_email) == ("", None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**FIELDS, "batch_size": 0}, "batch_size"),
        ({**FIELDS, "batch_size": 1001}, "batch_size"),
        ({**FIELDS, "max_workers": "many"}, "max_workers"),
        ({**FIELDS, "image": "acme/transform:1; rm -rf /"}, "image"),
        ({**FIELDS, "input_bucket": "Not_A_Bucket"}, "input_bucket"),
        ({**FIELDS, "instance_types": ["G5.XLARGE"]}, "instance_types"),
        ({**FIELDS, "notify_email": "nobody"}, "notify_email"),
        ({**FIELDS, "colour": "blue"}, "colour"),
        ({**FIELDS, "config_uri": "https://example.com/config.json"}, "config_uri"),
        ({**FIELDS, "ack_timeout_s": 5}, "ack_timeout_s"),
    ],
)
def test_a_bad_field_is_a_400_naming_it(handler: ModuleType, body: dict[str, Any], field: str) -> None:
    status, answer = call(handler, "POST", "/jobs", body)
    assert status == 400, answer
    assert any(name.endswith(field) for name in fields_of(answer)), answer


def test_a_job_without_buckets_or_image_or_config_is_a_400_saying_what_is_missing(handler: ModuleType) -> None:
    status, answer = call(handler, "POST", "/jobs", {"input_bucket": INPUT})
    assert status == 400
    assert "output_bucket, image required (or config_uri naming a config file)" in json.dumps(answer)


@pytest.mark.parametrize("body", ["not json", "[1, 2]", ""])
def test_a_body_that_is_no_json_object_is_a_400(handler: ModuleType, body: str) -> None:
    status, _ = call(handler, "POST", "/jobs", body)
    assert status == 400


@pytest.mark.parametrize(
    ("field", "bucket", "context_key"),
    [
        ("input_bucket", OTHER, "batchInputBuckets"),
        ("output_bucket", OTHER, "batchOutputBuckets"),
        ("output_bucket", INPUT, "batchOutputBuckets"),
    ],
)
def test_a_bucket_the_deployment_does_not_allow_is_a_400_naming_it_and_the_context_key(
    handler: ModuleType, jobs: JobStore, field: str, bucket: str, context_key: str
) -> None:
    status, answer = call(handler, "POST", "/jobs", {**FIELDS, field: bucket})
    assert status == 400
    assert answer["message"].startswith(f"{field}: bucket {bucket} is not among the deployment's allowed buckets")
    assert context_key in answer["message"]
    assert jobs.page(10, None)[0] == []


def test_a_deployment_without_buckets_refuses_every_job_saying_to_set_them(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    monkeypatch.setenv("SPOTHUB_BATCH_INPUT_BUCKETS", "")
    handler = load_handler("jobs_api.handler")
    status, answer = call(handler, "POST", "/jobs", FIELDS)
    assert status == 400
    assert "allows no bucket here; set the context key batchInputBuckets" in answer["message"]


# --- POST /jobs with a config file ----------------------------------------------------------------------------


def test_a_config_file_gives_the_fields_and_the_request_overrides_them(handler: ModuleType, jobs: JobStore) -> None:
    put_config({**FIELDS, "output_prefix": "out/", "batch_size": 50, "max_workers": 4, "notify_email": None})

    status, answer = call(handler, "POST", "/jobs", {"config_uri": CONFIG_URI, "batch_size": 20})

    assert status == 202, answer
    job = jobs.get(answer["job_id"])
    assert job is not None
    assert (job.spec.input_bucket, job.spec.input_prefix, job.spec.output_prefix) == (INPUT, "in/", "out/")
    assert (job.spec.batch_size, job.spec.max_workers, job.spec.image) == (20, 4, "acme/transform:1")


def test_the_classic_config_file_with_the_image_beside_it(handler: ModuleType, jobs: JobStore) -> None:
    put_config({"input_bucket": INPUT, "input_prefix": "in/", "output_bucket": OUTPUT, "output_prefix": "out/"})
    status, answer = call(handler, "POST", "/jobs", {"config_uri": CONFIG_URI, "image": "acme/transform:2"})
    assert status == 202, answer
    job = jobs.get(answer["job_id"])
    assert job is not None and job.spec.image == "acme/transform:2"


@pytest.mark.parametrize(
    ("setup", "uri", "expected"),
    [
        (
            None,
            f"s3://{INPUT}/configuration/missing.json",
            f"config_uri: s3://{INPUT}/configuration/missing.json does not exist",
        ),
        (None, "s3://spothub-more-input/config.json", "config_uri: bucket spothub-more-input does not exist"),
        (
            None,
            f"s3://{OTHER}/config.json",
            f"config_uri: bucket {OTHER} is not among the deployment's allowed buckets",
        ),
        ({"raw": b"{not json"}, CONFIG_URI, f"config_uri: {CONFIG_URI} is not a JSON file"),
        ({"raw": b"\xff\xfe{}"}, CONFIG_URI, f"config_uri: {CONFIG_URI} is not a JSON file"),
        ({"content": ["a", "list"]}, CONFIG_URI, f"config_uri: {CONFIG_URI} holds a JSON list, not an object"),
        ({"content": {**FIELDS, "batch_size": 0}}, CONFIG_URI, f"config_uri: {CONFIG_URI}: field batch_size: "),
        ({"content": {**FIELDS, "batchsize": 5}}, CONFIG_URI, f"config_uri: {CONFIG_URI}: field batchsize: Extra"),
        ({"content": {**FIELDS, "config_uri": CONFIG_URI}}, CONFIG_URI, "field config_uri: a config file cannot"),
        ({"content": {"input_bucket": INPUT}}, CONFIG_URI, "output_bucket, image missing: give them in the file or"),
        ({"content": {**FIELDS, "input_bucket": OTHER}}, CONFIG_URI, f"input_bucket: bucket {OTHER} is not among"),
        ({"raw": b" " * (64 * 1024 + 1)}, CONFIG_URI, "a config file is at most 65536"),
    ],
)
def test_a_config_file_that_cannot_give_a_job_is_a_400_saying_why(
    handler: ModuleType, jobs: JobStore, setup: dict[str, Any] | None, uri: str, expected: str
) -> None:
    if setup is not None:
        put_config(setup.get("content"), raw=setup.get("raw"))
    status, answer = call(handler, "POST", "/jobs", {"config_uri": uri})
    assert status == 400, answer
    assert expected in answer["message"], answer["message"]
    assert jobs.page(10, None)[0] == []


def test_a_config_file_s3_refuses_is_a_400_with_s3s_words(handler: ModuleType) -> None:
    ApiCalls(handler.deployment.s3, "GetObject").answer("GetObject", error=("AccessDenied", "Access Denied"))
    status, answer = call(handler, "POST", "/jobs", {"config_uri": CONFIG_URI})
    assert status == 400
    assert answer["message"] == f"config_uri: {CONFIG_URI} cannot be read: AccessDenied: Access Denied"


def test_a_config_file_s3_cannot_give_now_is_a_503(handler: ModuleType) -> None:
    ApiCalls(handler.deployment.s3, "GetObject").answer("GetObject", error=("SlowDown", "Please reduce"))
    status, answer = call(handler, "POST", "/jobs", {"config_uri": CONFIG_URI})
    assert status == 503
    assert "SlowDown" in answer["message"]


# --- what submitting starts -----------------------------------------------------------------------------------


def test_a_listing_that_cannot_start_fails_the_job_and_answers_503(handler: ModuleType, jobs: JobStore) -> None:
    ApiCalls(handler.deployment.sfn, "StartExecution").answer(
        "StartExecution", error=("ThrottlingException", "Rate exceeded")
    )
    status, answer = call(handler, "POST", "/jobs", FIELDS)
    assert status == 503
    assert "could not start" in answer["message"] and "Rate exceeded" in answer["message"]
    (job,), _ = jobs.page(10, None)
    assert job.status is JobStatus.FAILED
    assert job.reason is not None and "ThrottlingException: Rate exceeded" in job.reason


def _subscriptions(environment: dict[str, str]) -> list[dict[str, Any]]:
    sns = boto3.client("sns", region_name=REGION)
    found = []
    for subscription in sns.list_subscriptions_by_topic(TopicArn=environment["SPOTHUB_JOBS_TOPIC_ARN"])[
        "Subscriptions"
    ]:
        attributes = sns.get_subscription_attributes(SubscriptionArn=subscription["SubscriptionArn"])["Attributes"]
        found.append({"endpoint": subscription["Endpoint"], "filter": json.loads(attributes["FilterPolicy"])})
    return found


def test_notify_email_hears_of_its_jobs_only(handler: ModuleType, environment: dict[str, str]) -> None:
    _, first = call(handler, "POST", "/jobs", {**FIELDS, "notify_email": "ops@example.com"})
    assert "once it confirms" in first["notification"]
    assert _subscriptions(environment) == [{"endpoint": "ops@example.com", "filter": {"job_id": [first["job_id"]]}}]

    # A second job of the same address: SNS keeps one subscription per address, its policy grows.
    _, second = call(handler, "POST", "/jobs", {**FIELDS, "notify_email": "ops@example.com"})
    assert second["notification"] == "ops@example.com hears of this job (its subscription is confirmed)"
    assert _subscriptions(environment) == [
        {"endpoint": "ops@example.com", "filter": {"job_id": [first["job_id"], second["job_id"]]}}
    ]


def test_an_address_that_has_not_confirmed_is_told_so(handler: ModuleType) -> None:
    recorder = ApiCalls(handler.deployment.sns, "ListSubscriptionsByTopic")
    recorder.answer(
        "ListSubscriptionsByTopic",
        {"Subscriptions": [{"SubscriptionArn": "PendingConfirmation", "Protocol": "email", "Endpoint": "a@b.io"}]},
    )
    status, answer = call(handler, "POST", "/jobs", {**FIELDS, "notify_email": "a@b.io"})
    assert status == 202
    assert "has not confirmed an earlier job's subscription" in answer["notification"]


def test_a_subscription_sns_refuses_fails_the_job_and_answers_503(handler: ModuleType, jobs: JobStore) -> None:
    ApiCalls(handler.deployment.sns, "Subscribe").answer("Subscribe", error=("InternalError", "try again"))
    assert call(handler, "POST", "/jobs", {**FIELDS, "notify_email": "ops@example.com"})[0] == 503
    (job,), _ = jobs.page(10, None)
    assert job.status is JobStatus.FAILED and "InternalError: try again" in (job.reason or "")


# --- GET /jobs ------------------------------------------------------------------------------------------------


def _record(jobs: JobStore, n: int, **fields: Any) -> Job:
    job = Job(
        job_id=f"job-{n:012x}",
        spec=JobSpec(**FIELDS),
        created_at=1_700_000_000.0 + n,
        **fields,
    )
    jobs.create(job)
    return job


def test_the_jobs_are_listed_newest_first_page_by_page(handler: ModuleType, jobs: JobStore) -> None:
    for n in range(5):
        _record(jobs, n)
    status, first = call(handler, "GET", "/jobs", query={"limit": "2"})
    assert status == 200
    assert [job["job_id"] for job in first["jobs"]] == [f"job-{4:012x}", f"job-{3:012x}"]
    assert first["jobs"][0] == {
        "job_id": f"job-{4:012x}",
        "status": "listing",
        "files": 0,
        "image": "acme/transform:1",
        "created_at": "2023-11-14T22:13:24Z",
        "finished_at": None,
    }
    seen = [job["job_id"] for job in first["jobs"]]
    token = first["next_token"]
    while token:
        status, page = call(handler, "GET", "/jobs", query={"limit": "2", "next_token": token})
        assert status == 200
        seen += [job["job_id"] for job in page["jobs"]]
        token = page.get("next_token")
    assert seen == [f"job-{n:012x}" for n in reversed(range(5))]


def test_the_list_defaults_to_twenty(handler: ModuleType, jobs: JobStore) -> None:
    for n in range(21):
        _record(jobs, n)
    status, page = call(handler, "GET", "/jobs")
    assert status == 200 and len(page["jobs"]) == 20 and page["next_token"]


@pytest.mark.parametrize(
    ("query", "field"),
    [({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "ten"}, "limit")],
)
def test_a_bad_limit_is_a_400_naming_it(handler: ModuleType, query: dict[str, str], field: str) -> None:
    status, answer = call(handler, "GET", "/jobs", query=query)
    assert status == 400 and any(name.endswith(field) for name in fields_of(answer)), answer


@pytest.mark.parametrize("token", ["not-a-token", "eyJub3QiOiAidGhlIGtleSJ9", "%%%"])
def test_a_bad_next_token_is_a_400(handler: ModuleType, jobs: JobStore, token: str) -> None:
    _record(jobs, 1)
    status, answer = call(handler, "GET", "/jobs", query={"next_token": token})
    assert status == 400, answer
    assert "next_token" in answer["message"]


def test_no_jobs_is_an_empty_page(handler: ModuleType) -> None:
    assert call(handler, "GET", "/jobs") == (200, {"jobs": [], "next_token": None})


# --- GET /jobs/{job_id} ---------------------------------------------------------------------------------------


def test_a_job_is_shown_with_its_batches_workers_fleet_and_errors(
    handler: ModuleType,
    jobs: JobStore,
    jobs_table: Any,  # noqa: F811
) -> None:
    job = _record(jobs, 7)
    job_id = job.job_id
    queue = BatchQueue(jobs_table)
    queue.put_batches(job_id, [Batch(job_id=job_id, batch_id=f"b-{n:07d}", file_names=[f"f{n}"]) for n in range(3)])
    assert jobs.transition(
        job_id,
        JobStatus.RUNNING,
        allowed_from=(JobStatus.LISTING,),
        now=1_700_000_100.0,
        files=3,
        batches=3,
        started_at=1_700_000_100.0,
    )
    from spothub_core.dal.batch_workers import WorkerStore  # noqa: PLC0415

    WorkerStore(jobs_table).register(
        Worker(
            job_id=job_id,
            worker_id=f"{job_id}.i-0123456789abcdef0",
            instance_id="i-0123456789abcdef0",
            region="us-west-2",
            instance_type="g5.xlarge",
            capacity_type="spot",
            registered_at=1_700_000_200.0,
            last_seen=1_700_000_200.0,
        )
    )
    queue.add_error(
        JobError(job_id=job_id, batch_id="b-0000001", worker_id=None, error="ack timeout", at=1_700_000_300.0)
    )

    status, view = call(handler, "GET", f"/jobs/{job_id}")

    assert status == 200, view
    assert view["job_id"] == job_id and view["status"] == "running" and view["files"] == 3
    assert view["batches"] == {"pending": 3, "assigned": 0, "processing": 0, "completed": 0, "failed": 0}
    assert (view["input_bucket"], view["input_prefix"], view["output_bucket"]) == (INPUT, "in/", OUTPUT)
    assert view["max_workers"] == 10
    (worker,) = view["workers"]
    assert worker["worker_id"] == f"{job_id}.i-0123456789abcdef0"
    assert (worker["region"], worker["status"], worker["capacity_type"]) == ("us-west-2", "active", "spot")
    assert worker["last_seen"] == "2023-11-14T22:16:40Z"
    assert view["fleet"] == []
    assert view["errors"] == [
        {"batch_id": "b-0000001", "worker_id": None, "error": "ack timeout", "at": "2023-11-14T22:18:20Z"}
    ]
    assert (view["created_at"], view["started_at"], view["finished_at"]) == (
        "2023-11-14T22:13:27Z",
        "2023-11-14T22:15:00Z",
        None,
    )


def test_an_unknown_job_is_a_404_and_a_malformed_id_a_400(handler: ModuleType) -> None:
    status, answer = call(handler, "GET", "/jobs/job-0000000000ff")
    assert (status, answer["message"]) == (404, "no job job-0000000000ff")
    status, answer = call(handler, "GET", "/jobs/not-a-job")
    assert status == 400 and any(name.endswith("job_id") for name in fields_of(answer)), answer
    assert call(handler, "DELETE", "/jobs/job-0000000000ff")[0] == 404


# --- DELETE /jobs/{job_id} ------------------------------------------------------------------------------------


def test_cancelling_a_listing_job_stops_its_listing_and_twice_changes_nothing(
    handler: ModuleType, jobs: JobStore, environment: dict[str, str]
) -> None:
    _, accepted = call(handler, "POST", "/jobs", FIELDS)
    job_id = accepted["job_id"]

    status, view = call(handler, "DELETE", f"/jobs/{job_id}")

    assert status == 200
    assert view["status"] == "cancelled" and view["reason"] == f"cancelled by {OPERATOR}"
    assert view["finished_at"] is not None
    arn = environment["SPOTHUB_LISTING_STATE_MACHINE_ARN"]
    assert executions(arn)[job_id]["status"] == "ABORTED"

    status, again = call(handler, "DELETE", f"/jobs/{job_id}")
    assert (status, again) == (200, view)


def test_cancelling_a_running_job_leaves_its_listing_alone(handler: ModuleType, jobs: JobStore) -> None:
    job = _record(jobs, 9)
    assert jobs.transition(job.job_id, JobStatus.RUNNING, allowed_from=(JobStatus.LISTING,), now=1_700_000_100.0)
    recorder = ApiCalls(handler.deployment.sfn, "StopExecution")
    status, view = call(handler, "DELETE", f"/jobs/{job.job_id}")
    assert (status, view["status"]) == (200, "cancelled")
    assert recorder.of("StopExecution") == []


def test_a_finished_job_is_answered_as_it_is(handler: ModuleType, jobs: JobStore) -> None:
    job = _record(jobs, 11)
    assert jobs.transition(
        job.job_id, JobStatus.FAILED, allowed_from=(JobStatus.LISTING,), now=1_700_000_100.0, reason="no files"
    )
    status, view = call(handler, "DELETE", f"/jobs/{job.job_id}")
    assert (status, view["status"], view["reason"]) == (200, "failed", "no files")


def test_a_cancel_whose_stop_fails_still_cancels(handler: ModuleType, jobs: JobStore) -> None:
    _, accepted = call(handler, "POST", "/jobs", FIELDS)
    ApiCalls(handler.deployment.sfn, "StopExecution").answer("StopExecution", error=("ThrottlingException", "slow"))
    status, view = call(handler, "DELETE", f"/jobs/{accepted['job_id']}")
    assert (status, view["status"]) == (200, "cancelled")


def test_an_unknown_route_is_a_404(handler: ModuleType) -> None:
    assert call(handler, "PUT", "/jobs")[0] in (404, 405)

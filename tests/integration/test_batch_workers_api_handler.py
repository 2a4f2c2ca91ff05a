"""The worker API of batch jobs through the real handler (API Gateway REST events) against moto's DynamoDB:
every route, the caller check, the path and body validation, and the late and duplicate calls' answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from spothub_core.dal.batch_jobs import JobStore
from spothub_core.dal.batch_queue import BatchQueue
from spothub_core.dal.batch_table import batch_id_of
from spothub_core.models.batch_records import Batch, Job, JobSpec, JobStatus
from tests.integration.batch_fixtures import jobs_table  # noqa: F401 (a fixture)
from tests.integration.conftest import HUB_ENVIRONMENT, load_handler, set_environment
from tests.lambda_events import FakeLambdaContext, rest_proxy_event

JOB = "job-00000000beef"
INSTANCE = "i-0123456789abcdef0"
OTHER = "i-0fedcba987654321f"
WORKER = f"{JOB}.{INSTANCE}"
NOW = 1_700_000_000.0
INSTANCE_ROLE = "arn:aws:sts::123456789012:assumed-role/spothub-batch-worker/{}"
REGISTRATION = {
    "job_id": JOB,
    "instance_id": INSTANCE,
    "region": "us-west-2",
    "availability_zone": "us-west-2a",
    "instance_type": "g5.xlarge",
    "capacity_type": "spot",
    "agent_version": "0.2.0",
}


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch, jobs_table: Any) -> Iterator[ModuleType]:  # noqa: F811
    set_environment(
        monkeypatch,
        {
            **HUB_ENVIRONMENT,
            "POWERTOOLS_SERVICE_NAME": "spothub-batch-workers-api",
            "SPOTHUB_JOBS_TABLE": jobs_table.name,
        },
    )
    yield load_handler("batch_workers_api.handler")


@pytest.fixture
def job(jobs_table: Any) -> Job:  # noqa: F811
    spec = JobSpec(input_bucket="in", output_bucket="out", image="acme/x:1", max_attempts=2, ack_timeout_s=60)
    JobStore(jobs_table).create(Job(job_id=JOB, spec=spec, created_at=NOW, files=2, batches=2))
    BatchQueue(jobs_table).put_batches(
        JOB, [Batch(job_id=JOB, batch_id=batch_id_of(n), file_names=[f"f{n}"]) for n in range(2)]
    )
    assert JobStore(jobs_table).transition(JOB, JobStatus.RUNNING, allowed_from=(JobStatus.LISTING,), now=NOW)
    return JobStore(jobs_table).get(JOB)  # type: ignore[return-value]


def call(
    handler: ModuleType, method: str, path: str, body: Any = None, *, caller: str | None = INSTANCE
) -> tuple[int, dict[str, Any]]:
    parts = path.split("/")
    resource = path if len(parts) == 3 else f"/workers/{{worker_id}}/{parts[3]}"
    event = rest_proxy_event(method, path, body, resource=resource)
    if resource != path:
        event["pathParameters"] = {"worker_id": parts[2]}
    if caller:
        event["requestContext"]["identity"]["userArn"] = INSTANCE_ROLE.format(caller)
    response = handler.lambda_handler(event, FakeLambdaContext())
    assert "Traceback" not in response["body"]
    return response["statusCode"], json.loads(response["body"])


def register(handler: ModuleType, instance_id: str = INSTANCE) -> tuple[int, dict[str, Any]]:
    return call(handler, "POST", "/workers/register", {**REGISTRATION, "instance_id": instance_id}, caller=instance_id)


def assignment(handler: ModuleType, worker_id: str = WORKER) -> tuple[int, dict[str, Any]]:
    return call(handler, "GET", f"/workers/{worker_id}/assignment", caller=worker_id.split(".")[1])


def status(
    handler: ModuleType, batch_id: str | None, state: str, error: str | None = None
) -> tuple[int, dict[str, Any]]:
    body = {"batch_id": batch_id, "status": state, **({"error": error} if error else {})}
    return call(handler, "POST", f"/workers/{WORKER}/status", body)


# --- POST /workers/register ---------------------------------------------------------------------------------


def test_register_answers_the_worker_id_and_again_registered_false(handler: ModuleType, job: Job) -> None:
    assert register(handler) == (200, {"worker_id": WORKER, "job_id": JOB, "registered": True})
    assert register(handler) == (200, {"worker_id": WORKER, "job_id": JOB, "registered": False})


def test_register_for_an_unknown_job_is_a_404(handler: ModuleType) -> None:
    assert register(handler) == (404, {"error": "Not Found", "message": f"no job {JOB}"})


def test_register_for_a_finished_job_is_taken_and_the_first_assignment_says_shutdown(
    handler: ModuleType,
    job: Job,
    jobs_table: Any,  # noqa: F811
) -> None:
    JobStore(jobs_table).transition(JOB, JobStatus.CANCELLED, allowed_from=(JobStatus.RUNNING,), now=NOW)
    assert register(handler)[0] == 200
    assert assignment(handler) == (
        200,
        {"command": "shutdown", "retry_after_s": None, "reason": "the job is cancelled"},
    )


def test_an_instance_may_register_only_itself(handler: ModuleType, job: Job) -> None:
    status_code, answer = call(handler, "POST", "/workers/register", REGISTRATION, caller=OTHER)
    assert (status_code, answer["message"]) == (403, f"instance {OTHER} may not speak for {INSTANCE}")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"job_id": "job-1"}, "job_id"),
        ({"instance_id": "not-an-instance"}, "instance_id"),
        ({"capacity_type": "reserved"}, "capacity_type"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_malformed_registration_is_a_400_naming_the_field(
    handler: ModuleType, change: dict[str, Any], field: str
) -> None:
    status_code, answer = call(handler, "POST", "/workers/register", {**REGISTRATION, **change})
    assert status_code == 400 and any(d["field"].endswith(field) for d in answer["details"]), answer


# --- GET /workers/{worker_id}/assignment --------------------------------------------------------------------


def test_an_assignment_is_a_batch_then_a_wait_then_a_shutdown(handler: ModuleType, job: Job) -> None:
    register(handler)
    register(handler, OTHER)
    other = f"{JOB}.{OTHER}"

    code, first = assignment(handler)
    assert code == 200 and first["attempt"] == 1 and first["image"] == "acme/x:1"
    assert set(first) == {
        "batch_id",
        "file_names",
        "input_bucket",
        "input_prefix",
        "output_bucket",
        "output_prefix",
        "attempt",
        "image",
        "command",
        "ack_timeout_s",
        "processing_timeout_s",
    }
    code, second = assignment(handler, other)
    assert code == 200 and second["batch_id"] != first["batch_id"]
    assert status(handler, first["batch_id"], "completed")[1]["changed"] is True

    code, wait = assignment(handler)
    assert (code, wait["command"], wait["retry_after_s"]) == (200, "wait", 15)

    call(
        handler,
        "POST",
        f"/workers/{other}/status",
        {"batch_id": second["batch_id"], "status": "completed"},
        caller=OTHER,
    )
    assert assignment(handler) == (200, {"command": "shutdown", "retry_after_s": None, "reason": "no batches left"})


def test_the_assignment_of_an_unknown_job_or_worker_is_a_404(handler: ModuleType) -> None:
    assert assignment(handler) == (404, {"error": "Not Found", "message": f"no job {JOB}"})


def test_the_assignment_of_an_unregistered_worker_is_a_404(handler: ModuleType, job: Job) -> None:
    code, answer = assignment(handler)
    assert (code, answer["message"]) == (404, f"worker {WORKER} is not registered: register first")


@pytest.mark.parametrize("worker_id", ["job-00000000beef", "job-1.i-0123456789abcdef0", f"{JOB}.i-XYZ", f"{JOB}x"])
def test_a_malformed_worker_id_is_a_400(handler: ModuleType, worker_id: str) -> None:
    code, answer = call(handler, "GET", f"/workers/{worker_id}/assignment", caller=None)
    assert code == 400 and any(d["field"].endswith("worker_id") for d in answer["details"]), answer


def test_an_instance_may_ask_only_for_its_own_work(handler: ModuleType, job: Job) -> None:
    register(handler)
    code, answer = call(handler, "GET", f"/workers/{WORKER}/assignment", caller=OTHER)
    assert (code, answer["message"]) == (403, f"instance {OTHER} may not speak for {INSTANCE}")
    code, _ = call(handler, "POST", f"/workers/{WORKER}/ack", {"batch_id": "b-0000000"}, caller=OTHER)
    assert code == 403
    code, _ = call(
        handler, "POST", f"/workers/{WORKER}/status", {"batch_id": None, "status": "shutting-down"}, caller=OTHER
    )
    assert code == 403


def test_an_operator_may_call_for_a_worker(handler: ModuleType, job: Job) -> None:
    register(handler)
    code, answer = call(handler, "GET", f"/workers/{WORKER}/assignment", caller=None)  # an IAM user, not an instance
    assert code == 200 and "batch_id" in answer


# --- POST /workers/{worker_id}/ack --------------------------------------------------------------------------


def test_an_ack_then_the_same_ack_again(handler: ModuleType, job: Job) -> None:
    register(handler)
    batch_id = assignment(handler)[1]["batch_id"]
    path = f"/workers/{WORKER}/ack"
    assert call(handler, "POST", path, {"batch_id": batch_id}) == (
        200,
        {"worker_id": WORKER, "batch_id": batch_id, "status": "processing", "changed": True, "message": ""},
    )
    code, again = call(handler, "POST", path, {"batch_id": batch_id})
    assert (code, again["status"], again["changed"]) == (200, "processing", False)


def test_an_ack_after_an_ack_timeout_is_a_409_saying_so(handler: ModuleType, job: Job, jobs_table: Any) -> None:  # noqa: F811
    from spothub_core.dal.batch_workers import WorkerStore  # noqa: PLC0415
    from spothub_core.logic import batch_queue  # noqa: PLC0415

    register(handler)
    batch_id = assignment(handler)[1]["batch_id"]
    batch_queue.time_out(BatchQueue(jobs_table), WorkerStore(jobs_table), job, now=NOW + 10**9)

    assert call(handler, "POST", f"/workers/{WORKER}/ack", {"batch_id": batch_id}) == (
        409,
        {
            "error": "Conflict",
            "message": f"batch {batch_id} was taken back from this worker (ack timeout) and is now pending",
        },
    )
    assert assignment(handler)[1]["command"] == "shutdown"  # the worker is unavailable now


def test_an_ack_of_an_unknown_batch_or_job_is_a_404(handler: ModuleType, job: Job) -> None:
    register(handler)
    code, answer = call(handler, "POST", f"/workers/{WORKER}/ack", {"batch_id": "b-0000042"})
    assert (code, answer["message"]) == (404, f"no batch b-0000042 in job {JOB}")
    code, answer = call(handler, "POST", "/workers/job-000000000bad.i-0123456789abcdef0/ack", {"batch_id": "b-0000000"})
    assert (code, answer["message"]) == (404, "no job job-000000000bad")


@pytest.mark.parametrize("body", [{"batch_id": "0000001"}, {}, {"batch_id": "b-0000001", "extra": 1}])
def test_a_malformed_ack_is_a_400(handler: ModuleType, body: dict[str, Any]) -> None:
    assert call(handler, "POST", f"/workers/{WORKER}/ack", body)[0] == 400


# --- POST /workers/{worker_id}/status -----------------------------------------------------------------------


def test_processing_then_completed_then_completed_again(handler: ModuleType, job: Job) -> None:
    register(handler)
    batch_id = assignment(handler)[1]["batch_id"]
    assert status(handler, batch_id, "processing")[1]["status"] == "processing"
    assert status(handler, batch_id, "completed") == (
        200,
        {"worker_id": WORKER, "batch_id": batch_id, "status": "completed", "changed": True, "message": ""},
    )
    code, again = status(handler, batch_id, "completed")
    assert (code, again["changed"], again["message"]) == (
        200,
        False,
        f"already done: batch {batch_id} is completed by this worker",
    )


def test_failed_twice_fails_the_batch_for_good(handler: ModuleType, job: Job) -> None:
    register(handler)
    batch_id = assignment(handler)[1]["batch_id"]
    code, first = status(handler, batch_id, "failed", "exit 2")
    assert (code, first["status"], first["changed"]) == (200, "pending", True)
    assert status(handler, batch_id, "failed", "exit 2")[1]["changed"] is False  # the duplicate
    # The worker may get the same batch again (random), or the other one: fail whichever it holds.
    while True:
        code, again = assignment(handler)
        if again.get("batch_id") == batch_id:
            break
        status(handler, again["batch_id"], "completed")
    code, last = status(handler, batch_id, "failed", "exit 3")
    assert (code, last["status"], last["message"]) == (
        200,
        "failed",
        f"batch {batch_id} failed for good after 2 failures",
    )


def test_completed_after_being_reported_failed_is_a_409(handler: ModuleType, job: Job) -> None:
    register(handler)
    batch_id = assignment(handler)[1]["batch_id"]
    status(handler, batch_id, "failed", "exit 2")
    code, answer = status(handler, batch_id, "completed")
    assert (code, answer["message"]) == (409, f"batch {batch_id} was reported failed by this worker and is now pending")


def test_shutting_down_with_a_batch_returns_it(handler: ModuleType, job: Job) -> None:
    register(handler)
    batch_id = assignment(handler)[1]["batch_id"]
    code, answer = status(handler, batch_id, "shutting-down", "spot interruption notice")
    assert (code, answer) == (
        200,
        {
            "worker_id": WORKER,
            "batch_id": batch_id,
            "status": "pending",
            "changed": True,
            "message": f"batch {batch_id} is pending again",
        },
    )
    assert assignment(handler)[1] == {
        "command": "shutdown",
        "retry_after_s": None,
        "reason": "this worker is shutting-down: spot interruption notice",
    }


def test_shutting_down_without_a_batch(handler: ModuleType, job: Job) -> None:
    register(handler)
    assert status(handler, None, "shutting-down") == (
        200,
        {
            "worker_id": WORKER,
            "batch_id": None,
            "status": "shutting-down",
            "changed": True,
            "message": "worker shutting down",
        },
    )


def test_a_status_of_an_unregistered_worker_is_a_404(handler: ModuleType, job: Job) -> None:
    code, answer = status(handler, None, "shutting-down")
    assert (code, answer["message"]) == (404, f"worker {WORKER} is not registered")


@pytest.mark.parametrize(
    "body",
    [
        {"batch_id": "b-0000000", "status": "done"},
        {"batch_id": "b-0000000"},
        {"batch_id": "b-0000000", "status": "failed", "error": "x" * 4001},
        [{"batch_id": "b-0000000", "status": "completed"}],
    ],
)
def test_a_malformed_status_is_a_400(handler: ModuleType, body: Any) -> None:
    assert status_of(handler, body) == 400


def test_a_completion_without_its_batch_is_a_400(handler: ModuleType, job: Job) -> None:
    register(handler)
    code, answer = status(handler, None, "completed")
    assert (code, answer["message"]) == (400, "batch_id: a completed report names its batch")


def status_of(handler: ModuleType, body: Any) -> int:
    return call(handler, "POST", f"/workers/{WORKER}/status", body)[0]


def test_the_openapi_document_names_every_route(handler: ModuleType) -> None:
    schema = handler.app.get_openapi_schema().model_dump(mode="json", by_alias=True, exclude_none=True)
    assert set(schema["paths"]) == {
        "/workers/register",
        "/workers/{worker_id}/assignment",
        "/workers/{worker_id}/ack",
        "/workers/{worker_id}/status",
    }

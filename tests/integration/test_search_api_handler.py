"""The search API through the real handler: the search table and Step Functions in moto (hub region), EC2 in moto
(the search region), the router as a fake with the SearchRouter's methods.

POST /search/query (success, busy then idle, a 503 with Retry-After from zero starting one launch, wait_s polling
to readiness within the budget, what the service or the router may fail with, bad bodies), GET /search/status,
POST /search/scale-up (launched, both 409s, count, twenty at once), POST /search/scale-down (shut down, nothing
running, busy), DELETE /search/instances/{instance_id} (ours, an unrecorded tagged one, not ours, busy).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import boto3
import pytest

from spothub_core.contracts import MANAGED_BY, SEARCH_SERVICE, SearchTag
from spothub_core.dal.search_store import SearchStore
from spothub_core.errors import DependencyUnavailable
from spothub_core.models.search_records import EndReason, SearchInstance, SearchStatus
from spothub_core.models.search_tasks import RouterResponse
from spothub_core.timings import (
    SEARCH_QUERY_TIMEOUT_SECONDS,
    SEARCH_RETRY_AFTER_SECONDS,
    SEARCH_WAIT_BUDGET_SECONDS,
    SEARCH_WAIT_POLL_SECONDS,
)
from tests.integration.batch_fixtures import atomic_items
from tests.integration.conftest import HUB_ENVIRONMENT, create_state_machine, executions, load_handler, set_environment
from tests.integration.search_fixtures import search_table_fixture  # noqa: F401 (registered as search_table)
from tests.lambda_events import FakeLambdaContext, rest_proxy_event

HUB = "us-east-1"
SEARCH_REGION = "us-west-2"
VOLUME = "vol-0dec0de5eadc0ffee"
ROUTER_ARN = "arn:aws:lambda:us-west-2:123456789012:function:spothub-search-router"
PORT = 8000
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
LAUNCH = "s-20270115080000-0a0b0c0d"
INSTANCE = "i-0123456789abcdef0"
PRIVATE_IP = "10.0.1.25"
HITS = [
    {"id": "doc-3", "score": 7.25, "title": "Spot interruptions", "snippet": "two minutes of warning"},
    {"id": "doc-1", "score": 2.5, "title": "EBS volumes", "snippet": "attached to one instance"},
]
SERVICE_ANSWER = {"results": HITS, "total_documents": 42, "timings": {"search_ms": 3.5}}


@dataclass
class FakeRouter:
    """The SearchRouter's query and health, answering what a test sets; `during` runs inside each query (the
    record is counted in then)."""

    answer: RouterResponse = field(
        default_factory=lambda: RouterResponse(ok=True, status_code=200, body=SERVICE_ANSWER, elapsed_ms=12.5)
    )
    failure: Exception | None = None
    during: Callable[[], None] | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    def query(self, address: str, port: int, body: dict[str, Any], timeout_s: float) -> RouterResponse:
        self.calls.append({"address": address, "port": port, "body": body, "timeout_s": timeout_s})
        if self.during is not None:
            self.during()
        if self.failure is not None:
            raise self.failure
        return self.answer

    def health(self, address: str, port: int, path: str, timeout_s: float) -> RouterResponse:
        return RouterResponse(ok=True, status_code=200, body={"status": "ok"}, elapsed_ms=1.0)


class FakeTime:
    """The query's clock and pause: a pause moves the clock on at once, and runs `on_sleep` (a launch progressing)."""

    def __init__(self, start: float = NOW) -> None:
        self.now = start
        self.slept: list[float] = []
        self.on_sleep: Callable[[int], None] | None = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.slept))


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, search_table: Any) -> dict[str, str]:
    environment = {
        **HUB_ENVIRONMENT,
        "POWERTOOLS_SERVICE_NAME": "spothub-search-api",
        "AWS_DEFAULT_REGION": HUB,
        "SPOTHUB_SEARCH_TABLE": search_table.name,
        "SPOTHUB_SEARCH_REGION": SEARCH_REGION,
        "SPOTHUB_SEARCH_VOLUME_ID": VOLUME,
        "SPOTHUB_SEARCH_LAUNCHER_ARN": create_state_machine("spothub-search-launcher"),
        "SPOTHUB_SEARCH_ROUTER_ARN": ROUTER_ARN,
        "SPOTHUB_SEARCH_HOST_PARAMETER": "/spothub/spothub/search-host",
        "SPOTHUB_SEARCH_PORT": str(PORT),
        "SPOTHUB_SEARCH_INSTANCE_TYPE": "g5.xlarge",
        "SPOTHUB_SEARCH_USE_SPOT": "true",
        "SPOTHUB_SEARCH_IDLE_TIMEOUT": "1800",
        "SPOTHUB_SEARCH_MAX_RUNTIME": "1800",
        "SPOTHUB_SEARCH_HEALTH_INTERVAL": "60",
    }
    set_environment(monkeypatch, environment)
    return environment


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def handler(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, router: FakeRouter, fake_time: FakeTime
) -> Iterator[ModuleType]:
    module = load_handler("search_api.handler")
    monkeypatch.setattr(module, "api", replace(module.api, router=router, clock=fake_time.clock, sleep=fake_time.sleep))
    yield module


@pytest.fixture
def store(search_table: Any) -> SearchStore:
    return SearchStore(search_table)


@pytest.fixture
def launcher_arn(environment: dict[str, str]) -> str:
    return environment["SPOTHUB_SEARCH_LAUNCHER_ARN"]


def call(
    handler: ModuleType, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    resource = "/search/instances/{instance_id}" if path.startswith("/search/instances/") else path
    event = rest_proxy_event(method, path, body, resource=resource)
    if resource != path:
        event["pathParameters"] = {"instance_id": path.rsplit("/", 1)[1]}
    if query:
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {key: [value] for key, value in query.items()}
    response = handler.lambda_handler(event, FakeLambdaContext())
    assert "Traceback" not in response["body"]
    headers = {name: ",".join(values) for name, values in (response.get("multiValueHeaders") or {}).items()}
    return response["statusCode"], json.loads(response["body"]), headers


def holding(store: SearchStore, status: SearchStatus = SearchStatus.READY, **fields: Any) -> SearchInstance:
    """A launch that holds the slot, in `status`."""
    values: dict[str, Any] = {
        "launch_id": LAUNCH,
        "status": status,
        "volume_id": VOLUME,
        "created_at": NOW - 600,
        "instance_type": "g5.xlarge",
        "availability_zone": "us-west-2a",
        "subnet_id": "subnet-0a",
    }
    if status not in (SearchStatus.LAUNCHING,):
        values |= {
            "instance_id": INSTANCE,
            "capacity_type": "spot",
            "private_ip": PRIVATE_IP,
            "public_ip": "54.1.2.3",
            "started_at": NOW - 590,
        }
    if status.routable:
        values["ready_at"] = NOW - 300
    record = SearchInstance(**{**values, **fields})
    assert store.claim_slot(record.launch_id, record.created_at)
    assert store.create(record)
    return record


def search_instance(volume: str = VOLUME) -> str:
    """An instance running in the search region, tagged as the volume's search instance."""
    tags = [
        {"Key": SearchTag.NAME, "Value": "semantic-search-20270115-080000"},
        {"Key": SearchTag.SERVICE, "Value": SEARCH_SERVICE},
        {"Key": SearchTag.MANAGED_BY, "Value": MANAGED_BY},
        {"Key": SearchTag.VOLUME, "Value": volume},
    ]
    return boto3.client("ec2", region_name=SEARCH_REGION).run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        InstanceType="g5.xlarge",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]


def ec2_state(instance_id: str) -> str:
    reservations = boto3.client("ec2", region_name=SEARCH_REGION).describe_instances(InstanceIds=[instance_id])
    return reservations["Reservations"][0]["Instances"][0]["State"]["Name"]


def expected_view(record: SearchInstance, **changes: Any) -> dict[str, Any]:
    return {
        "instance_id": record.instance_id,
        "launch_id": record.launch_id,
        "public_ip": record.public_ip,
        "private_ip": record.private_ip,
        "status": str(record.status),
        "created_at": "2027-01-15T07:50:00Z",
        "last_used": None,
        "current_requests": record.current_requests,
        "capacity_type": record.capacity_type,
        "instance_type": record.instance_type,
        "availability_zone": record.availability_zone,
        "health_failures": 0,
        **changes,
    }


# --- POST /search/query -----------------------------------------------------------------------------------------


def test_a_query_is_routed_to_the_ready_instance_counted_busy_then_idle(
    handler: ModuleType, store: SearchStore, router: FakeRouter, fake_time: FakeTime, launcher_arn: str
) -> None:
    holding(store)
    seen: list[SearchInstance | None] = []
    router.during = lambda: seen.append(store.get(LAUNCH))

    status, answer, _ = call(handler, "POST", "/search/query", {"query": "spot interruption", "top_k": 2})

    assert status == 200, answer
    assert answer == {
        "query": "spot interruption",
        "results": HITS,
        "total_documents": 42,
        "instance_id": INSTANCE,
        "timings": {"service_ms": 3.5, "routing_ms": 12.5, "total_ms": 0.0},
        "extra": None,
    }
    assert router.calls == [
        {
            "address": PRIVATE_IP,
            "port": PORT,
            "body": {"query": "spot interruption", "top_k": 2},
            "timeout_s": SEARCH_QUERY_TIMEOUT_SECONDS,
        }
    ]
    (during,) = seen
    assert during is not None and (during.status, during.current_requests) == (SearchStatus.BUSY, 1)
    after = store.get(LAUNCH)
    assert after is not None
    assert (after.status, after.current_requests, after.last_used) == (SearchStatus.IDLE, 0, fake_time.now)
    assert executions(launcher_arn) == {}


def test_what_else_the_service_answers_is_passed_on_in_extra(
    handler: ModuleType, store: SearchStore, router: FakeRouter
) -> None:
    holding(store, SearchStatus.IDLE)
    router.answer = RouterResponse(
        ok=True, status_code=200, body={**SERVICE_ANSWER, "model": "bge-small", "timings": {}}, elapsed_ms=4.0
    )
    status, answer, _ = call(handler, "POST", "/search/query", {"query": "volumes"})
    assert status == 200
    assert answer["extra"] == {"model": "bge-small"}
    assert answer["timings"]["service_ms"] is None
    assert router.calls[0]["body"] == {"query": "volumes", "top_k": 10}


def test_a_query_from_zero_starts_one_launch_and_answers_503_with_retry_after(
    handler: ModuleType, store: SearchStore, router: FakeRouter, launcher_arn: str
) -> None:
    status, answer, headers = call(handler, "POST", "/search/query", {"query": "volumes"})

    assert status == 503
    assert answer == {"error": "No search instance is ready yet", "status": "launching"}
    assert headers["Retry-After"] == str(SEARCH_RETRY_AFTER_SECONDS)
    ((launch_id, execution),) = executions(launcher_arn).items()
    assert execution == {"status": "RUNNING", "input": {"launch_id": launch_id, "use_spot": True}}
    assert store.slot().launch_id == launch_id
    record = store.get(launch_id)
    assert record is not None and record.status == SearchStatus.LAUNCHING and record.volume_id == VOLUME

    # Asked again while it launches: the same answer, no second launch.
    assert call(handler, "POST", "/search/query", {"query": "volumes"})[:2] == (503, answer)
    assert list(executions(launcher_arn)) == [launch_id]
    assert router.calls == []


def test_twenty_concurrent_queries_from_zero_start_one_launch(handler: ModuleType, launcher_arn: str) -> None:
    with atomic_items(), ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: call(handler, "POST", "/search/query", {"query": "x"}), range(20)))
    assert {(status, body["status"]) for status, body, _ in answers} == {(503, "launching")}
    assert len(executions(launcher_arn)) == 1


def test_a_starting_instance_is_not_routed_to_and_nothing_more_is_launched(
    handler: ModuleType, store: SearchStore, router: FakeRouter, launcher_arn: str
) -> None:
    holding(store, SearchStatus.STARTING)
    status, answer, headers = call(handler, "POST", "/search/query", {"query": "volumes"})
    assert (status, answer["status"], headers["Retry-After"]) == (503, "starting", "30")
    assert router.calls == [] and executions(launcher_arn) == {}


def test_with_wait_s_the_query_waits_for_readiness_then_answers(
    handler: ModuleType, store: SearchStore, router: FakeRouter, fake_time: FakeTime, launcher_arn: str
) -> None:
    def launcher_progress(pauses: int) -> None:
        launch_id = store.slot().launch_id
        assert launch_id is not None
        if pauses == 2:
            store.update(launch_id, {"status": SearchStatus.STARTING, "instance_id": INSTANCE})
        if pauses == 4:
            store.update(launch_id, {"status": SearchStatus.READY, "private_ip": PRIVATE_IP, "ready_at": NOW + 4})

    fake_time.on_sleep = launcher_progress
    status, answer, _ = call(handler, "POST", "/search/query", {"query": "volumes", "wait_s": 30})

    assert status == 200, answer
    assert answer["instance_id"] == INSTANCE and answer["results"] == HITS
    assert fake_time.slept == [SEARCH_WAIT_POLL_SECONDS] * 4
    assert answer["timings"]["total_ms"] == 4 * SEARCH_WAIT_POLL_SECONDS * 1000
    assert len(executions(launcher_arn)) == 1
    assert router.calls[0]["address"] == PRIVATE_IP


def test_the_wait_is_bounded_by_the_budget_then_503(
    handler: ModuleType, fake_time: FakeTime, launcher_arn: str
) -> None:
    status, answer, headers = call(handler, "POST", "/search/query", {"query": "volumes", "wait_s": 60})
    assert (status, answer["status"], headers["Retry-After"]) == (503, "launching", "30")
    assert 0 < sum(fake_time.slept) <= SEARCH_WAIT_BUDGET_SECONDS
    assert len(executions(launcher_arn)) == 1


def test_a_short_wait_s_is_the_bound(handler: ModuleType, fake_time: FakeTime) -> None:
    assert call(handler, "POST", "/search/query", {"query": "volumes", "wait_s": 3})[0] == 503
    assert sum(fake_time.slept) <= 3


def test_a_slot_left_by_a_terminated_launch_is_given_back_and_a_launch_started(
    handler: ModuleType, store: SearchStore, launcher_arn: str
) -> None:
    holding(store)
    store.end(LAUNCH, SearchStatus.TERMINATED, EndReason.GONE, NOW)
    status, answer, _ = call(handler, "POST", "/search/query", {"query": "volumes"})
    assert (status, answer["status"]) == (503, "launching")
    (launch_id,) = executions(launcher_arn)
    assert store.slot().launch_id == launch_id != LAUNCH


def test_a_service_4xx_is_passed_on_and_the_query_counted_out(
    handler: ModuleType, store: SearchStore, router: FakeRouter
) -> None:
    holding(store)
    router.answer = RouterResponse(ok=False, status_code=400, body={"detail": "query too long"}, elapsed_ms=2.0)
    status, answer, _ = call(handler, "POST", "/search/query", {"query": "volumes"})
    assert status == 400
    assert answer["error"] == "Bad Request" and "query too long" in answer["message"]
    record = store.get(LAUNCH)
    assert record is not None and (record.status, record.current_requests) == (SearchStatus.IDLE, 0)


@pytest.mark.parametrize(
    "router_says",
    [
        RouterResponse(ok=False, status_code=None, error="timed out after 10 s", elapsed_ms=10000.0),
        RouterResponse(ok=False, status_code=500, body="internal error", elapsed_ms=5.0),
        DependencyUnavailable("the search router failed: Unhandled"),
    ],
)
def test_a_service_or_router_that_fails_is_a_503_with_retry_after_never_a_500(
    handler: ModuleType, store: SearchStore, router: FakeRouter, router_says: Any
) -> None:
    holding(store)
    if isinstance(router_says, Exception):
        router.failure = router_says
    else:
        router.answer = router_says
    status, answer, headers = call(handler, "POST", "/search/query", {"query": "volumes"})
    assert (status, answer["status"], headers["Retry-After"]) == (503, "idle", "30"), answer
    assert set(answer) == {"error", "status"}
    record = store.get(LAUNCH)
    assert record is not None and record.current_requests == 0


def test_a_service_answer_that_is_no_search_answer_is_a_502(
    handler: ModuleType, store: SearchStore, router: FakeRouter
) -> None:
    holding(store)
    router.answer = RouterResponse(ok=True, status_code=200, body={"hits": []}, elapsed_ms=1.0)
    status, answer, _ = call(handler, "POST", "/search/query", {"query": "volumes"})
    assert status == 502 and "no search results" in answer["message"]
    assert store.get(LAUNCH).current_requests == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": "x" * 4001}, "query"),
        ({}, "query"),
        ({"query": "x", "top_k": 0}, "top_k"),
        ({"query": "x", "top_k": 101}, "top_k"),
        ({"query": "x", "wait_s": 61}, "wait_s"),
        ({"query": "x", "wait_s": -1}, "wait_s"),
        ({"query": "x", "colour": "blue"}, "colour"),
        # Strict, as the document says: once a launch started and a wait of 0 s.
        ({"query": "x", "wait_s": False}, "wait_s"),
        ({"query": "x", "top_k": "5"}, "top_k"),
    ],
)
def test_a_bad_query_is_a_400_naming_the_field(
    handler: ModuleType, launcher_arn: str, body: dict[str, Any], field: str
) -> None:
    status, answer, _ = call(handler, "POST", "/search/query", body)
    assert status == 400, answer
    assert any(detail["field"].endswith(field) for detail in answer["details"]), answer
    assert executions(launcher_arn) == {}


@pytest.mark.parametrize("body", ["not json", "[1, 2]", ""])
def test_a_body_that_is_no_json_object_is_a_400(handler: ModuleType, body: str) -> None:
    assert call(handler, "POST", "/search/query", body)[0] == 400


# --- GET /search/status -----------------------------------------------------------------------------------------


def test_status_with_nothing(handler: ModuleType) -> None:
    assert call(handler, "GET", "/search/status")[:2] == (
        200,
        {"total_instances": 0, "ready_instances": 0, "busy_instances": 0, "launching_instances": 0, "instances": []},
    )


def test_status_counts_and_shows_the_live_instances(handler: ModuleType, store: SearchStore) -> None:
    old = SearchInstance(launch_id="s-20270115070000-00000000", volume_id=VOLUME, created_at=NOW - 3600)
    store.create(old)
    store.end(old.launch_id, SearchStatus.TERMINATED, EndReason.IDLE, NOW - 1800)
    record = holding(store, SearchStatus.BUSY, current_requests=2, last_used=NOW - 60, health_failures=1)

    status, answer, _ = call(handler, "GET", "/search/status")

    assert status == 200
    assert answer == {
        "total_instances": 1,
        "ready_instances": 1,
        "busy_instances": 1,
        "launching_instances": 0,
        "instances": [expected_view(record, last_used="2027-01-15T07:59:00Z", health_failures=1)],
    }


def test_status_counts_a_launch_in_progress(handler: ModuleType, store: SearchStore) -> None:
    holding(store, SearchStatus.LAUNCHING)
    _, answer, _ = call(handler, "GET", "/search/status")
    assert (answer["total_instances"], answer["ready_instances"], answer["launching_instances"]) == (1, 0, 1)
    assert answer["instances"][0]["instance_id"] is None and answer["instances"][0]["status"] == "launching"


# --- POST /search/scale-up --------------------------------------------------------------------------------------


def test_scale_up_launches_the_instance(handler: ModuleType, store: SearchStore, launcher_arn: str) -> None:
    status, answer, _ = call(handler, "POST", "/search/scale-up", query={"count": "1"})

    assert status == 200, answer
    (launched,) = answer["launched_instances"]
    launch_id = launched["launch_id"]
    assert answer == {
        "message": "Instance launched successfully",
        "launched_instances": [launched],
        "total_instances": 1,
    }
    assert launched["status"] == "launching" and launched["instance_id"] is None
    assert executions(launcher_arn) == {
        launch_id: {"status": "RUNNING", "input": {"launch_id": launch_id, "use_spot": True}}
    }
    assert store.slot().launch_id == launch_id


def test_scale_up_without_count_is_one(handler: ModuleType) -> None:
    assert call(handler, "POST", "/search/scale-up")[0] == 200


def test_scale_up_while_a_launch_is_in_progress_is_the_409_listing_it(
    handler: ModuleType, store: SearchStore, launcher_arn: str
) -> None:
    _, first, _ = call(handler, "POST", "/search/scale-up")
    status, answer, _ = call(handler, "POST", "/search/scale-up")
    assert status == 409
    assert answer == {
        "error": "Cannot scale up: instance launch already in progress",
        "launching_instances": first["launched_instances"],
        "all_instances": first["launched_instances"],
        "total_instances": 1,
    }
    assert len(executions(launcher_arn)) == 1


def test_scale_up_while_starting_is_the_launch_in_progress_409(handler: ModuleType, store: SearchStore) -> None:
    record = holding(store, SearchStatus.STARTING)
    status, answer, _ = call(handler, "POST", "/search/scale-up")
    assert status == 409
    assert answer["error"] == "Cannot scale up: instance launch already in progress"
    assert answer["launching_instances"] == answer["all_instances"] == [expected_view(record)]


@pytest.mark.parametrize("held_by", [SearchStatus.READY, SearchStatus.IDLE, SearchStatus.BUSY, SearchStatus.FAILED])
def test_scale_up_with_an_instance_there_is_the_409_listing_it(
    handler: ModuleType, store: SearchStore, launcher_arn: str, held_by: SearchStatus
) -> None:
    record = holding(store, held_by)
    status, answer, _ = call(handler, "POST", "/search/scale-up", query={"count": "1"})
    assert status == 409
    assert answer == {
        "error": "Cannot scale up: already have an instance",
        "existing_instances": [expected_view(record)],
        "total_instances": 1,
    }
    assert executions(launcher_arn) == {}


@pytest.mark.parametrize("count", ["2", "0", "-1"])
def test_scale_up_of_another_count_is_a_400_one_per_volume(handler: ModuleType, launcher_arn: str, count: str) -> None:
    status, answer, _ = call(handler, "POST", "/search/scale-up", query={"count": count})
    assert status == 400
    assert "one instance per volume" in answer["message"]
    assert executions(launcher_arn) == {}


def test_a_count_that_is_no_number_is_a_400(handler: ModuleType) -> None:
    status, answer, _ = call(handler, "POST", "/search/scale-up", query={"count": "two"})
    assert status == 400 and answer["details"][0]["field"].endswith("count")


def test_twenty_concurrent_scale_ups_launch_one_instance(handler: ModuleType, launcher_arn: str) -> None:
    with atomic_items(), ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: call(handler, "POST", "/search/scale-up"), range(20)))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] + [409] * 19
    assert {body["error"] for status, body, _ in answers if status == 409} <= {
        "Cannot scale up: instance launch already in progress"
    }
    (launch_id,) = executions(launcher_arn)
    (winner,) = [body for status, body, _ in answers if status == 200]
    assert winner["launched_instances"][0]["launch_id"] == launch_id


# --- POST /search/scale-down ------------------------------------------------------------------------------------


def test_scale_down_terminates_the_instance_and_frees_the_slot(handler: ModuleType, store: SearchStore) -> None:
    instance_id = search_instance()
    holding(store, SearchStatus.IDLE, instance_id=instance_id)

    status, answer, _ = call(handler, "POST", "/search/scale-down", query={"count": "1"})

    assert (status, answer) == (
        200,
        {"message": "Service shut down", "terminated_instances": [instance_id], "total_instances": 0},
    )
    record = store.get(LAUNCH)
    assert record is not None and (record.status, record.reason) == (SearchStatus.TERMINATING, EndReason.SCALE_DOWN)
    assert store.slot().launch_id is None
    assert ec2_state(instance_id) in ("shutting-down", "terminated")


def test_scale_down_with_nothing_running(handler: ModuleType) -> None:
    assert call(handler, "POST", "/search/scale-down")[:2] == (
        200,
        {"message": "Service shut down", "terminated_instances": [], "total_instances": 0},
    )


def test_scale_down_during_a_launch_ends_it_before_it_has_an_instance(handler: ModuleType, store: SearchStore) -> None:
    holding(store, SearchStatus.LAUNCHING)
    status, answer, _ = call(handler, "POST", "/search/scale-down")
    assert (status, answer["terminated_instances"]) == (200, [])
    assert store.get(LAUNCH).status == SearchStatus.TERMINATING  # type: ignore[union-attr]
    assert store.slot().launch_id is None


def test_scale_down_while_busy_is_a_409_and_changes_nothing(handler: ModuleType, store: SearchStore) -> None:
    instance_id = search_instance()
    holding(store, SearchStatus.BUSY, instance_id=instance_id, current_requests=1)
    status, answer, _ = call(handler, "POST", "/search/scale-down")
    assert (status, answer) == (409, {"error": "Cannot terminate: instance is busy", "total_instances": 1})
    assert store.get(LAUNCH).status == SearchStatus.BUSY  # type: ignore[union-attr]
    assert store.slot().launch_id == LAUNCH
    assert ec2_state(instance_id) == "running"


def test_scale_down_of_another_count_is_a_400(handler: ModuleType) -> None:
    status, answer, _ = call(handler, "POST", "/search/scale-down", query={"count": "2"})
    assert status == 400 and "one instance per volume" in answer["message"]


def test_a_query_after_scale_down_launches_again(handler: ModuleType, store: SearchStore, launcher_arn: str) -> None:
    holding(store, SearchStatus.IDLE)
    call(handler, "POST", "/search/scale-down")
    status, answer, _ = call(handler, "POST", "/search/query", {"query": "volumes"})
    assert (status, answer["status"]) == (503, "launching")
    assert len(executions(launcher_arn)) == 1


# --- DELETE /search/instances/{instance_id} -----------------------------------------------------------------------


def test_delete_terminates_our_instance(handler: ModuleType, store: SearchStore) -> None:
    instance_id = search_instance()
    holding(store, SearchStatus.READY, instance_id=instance_id)

    status, answer, _ = call(handler, "DELETE", f"/search/instances/{instance_id}")

    assert (status, answer) == (
        200,
        {"message": "Instance termination started", "instance_id": instance_id, "status": "terminating"},
    )
    record = store.get(LAUNCH)
    assert record is not None and (record.status, record.reason) == (SearchStatus.TERMINATING, EndReason.DELETED)
    assert store.slot().launch_id is None
    assert ec2_state(instance_id) in ("shutting-down", "terminated")
    # Asked again: the same answer.
    assert call(handler, "DELETE", f"/search/instances/{instance_id}")[:2] == (200, answer)


def test_delete_of_a_tagged_instance_no_record_knows_terminates_it(handler: ModuleType) -> None:
    instance_id = search_instance()
    status, answer, _ = call(handler, "DELETE", f"/search/instances/{instance_id}")
    assert (status, answer["status"]) == (200, "terminating")
    assert ec2_state(instance_id) in ("shutting-down", "terminated")


def test_delete_of_an_instance_that_is_not_ours_is_a_404(handler: ModuleType) -> None:
    other_volume = search_instance("vol-0123456789abcdef0")
    for instance_id in (other_volume, "i-0fffffffffffffff0"):
        status, answer, _ = call(handler, "DELETE", f"/search/instances/{instance_id}")
        assert status == 404, answer
        assert instance_id in answer["message"]
    assert ec2_state(other_volume) == "running"


def test_delete_while_busy_is_a_409(handler: ModuleType, store: SearchStore) -> None:
    instance_id = search_instance()
    holding(store, SearchStatus.BUSY, instance_id=instance_id, current_requests=3)
    status, answer, _ = call(handler, "DELETE", f"/search/instances/{instance_id}")
    assert (status, answer) == (409, {"error": "Cannot terminate: instance is busy", "total_instances": 1})
    assert ec2_state(instance_id) == "running"


def test_delete_of_a_malformed_id_is_a_400(handler: ModuleType) -> None:
    assert call(handler, "DELETE", "/search/instances/not-an-instance")[0] == 400


# --- the OpenAPI document -----------------------------------------------------------------------------------------


def test_the_openapi_document_describes_every_route_and_answer(handler: ModuleType) -> None:
    schema = handler.app.get_openapi_schema().model_dump(mode="json", by_alias=True, exclude_none=True)
    paths = schema["paths"]

    def answer(path: str, method: str, code: str) -> Any:
        return paths[path][method]["responses"][code]["content"]["application/json"]["schema"]

    assert answer("/search/query", "post", "200") == {"$ref": "#/components/schemas/QueryAnswer"}
    assert answer("/search/query", "post", "503") == {"$ref": "#/components/schemas/SearchUnavailable"}
    assert "Retry-After" in paths["/search/query"]["post"]["responses"]["503"]["headers"]
    assert answer("/search/status", "get", "200") == {"$ref": "#/components/schemas/SearchStatusView"}
    assert answer("/search/scale-up", "post", "200") == {"$ref": "#/components/schemas/ScaleUpAnswer"}
    assert answer("/search/scale-up", "post", "409") == {"$ref": "#/components/schemas/ScaleUpConflict"}
    assert answer("/search/scale-down", "post", "200") == {"$ref": "#/components/schemas/ScaleDownAnswer"}
    assert answer("/search/scale-down", "post", "409") == {"$ref": "#/components/schemas/BusyConflict"}
    assert answer("/search/instances/{instance_id}", "delete", "200") == {
        "$ref": "#/components/schemas/TerminateAnswer"
    }
    assert answer("/search/instances/{instance_id}", "delete", "409") == {"$ref": "#/components/schemas/BusyConflict"}

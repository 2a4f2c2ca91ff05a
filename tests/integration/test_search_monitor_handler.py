"""The search monitor through its Lambda entry point, against the search table (us-east-1), the launcher state
machine (us-east-1) and EC2 of the search region (us-west-2) in moto: the sweep (health, three misses and the
replacement, idleness, maximum runtime, stale launches, instances gone, terminations finished, the reconciliation)
and the spot interruption warnings the search region forwards (twice, foreign, of other kinds).

The router (a Lambda in the search VPC moto cannot run) is a stand-in whose answer is set per private address.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError

from spothub_core.consumers import Target, consumed_by
from spothub_core.contracts import MANAGED_BY, SEARCH_SERVICE, AwsEvent, InstanceTag, SearchTag
from spothub_core.dal.search_store import SearchStore, launch_key
from spothub_core.errors import DependencyUnavailable
from spothub_core.models.search_records import EndReason, SearchInstance, SearchStatus
from spothub_core.models.search_tasks import RouterResponse
from spothub_core.timings import SEARCH_HEALTH_TIMEOUT_SECONDS, SEARCH_STALE_LAUNCH_SECONDS
from tests.integration.conftest import (
    ACCOUNT,
    HUB_ENVIRONMENT,
    create_state_machine,
    eventbridge_event,
    executions,
    load_handler,
    set_environment,
)
from tests.integration.search_fixtures import SEARCH_TABLE, create_search_table
from tests.lambda_events import FakeLambdaContext

NOW = 1_800_000_000.0
SEARCH_REGION = "us-west-2"
VOLUME = "vol-0dec0de5eadc0ffee"
PORT = 8000
IDLE_TIMEOUT = 1800
MAX_RUNTIME = 3600
ROUTER_ARN = f"arn:aws:lambda:{SEARCH_REGION}:{ACCOUNT}:function:spothub-search-router"
INTERRUPTION = str(AwsEvent.SPOT_INTERRUPTION_WARNING)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Router:
    """The search router: every address serves unless told otherwise; `failing` makes the router itself fail."""

    def __init__(self) -> None:
        self.serving: dict[str, bool] = {}
        self.failing: set[str] = set()
        self.asked: list[tuple[str, int, str, float]] = []

    def health(self, address: str, port: int, path: str, timeout_s: float) -> RouterResponse:
        self.asked.append((address, port, path, timeout_s))
        if address in self.failing:
            raise DependencyUnavailable("the search router failed: Task timed out")
        if self.serving.get(address, True):
            return RouterResponse(ok=True, status_code=200, body={"status": "ok", "documents": 12}, elapsed_ms=3.0)
        return RouterResponse(ok=False, elapsed_ms=5000.0, error="timed out")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def router() -> Router:
    return Router()


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch, clock: Clock, router: Router) -> Iterator[ModuleType]:
    set_environment(
        monkeypatch,
        {
            **HUB_ENVIRONMENT,
            "POWERTOOLS_SERVICE_NAME": "spothub-search-monitor",
            "SPOTHUB_SEARCH_TABLE": SEARCH_TABLE,
            "SPOTHUB_SEARCH_REGION": SEARCH_REGION,
            "SPOTHUB_SEARCH_VOLUME_ID": VOLUME,
            "SPOTHUB_SEARCH_ROUTER_ARN": ROUTER_ARN,
            "SPOTHUB_SEARCH_HOST_PARAMETER": "/spothub/spothub/search-host",
            "SPOTHUB_SEARCH_PORT": str(PORT),
            "SPOTHUB_SEARCH_INSTANCE_TYPE": "g5.xlarge",
            "SPOTHUB_SEARCH_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
            "SPOTHUB_SEARCH_MAX_RUNTIME": str(MAX_RUNTIME),
            "SPOTHUB_SEARCH_HEALTH_INTERVAL": "60",
        },
    )
    with mock_aws():
        create_search_table()
        monkeypatch.setenv("SPOTHUB_SEARCH_LAUNCHER_ARN", create_state_machine("spothub-search-launcher"))
        module = load_handler("search_monitor.handler")
        monkeypatch.setattr(module, "time", SimpleNamespace(time=clock))
        monkeypatch.setattr(module, "services", dataclasses.replace(module.services, router=router))
        yield module


@pytest.fixture
def store(handler: ModuleType) -> SearchStore:
    return SearchStore(boto3.resource("dynamodb", region_name="us-east-1").Table(SEARCH_TABLE))


# --- helpers -------------------------------------------------------------------------------------------------


def ec2() -> Any:
    return boto3.client("ec2", region_name=SEARCH_REGION)


def run_instance(launch_id: str | None = None, volume_id: str = VOLUME) -> SimpleNamespace:
    """A search instance in EC2, tagged as the launcher tags it; its id and private address."""
    tags = [
        {"Key": SearchTag.NAME, "Value": "semantic-search-20270115-080000"},
        {"Key": SearchTag.SERVICE, "Value": SEARCH_SERVICE},
        {"Key": SearchTag.MANAGED_BY, "Value": MANAGED_BY},
        {"Key": SearchTag.VOLUME, "Value": volume_id},
        {"Key": InstanceTag.PREFIX, "Value": "spothub"},
    ]
    if launch_id:
        tags.append({"Key": InstanceTag.LAUNCH, "Value": launch_id})
    instance = ec2().run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        InstanceType="g5.xlarge",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]
    return SimpleNamespace(id=instance["InstanceId"], ip=instance["PrivateIpAddress"])


def state(instance_id: str) -> str:
    reservations = ec2().describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservations[0]["Instances"][0]["State"]["Name"]


def launch_time(instance_id: str) -> float:
    reservations = ec2().describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservations[0]["Instances"][0]["LaunchTime"].timestamp()


def holding(
    store: SearchStore,
    status: SearchStatus = SearchStatus.IDLE,
    *,
    launch_id: str = "s-20270115080000-0000aaaa",
    instance: SimpleNamespace | None = None,
    claim: bool = True,
    **fields: Any,
) -> SearchInstance:
    """A launch record holding the slot (its instance running in EC2, unless `instance_id` is given)."""
    if instance is None and "instance_id" not in fields and status != SearchStatus.LAUNCHING:
        instance = run_instance(launch_id)
    defaults: dict[str, Any] = {
        "created_at": NOW - 900,
        "started_at": NOW - 840,
        "ready_at": NOW - 600,
        "last_used": NOW - 60,
        "capacity_type": "spot",
        "instance_type": "g5.xlarge",
    }
    if instance is not None:
        defaults.update(instance_id=instance.id, private_ip=instance.ip)
    record = SearchInstance(launch_id=launch_id, status=status, volume_id=VOLUME, **{**defaults, **fields})
    assert store.create(record)
    if claim:
        assert store.claim_slot(launch_id, record.created_at)
    return record


def sweep(handler: ModuleType) -> dict[str, Any]:
    return handler.lambda_handler({"action": "sweep"}, FakeLambdaContext())


def warn(handler: ModuleType, instance_id: str, event_id: str = "warning-1") -> str:
    detail = {"instance-id": instance_id, "instance-action": "terminate"}
    event = eventbridge_event("aws.ec2", INTERRUPTION, detail, region=SEARCH_REGION, event_id=event_id)
    return str(handler.lambda_handler(event, FakeLambdaContext())["outcome"])


def launches(handler: ModuleType) -> dict[str, dict[str, Any]]:
    return executions(handler.services.launcher.state_machine_arn)


def get(store: SearchStore, launch_id: str) -> SearchInstance:
    record = store.get(launch_id)
    assert record is not None
    return record


# --- wiring ----------------------------------------------------------------------------------------------------


def test_every_kind_the_monitor_consumes_has_a_consumer_registered(handler: ModuleType) -> None:
    assert handler.dispatch.unregistered() == []
    assert set(handler.dispatch.entries) == set(consumed_by(Target.SEARCH_MONITOR))


def test_the_clients_of_the_search_region_and_the_hub(handler: ModuleType) -> None:
    services = load_handler("search_monitor.handler").services  # as built at a cold start, the router included
    assert services.router._lambda.meta.region_name == SEARCH_REGION
    assert services.router._function_arn == ROUTER_ARN
    assert services.instances._ec2.meta.region_name == SEARCH_REGION
    assert services.launcher.sfn.meta.region_name == "us-east-1"
    assert (services.launcher.volume_id, services.launcher.use_spot) == (VOLUME, True)
    assert (services.limits.idle_timeout_s, services.limits.max_runtime_s) == (IDLE_TIMEOUT, MAX_RUNTIME)
    assert (services.port, services.health_path) == (PORT, "/health")


def test_an_event_of_another_kind_is_ignored(handler: ModuleType) -> None:
    event = eventbridge_event("aws.ec2", "EC2 Instance Rebalance Recommendation", {"instance-id": "i-0abc"})
    assert handler.lambda_handler(event, FakeLambdaContext()) == {"outcome": "ignored: unknown kind"}


def test_an_unknown_action_or_field_is_refused(handler: ModuleType) -> None:
    with pytest.raises(ValidationError):
        handler.lambda_handler({"action": "sweep-all"}, FakeLambdaContext())
    with pytest.raises(ValidationError, match="everything"):
        handler.lambda_handler({"action": "sweep", "everything": True}, FakeLambdaContext())


def test_a_scheduled_event_sweeps(handler: ModuleType, store: SearchStore, router: Router) -> None:
    record = holding(store)
    event = eventbridge_event("aws.events", "Scheduled Event", {})
    summary = handler.lambda_handler(event, FakeLambdaContext())
    assert (summary["records"], summary["healthy"], summary["errors"]) == (1, 1, 0)
    assert router.asked == [(record.private_ip, PORT, "/health", SEARCH_HEALTH_TIMEOUT_SECONDS)]


def test_an_empty_table_sweeps_to_nothing(handler: ModuleType) -> None:
    summary = sweep(handler)
    assert summary["records"] == 0 and summary["errors"] == 0 and summary["adopted"] == []


# --- health --------------------------------------------------------------------------------------------------------


def test_a_health_check_passed_resets_the_misses(handler: ModuleType, store: SearchStore) -> None:
    record = holding(store, health_failures=2, error="timed out")
    summary = sweep(handler)
    assert summary["healthy"] == 1 and summary["failed"] == []
    checked = get(store, record.launch_id)
    assert (checked.status, checked.health_failures, checked.error, checked.last_health_at) == (
        SearchStatus.IDLE,
        0,
        None,
        NOW,
    )


def test_three_misses_fail_the_instance_and_replace_it(
    handler: ModuleType, store: SearchStore, router: Router, clock: Clock
) -> None:
    record = holding(store, SearchStatus.READY)
    router.serving[record.private_ip] = False
    for misses in (1, 2):
        assert sweep(handler)["missed"] == 1
        checked = get(store, record.launch_id)
        assert (checked.status, checked.health_failures, checked.error) == (SearchStatus.READY, misses, "timed out")
        clock.now += 60
    assert launches(handler) == {}

    summary = sweep(handler)
    assert summary["failed"] == [record.launch_id]
    (replacement_id,) = summary["replacements"]
    old = get(store, record.launch_id)
    assert (old.status, old.reason, old.health_failures) == (SearchStatus.TERMINATING, EndReason.UNHEALTHY, 3)
    assert state(record.instance_id) in ("shutting-down", "terminated")
    replacement = get(store, replacement_id)
    assert (replacement.status, replacement.replaces) == (SearchStatus.LAUNCHING, record.launch_id)
    assert store.slot().launch_id == replacement_id  # handed over, never free
    assert launches(handler) == {
        replacement_id: {"status": "RUNNING", "input": {"launch_id": replacement_id, "use_spot": True}}
    }

    # The next sweep finishes the old record's termination and leaves the replacement to its launcher.
    clock.now += 60
    summary = sweep(handler)
    assert summary["terminated"] == [record.launch_id] and summary["replacements"] == []
    assert get(store, record.launch_id).status == SearchStatus.TERMINATED
    assert store.slot().launch_id == replacement_id
    assert list(launches(handler)) == [replacement_id]


def test_a_router_that_fails_counts_no_miss_and_stops_no_other_record(
    handler: ModuleType, store: SearchStore, router: Router
) -> None:
    ending = holding(store, SearchStatus.TERMINATING, launch_id="s-20270115070000-0000bbbb", claim=False)
    ec2().terminate_instances(InstanceIds=[ending.instance_id])
    record = holding(store)
    router.failing.add(record.private_ip)
    summary = sweep(handler)
    assert summary["errors"] == 1
    assert summary["terminated"] == [ending.launch_id]
    assert get(store, record.launch_id).health_failures == 0
    assert get(store, ending.launch_id).status == SearchStatus.TERMINATED


def test_a_failed_record_left_by_a_cut_short_replacement_is_replaced(handler: ModuleType, store: SearchStore) -> None:
    record = holding(store, SearchStatus.FAILED, reason=EndReason.UNHEALTHY, health_failures=3)
    summary = sweep(handler)
    (replacement_id,) = summary["replacements"]
    assert store.slot().launch_id == replacement_id
    assert get(store, record.launch_id).status == SearchStatus.TERMINATING
    assert state(record.instance_id) in ("shutting-down", "terminated")


# --- idleness and maximum runtime --------------------------------------------------------------------------------


def test_an_idle_instance_is_terminated_and_its_slot_released_without_relaunch(
    handler: ModuleType, store: SearchStore, router: Router, clock: Clock
) -> None:
    record = holding(store, last_used=NOW - IDLE_TIMEOUT)
    summary = sweep(handler)
    assert summary["retired_idle"] == [record.launch_id]
    ended = get(store, record.launch_id)
    assert (ended.status, ended.reason, ended.ended_at) == (SearchStatus.TERMINATING, EndReason.IDLE, NOW)
    assert store.slot().launch_id is None
    assert state(record.instance_id) in ("shutting-down", "terminated")
    assert launches(handler) == {}
    assert router.asked == []  # retired, not checked

    clock.now += 60
    assert sweep(handler)["terminated"] == [record.launch_id]
    assert get(store, record.launch_id).status == SearchStatus.TERMINATED
    assert store.live() == [] and launches(handler) == {}


def test_a_never_queried_instance_is_idle_from_its_readiness(handler: ModuleType, store: SearchStore) -> None:
    record = holding(store, SearchStatus.READY, last_used=None, ready_at=NOW - IDLE_TIMEOUT - 1)
    assert sweep(handler)["retired_idle"] == [record.launch_id]


def test_an_instance_used_lately_is_not_idle(handler: ModuleType, store: SearchStore) -> None:
    record = holding(store, last_used=NOW - IDLE_TIMEOUT + 1)
    assert sweep(handler)["retired_idle"] == []
    assert get(store, record.launch_id).status == SearchStatus.IDLE


def test_a_busy_instance_is_not_retired_by_idleness(handler: ModuleType, store: SearchStore, router: Router) -> None:
    record = holding(store, SearchStatus.BUSY, current_requests=1, last_used=NOW - 10 * IDLE_TIMEOUT)
    summary = sweep(handler)
    assert summary["retired_idle"] == [] and summary["healthy"] == 1
    assert get(store, record.launch_id).status == SearchStatus.BUSY
    assert store.slot().launch_id == record.launch_id
    assert state(record.instance_id) == "running"


def test_an_instance_past_its_maximum_runtime_is_terminated_without_relaunch(
    handler: ModuleType, store: SearchStore
) -> None:
    record = holding(store, started_at=NOW - MAX_RUNTIME, last_used=NOW - 5)
    summary = sweep(handler)
    assert summary["retired_max_runtime"] == [record.launch_id] and summary["retired_idle"] == []
    ended = get(store, record.launch_id)
    assert (ended.status, ended.reason) == (SearchStatus.TERMINATING, EndReason.MAX_RUNTIME)
    assert store.slot().launch_id is None
    assert state(record.instance_id) in ("shutting-down", "terminated")
    assert launches(handler) == {}


def test_a_busy_instance_past_its_maximum_runtime_waits_for_its_queries(
    handler: ModuleType, store: SearchStore
) -> None:
    record = holding(store, SearchStatus.BUSY, current_requests=2, started_at=NOW - 2 * MAX_RUNTIME)
    assert sweep(handler)["retired_max_runtime"] == []
    assert get(store, record.launch_id).status == SearchStatus.BUSY
    assert state(record.instance_id) == "running"


# --- EC2's view: gone, stale launches, terminations ----------------------------------------------------------------


def test_a_record_whose_instance_is_gone_is_terminated_and_its_slot_released(
    handler: ModuleType, store: SearchStore
) -> None:
    record = holding(store, instance_id="i-0000000000000dead", private_ip="10.0.0.9")
    summary = sweep(handler)
    assert summary["gone"] == [record.launch_id]
    ended = get(store, record.launch_id)
    assert (ended.status, ended.reason) == (SearchStatus.TERMINATED, EndReason.GONE)
    item = (
        boto3.resource("dynamodb", region_name="us-east-1")
        .Table(SEARCH_TABLE)
        .get_item(Key=launch_key(record.launch_id))
    )
    assert item["Item"]["expires_at"] > NOW  # kept for the history, then expires
    assert store.slot().launch_id is None
    assert launches(handler) == {}


def test_an_instance_terminated_outside_spothub_is_gone(handler: ModuleType, store: SearchStore) -> None:
    record = holding(store)
    ec2().terminate_instances(InstanceIds=[record.instance_id])
    assert sweep(handler)["gone"] == [record.launch_id]
    assert get(store, record.launch_id).status == SearchStatus.TERMINATED
    assert store.slot().launch_id is None


def test_a_just_launched_instance_ec2_does_not_list_yet_is_not_gone(handler: ModuleType, store: SearchStore) -> None:
    record = holding(store, SearchStatus.STARTING, instance_id="i-0000000000000beef", started_at=NOW - 5, ready_at=None)
    assert sweep(handler)["gone"] == []
    assert get(store, record.launch_id).status == SearchStatus.STARTING


def test_a_stale_launch_without_an_instance_is_ended_and_its_slot_released(
    handler: ModuleType, store: SearchStore
) -> None:
    record = holding(
        store,
        SearchStatus.LAUNCHING,
        created_at=NOW - SEARCH_STALE_LAUNCH_SECONDS,
        started_at=None,
        ready_at=None,
        last_used=None,
    )
    summary = sweep(handler)
    assert summary["stale"] == [record.launch_id]
    ended = get(store, record.launch_id)
    assert (ended.status, ended.reason) == (SearchStatus.TERMINATED, EndReason.LAUNCH_FAILED)
    assert "launching" in (ended.error or "")
    assert store.slot().launch_id is None
    assert launches(handler) == {}


def test_a_stale_start_is_ended_and_its_instance_terminated(handler: ModuleType, store: SearchStore) -> None:
    record = holding(store, SearchStatus.STARTING, created_at=NOW - SEARCH_STALE_LAUNCH_SECONDS - 1, ready_at=None)
    assert sweep(handler)["stale"] == [record.launch_id]
    ended = get(store, record.launch_id)
    assert (ended.status, ended.reason) == (SearchStatus.TERMINATING, EndReason.LAUNCH_FAILED)
    assert state(record.instance_id) in ("shutting-down", "terminated")
    assert store.slot().launch_id is None


def test_a_launch_in_progress_is_left_to_its_launcher(handler: ModuleType, store: SearchStore) -> None:
    record = holding(store, SearchStatus.LAUNCHING, created_at=NOW - 60, started_at=None, ready_at=None)
    summary = sweep(handler)
    assert summary["stale"] == [] and summary["gone"] == []
    assert get(store, record.launch_id).status == SearchStatus.LAUNCHING
    assert store.slot().launch_id == record.launch_id


def test_a_termination_cut_short_is_done_again(handler: ModuleType, store: SearchStore, clock: Clock) -> None:
    record = holding(store, SearchStatus.TERMINATING, reason=EndReason.SCALE_DOWN)
    summary = sweep(handler)
    assert summary["terminated"] == []  # EC2 is asked again; the record waits for it
    assert state(record.instance_id) in ("shutting-down", "terminated")
    assert store.slot().launch_id is None
    clock.now += 60
    assert sweep(handler)["terminated"] == [record.launch_id]
    ended = get(store, record.launch_id)
    assert (ended.status, ended.reason) == (SearchStatus.TERMINATED, EndReason.SCALE_DOWN)


def test_an_abandoned_slot_is_released_after_a_grace(handler: ModuleType, store: SearchStore, clock: Clock) -> None:
    assert store.claim_slot("s-20270115080000-0000dead", NOW - 30)
    assert sweep(handler)["slot_released"] is None  # its record may be on its way
    clock.now += 30
    assert sweep(handler)["slot_released"] == "s-20270115080000-0000dead"
    assert store.slot().launch_id is None


# --- reconciliation -------------------------------------------------------------------------------------------


def test_a_healthy_tagged_instance_no_record_knows_is_adopted(
    handler: ModuleType, store: SearchStore, clock: Clock
) -> None:
    stranger = run_instance()
    other_volume = run_instance(volume_id="vol-0123456789abcdef0")
    launched = launch_time(stranger.id)
    clock.now = launched + 120  # moto stamps the launch with the real time
    summary = sweep(handler)
    assert summary["adopted"] == [stranger.id]
    (adopted,) = store.live()
    assert (adopted.instance_id, adopted.status, adopted.adopted, adopted.private_ip) == (
        stranger.id,
        SearchStatus.READY,
        True,
        stranger.ip,
    )
    assert (adopted.volume_id, adopted.instance_type, adopted.ready_at) == (VOLUME, "g5.xlarge", clock.now)
    assert adopted.started_at == pytest.approx(launched)  # its maximum runtime counts from its real launch
    assert store.slot().launch_id == adopted.launch_id
    assert state(other_volume.id) == "running" and store.by_instance(other_volume.id) is None
    # Known from now on: the next sweep checks its health and adopts nothing more.
    clock.now += 60
    summary = sweep(handler)
    assert (summary["adopted"], summary["healthy"]) == ([], 1)
    assert launches(handler) == {}


def test_a_tagged_instance_that_does_not_serve_is_not_adopted(
    handler: ModuleType, store: SearchStore, router: Router
) -> None:
    stranger = run_instance()
    router.serving[stranger.ip] = False
    assert sweep(handler)["adopted"] == []
    assert store.all() == [] and store.slot().launch_id is None
    assert state(stranger.id) == "running"


def test_a_tagged_instance_is_not_adopted_while_another_launch_holds_the_slot(
    handler: ModuleType, store: SearchStore
) -> None:
    record = holding(store)
    stranger = run_instance()
    summary = sweep(handler)
    assert summary["adopted"] == [] and summary["orphans_terminated"] == []
    assert [r.launch_id for r in store.live()] == [record.launch_id]
    assert store.slot().launch_id == record.launch_id
    assert state(stranger.id) == "running"


def test_an_instance_of_a_launch_that_gave_it_up_is_terminated(handler: ModuleType, store: SearchStore) -> None:
    record = holding(store, SearchStatus.LAUNCHING, created_at=NOW - 60, started_at=None, ready_at=None)
    being_recorded = run_instance(record.launch_id)
    assert sweep(handler)["orphans_terminated"] == []  # its launch is recording it
    store.end(record.launch_id, SearchStatus.TERMINATED, EndReason.LAUNCH_FAILED, NOW)
    assert sweep(handler)["orphans_terminated"] == [being_recorded.id]
    assert state(being_recorded.id) in ("shutting-down", "terminated")


# --- interruption warnings ---------------------------------------------------------------------------------------


def test_an_interruption_warning_replaces_the_instance_once(handler: ModuleType, store: SearchStore) -> None:
    record = holding(store, SearchStatus.BUSY, current_requests=1)
    outcome = warn(handler, record.instance_id)
    old = get(store, record.launch_id)
    assert (old.status, old.reason) == (SearchStatus.TERMINATING, EndReason.INTERRUPTED)
    assert state(record.instance_id) in ("shutting-down", "terminated")
    (replacement_id,) = launches(handler)
    assert outcome == f"{record.launch_id} interrupted; replaced by {replacement_id}"
    assert store.slot().launch_id == replacement_id
    assert get(store, replacement_id).replaces == record.launch_id

    # Delivered again: the record has ended; nothing more is launched or moved.
    assert warn(handler, record.instance_id) == f"ignored: {record.launch_id} is terminating already"
    assert list(launches(handler)) == [replacement_id]
    assert store.slot().launch_id == replacement_id
    assert get(store, record.launch_id).status == SearchStatus.TERMINATING


def test_an_interruption_warning_after_the_record_ended_does_nothing(handler: ModuleType, store: SearchStore) -> None:
    record = holding(store, SearchStatus.TERMINATED, claim=False, reason=EndReason.IDLE)
    assert warn(handler, record.instance_id) == f"ignored: {record.launch_id} is terminated already"
    assert launches(handler) == {} and store.slot().launch_id is None


def test_an_interruption_warning_for_a_foreign_instance_is_a_no_op(handler: ModuleType, store: SearchStore) -> None:
    record = holding(store)
    stranger = ec2().run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="m5.large")
    foreign = stranger["Instances"][0]["InstanceId"]
    assert warn(handler, foreign) == "ignored: not the search instance"
    assert state(foreign) == "running" and state(record.instance_id) == "running"
    assert launches(handler) == {} and store.slot().launch_id == record.launch_id
    assert get(store, record.launch_id).status == SearchStatus.IDLE


def test_an_interruption_warning_without_an_instance_id_is_refused(handler: ModuleType) -> None:
    event = eventbridge_event("aws.ec2", INTERRUPTION, {"instance-action": "terminate"})
    with pytest.raises(ValidationError):
        handler.lambda_handler(event, FakeLambdaContext())

"""The capacity handler through its Lambda entry point: the orchestrator's actions and the reports that come
back on the hub bus, with DynamoDB, Step Functions, EventBridge, SSM and Route 53 in moto.

moto accepts any task token and keeps no trace of the answer, so the Step Functions calls the handler makes
are recorded at the client (they still reach moto); the commands it puts on the hub bus are caught by a
rule on that bus. The clock is the handler's `time`, fixed per test.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError

from spothub_core.consumers import Target, consumed_by
from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.dal.provisioning import LAUNCH, TEARDOWN, ProvisioningStore
from spothub_core.errors import DependencyUnavailable, Superseded
from spothub_core.logic.worker_reports import dispatch
from spothub_core.models.records import ReplicaStatus
from spothub_core.timings import ENDPOINT_DNS_TTL_SECONDS, QUOTA_EXCLUSION_SECONDS
from tests.integration.conftest import (
    HUB_ENVIRONMENT,
    SERVING_ENVIRONMENT,
    STATE_TABLE_KEYS,
    ApiCalls,
    BusRecorder,
    asl_actions,
    config,
    create_state_machine,
    eventbridge_event,
    executions,
    load_handler,
    set_environment,
)
from tests.lambda_events import FakeLambdaContext

STATEMACHINES = Path(__file__).resolve().parents[2] / "statemachines"

NOW = 1_700_000_000.0
REGION = "us-west-2"
OTHER_REGION = "eu-west-1"
ORCHESTRATOR = "spothub-orchestrator"
ORCHESTRATOR_ARN = f"arn:aws:states:us-east-1:123456789012:stateMachine:{ORCHESTRATOR}"
HUB_BUS = "spothub-hub"
PARAMETER = "/spothub/active-instance"
ZONE = "spothub.example.com"
ENDPOINT = f"gpu.{ZONE}"
TABLE = HUB_ENVIRONMENT["SPOTHUB_STATE_TABLE"]
WORKER = "spothub.worker"
TOKEN = "token-1"  # the orchestrator's task token for the launch
AGENT = "spothub.agent"
INSTANCE = {
    "instance_id": "i-0new",
    "instance_type": "g5.xlarge",
    "availability_zone": "us-west-2a",
    "capacity_type": "spot",
    "private_ip": "10.0.0.7",
    "public_ip": "203.0.113.7",
    "launched_at": "2023-11-14T22:10:00Z",
    "task_arn": "arn:aws:ecs:us-west-2:123456789012:task/spothub/abc",
}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> Iterator[ModuleType]:
    set_environment(
        monkeypatch,
        {
            **HUB_ENVIRONMENT,
            **SERVING_ENVIRONMENT,
            "POWERTOOLS_SERVICE_NAME": "spothub-capacity-handler",
            "SPOTHUB_HUB_BUS": HUB_BUS,
            "SPOTHUB_ORCHESTRATOR_ARN": ORCHESTRATOR_ARN,
            "SPOTHUB_ACTIVE_INSTANCE_PARAMETER": PARAMETER,
            "SPOTHUB_ENDPOINT_NAME": ENDPOINT,
            "SPOTHUB_INSTANCE_TYPES": "g5.xlarge,g6.xlarge",
        },
    )
    with mock_aws():
        boto3.client("dynamodb").create_table(TableName=TABLE, **STATE_TABLE_KEYS)
        boto3.client("events").create_event_bus(Name=HUB_BUS)
        topic = boto3.client("sns").create_topic(Name="spothub-alerts")["TopicArn"]
        monkeypatch.setenv("SPOTHUB_ALERTS_TOPIC_ARN", topic)
        create_state_machine(ORCHESTRATOR)
        zone = boto3.client("route53").create_hosted_zone(Name=ZONE, CallerReference="spothub-tests")["HostedZone"]
        monkeypatch.setenv("SPOTHUB_HOSTED_ZONE_ID", zone["Id"].split("/")[-1])
        module = load_handler("capacity_handler.handler")
        monkeypatch.setattr(module, "time", SimpleNamespace(time=clock))
        # A replacement's first ranking in-process needs EC2's placement scores, which plain moto lacks: the tests
        # that start replacements run without it (the orchestrator's FindRegion then ranks), except those of the
        # `ranking` fixture, which answers the scores.
        monkeypatch.setattr(module, "hub", dataclasses.replace(module.hub, spot_finder=None))
        yield module


@pytest.fixture
def ranking(handler: ModuleType, monkeypatch: pytest.MonkeyPatch) -> ApiCalls:
    """The handler's in-process ranking, with EC2 scoring us-west-2 9 and eu-west-1 5."""
    finder = handler.SpotFinder(
        provisioning=handler.store,
        exclusions=handler.exclusions,
        ec2_for=handler.ec2_for,
        worker_regions=[REGION, OTHER_REGION],
        default_instance_types=["g5.xlarge"],
        scoring_region="us-east-1",
        on_demand_fallback=False,
    )
    monkeypatch.setattr(handler, "hub", dataclasses.replace(handler.hub, spot_finder=finder))
    calls = ApiCalls(handler.ec2_for("us-east-1"), "GetSpotPlacementScores")
    scores = [{"Region": REGION, "Score": 9}, {"Region": OTHER_REGION, "Score": 5}]
    calls.answer("GetSpotPlacementScores", {"SpotPlacementScores": scores})
    return calls


@pytest.fixture
def sfn(handler: ModuleType) -> ApiCalls:
    """The task-token answers and execution starts the handler sends Step Functions."""
    return ApiCalls(handler.hub.sfn, "SendTaskSuccess", "SendTaskFailure", "SendTaskHeartbeat", "StartExecution")


@pytest.fixture
def bus(handler: ModuleType) -> BusRecorder:
    return BusRecorder(HUB_BUS)


@pytest.fixture
def store(handler: ModuleType) -> ProvisioningStore:
    return ProvisioningStore(boto3.resource("dynamodb").Table(TABLE))


@pytest.fixture
def exclusions(handler: ModuleType) -> ExclusionStore:
    return ExclusionStore(boto3.resource("dynamodb").Table(TABLE))


@pytest.fixture
def health(handler: ModuleType) -> InstanceHealthStore:
    return InstanceHealthStore(boto3.resource("dynamodb").Table(TABLE))


@pytest.fixture
def placing(store: ProvisioningStore) -> ProvisioningStore:
    """Provisioning enabled at generation 1, as the toggle leaves it: replica-0 being placed."""
    assert store.write_config(config(status="enabled", generation=1, replicas=1), expected_generation=0)
    assert store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW)
    return store


def act(handler: ModuleType, action: str, **fields: Any) -> dict[str, Any]:
    return handler.lambda_handler({"action": action, **fields}, FakeLambdaContext())


def deliver(
    handler: ModuleType, detail_type: str, detail: dict[str, Any], *, source: str = WORKER, region: str = REGION
) -> str:
    event = eventbridge_event(source, detail_type, {"version": "1", **detail}, region=region)
    return handler.lambda_handler(event, FakeLambdaContext())["outcome"]


EC2_NOTICES = {
    "rebalance": "EC2 Instance Rebalance Recommendation",
    "interruption": "EC2 Spot Instance Interruption Warning",
}


def ec2_notice(handler: ModuleType, kind: str, instance_id: str, region: str = REGION) -> str:
    """EC2's own spot notice, as the worker region forwards it to the hub bus."""
    event = eventbridge_event("aws.ec2", EC2_NOTICES[kind], {"instance-id": instance_id}, region=region)
    return handler.lambda_handler(event, FakeLambdaContext())["outcome"]


def dispatch_launch(handler: ModuleType, launch_id: str = "replica-0-g1-0", token: str = TOKEN) -> dict[str, Any]:
    return act(
        handler,
        "dispatch_launch",
        token=token,
        replica_id="replica-0",
        generation=1,
        region=REGION,
        capacity_type="spot",
        launch_id=launch_id,
    )


def record_instance(handler: ModuleType, **overrides: Any) -> dict[str, Any]:
    fields = {
        "replica_id": "replica-0",
        "generation": 1,
        "launch_id": "replica-0-g1-0",
        "region": REGION,
        "capacity_type": "spot",
        "instance": INSTANCE,
        "replacing": None,
        "reason": "score 9, $0.4000/h, best placement score",
        **overrides,
    }
    return act(handler, "record_instance", **fields)


def succeeded(launch_id: str = "replica-0-g1-0", instance_id: str = "i-0new") -> dict[str, Any]:
    return {"launch_id": launch_id, "region": REGION, "instance": {**INSTANCE, "instance_id": instance_id}}


def failed(error_class: str = "capacity", launch_id: str = "replica-0-g1-0") -> dict[str, Any]:
    return {
        "launch_id": launch_id,
        "region": REGION,
        "error_class": error_class,
        "code": "InsufficientInstanceCapacity",
        "message": "no g5 capacity",
    }


def endpoint_records(handler: ModuleType) -> list[dict[str, Any]]:
    """The endpoint name's A records in the hosted zone."""
    zone_id = handler.settings.hosted_zone_id
    records = boto3.client("route53").list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    return [r for r in records if r["Type"] == "A" and r["Name"].rstrip(".") == ENDPOINT]


def addresses(handler: ModuleType) -> dict[str, list[str]]:
    """What the endpoint name answers, by replica: each replica's record and its addresses."""
    return {r["SetIdentifier"]: [v["Value"] for v in r["ResourceRecords"]] for r in endpoint_records(handler)}


def commands(bus: BusRecorder, detail_type: str) -> list[dict[str, Any]]:
    return [e["detail"] for e in bus.events() if e["detail-type"] == detail_type and e["source"] == "spothub.hub"]


def excluded(exclusions: ExclusionStore) -> dict[str, float]:
    return {e.region: e.until - NOW for e in exclusions.active(NOW)}


# --- the orchestrator's actions ------------------------------------------------------------------


def test_dispatch_launch_keeps_the_token_and_puts_a_launch_command_without_it(
    handler: ModuleType, placing: ProvisioningStore, bus: BusRecorder
) -> None:
    assert dispatch_launch(handler) == {"launch_id": "replica-0-g1-0"}
    launch = placing.request(LAUNCH, "replica-0-g1-0")
    assert launch is not None
    assert (launch.status, launch.task_token, launch.region) == ("pending", "token-1", REGION)
    (event,) = bus.events()
    assert (event["source"], event["detail-type"]) == ("spothub.hub", "Spothub Launch Requested")
    assert event["detail"] == {
        "version": "1",
        "launch_id": "replica-0-g1-0",
        "replica_id": "replica-0",
        "region": REGION,
        "capacity_type": "spot",
        "zone": None,  # the orchestrator's launches go to any zone of the region
        "role": "serve",
    }
    replica = placing.replica("replica-0")
    assert replica is not None
    assert (replica.target_region, replica.launch_id) == (REGION, "replica-0-g1-0")


def test_dispatch_launch_of_an_old_generation_is_superseded_and_sends_nothing(
    handler: ModuleType, placing: ProvisioningStore, bus: BusRecorder
) -> None:
    assert placing.write_config(config(status="enabled", generation=2, replicas=1), expected_generation=1)
    with pytest.raises(Superseded) as raised:
        dispatch_launch(handler)
    assert type(raised.value).__name__ == "Superseded"  # the error name the orchestrator catches
    assert placing.request(LAUNCH, "replica-0-g1-0") is None
    assert bus.events() == []


def test_a_retried_dispatch_refreshes_the_token_until_the_launch_is_answered(
    handler: ModuleType, placing: ProvisioningStore, sfn: ApiCalls
) -> None:
    dispatch_launch(handler, token="token-1")
    dispatch_launch(handler, token="token-2")
    assert placing.request(LAUNCH, "replica-0-g1-0").task_token == "token-2"  # type: ignore[union-attr]
    deliver(handler, "Spothub Launch Succeeded", succeeded())
    assert [c["taskToken"] for c in sfn.of("SendTaskSuccess")] == ["token-2"]
    with pytest.raises(Superseded):
        dispatch_launch(handler, token="token-3")


def test_dispatch_teardown_keeps_the_token_marks_the_instance_and_puts_a_command(
    handler: ModuleType, store: ProvisioningStore, bus: BusRecorder
) -> None:
    store.put_instance("i-0old", {"region": OTHER_REGION, "status": "serving"})
    result = act(
        handler,
        "dispatch_teardown",
        token="token-t",
        teardown_id="retire-i-0old",
        region=OTHER_REGION,
        instance_id="i-0old",
        reason="replaced",
    )
    assert result == {"teardown_id": "retire-i-0old"}
    teardown = store.request(TEARDOWN, "retire-i-0old")
    assert teardown is not None
    assert (teardown.status, teardown.task_token) == ("pending", "token-t")
    assert store.instance("i-0old").status == "terminating"  # type: ignore[union-attr]
    (command,) = commands(bus, "Spothub Teardown Requested")
    assert command["teardown_id"] == "retire-i-0old"
    assert (command["region"], command["instance_id"], command["reason"]) == (OTHER_REGION, "i-0old", "replaced")
    assert "token-t" not in json.dumps(command)


def test_abandon_launch_excludes_the_region_and_cancels_the_launch_there(
    handler: ModuleType, placing: ProvisioningStore, exclusions: ExclusionStore, bus: BusRecorder
) -> None:
    dispatch_launch(handler)
    bus.events()
    result = act(handler, "abandon_launch", launch_id="replica-0-g1-0", region=REGION, cause="States.Timeout")
    assert result == {"abandoned": True}
    assert placing.request(LAUNCH, "replica-0-g1-0").status == "abandoned"  # type: ignore[union-attr]
    assert excluded(exclusions) == {REGION: 600}
    assert [e.kind for e in exclusions.active(NOW)] == ["timeout"]  # what GET /regions says of it
    (command,) = commands(bus, "Spothub Teardown Requested")
    assert (command["teardown_id"], command["launch_id"], command["region"]) == (
        "cancel-replica-0-g1-0",
        "replica-0-g1-0",
        REGION,
    )
    assert act(handler, "abandon_launch", launch_id="replica-0-g1-0", region=REGION, cause="x") == {"abandoned": False}


def test_record_instance_serves_the_replica_and_publishes_the_instance(
    handler: ModuleType, placing: ProvisioningStore
) -> None:
    assert record_instance(handler) == {"retire": None, "superseded": False}
    replica = placing.replica("replica-0")
    assert replica is not None
    assert (replica.status, replica.region, replica.instance_id) == ("serving", REGION, "i-0new")
    assert replica.reason == "score 9, $0.4000/h, best placement score"
    instance = placing.instance("i-0new")
    assert instance is not None
    assert (instance.status, instance.region, instance.replica_id) == ("serving", REGION, "replica-0")
    assert instance.public_ip == "203.0.113.7"
    parameter = json.loads(boto3.client("ssm").get_parameter(Name=PARAMETER)["Parameter"]["Value"])
    assert parameter == {
        "region": REGION,
        "instance_id": "i-0new",
        "public_ip": "203.0.113.7",
        "private_ip": "10.0.0.7",
    }
    (record,) = endpoint_records(handler)
    assert record["Name"].rstrip(".") == ENDPOINT
    assert (record["SetIdentifier"], record["MultiValueAnswer"], record["TTL"]) == (
        "replica-0",
        True,
        ENDPOINT_DNS_TTL_SECONDS,
    )
    assert record["ResourceRecords"] == [{"Value": "203.0.113.7"}]


def test_record_instance_of_a_replacement_names_the_old_instance_to_retire(
    handler: ModuleType, placing: ProvisioningStore
) -> None:
    result = record_instance(
        handler, replacing={"instance_id": "i-0old", "region": OTHER_REGION, "notice": "rebalance"}
    )
    assert result == {"retire": {"instance_id": "i-0old", "region": OTHER_REGION}, "superseded": False}


def test_record_instance_after_a_disable_retires_the_new_instance_and_publishes_nothing(
    handler: ModuleType, placing: ProvisioningStore
) -> None:
    assert placing.write_config(config(status="disabled", generation=2), expected_generation=1)
    placing.stop_replicas(NOW)
    assert record_instance(handler) == {"retire": {"instance_id": "i-0new", "region": REGION}, "superseded": True}
    assert placing.replica("replica-0").status == "stopped"  # type: ignore[union-attr]
    assert placing.instance("i-0new") is None
    with pytest.raises(boto3.client("ssm").exceptions.ParameterNotFound):
        boto3.client("ssm").get_parameter(Name=PARAMETER)


def test_replica_failed_marks_the_replica_failed_with_the_error(
    handler: ModuleType, placing: ProvisioningStore
) -> None:
    error = {"Error": "FatalError", "Cause": "InvalidAMIID.NotFound"}
    assert act(handler, "replica_failed", replica_id="replica-0", error=error) == {
        "replica_id": "replica-0",
        "status": "failed",
    }
    replica = placing.replica("replica-0")
    assert replica is not None
    assert (replica.status, replica.error) == ("failed", "FatalError: InvalidAMIID.NotFound")


def test_continue_as_new_starts_a_fresh_orchestrator_execution(handler: ModuleType, placing: ProvisioningStore) -> None:
    state = {"replica_id": "replica-0", "generation": 1, "attempt": 7, "prefer_region": REGION, "replacing": None}
    result = act(handler, "continue_as_new", replica_id="replica-0", generation=1, state=state)
    name = f"replica-0-g1-c{int(NOW)}"
    assert result == {"continued_as": name}
    started = executions(ORCHESTRATOR_ARN)
    assert started[name]["status"] == "RUNNING"
    assert started[name]["input"] == {**state, "attempt": 0, "spot_only": False, "watch_spot": False, "looks": 0}
    assert placing.replica("replica-0").execution == name  # type: ignore[union-attr]


def test_every_orchestrator_action_in_the_asl_is_registered(handler: ModuleType) -> None:
    named = asl_actions("spot_orchestrator")
    assert named
    assert named <= set(handler.TASKS)


def test_an_action_whose_input_breaks_its_model_raises_naming_the_field_and_changes_nothing(
    handler: ModuleType, placing: ProvisioningStore, bus: BusRecorder
) -> None:
    with pytest.raises(ValidationError) as raised:
        act(handler, "dispatch_launch", token=TOKEN, replica_id="replica-0", generation=1, region=REGION)
    assert [e["loc"] for e in raised.value.errors()] == [("launch_id",)]
    assert "DispatchLaunchInput" in str(raised.value)
    assert bus.events() == []


def test_an_action_answers_its_output_model_as_json(handler: ModuleType, placing: ProvisioningStore) -> None:
    error = {"Error": "FatalError", "Cause": "x"}
    answer = act(handler, "replica_failed", replica_id="replica-0", error=error)
    assert answer == {"replica_id": "replica-0", "status": "failed"}
    assert type(answer["status"]) is str


def test_an_unknown_action_is_an_error_naming_the_known_ones(handler: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"unknown action 'launch_now'; known: dispatch_launch, .*continue_as_new"):
        act(handler, "launch_now")


# --- worker reports ------------------------------------------------------------------------------


def test_launch_progress_sends_a_heartbeat_on_the_launchs_token(
    handler: ModuleType, placing: ProvisioningStore, sfn: ApiCalls
) -> None:
    dispatch_launch(handler)
    outcome = deliver(
        handler, "Spothub Launch Progress", {"launch_id": "replica-0-g1-0", "region": REGION, "step": "scaled"}
    )
    assert outcome == "heartbeat: scaled"
    assert sfn.of("SendTaskHeartbeat") == [{"taskToken": "token-1"}]
    assert placing.request(LAUNCH, "replica-0-g1-0").status == "pending"  # type: ignore[union-attr]


def test_launch_succeeded_answers_the_orchestrator_once_with_the_instance(
    handler: ModuleType, placing: ProvisioningStore, sfn: ApiCalls, bus: BusRecorder
) -> None:
    dispatch_launch(handler)
    bus.events()
    assert deliver(handler, "Spothub Launch Succeeded", succeeded()) == "launch succeeded"
    (answer,) = sfn.of("SendTaskSuccess")
    assert answer["taskToken"] == "token-1"
    output = json.loads(answer["output"])
    assert (output["launch_id"], output["region"]) == ("replica-0-g1-0", REGION)
    assert output["instance"] == INSTANCE
    launch = placing.request(LAUNCH, "replica-0-g1-0")
    assert launch is not None
    assert (launch.status, launch.instance_id) == ("succeeded", "i-0new")
    assert bus.events() == []


def test_a_duplicate_launch_succeeded_changes_nothing(
    handler: ModuleType, placing: ProvisioningStore, sfn: ApiCalls, bus: BusRecorder, clock: Clock
) -> None:
    dispatch_launch(handler)
    deliver(handler, "Spothub Launch Succeeded", succeeded())
    launch = placing.request(LAUNCH, "replica-0-g1-0")
    bus.events()
    clock.now += 60
    assert deliver(handler, "Spothub Launch Succeeded", succeeded()) == "ignored: duplicate"
    assert len(sfn.of("SendTaskSuccess")) == 1
    assert placing.request(LAUNCH, "replica-0-g1-0") == launch
    assert bus.events() == []


def test_launch_succeeded_after_the_launch_was_given_up_tears_the_instance_down(
    handler: ModuleType, placing: ProvisioningStore, sfn: ApiCalls, bus: BusRecorder
) -> None:
    dispatch_launch(handler)
    act(handler, "abandon_launch", launch_id="replica-0-g1-0", region=REGION, cause="States.Timeout")
    bus.events()
    assert deliver(handler, "Spothub Launch Succeeded", succeeded()) == "late: orphan instance torn down"
    assert sfn.of("SendTaskSuccess") == []
    (command,) = commands(bus, "Spothub Teardown Requested")
    assert (command["teardown_id"], command["instance_id"], command["region"]) == ("orphan-i-0new", "i-0new", REGION)
    assert placing.request(LAUNCH, "replica-0-g1-0").status == "abandoned"  # type: ignore[union-attr]


def test_launch_succeeded_when_the_orchestrator_no_longer_waits_tears_the_instance_down(
    handler: ModuleType, placing: ProvisioningStore, sfn: ApiCalls, bus: BusRecorder
) -> None:
    dispatch_launch(handler)
    bus.events()
    sfn.answer("SendTaskSuccess", error=("TaskTimedOut", "Task Timed Out"))
    assert deliver(handler, "Spothub Launch Succeeded", succeeded()) == "orchestrator gone: instance torn down"
    (command,) = commands(bus, "Spothub Teardown Requested")
    assert command["instance_id"] == "i-0new"


def test_a_success_for_a_launch_the_hub_never_asked_for_sends_no_answer_and_records_nothing(
    handler: ModuleType, placing: ProvisioningStore, sfn: ApiCalls, bus: BusRecorder
) -> None:
    # The launch is unknown (never dispatched, or its record expired): no token to answer; the instance the
    # worker reports is not left running unaccounted for.
    outcome = deliver(handler, "Spothub Launch Succeeded", succeeded(launch_id="nobody-g9-0", instance_id="i-0stray"))
    assert outcome == "late: orphan instance torn down"
    assert sfn.of("SendTaskSuccess") == []
    assert placing.request(LAUNCH, "nobody-g9-0") is None
    (command,) = commands(bus, "Spothub Teardown Requested")
    assert command["instance_id"] == "i-0stray"


def test_progress_for_an_unknown_launch_is_ignored(handler: ModuleType, sfn: ApiCalls) -> None:
    outcome = deliver(
        handler, "Spothub Launch Progress", {"launch_id": "nobody-g9-0", "region": REGION, "step": "scaled"}
    )
    assert outcome == "ignored: no pending launch"
    assert sfn.calls == []


def test_a_capacity_failure_fails_the_task_and_excludes_the_region(
    handler: ModuleType, placing: ProvisioningStore, sfn: ApiCalls, exclusions: ExclusionStore
) -> None:
    dispatch_launch(handler)
    assert deliver(handler, "Spothub Launch Failed", failed("capacity")) == "launch failed (capacity)"
    (answer,) = sfn.of("SendTaskFailure")
    assert (answer["taskToken"], answer["error"]) == ("token-1", "CapacityError")
    assert answer["cause"] == f"{REGION}: InsufficientInstanceCapacity no g5 capacity"
    assert excluded(exclusions) == {REGION: 900}
    (exclusion,) = exclusions.active(NOW)
    assert (exclusion.kind, exclusion.reason) == ("capacity", "capacity: InsufficientInstanceCapacity no g5 capacity")
    assert placing.request(LAUNCH, "replica-0-g1-0").status == "failed"  # type: ignore[union-attr]


@pytest.mark.usefixtures("placing")
@pytest.mark.parametrize(
    ("error_class", "expected"),
    [("transient", ("TransientError", {REGION: 300})), ("fatal", ("FatalError", {}))],
)
def test_other_failures_fail_the_task_with_their_error_name(
    handler: ModuleType,
    sfn: ApiCalls,
    exclusions: ExclusionStore,
    error_class: str,
    expected: tuple[str, dict[str, float]],
) -> None:
    error, exclusion = expected
    dispatch_launch(handler)
    assert deliver(handler, "Spothub Launch Failed", failed(error_class)) == f"launch failed ({error_class})"
    assert [a["error"] for a in sfn.of("SendTaskFailure")] == [error]
    assert excluded(exclusions) == exclusion


def test_a_duplicate_failure_sends_no_second_answer_and_keeps_the_exclusion(
    handler: ModuleType, placing: ProvisioningStore, sfn: ApiCalls, exclusions: ExclusionStore, clock: Clock
) -> None:
    dispatch_launch(handler)
    deliver(handler, "Spothub Launch Failed", failed("capacity"))
    launch = placing.request(LAUNCH, "replica-0-g1-0")
    clock.now += 30
    assert deliver(handler, "Spothub Launch Failed", failed("capacity")) == "ignored: no pending launch"
    assert len(sfn.of("SendTaskFailure")) == 1
    assert placing.request(LAUNCH, "replica-0-g1-0") == launch
    assert excluded(exclusions)[REGION] >= 900


VCPU_LIMIT_OF_ZERO = (
    "You have requested more vCPU capacity than your current vCPU limit of 0 allows for the instance bucket that "
    "the specified instance type belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request to request "
    "an adjustment to this limit."
)


@pytest.fixture
def alerts(handler: ModuleType) -> ApiCalls:
    """What the handler publishes on the alerts topic."""
    return ApiCalls(handler.hub.alerts, "Publish")


def quota_failed(launch_id: str = "replica-0-g1-0") -> dict[str, Any]:
    return {
        "launch_id": launch_id,
        "region": REGION,
        "error_class": "quota",
        "code": "LaunchUnsuccessful",
        "message": VCPU_LIMIT_OF_ZERO,
    }


def launch_unsuccessful(message: str, region: str = REGION) -> dict[str, Any]:
    detail = {"StatusCode": "Failed", "StatusMessage": message, "AutoScalingGroupName": "spothub-gpu"}
    return eventbridge_event("aws.autoscaling", "EC2 Instance Launch Unsuccessful", detail, region=region)


@pytest.mark.usefixtures("placing")
def test_a_quota_failure_excludes_the_region_for_hours_and_tells_the_operator_which_quota_once(
    handler: ModuleType,
    sfn: ApiCalls,
    exclusions: ExclusionStore,
    alerts: ApiCalls,
    clock: Clock,
) -> None:
    dispatch_launch(handler)
    assert deliver(handler, "Spothub Launch Failed", quota_failed()) == "launch failed (quota)"
    # The orchestrator moves on to the next region, as from a capacity error.
    assert [a["error"] for a in sfn.of("SendTaskFailure")] == ["CapacityError"]
    assert excluded(exclusions) == {REGION: QUOTA_EXCLUSION_SECONDS}
    (alert,) = alerts.of("Publish")
    assert alert["TopicArn"] == handler.settings.alerts_topic_arn
    assert REGION in alert["Subject"] and len(alert["Subject"]) <= 100
    message = alert["Message"]
    assert "All G and VT Spot Instance Requests" in message and "L-3819A6DF" in message
    assert f"https://console.aws.amazon.com/servicequotas/home/services/ec2/quotas/L-3819A6DF?region={REGION}" in (
        message
    )
    assert "On-Demand" not in message  # the launch was a spot launch
    assert VCPU_LIMIT_OF_ZERO in message
    # The same failure again: as a duplicate report, and as Auto Scaling's own event a little later.
    clock.now += 30
    assert deliver(handler, "Spothub Launch Failed", quota_failed()) == "ignored: no pending launch"
    outcome = handler.lambda_handler(launch_unsuccessful(VCPU_LIMIT_OF_ZERO), FakeLambdaContext())
    assert outcome == {"outcome": "ignored: no pending launch in the region"}
    assert len(alerts.of("Publish")) == 1, "one alert per exclusion"
    assert excluded(exclusions)[REGION] >= QUOTA_EXCLUSION_SECONDS


def test_a_quota_reached_again_after_its_exclusion_ended_is_alerted_again(
    handler: ModuleType, exclusions: ExclusionStore, alerts: ApiCalls, clock: Clock
) -> None:
    message = (
        "Launching a new EC2 instance. Status Reason: Max spot instance count exceeded. Launching EC2 instance failed."
    )
    handler.lambda_handler(launch_unsuccessful(message), FakeLambdaContext())
    assert excluded(exclusions) == {REGION: QUOTA_EXCLUSION_SECONDS}
    clock.now += QUOTA_EXCLUSION_SECONDS + 1
    handler.lambda_handler(launch_unsuccessful(message), FakeLambdaContext())
    assert len(alerts.of("Publish")) == 2


def test_an_on_demand_launch_over_its_quota_names_the_on_demand_quota(
    handler: ModuleType, placing: ProvisioningStore, alerts: ApiCalls
) -> None:
    act(
        handler,
        "dispatch_launch",
        token=TOKEN,
        replica_id="replica-0",
        generation=1,
        region=REGION,
        capacity_type="on-demand",
        launch_id="replica-0-g1-0",
    )
    deliver(handler, "Spothub Launch Failed", quota_failed())
    (alert,) = alerts.of("Publish")
    assert "Running On-Demand G and VT instances" in alert["Message"] and "L-DB2E81BA" in alert["Message"]
    assert "Spot Instance Requests" not in alert["Message"]


def test_a_capacity_failure_alerts_no_one(
    handler: ModuleType, placing: ProvisioningStore, exclusions: ExclusionStore, alerts: ApiCalls
) -> None:
    dispatch_launch(handler)
    deliver(handler, "Spothub Launch Failed", failed("capacity"))
    handler.lambda_handler(
        launch_unsuccessful("There is no Spot capacity available that matches your request."), FakeLambdaContext()
    )
    assert alerts.of("Publish") == []
    assert excluded(exclusions) == {REGION: 900}


def test_a_failure_for_an_unknown_launch_answers_no_task(
    handler: ModuleType, placing: ProvisioningStore, sfn: ApiCalls
) -> None:
    assert deliver(handler, "Spothub Launch Failed", failed("fatal", launch_id="nobody-g9-0")) == (
        "ignored: no pending launch"
    )
    assert sfn.calls == []
    assert placing.request(LAUNCH, "nobody-g9-0") is None


def test_launch_unsuccessful_from_auto_scaling_fails_the_regions_pending_launch(
    handler: ModuleType, placing: ProvisioningStore, sfn: ApiCalls, exclusions: ExclusionStore, bus: BusRecorder
) -> None:
    dispatch_launch(handler)
    bus.events()
    event = eventbridge_event(
        "aws.autoscaling",
        "EC2 Instance Launch Unsuccessful",
        {
            "StatusCode": "Failed",
            "StatusMessage": "We currently do not have sufficient g5.xlarge capacity (InsufficientInstanceCapacity).",
            "AutoScalingGroupName": "spothub-gpu",
        },
        region=REGION,
    )
    assert handler.lambda_handler(event, FakeLambdaContext()) == {"outcome": "launch failed (capacity)"}
    (answer,) = sfn.of("SendTaskFailure")
    assert (answer["taskToken"], answer["error"]) == ("token-1", "CapacityError")
    assert excluded(exclusions) == {REGION: 900}
    (command,) = commands(bus, "Spothub Teardown Requested")
    assert (command["teardown_id"], command["launch_id"]) == ("cancel-replica-0-g1-0", "replica-0-g1-0")


def test_launch_unsuccessful_in_another_region_fails_no_launch(
    handler: ModuleType, placing: ProvisioningStore, sfn: ApiCalls
) -> None:
    dispatch_launch(handler)
    detail = {"StatusMessage": "Throttling: Rate exceeded"}
    event = eventbridge_event("aws.autoscaling", "EC2 Instance Launch Unsuccessful", detail, region=OTHER_REGION)
    assert handler.lambda_handler(event, FakeLambdaContext()) == {"outcome": "ignored: no pending launch in the region"}
    assert sfn.calls == []
    assert placing.request(LAUNCH, "replica-0-g1-0").status == "pending"  # type: ignore[union-attr]


def test_launch_unsuccessful_of_a_batch_jobs_group_fails_no_launch_and_excludes_no_region(
    handler: ModuleType, placing: ProvisioningStore, sfn: ApiCalls, exclusions: ExclusionStore
) -> None:
    dispatch_launch(handler)
    detail = {
        "StatusCode": "Failed",
        "StatusMessage": "We currently do not have sufficient g5.xlarge capacity (InsufficientInstanceCapacity).",
        "AutoScalingGroupName": "spothub-job-0123456789ab",
    }
    event = eventbridge_event("aws.autoscaling", "EC2 Instance Launch Unsuccessful", detail, region=REGION)
    assert handler.lambda_handler(event, FakeLambdaContext()) == {
        "outcome": "ignored: spothub-job-0123456789ab is not the serving group"
    }
    assert sfn.calls == []
    assert excluded(exclusions) == {}
    assert placing.request(LAUNCH, "replica-0-g1-0").status == "pending"  # type: ignore[union-attr]


def test_teardown_completed_answers_the_waiting_task_and_marks_the_instance_terminated(
    handler: ModuleType, store: ProvisioningStore, sfn: ApiCalls
) -> None:
    store.put_instance("i-0old", {"region": OTHER_REGION, "status": "serving"})
    store.put_instance("i-0keep", {"region": OTHER_REGION, "status": "serving"})
    act(
        handler,
        "dispatch_teardown",
        token="token-t",
        teardown_id="retire-i-0old",
        region=OTHER_REGION,
        instance_id="i-0old",
    )
    report = {"teardown_id": "retire-i-0old", "region": OTHER_REGION, "instance_id": "i-0old"}
    assert deliver(handler, "Spothub Teardown Completed", report, region=OTHER_REGION) == "teardown completed"
    (answer,) = sfn.of("SendTaskSuccess")
    assert answer["taskToken"] == "token-t"
    assert json.loads(answer["output"])["teardown_id"] == "retire-i-0old"
    assert store.instance("i-0old").status == "terminated"  # type: ignore[union-attr]
    assert store.instance("i-0keep").status == "serving"  # type: ignore[union-attr]
    assert store.request(TEARDOWN, "retire-i-0old").status == "completed"  # type: ignore[union-attr]

    assert deliver(handler, "Spothub Teardown Completed", report, region=OTHER_REGION) == "ignored: no pending teardown"
    assert len(sfn.of("SendTaskSuccess")) == 1


def test_a_region_wide_teardown_without_a_waiting_task_terminates_the_regions_instances(
    handler: ModuleType, store: ProvisioningStore, sfn: ApiCalls
) -> None:
    store.put_instance("i-0a", {"region": REGION, "status": "serving"})
    store.put_instance("i-0b", {"region": OTHER_REGION, "status": "serving"})
    report = {"teardown_id": f"teardown-{REGION}-abc", "region": REGION}
    assert deliver(handler, "Spothub Teardown Completed", report) == "ignored: no pending teardown"
    assert sfn.calls == []
    assert store.instance("i-0a").status == "terminated"  # type: ignore[union-attr]
    assert store.instance("i-0b").status == "serving"  # type: ignore[union-attr]


def test_a_capacity_notice_for_a_serving_instance_starts_its_replacement(
    handler: ModuleType, placing: ProvisioningStore
) -> None:
    record_instance(handler)
    assert ec2_notice(handler, "rebalance", "i-0new") == "replacement started: replica-0-r-i-0new"
    started = executions(ORCHESTRATOR_ARN)["replica-0-r-i-0new"]
    assert started["input"] == {
        "replica_id": "replica-0",
        "generation": 1,
        "attempt": 0,
        "prefer_region": REGION,
        "replacing": {"instance_id": "i-0new", "region": REGION, "notice": "rebalance"},
        "spot_only": False,
        "watch_spot": False,
        "looks": 0,
    }
    assert placing.instance("i-0new").status == "at-risk"  # type: ignore[union-attr]
    assert placing.replica("replica-0").status == "replacing"  # type: ignore[union-attr]


def test_a_replacement_starts_ranked_so_its_orchestrator_skips_finding_a_region(
    handler: ModuleType, placing: ProvisioningStore, ranking: ApiCalls
) -> None:
    record_instance(handler)
    assert ec2_notice(handler, "interruption", "i-0new") == "replacement started: replica-0-r-i-0new"
    started = executions(ORCHESTRATOR_ARN)["replica-0-r-i-0new"]["input"]
    placement = started["placement"]
    assert placement["best"] == REGION, placement
    assert placement["reason"].startswith("score 9"), placement
    (asked,) = ranking.of("GetSpotPlacementScores")
    assert sorted(asked["RegionNames"]) == sorted([REGION, OTHER_REGION])


def test_a_replacement_whose_ranking_fails_leaves_it_to_the_orchestrator(
    handler: ModuleType, placing: ProvisioningStore, ranking: ApiCalls
) -> None:
    ranking.answer("GetSpotPlacementScores", error=("RequestLimitExceeded", "slow down"))
    record_instance(handler)
    assert ec2_notice(handler, "interruption", "i-0new") == "replacement started: replica-0-r-i-0new"
    assert "placement" not in executions(ORCHESTRATOR_ARN)["replica-0-r-i-0new"]["input"], "FindRegion ranks then"


def test_a_second_notice_for_the_same_instance_starts_no_second_replacement(
    handler: ModuleType, placing: ProvisioningStore
) -> None:
    record_instance(handler)
    ec2_notice(handler, "rebalance", "i-0new")
    outcome = ec2_notice(handler, "interruption", "i-0new")
    assert outcome == "ignored: the replica is already being replaced or has moved"
    assert list(executions(ORCHESTRATOR_ARN)) == ["replica-0-r-i-0new"]
    assert placing.instance("i-0new").status == "interrupted"  # type: ignore[union-attr]


@pytest.mark.parametrize("disabled", [False, True], ids=["unknown-instance", "provisioning-disabled"])
def test_a_notice_spothub_does_not_act_on_starts_nothing(
    handler: ModuleType, placing: ProvisioningStore, disabled: bool
) -> None:
    record_instance(handler)
    if disabled:
        assert placing.write_config(config(status="disabled", generation=2), expected_generation=1)
    instance_id = "i-0new" if disabled else "i-0other"
    assert ec2_notice(handler, "interruption", instance_id).startswith("ignored: ")
    assert executions(ORCHESTRATOR_ARN) == {}
    assert placing.replica("replica-0").status == "serving"  # type: ignore[union-attr]


def test_an_agents_capacity_notice_starts_the_replacement_the_workers_notice_then_finds(
    handler: ModuleType, placing: ProvisioningStore
) -> None:
    record_instance(handler)
    notice = {"region": REGION, "instance_id": "i-0new", "kind": "interruption", "notice_id": "n-1"}
    assert (
        deliver(handler, "Spothub Capacity Notice", notice, source=AGENT) == "replacement started: replica-0-r-i-0new"
    )
    assert placing.instance("i-0new").status == "interrupted"  # type: ignore[union-attr]
    outcome = ec2_notice(handler, "interruption", "i-0new")
    assert outcome == "ignored: the replica is already being replaced or has moved"
    assert list(executions(ORCHESTRATOR_ARN)) == ["replica-0-r-i-0new"]


def drain_report(**overrides: Any) -> dict[str, Any]:
    report = {"region": REGION, "instance_id": "i-0new", "notice_id": "n-1", "outcome": "timed_out"}
    return {**report, "exit_code": None, "last_lines": ["saving checkpoint"], **overrides}


def test_a_drain_report_is_kept_with_the_instances_agent_record(
    handler: ModuleType, health: InstanceHealthStore
) -> None:
    assert deliver(handler, "Spothub Drain Completed", drain_report(), source=AGENT) == "drain recorded: timed_out"
    drain = health.agents()["i-0new"].drain
    assert drain is not None
    assert (drain["outcome"], drain["notice_id"], drain["last_lines"]) == ("timed_out", "n-1", ["saving checkpoint"])


def test_a_drain_report_with_its_duration_is_kept(handler: ModuleType, health: InstanceHealthStore) -> None:
    # The agent always sends `seconds` as a float (spothub_agent/drain.py); DynamoDB takes Decimals only.
    assert deliver(handler, "Spothub Drain Completed", drain_report(seconds=110.5), source=AGENT) == (
        "drain recorded: timed_out"
    )
    assert (health.agents()["i-0new"].drain or {})["seconds"] == 110.5


def unhealthy(
    instance_id: str = "i-0new", notice_id: str = "spothub-agent-gpu-i-0new@2023-11-14T22:13:20Z"
) -> dict[str, Any]:
    return {
        "region": REGION,
        "instance_id": instance_id,
        "notice_id": notice_id,
        "reason": "GPU XID errors: Threshold Crossed",
        "alarm_name": "spothub-agent-gpu-i-0new",
        "replica_id": "replica-0",
        "launch_id": "replica-0-g1-0",
    }


def test_an_unhealthy_instance_is_recorded_and_replaced_once_per_alarm_firing(
    handler: ModuleType, placing: ProvisioningStore, health: InstanceHealthStore
) -> None:
    record_instance(handler)
    assert deliver(handler, "Spothub Instance Unhealthy", unhealthy()) == "replacement started: replica-0-r-i-0new"
    started = executions(ORCHESTRATOR_ARN)["replica-0-r-i-0new"]
    assert started["input"]["replacing"] == {"instance_id": "i-0new", "region": REGION, "notice": "unhealthy"}
    assert placing.instance("i-0new").status == "unhealthy"  # type: ignore[union-attr]
    (remediation,) = health.remediations()
    assert (remediation.instance_id, remediation.reason) == ("i-0new", "GPU XID errors: Threshold Crossed")

    outcome = deliver(handler, "Spothub Instance Unhealthy", unhealthy())
    assert outcome == "ignored: this alarm firing was remediated already"
    assert len(health.remediations()) == 1
    assert list(executions(ORCHESTRATOR_ARN)) == ["replica-0-r-i-0new"]


def test_an_unhealthy_instance_spothub_does_not_serve_from_is_only_recorded(
    handler: ModuleType, placing: ProvisioningStore, health: InstanceHealthStore
) -> None:
    outcome = deliver(handler, "Spothub Instance Unhealthy", unhealthy(instance_id="i-0stray"))
    assert outcome == "recorded: not a serving instance spothub placed"
    assert [r.instance_id for r in health.remediations()] == ["i-0stray"]
    assert executions(ORCHESTRATOR_ARN) == {}
    assert placing.instance("i-0stray") is None


# --- the endpoint's records: one per replica, moved make before break, withdrawn when torn down ----------------

OLD_INSTANCE = {**INSTANCE, "instance_id": "i-0old", "public_ip": "198.51.100.9", "private_ip": "10.1.0.9"}


def serve(
    handler: ModuleType, store: ProvisioningStore, replica_id: str, instance: dict[str, Any], region: str
) -> None:
    """Place `replica_id` on `instance` (generation 1), as the orchestrator's record_instance does."""
    launch_id = f"{replica_id}-g1-{instance['instance_id']}"
    store.update_replica(replica_id, {"target_region": region, "launch_id": launch_id})
    answer = record_instance(
        handler,
        replica_id=replica_id,
        launch_id=launch_id,
        region=region,
        instance={**instance, "availability_zone": f"{region}a"},
    )
    assert answer["superseded"] is False


@pytest.fixture
def two_replicas(store: ProvisioningStore) -> ProvisioningStore:
    """Provisioning enabled at generation 1 with replica-0 and replica-1 being placed."""
    assert store.write_config(config(status="enabled", generation=1, replicas=2), expected_generation=0)
    for replica_id in ("replica-0", "replica-1"):
        assert store.start_placing(replica_id, generation=1, execution=f"{replica_id}-g1", now=NOW)
    return store


@pytest.fixture
def route53(handler: ModuleType) -> ApiCalls:
    """The record changes the handler sends Route 53 (they still reach moto)."""
    return ApiCalls(handler.hub.route53, "ChangeResourceRecordSets")


def test_serving_privately_the_record_holds_the_private_address(
    handler: ModuleType, placing: ProvisioningStore, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    monkeypatch.setenv("SPOTHUB_SERVING_PUBLIC_IP", "false")
    private = load_handler("capacity_handler.handler")
    monkeypatch.setattr(private, "time", SimpleNamespace(time=clock))
    record_instance(private)
    assert addresses(private) == {"replica-0": ["10.0.0.7"]}


def test_each_replica_has_its_own_record_under_the_one_name(
    handler: ModuleType, two_replicas: ProvisioningStore
) -> None:
    serve(handler, two_replicas, "replica-0", INSTANCE, REGION)
    serve(handler, two_replicas, "replica-1", OLD_INSTANCE, OTHER_REGION)
    assert addresses(handler) == {"replica-0": ["203.0.113.7"], "replica-1": ["198.51.100.9"]}
    assert {r["MultiValueAnswer"] for r in endpoint_records(handler)} == {True}


def test_a_replacement_moves_the_record_to_the_new_instance_before_the_old_one_is_torn_down(
    handler: ModuleType, placing: ProvisioningStore, route53: ApiCalls, sfn: ApiCalls
) -> None:
    serve(handler, placing, "replica-0", OLD_INSTANCE, OTHER_REGION)
    assert addresses(handler) == {"replica-0": ["198.51.100.9"]}
    ec2_notice(handler, "rebalance", "i-0old", region=OTHER_REGION)
    assert placing.replica("replica-0").status == "replacing"  # type: ignore[union-attr]
    assert addresses(handler) == {"replica-0": ["198.51.100.9"]}, "the old instance answers until the new one serves"

    replacing = {"instance_id": "i-0old", "region": OTHER_REGION, "notice": "rebalance"}
    result = record_instance(handler, launch_id="replica-0-g1-1", replacing=replacing)
    assert result["retire"] == {"instance_id": "i-0old", "region": OTHER_REGION}
    # The record names the new instance while the old one still runs (make before break), in one UPSERT.
    assert addresses(handler) == {"replica-0": ["203.0.113.7"]}
    assert placing.instance("i-0old").status == "at-risk"  # type: ignore[union-attr]
    assert [c["ChangeBatch"]["Changes"][0]["Action"] for c in route53.of("ChangeResourceRecordSets")] == [
        "UPSERT",
        "UPSERT",
    ]

    act(
        handler,
        "dispatch_teardown",
        token="token-t",
        teardown_id="retire-i-0old",
        region=OTHER_REGION,
        instance_id="i-0old",
    )
    report = {"teardown_id": "retire-i-0old", "region": OTHER_REGION, "instance_id": "i-0old"}
    assert deliver(handler, "Spothub Teardown Completed", report, region=OTHER_REGION) == "teardown completed"
    assert placing.instance("i-0old").status == "terminated"  # type: ignore[union-attr]
    assert addresses(handler) == {"replica-0": ["203.0.113.7"]}, "the old instance's teardown left the record alone"
    assert len(route53.of("ChangeResourceRecordSets")) == 2, "no DELETE was sent for the replica that moved on"


def test_a_retired_replicas_record_is_deleted_when_its_instance_is_torn_down(
    handler: ModuleType, two_replicas: ProvisioningStore, route53: ApiCalls
) -> None:
    serve(handler, two_replicas, "replica-0", INSTANCE, REGION)
    serve(handler, two_replicas, "replica-1", OLD_INSTANCE, OTHER_REGION)
    # Fewer replicas wanted: the toggle stops replica-1 and asks for its instance's teardown.
    two_replicas.replica_status("replica-1", ReplicaStatus.STOPPED)
    report = {"teardown_id": "retire-i-0old", "region": OTHER_REGION, "instance_id": "i-0old"}
    assert deliver(handler, "Spothub Teardown Completed", report, region=OTHER_REGION) == "ignored: no pending teardown"
    assert addresses(handler) == {"replica-0": ["203.0.113.7"]}
    (delete,) = [
        c for c in route53.of("ChangeResourceRecordSets") if c["ChangeBatch"]["Changes"][0]["Action"] == "DELETE"
    ]
    assert delete["ChangeBatch"]["Changes"][0]["ResourceRecordSet"] == {
        "Name": ENDPOINT,
        "Type": "A",
        "SetIdentifier": "replica-1",
        "MultiValueAnswer": True,
        "TTL": ENDPOINT_DNS_TTL_SECONDS,
        "ResourceRecords": [{"Value": "198.51.100.9"}],
    }
    assert two_replicas.instance("i-0old").status == "terminated"  # type: ignore[union-attr]


def test_a_disable_with_teardown_deletes_every_replicas_record_region_by_region(
    handler: ModuleType, two_replicas: ProvisioningStore
) -> None:
    serve(handler, two_replicas, "replica-0", INSTANCE, REGION)
    serve(handler, two_replicas, "replica-1", OLD_INSTANCE, OTHER_REGION)
    assert two_replicas.write_config(config(status="disabled", generation=2), expected_generation=1)
    two_replicas.stop_replicas(NOW)
    deliver(handler, "Spothub Teardown Completed", {"teardown_id": f"teardown-{REGION}-abc", "region": REGION})
    assert addresses(handler) == {"replica-1": ["198.51.100.9"]}
    report = {"teardown_id": f"teardown-{OTHER_REGION}-abc", "region": OTHER_REGION}
    deliver(handler, "Spothub Teardown Completed", report, region=OTHER_REGION)
    assert addresses(handler) == {}
    assert {i.status for i in two_replicas.instances()} == {"terminated"}


def test_a_record_already_gone_or_a_redelivered_report_is_no_error(
    handler: ModuleType, placing: ProvisioningStore, route53: ApiCalls
) -> None:
    serve(handler, placing, "replica-0", INSTANCE, REGION)
    assert placing.write_config(config(status="disabled", generation=2), expected_generation=1)
    placing.stop_replicas(NOW)
    # Gone already (an operator removed it, or an earlier delivery did): AWS answers InvalidChangeBatch.
    route53.answer(
        "ChangeResourceRecordSets",
        error=(
            "InvalidChangeBatch",
            "[Tried to delete resource record set [name='gpu.spothub.example.com.', type='A', "
            "set-identifier='replica-0'] but it was not found]",
        ),
    )
    report = {"teardown_id": f"teardown-{REGION}-abc", "region": REGION}
    assert deliver(handler, "Spothub Teardown Completed", report) == "ignored: no pending teardown"
    assert placing.instance("i-0new").status == "terminated"  # type: ignore[union-attr]
    route53.forget("ChangeResourceRecordSets")
    assert deliver(handler, "Spothub Teardown Completed", report) == "ignored: no pending teardown"


def test_a_record_that_names_another_address_now_is_left_alone(
    handler: ModuleType, placing: ProvisioningStore, route53: ApiCalls
) -> None:
    serve(handler, placing, "replica-0", INSTANCE, REGION)
    # Route 53 refuses a DELETE whose values differ from the record's: that record is not this instance's.
    route53.answer(
        "ChangeResourceRecordSets",
        error=(
            "InvalidChangeBatch",
            "[Tried to delete resource record set [name='gpu.spothub.example.com.', type='A', "
            "set-identifier='replica-0'] but the values provided do not match the current values]",
        ),
    )
    report = {"teardown_id": "orphan-i-0new", "region": REGION, "instance_id": "i-0new"}
    assert deliver(handler, "Spothub Teardown Completed", report) == "ignored: no pending teardown"
    assert placing.instance("i-0new").status == "terminated"  # type: ignore[union-attr]


def test_a_failed_withdrawal_raises_and_its_redelivery_withdraws(
    handler: ModuleType, placing: ProvisioningStore, route53: ApiCalls
) -> None:
    serve(handler, placing, "replica-0", INSTANCE, REGION)
    route53.answer("ChangeResourceRecordSets", error=("Throttling", "Rate exceeded"))
    report = {"teardown_id": "orphan-i-0new", "region": REGION, "instance_id": "i-0new"}
    with pytest.raises(DependencyUnavailable, match="could not withdraw the endpoint record: Throttling"):
        deliver(handler, "Spothub Teardown Completed", report)
    assert placing.instance("i-0new").status == "serving", "not recorded gone: the redelivery withdraws it"
    route53.forget("ChangeResourceRecordSets")
    deliver(handler, "Spothub Teardown Completed", report)
    assert addresses(handler) == {}
    assert placing.instance("i-0new").status == "terminated"  # type: ignore[union-attr]


def test_a_cancelled_launchs_completion_terminates_nothing_and_keeps_the_record(
    handler: ModuleType, placing: ProvisioningStore
) -> None:
    # The replica serves in REGION while its replacement's launch there is cancelled (given up): that
    # teardown names no instance, yet the serving one must stay recorded and published.
    serve(handler, placing, "replica-0", INSTANCE, REGION)
    report = {"teardown_id": "cancel-replica-0-g1-7", "region": REGION}
    assert deliver(handler, "Spothub Teardown Completed", report) == "ignored: no pending teardown"
    assert placing.instance("i-0new").status == "serving"  # type: ignore[union-attr]
    assert addresses(handler) == {"replica-0": ["203.0.113.7"]}


# Every kind the handler consumes, each exercised by a test above.
TESTED_KINDS = {
    (WORKER, "Spothub Launch Progress"),
    (WORKER, "Spothub Launch Succeeded"),
    (WORKER, "Spothub Launch Failed"),
    (WORKER, "Spothub Teardown Completed"),
    ("aws.ec2", "EC2 Spot Instance Interruption Warning"),
    ("aws.ec2", "EC2 Instance Rebalance Recommendation"),
    (WORKER, "Spothub Instance Unhealthy"),
    (AGENT, "Spothub Capacity Notice"),
    (AGENT, "Spothub Drain Completed"),
    ("aws.autoscaling", "EC2 Instance Launch Unsuccessful"),
}


def test_every_kind_the_handler_consumes_has_a_test_here(handler: ModuleType) -> None:
    consumed = consumed_by(Target.CAPACITY_HANDLER)
    assert {(str(source), str(detail_type)) for source, detail_type in consumed} == TESTED_KINDS


def test_every_kind_the_handler_consumes_has_a_consumer_registered(handler: ModuleType) -> None:
    assert dispatch.unregistered() == []
    assert set(dispatch.entries) == set(consumed_by(Target.CAPACITY_HANDLER))


# --- events the handler does not consume, and broken ones --------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param((WORKER, "Spothub Capacity Notice"), id="worker-notice-no-longer-sent"),
        pytest.param(("spothub.hub", "Spothub Launch Succeeded"), id="report-from-the-wrong-source"),
        pytest.param((WORKER, "Spothub Launch Exploded"), id="unknown-detail-type"),
        pytest.param(None, id="no-source-at-all"),
    ],
)
def test_an_event_of_an_unknown_kind_is_ignored(
    handler: ModuleType, placing: ProvisioningStore, sfn: ApiCalls, bus: BusRecorder, kind: tuple[str, str] | None
) -> None:
    dispatch_launch(handler)
    bus.events()
    event = {"detail": succeeded()} if kind is None else eventbridge_event(*kind, succeeded())
    assert handler.lambda_handler(event, FakeLambdaContext()) == {"outcome": "ignored: unknown kind"}
    assert sfn.calls == []
    assert placing.request(LAUNCH, "replica-0-g1-0").status == "pending"  # type: ignore[union-attr]
    assert bus.events() == []


@pytest.mark.parametrize(
    ("detail_type", "detail", "field"),
    [
        pytest.param(
            "Spothub Launch Succeeded", {"launch_id": "replica-0-g1-0", "region": REGION}, "instance", id="no-instance"
        ),
        pytest.param(
            "Spothub Launch Failed", {**failed(), "error_class": "bad luck"}, "error_class", id="unknown-class"
        ),
        pytest.param(
            "Spothub Launch Progress", {"launch_id": "replica-0-g1-0", "region": REGION}, "step", id="no-step"
        ),
        pytest.param(
            "EC2 Spot Instance Interruption Warning",
            {"instance-action": "terminate"},
            "instance-id",
            id="ec2-notice-without-instance",
        ),
        pytest.param("Spothub Teardown Completed", {"region": REGION}, "teardown_id", id="no-teardown-id"),
    ],
)
def test_a_report_with_a_broken_detail_raises_naming_the_field_and_changes_nothing(  # noqa: PLR0917 (fixtures and parameters)
    handler: ModuleType, placing: ProvisioningStore, sfn: ApiCalls, detail_type: str, detail: dict[str, Any], field: str
) -> None:
    dispatch_launch(handler)
    with pytest.raises(ValidationError) as raised:
        deliver(handler, detail_type, detail, source="aws.ec2" if detail_type.startswith("EC2 ") else WORKER)
    assert field in {str(error["loc"][0]) for error in raised.value.errors()}
    assert sfn.calls == []
    assert placing.request(LAUNCH, "replica-0-g1-0").status == "pending"  # type: ignore[union-attr]

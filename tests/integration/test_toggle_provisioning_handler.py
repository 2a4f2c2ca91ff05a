"""POST /spot-provisioning through the real handler: DynamoDB, Step Functions and EventBridge in moto.

What an operator sees (status and body) and what the toggle leaves behind: the switch, the replicas,
the orchestrator executions it started or stopped, and the teardown commands it put on the hub bus.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.models.records import InstanceStatus, ProvisioningConfig, ProvisioningStatus
from tests.integration.conftest import (
    HUB_ENVIRONMENT,
    SERVING_ENVIRONMENT,
    STATE_TABLE_KEYS,
    WORKER_REGIONS,
    BusRecorder,
    create_state_machine,
    executions,
    load_handler,
    set_environment,
)
from tests.lambda_events import FakeLambdaContext, rest_proxy_event

ORCHESTRATOR = "spothub-orchestrator"
ORCHESTRATOR_ARN = f"arn:aws:states:us-east-1:123456789012:stateMachine:{ORCHESTRATOR}"
HUB_BUS = "spothub-hub"
DEFAULT_TYPES = ["g5.xlarge", "g6.xlarge"]
PATH = "/spot-provisioning"
HINT = (
    'POST /spot-provisioning {"action": "disable"} (teardown defaults to true) terminates them; until then '
    'GET /spot-instances lists them with "billing": true'
)


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    set_environment(
        monkeypatch,
        {
            **HUB_ENVIRONMENT,
            **SERVING_ENVIRONMENT,
            "POWERTOOLS_SERVICE_NAME": "spothub-toggle-provisioning",
            "SPOTHUB_INSTANCE_TYPES": ",".join(DEFAULT_TYPES),
            "SPOTHUB_ORCHESTRATOR_ARN": ORCHESTRATOR_ARN,
            "SPOTHUB_HUB_BUS": HUB_BUS,
        },
    )
    with mock_aws():
        boto3.client("dynamodb").create_table(TableName=HUB_ENVIRONMENT["SPOTHUB_STATE_TABLE"], **STATE_TABLE_KEYS)
        boto3.client("events").create_event_bus(Name=HUB_BUS)
        assert create_state_machine(ORCHESTRATOR) == ORCHESTRATOR_ARN
        yield load_handler("toggle_provisioning.handler")


@pytest.fixture
def store(handler: ModuleType) -> ProvisioningStore:
    """The state table the handler writes, read through the dal."""
    return ProvisioningStore(boto3.resource("dynamodb").Table(HUB_ENVIRONMENT["SPOTHUB_STATE_TABLE"]))


@pytest.fixture
def bus(handler: ModuleType) -> BusRecorder:
    return BusRecorder(HUB_BUS)


def post(handler: ModuleType, body: Any) -> tuple[int, dict[str, Any]]:
    response = handler.lambda_handler(rest_proxy_event("POST", PATH, body), FakeLambdaContext())
    assert "Traceback" not in response["body"]
    return response["statusCode"], json.loads(response["body"])


def fields(body: dict[str, Any]) -> set[str]:
    """The request fields a 400 names (powertools locates them under `body`)."""
    return {detail["field"].removeprefix("body.") for detail in body.get("details", [])}


# --- enable ----------------------------------------------------------------------------------------


def test_enable_answers_200_and_starts_the_orchestrator_for_replica_0(handler: ModuleType) -> None:
    assert post(handler, {"action": "enable"}) == (200, {"message": "Spot provisioning enabled successfully"})
    assert executions(ORCHESTRATOR_ARN) == {
        "replica-0-g1": {
            "status": "RUNNING",
            "input": {
                "replica_id": "replica-0",
                "generation": 1,
                "attempt": 0,
                "prefer_region": None,
                "replacing": None,
                "spot_only": False,
                "watch_spot": False,
                "looks": 0,
                "placement": None,  # a first placement ranks in FindRegion; a replacement comes ranked
            },
        }
    }


def test_enable_turns_the_switch_on_with_the_deployments_defaults(
    handler: ModuleType, store: ProvisioningStore
) -> None:
    post(handler, {"action": "enable"})
    config = store.config()
    assert (config.status, config.generation, config.replicas) == ("enabled", 1, 1)
    assert config.instance_types == DEFAULT_TYPES
    assert config.denied_regions == []
    assert "allowed_regions" not in config
    (replica,) = store.replicas()
    assert (replica.replica_id, replica.status, replica.execution) == ("replica-0", "placing", "replica-0-g1")


def test_enable_twice_keeps_one_replica_and_one_execution(handler: ModuleType, store: ProvisioningStore) -> None:
    assert post(handler, {"action": "enable"})[0] == 200
    assert post(handler, {"action": "enable"}) == (200, {"message": "Spot provisioning enabled successfully"})
    assert list(executions(ORCHESTRATOR_ARN)) == ["replica-0-g1"]
    assert [r.replica_id for r in store.replicas()] == ["replica-0"]
    assert store.config().generation == 1


def test_the_warm_standby_switch_changes_without_placing_again_and_survives_toggles(
    handler: ModuleType, store: ProvisioningStore
) -> None:
    assert post(handler, {"action": "enable"})[0] == 200
    assert store.config().warm_standby is False
    assert post(handler, {"action": "enable", "warm_standby": True})[0] == 200
    config = store.config()
    assert (config.warm_standby, config.generation) == (True, 1)  # the replica is not placed again for it
    assert list(executions(ORCHESTRATOR_ARN)) == ["replica-0-g1"]
    assert post(handler, {"action": "enable", "replicas": 1})[0] == 200
    assert store.config().warm_standby is True  # left out: kept
    assert post(handler, {"action": "disable", "teardown": False})[0] == 200
    assert store.config().warm_standby is True
    assert post(handler, {"action": "enable", "warm_standby": "yes"})[0] == 400


def test_enable_with_two_replicas_starts_one_execution_per_replica(handler: ModuleType) -> None:
    assert post(handler, {"action": "enable", "replicas": 2})[0] == 200
    assert sorted(executions(ORCHESTRATOR_ARN)) == ["replica-0-g1", "replica-1-g1"]


def test_enable_keeps_the_operators_choices_on_the_switch(handler: ModuleType, store: ProvisioningStore) -> None:
    body = {"action": "enable", "instance_types": ["g6.xlarge"], "allowed_regions": ["us-west-2"], "denied_regions": []}
    assert post(handler, body)[0] == 200
    config = store.config()
    assert config.instance_types == ["g6.xlarge"]
    assert config.allowed_regions == ["us-west-2"]
    assert config.denied_regions == []


def test_enable_with_new_settings_starts_a_new_generation(handler: ModuleType, store: ProvisioningStore) -> None:
    post(handler, {"action": "enable"})
    assert post(handler, {"action": "enable", "instance_types": ["g6.xlarge"]})[0] == 200
    assert store.config().generation == 2
    assert sorted(executions(ORCHESTRATOR_ARN)) == ["replica-0-g1", "replica-0-g2"]


def serve(store: ProvisioningStore, replica_id: str, region: str, instance_id: str) -> None:
    """What the capacity handler records when the replica's instance is healthy (record_instance)."""
    fields = {"region": region, "instance_id": instance_id, "target_region": None}
    assert store.replica_serving(replica_id, generation=1, fields=fields)
    store.put_instance(instance_id, {"region": region, "replica_id": replica_id, "status": InstanceStatus.SERVING})


def test_new_settings_while_a_replica_serves_keep_track_of_its_instance(
    handler: ModuleType, store: ProvisioningStore
) -> None:
    post(handler, {"action": "enable"})
    serve(store, "replica-0", "us-west-2", "i-0aaa")
    assert post(handler, {"action": "enable", "instance_types": ["g6.xlarge"]})[0] == 200
    replica = store.replica("replica-0")
    assert replica is not None
    retiring = [
        e
        for e in executions(ORCHESTRATOR_ARN).values()
        if (e["input"].get("replacing") or {}).get("instance_id") == "i-0aaa"
    ]
    assert replica.instance_id == "i-0aaa" or retiring


def test_fewer_replicas_stop_the_replicas_above_the_count(handler: ModuleType, store: ProvisioningStore) -> None:
    post(handler, {"action": "enable", "replicas": 2})
    serve(store, "replica-0", "us-west-2", "i-0aaa")
    serve(store, "replica-1", "eu-west-1", "i-0bbb")
    assert post(handler, {"action": "enable", "replicas": 1})[0] == 200
    assert store.replica("replica-1").status == "stopped"  # type: ignore[union-attr]


def test_a_failed_start_is_503_and_enabling_again_retries_it(handler: ModuleType, store: ProvisioningStore) -> None:
    boto3.client("stepfunctions").delete_state_machine(stateMachineArn=ORCHESTRATOR_ARN)
    status, body = post(handler, {"action": "enable"})
    assert status == 503
    assert body["message"].startswith("could not start replica-0-g1: StateMachineDoesNotExist")
    (replica,) = store.replicas()
    assert replica.status == "stopped"

    create_state_machine(ORCHESTRATOR)
    assert post(handler, {"action": "enable"})[0] == 200
    assert list(executions(ORCHESTRATOR_ARN)) == ["replica-0-g1"]
    assert store.replica("replica-0").status == "placing"  # type: ignore[union-attr]


# --- disable ---------------------------------------------------------------------------------------


def test_disable_without_teardown_while_disabled_is_a_200_no_op(
    handler: ModuleType, store: ProvisioningStore, bus: BusRecorder
) -> None:
    assert post(handler, {"action": "disable", "teardown": False}) == (
        200,
        {"message": "Spot provisioning disabled; no instance is running", "instances_running": 0, "hint": HINT},
    )
    assert store.config() == ProvisioningConfig(status=ProvisioningStatus.DISABLED, generation=0)
    assert store.replicas() == []
    assert executions(ORCHESTRATOR_ARN) == {}
    assert bus.events() == []


def test_disable_while_disabled_tears_down_again(
    handler: ModuleType, store: ProvisioningStore, bus: BusRecorder
) -> None:
    # How instances left running by a disable without teardown are stopped: the hint's request.
    assert post(handler, {"action": "disable"}) == (200, {"message": "Spot provisioning disabled successfully"})
    assert store.config() == ProvisioningConfig(status=ProvisioningStatus.DISABLED, generation=0)
    assert sorted(e["detail"]["region"] for e in bus.events()) == sorted(WORKER_REGIONS)


def test_disable_stops_the_orchestrators_and_the_replicas(handler: ModuleType, store: ProvisioningStore) -> None:
    post(handler, {"action": "enable", "replicas": 2})
    assert post(handler, {"action": "disable"}) == (200, {"message": "Spot provisioning disabled successfully"})
    assert {name: e["status"] for name, e in executions(ORCHESTRATOR_ARN).items()} == {
        "replica-0-g1": "ABORTED",
        "replica-1-g1": "ABORTED",
    }
    assert {r.status for r in store.replicas()} == {"stopped"}
    config = store.config()
    assert (config.status, config.generation) == ("disabled", 2)


def test_disable_without_teardown_puts_no_command_and_says_what_keeps_billing(
    handler: ModuleType, store: ProvisioningStore, bus: BusRecorder
) -> None:
    post(handler, {"action": "enable", "replicas": 2})
    serve(store, "replica-0", "us-west-2", "i-0aaa")
    serve(store, "replica-1", "eu-west-1", "i-0bbb")
    assert post(handler, {"action": "disable", "teardown": False}) == (
        200,
        {
            "message": "Spot provisioning disabled; 2 instances keep running, serving and billing",
            "instances_running": 2,
            "hint": HINT,
        },
    )
    assert bus.events() == []
    assert {r.status for r in store.replicas()} == {"stopped"}


@pytest.mark.parametrize(
    "body", [{"action": "disable"}, {"action": "disable", "teardown": True}], ids=["default", "true"]
)
def test_disable_with_teardown_asks_every_worker_region_to_tear_down(
    handler: ModuleType, bus: BusRecorder, body: dict[str, Any]
) -> None:
    post(handler, {"action": "enable"})
    assert post(handler, body) == (200, {"message": "Spot provisioning disabled successfully"})
    events = bus.events()
    assert {(e["source"], e["detail-type"]) for e in events} == {("spothub.hub", "Spothub Teardown Requested")}
    assert sorted(e["detail"]["region"] for e in events) == sorted(WORKER_REGIONS)
    for event in events:
        assert event["detail"]["teardown_id"].startswith(f"teardown-{event['detail']['region']}-")
        assert event["detail"]["instance_id"] is None
        assert event["detail"]["launch_id"] is None
    assert len({e["detail"]["teardown_id"] for e in events}) == len(WORKER_REGIONS)


def test_enable_after_disable_places_the_replica_again(handler: ModuleType) -> None:
    post(handler, {"action": "enable"})
    post(handler, {"action": "disable"})
    assert post(handler, {"action": "enable"})[0] == 200
    assert executions(ORCHESTRATOR_ARN)["replica-0-g3"]["status"] == "RUNNING"


# --- refused requests: 400 naming what is wrong, nothing changed ------------------------------------


def test_an_unknown_action_is_400_naming_the_allowed_values(handler: ModuleType, store: ProvisioningStore) -> None:
    status, body = post(handler, {"action": "start"})
    assert status == 400
    (detail,) = body["details"]
    assert detail["field"].removeprefix("body.") == "action"
    assert "'enable'" in detail["problem"]
    assert "'disable'" in detail["problem"]
    assert store.config().status == "disabled"
    assert executions(ORCHESTRATOR_ARN) == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"action": 5}, "action", id="action-not-a-string"),
        pytest.param({"action": "enable", "colour": "blue"}, "colour", id="unknown-field"),
        pytest.param({"action": "disable", "teardown": [1]}, "teardown", id="teardown-not-a-boolean"),
        pytest.param({"action": "enable", "replicas": "two"}, "replicas", id="replicas-not-a-number"),
        pytest.param({"action": "enable", "replicas": 0}, "replicas", id="replicas-below-1"),
        pytest.param({"action": "enable", "replicas": 11}, "replicas", id="replicas-above-10"),
        pytest.param({"action": "enable", "instance_types": "g5.xlarge"}, "instance_types", id="types-not-a-list"),
        pytest.param({"action": "enable", "instance_types": []}, "instance_types", id="types-empty"),
        pytest.param({"action": "enable", "instance_types": [" g5.xlarge"]}, "instance_types", id="types-padded"),
        pytest.param(
            {"action": "enable", "instance_types": [f"t{i}" for i in range(21)]}, "instance_types", id="types-21"
        ),
        pytest.param({"action": "enable", "allowed_regions": []}, "allowed_regions", id="allowed-empty"),
        pytest.param({"action": "enable", "allowed_regions": [""]}, "allowed_regions", id="allowed-blank-name"),
        pytest.param({"action": "enable", "denied_regions": ["us-west-2 "]}, "denied_regions", id="denied-padded"),
        pytest.param({"action": "enable", "denied_regions": [7]}, "denied_regions.0", id="denied-not-names"),
    ],
)
def test_a_malformed_field_is_400_naming_it(
    handler: ModuleType, store: ProvisioningStore, body: dict[str, Any], field: str
) -> None:
    status, answer = post(handler, body)
    assert status == 400
    assert answer["message"] == "the request is not valid"
    assert field in fields(answer)
    assert store.config().status == "disabled"
    assert executions(ORCHESTRATOR_ARN) == {}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param('{"action": "enable"', "JSON", id="malformed-json"),
        pytest.param(None, "required", id="no-body"),
        pytest.param('"enable"', "dictionary", id="a-string"),
        pytest.param([1], "dictionary", id="a-list-of-numbers"),
        pytest.param({}, "required", id="no-action"),
    ],
)
def test_a_malformed_body_is_400_never_500(handler: ModuleType, body: Any, problem: str) -> None:
    status, answer = post(handler, body)
    assert status == 400
    assert any(problem in detail["problem"] for detail in answer["details"])
    assert executions(ORCHESTRATOR_ARN) == {}


def test_a_list_of_requests_is_400_not_its_first_element(handler: ModuleType, store: ProvisioningStore) -> None:
    status, _ = post(handler, [{"action": "enable"}, {"action": "disable"}])
    assert status == 400
    assert store.config().status == "disabled"
    assert executions(ORCHESTRATOR_ARN) == {}


def test_a_string_for_teardown_is_400_not_a_teardown(handler: ModuleType, bus: BusRecorder) -> None:
    status, answer = post(handler, {"action": "disable", "teardown": "yes"})
    assert (status, fields(answer)) == (400, {"teardown"})
    assert bus.events() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            {"action": "enable", "allowed_regions": ["ap-south-1"]},
            "not worker regions of this deployment: ap-south-1",
            id="allowed-not-a-worker-region",
        ),
        pytest.param(
            {"action": "enable", "denied_regions": ["us-west-2", "mars-1"]},
            "not worker regions of this deployment: mars-1",
            id="denied-not-a-worker-region",
        ),
        pytest.param(
            {"action": "enable", "allowed_regions": ["us-west-2"], "denied_regions": ["us-west-2"]},
            "leave no worker region",
            id="nothing-left",
        ),
        pytest.param(
            {"action": "enable", "replicas": 3},
            "replicas: at most one replica per region",
            id="more-replicas-than-regions",
        ),
        pytest.param(
            {"action": "enable", "replicas": 2, "denied_regions": ["eu-west-1"]},
            "replicas: at most one replica per region, and 1 worker regions are allowed",
            id="replicas-beyond-the-allowed-regions",
        ),
        pytest.param(
            {"action": "enable", "instance_types": ["g5.xlarge", "p5.48xlarge"]},
            "instance type p5.48xlarge is not in this deployment's instanceTypes [g5.xlarge, g6.xlarge]",
            id="type-not-deployed",
        ),
    ],
)
def test_optional_fields_are_checked_against_the_deployment(
    handler: ModuleType, store: ProvisioningStore, body: dict[str, Any], message: str
) -> None:
    status, answer = post(handler, body)
    assert status == 400
    assert message in answer["message"]
    assert store.config().status == "disabled"
    assert executions(ORCHESTRATOR_ARN) == {}


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        pytest.param("p9.imaginary", "'p9.imaginary' is not an EC2 instance type name", id="no-such-size"),
        pytest.param("g5xlarge", "'g5xlarge' is not an EC2 instance type name", id="no-dot"),
        pytest.param("G5.XLARGE", "'G5.XLARGE' is not an EC2 instance type name", id="upper-case"),
        pytest.param("g5." + "1" * 291 + "xlarge", "is 300 characters long; at most 32", id="300-characters"),
    ],
)
def test_an_instance_type_that_is_no_instance_type_name_is_400_saying_why(
    handler: ModuleType, store: ProvisioningStore, name: str, problem: str
) -> None:
    status, answer = post(handler, {"action": "enable", "instance_types": ["g5.xlarge", name]})
    assert (status, fields(answer)) == (400, {"instance_types"})
    (detail,) = answer["details"]
    assert problem in detail["problem"]
    assert "like g5.xlarge" in detail["problem"] or "at most" in detail["problem"]
    assert store.config().status == "disabled"
    assert executions(ORCHESTRATOR_ARN) == {}


def test_enable_with_a_subset_of_the_deployments_types_keeps_it(handler: ModuleType, store: ProvisioningStore) -> None:
    status, _ = post(handler, {"action": "enable", "instance_types": ["g6.xlarge"]})
    assert status == 200
    assert store.config().instance_types == ["g6.xlarge"]


def test_teardown_with_enable_is_400(handler: ModuleType) -> None:
    status, answer = post(handler, {"action": "enable", "teardown": True})
    assert status == 400
    assert any("teardown applies to disable only" in detail["problem"] for detail in answer["details"])
    assert executions(ORCHESTRATOR_ARN) == {}


def test_enable_with_teardown_false_is_accepted(handler: ModuleType) -> None:
    assert post(handler, {"action": "enable", "teardown": False}) == (
        200,
        {"message": "Spot provisioning enabled successfully"},
    )


def test_the_openapi_document_says_teardown_defaults_to_true_and_what_a_disable_answers(handler: ModuleType) -> None:
    schema = handler.app.get_openapi_schema().model_dump(mode="json", by_alias=True, exclude_none=True)
    described = schema["components"]["schemas"]
    teardown = described["ToggleRequest"]["properties"]["teardown"]
    assert teardown["default"] is True
    assert "default true" in teardown["description"]
    answer = schema["paths"][PATH]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    reference = answer["$ref"].rsplit("/", 1)[-1]
    while "$ref" in described[reference]:
        reference = described[reference]["$ref"].rsplit("/", 1)[-1]
    assert set(described[reference]["properties"]) == {"message", "instances_running", "hint"}
    assert described[reference]["required"] == ["message"]


def test_another_method_on_the_path_is_a_json_404(handler: ModuleType) -> None:
    response = handler.lambda_handler(rest_proxy_event("GET", PATH), FakeLambdaContext())
    assert response["statusCode"] == 404
    assert json.loads(response["body"])["message"] == f"no route GET {PATH}"

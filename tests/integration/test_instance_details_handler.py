"""GET /spot-instances through the real handler, against DynamoDB in moto.

The state table is filled through the dal the way the toggle and the capacity handler fill it: the
switch, replicas being placed, serving or replaced, and the instances recorded when they became healthy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError

from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.dal.standby import StandbyStore
from spothub_core.models.agent import Heartbeat, Registration
from spothub_core.models.records import (
    InstanceStatus,
    ProvisioningConfig,
    ProvisioningStatus,
    Remediation,
    ReplicaStatus,
)
from spothub_core.models.standby_records import StandbyRecord
from tests.integration.conftest import (
    HUB_ENVIRONMENT,
    SERVING_ENVIRONMENT,
    SERVING_PORT,
    STATE_TABLE_KEYS,
    load_handler,
    set_environment,
)
from tests.lambda_events import FakeLambdaContext, rest_proxy_event

NOW = 1_700_000_000.0
NOW_ISO = "2023-11-14T22:13:20Z"  # NOW, as every time in the answer is written
TABLE = HUB_ENVIRONMENT["SPOTHUB_STATE_TABLE"]
INSTANCE_KEYS = {
    "instance_id",
    "public_ip",
    "private_ip",
    "capacity_type",
    "availability_zone",
    "instance_type",
    "launched_at",
    "status",
    "endpoint",
    "billing",
}
REPLICA_KEYS = {
    "replica_id",
    "status",
    "region",
    "instance_id",
    "capacity_type",
    "reason",
    "target_region",
    "error",
    "placed_at",
    "endpoint",
}


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    set_environment(
        monkeypatch,
        {**HUB_ENVIRONMENT, **SERVING_ENVIRONMENT, "POWERTOOLS_SERVICE_NAME": "spothub-instance-details"},
    )
    with mock_aws():
        boto3.client("dynamodb").create_table(TableName=TABLE, **STATE_TABLE_KEYS)
        yield load_handler("instance_details.handler")


@pytest.fixture
def store(handler: ModuleType) -> ProvisioningStore:
    return ProvisioningStore(boto3.resource("dynamodb").Table(TABLE))


def get(handler: ModuleType) -> tuple[int, dict[str, Any]]:
    response = handler.lambda_handler(rest_proxy_event("GET", "/spot-instances"), FakeLambdaContext())
    assert response["multiValueHeaders"]["Content-Type"] == ["application/json"]
    return response["statusCode"], json.loads(response["body"])


def enable(store: ProvisioningStore, *, replicas: int = 1, generation: int = 1) -> None:
    config = ProvisioningConfig(
        status=ProvisioningStatus.ENABLED, generation=generation, replicas=replicas, instance_types=["g5.xlarge"]
    )
    assert store.write_config(config, expected_generation=generation - 1)
    for index in range(replicas):
        replica_id = f"replica-{index}"
        assert store.start_placing(replica_id, generation=generation, execution=f"{replica_id}-g{generation}", now=NOW)


def place(
    store: ProvisioningStore,
    replica_id: str,
    region: str,
    instance_id: str,
    *,
    launched_at: str,
    generation: int = 1,
    public_ip: str | None = "203.0.113.7",
    private_ip: str = "10.0.0.7",
) -> None:
    """What the capacity handler records when a replica's instance is healthy (record_instance)."""
    store.update_replica(replica_id, {"target_region": region, "launch_id": f"{replica_id}-g1-0"})
    assert store.replica_serving(
        replica_id,
        generation=generation,
        fields={
            "region": region,
            "instance_id": instance_id,
            "capacity_type": "spot",
            "placed_at": int(NOW),
            "reason": "score 9, $0.4000/h, best placement score",
            "target_region": None,
        },
    )
    store.put_instance(
        instance_id,
        {
            "instance_type": "g5.xlarge",
            "availability_zone": f"{region}a",
            "capacity_type": "spot",
            "private_ip": private_ip,
            "public_ip": public_ip,
            "launched_at": launched_at,
            "task_arn": f"arn:aws:ecs:{region}:123456789012:task/spothub/abc",
            "region": region,
            "replica_id": replica_id,
            "launch_id": f"{replica_id}-g1-0",
            "status": "serving",
            "updated_at": int(NOW),
        },
    )


def heartbeat(handler: ModuleType, instance_id: str, *, gpu: dict[str, Any]) -> InstanceHealthStore:
    """What the agent API records: a registration, then a heartbeat a minute later."""
    health = InstanceHealthStore(boto3.resource("dynamodb").Table(TABLE))
    health.register(instance_id, Registration(region="us-west-2"), now=NOW)
    assert health.heartbeat(instance_id, Heartbeat(ready=True, gpu=gpu), now=NOW + 60)
    return health


def test_nothing_enabled_is_idle_with_no_instances(handler: ModuleType) -> None:
    status, body = get(handler)
    assert status == 200
    assert {k: body[k] for k in ("region", "endpoint", "instances", "provisioning", "state", "replicas")} == {
        "region": None,
        "endpoint": None,
        "instances": [],
        "provisioning": "disabled",
        "state": "idle",
        "replicas": [],
    }


def test_a_replica_being_placed_has_no_region_and_no_instance_yet(
    handler: ModuleType, store: ProvisioningStore
) -> None:
    enable(store)
    store.update_replica("replica-0", {"target_region": "us-west-2"})
    status, body = get(handler)
    assert status == 200
    assert (body["region"], body["instances"], body["provisioning"], body["state"]) == (None, [], "enabled", "placing")
    (replica,) = body["replicas"]
    assert set(replica) == REPLICA_KEYS
    assert (replica["replica_id"], replica["status"], replica["target_region"]) == ("replica-0", "placing", "us-west-2")
    assert replica["instance_id"] is None


def test_a_placed_replica_shows_its_region_its_instance_and_why(handler: ModuleType, store: ProvisioningStore) -> None:
    enable(store)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at="2023-11-14T22:10:00Z")
    status, body = get(handler)
    assert status == 200
    assert (body["region"], body["provisioning"], body["state"]) == ("us-west-2", "enabled", "serving")
    (instance,) = body["instances"]
    assert set(instance) >= INSTANCE_KEYS
    assert {k: instance[k] for k in INSTANCE_KEYS} == {
        "instance_id": "i-0aaa",
        "public_ip": "203.0.113.7",
        "private_ip": "10.0.0.7",
        "capacity_type": "spot",
        "availability_zone": "us-west-2a",
        "instance_type": "g5.xlarge",
        "launched_at": "2023-11-14T22:10:00Z",
        "status": "serving",
        "endpoint": f"http://203.0.113.7:{SERVING_PORT}",
        "billing": True,
    }
    assert "task_arn" not in instance
    (replica,) = body["replicas"]
    assert replica == {
        "replica_id": "replica-0",
        "status": "serving",
        "region": "us-west-2",
        "instance_id": "i-0aaa",
        "capacity_type": "spot",
        "reason": "score 9, $0.4000/h, best placement score",
        "target_region": None,
        "error": None,
        "placed_at": NOW_ISO,
        "endpoint": f"http://203.0.113.7:{SERVING_PORT}",
    }
    assert body["endpoint"] == f"http://203.0.113.7:{SERVING_PORT}"
    assert body["settings"]["instance_types"] == ["g5.xlarge"]
    assert body["settings"]["replicas"] == 1


def test_an_instance_shows_what_its_agent_last_said_and_remediations_are_listed(
    handler: ModuleType, store: ProvisioningStore
) -> None:
    enable(store)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at="2023-11-14T22:10:00Z")
    health = heartbeat(handler, "i-0aaa", gpu={"count": 1, "xid_errors": 0})
    health.record_remediation(
        Remediation(
            instance_id="i-0old",
            notice_id="spothub-agent-gpu-i-0old@t",
            at=NOW,
            region="eu-west-1",
            reason="GPU XID errors",
            alarm_name="a",
        )
    )
    _, body = get(handler)
    (instance,) = body["instances"]
    assert (instance["last_seen"], instance["ready"]) == ("2023-11-14T22:14:20Z", True)  # a minute after NOW
    assert set(instance["gpu"]) == {"count", "xid_errors"}
    assert body["remediations"] == [
        {"instance_id": "i-0old", "region": "eu-west-1", "reason": "GPU XID errors", "alarm_name": "a", "at": NOW_ISO}
    ]


def test_the_agents_gpu_numbers_stay_numbers(handler: ModuleType, store: ProvisioningStore) -> None:
    # Numbers nested in a map come back from DynamoDB as Decimals, which the JSON encoder would write as strings.
    enable(store)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at="2023-11-14T22:10:00Z")
    heartbeat(handler, "i-0aaa", gpu={"count": 1, "xid_errors": 0, "gpus": [{"temperature_c": 61}]})
    _, body = get(handler)
    (instance,) = body["instances"]
    assert instance["gpu"] == {"count": 1, "xid_errors": 0, "gpus": [{"temperature_c": 61}]}


def test_an_instance_whose_agent_never_reported_has_no_last_seen(handler: ModuleType, store: ProvisioningStore) -> None:
    enable(store)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at="2023-11-14T22:10:00Z")
    _, body = get(handler)
    (instance,) = body["instances"]
    assert (instance["last_seen"], instance["ready"], instance["gpu"]) == (None, None, None)
    assert body["remediations"] == []


def test_terminated_instances_are_not_listed(handler: ModuleType, store: ProvisioningStore) -> None:
    enable(store)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at="2023-11-14T22:10:00Z")
    store.put_instance("i-0old", {"region": "eu-west-1", "status": "terminated", "launched_at": "2023-11-13T00:00:00Z"})
    _, body = get(handler)
    assert [i["instance_id"] for i in body["instances"]] == ["i-0aaa"]


def test_a_replacement_in_flight_lists_the_serving_instance_first(
    handler: ModuleType, store: ProvisioningStore
) -> None:
    enable(store, replicas=2)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at="2023-11-14T22:10:00Z")
    place(store, "replica-1", "eu-west-1", "i-0bbb", launched_at="2023-11-14T22:00:00Z")
    store.put_instance("i-0bbb", {"status": "at-risk"})
    assert store.start_replacing("replica-1", instance_id="i-0bbb", execution="replica-1-r-i-0bbb", now=NOW)
    _, body = get(handler)
    assert body["state"] == "replacing"
    assert [(i["instance_id"], i["status"]) for i in body["instances"]] == [
        ("i-0aaa", "serving"),
        ("i-0bbb", "at-risk"),
    ]
    assert [(r["replica_id"], r["status"]) for r in body["replicas"]] == [
        ("replica-0", "serving"),
        ("replica-1", "replacing"),
    ]
    assert body["region"] == "us-west-2"


def test_a_failed_replica_makes_the_state_failed_with_its_error(handler: ModuleType, store: ProvisioningStore) -> None:
    enable(store, replicas=2)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at="2023-11-14T22:10:00Z")
    store.replica_status("replica-1", ReplicaStatus.FAILED, {"error": "FatalError: InvalidAMIID.NotFound"})
    _, body = get(handler)
    assert body["state"] == "failed"
    failed = next(r for r in body["replicas"] if r["replica_id"] == "replica-1")
    assert (failed["status"], failed["error"]) == ("failed", "FatalError: InvalidAMIID.NotFound")


def disable(store: ProvisioningStore, *, generation: int = 2) -> None:
    config = ProvisioningConfig(status=ProvisioningStatus.DISABLED, generation=generation)
    assert store.write_config(config, expected_generation=generation - 1)
    store.stop_replicas(NOW)


def test_disabled_with_an_instance_still_running_is_left_running(handler: ModuleType, store: ProvisioningStore) -> None:
    enable(store)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at="2023-11-14T22:10:00Z")
    disable(store)
    _, body = get(handler)
    assert (body["provisioning"], body["state"]) == ("disabled", "left-running")
    assert [i["instance_id"] for i in body["instances"]] == ["i-0aaa"]
    assert body["region"] is None
    (replica,) = body["replicas"]
    assert (replica["status"], replica["region"], replica["instance_id"]) == ("stopped", "us-west-2", "i-0aaa")


def test_disabled_with_its_instance_torn_down_is_idle_and_points_at_no_instance(
    handler: ModuleType, store: ProvisioningStore
) -> None:
    enable(store)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at="2023-11-14T22:10:00Z")
    disable(store)
    store.put_instance("i-0aaa", {"status": InstanceStatus.TERMINATED})
    _, body = get(handler)
    assert (body["provisioning"], body["state"], body["instances"]) == ("disabled", "idle", [])
    (replica,) = body["replicas"]
    assert (replica["status"], replica["region"], replica["instance_id"]) == ("stopped", None, None)


def test_a_replica_whose_instance_was_never_recorded_points_at_none(
    handler: ModuleType, store: ProvisioningStore
) -> None:
    enable(store)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at="2023-11-14T22:10:00Z")
    store.update_replica("replica-0", {"instance_id": "i-0gone"})
    _, body = get(handler)
    (replica,) = body["replicas"]
    assert (replica["region"], replica["instance_id"]) == (None, None)
    assert body["region"] is None


def test_each_replica_says_its_region_and_the_top_level_region_is_the_first_serving_replicas(
    handler: ModuleType, store: ProvisioningStore
) -> None:
    enable(store, replicas=3)
    place(store, "replica-1", "eu-west-1", "i-0bbb", launched_at="2023-11-14T22:00:00Z")
    place(store, "replica-2", "us-west-2", "i-0ccc", launched_at="2023-11-14T22:10:00Z")
    _, body = get(handler)
    assert [(r["replica_id"], r["status"], r["region"]) for r in body["replicas"]] == [
        ("replica-0", "placing", None),
        ("replica-1", "serving", "eu-west-1"),
        ("replica-2", "serving", "us-west-2"),
    ]
    assert body["region"] == "eu-west-1"
    assert {i["instance_id"]: i["replica_id"] for i in body["instances"]} == {
        "i-0bbb": "replica-1",
        "i-0ccc": "replica-2",
    }


@pytest.mark.parametrize(
    "launched_at", ["2023-11-14T22:10:00Z", "2023-11-14T22:10:00+00:00", "2023-11-14T23:10:00.250+01:00"]
)
def test_launched_at_is_iso_8601_utc_whatever_form_it_was_recorded_in(
    handler: ModuleType, store: ProvisioningStore, launched_at: str
) -> None:
    enable(store)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at=launched_at)
    _, body = get(handler)
    (instance,) = body["instances"]
    assert instance["launched_at"] == "2023-11-14T22:10:00Z"


# --- where clients reach the model, and what bills ------------------------------------------------------


def reload(monkeypatch: pytest.MonkeyPatch, **environment: str) -> ModuleType:
    """The handler after a cold start with `environment` changed."""
    set_environment(monkeypatch, environment)
    return load_handler("instance_details.handler")


def test_serving_privately_the_endpoints_use_the_private_address(
    handler: ModuleType, store: ProvisioningStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = reload(monkeypatch, SPOTHUB_SERVING_PUBLIC_IP="false")
    enable(store)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at="2023-11-14T22:10:00Z")
    _, body = get(private)
    ((replica,), (instance,)) = body["replicas"], body["instances"]
    assert replica["endpoint"] == instance["endpoint"] == body["endpoint"] == f"http://10.0.0.7:{SERVING_PORT}"


def test_an_instance_without_the_address_clients_use_has_no_endpoint(
    handler: ModuleType, store: ProvisioningStore
) -> None:
    # Serving publicly, an instance with only a private address is not reachable: no endpoint, not the private one.
    enable(store)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at="2023-11-14T22:10:00Z", public_ip=None)
    _, body = get(handler)
    ((replica,), (instance,)) = body["replicas"], body["instances"]
    assert (replica["endpoint"], instance["endpoint"], body["endpoint"]) == (None, None, None)
    assert (instance["private_ip"], instance["billing"]) == ("10.0.0.7", True)


def test_the_top_level_endpoint_is_the_first_serving_replicas_without_an_endpoint_name(
    handler: ModuleType, store: ProvisioningStore
) -> None:
    enable(store, replicas=3)
    place(store, "replica-1", "eu-west-1", "i-0bbb", launched_at="2023-11-14T22:00:00Z", public_ip="198.51.100.2")
    place(store, "replica-2", "us-west-2", "i-0ccc", launched_at="2023-11-14T22:10:00Z", public_ip="198.51.100.3")
    _, body = get(handler)
    assert [(r["replica_id"], r["endpoint"]) for r in body["replicas"]] == [
        ("replica-0", None),
        ("replica-1", f"http://198.51.100.2:{SERVING_PORT}"),
        ("replica-2", f"http://198.51.100.3:{SERVING_PORT}"),
    ]
    assert body["endpoint"] == f"http://198.51.100.2:{SERVING_PORT}"


def test_a_replacing_replica_still_serves_at_its_old_instances_endpoint(
    handler: ModuleType, store: ProvisioningStore
) -> None:
    enable(store)
    place(store, "replica-0", "eu-west-1", "i-0bbb", launched_at="2023-11-14T22:00:00Z")
    store.put_instance("i-0bbb", {"status": "at-risk"})
    assert store.start_replacing("replica-0", instance_id="i-0bbb", execution="replica-0-r-i-0bbb", now=NOW)
    _, body = get(handler)
    (replica,) = body["replicas"]
    assert (replica["status"], replica["endpoint"]) == ("replacing", f"http://203.0.113.7:{SERVING_PORT}")
    assert body["endpoint"] == f"http://203.0.113.7:{SERVING_PORT}"


def test_with_an_endpoint_name_the_top_level_endpoint_is_the_name(
    handler: ModuleType, store: ProvisioningStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = reload(monkeypatch, SPOTHUB_ENDPOINT_NAME="gpu.example.com")
    enable(store)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at="2023-11-14T22:10:00Z")
    _, body = get(named)
    assert body["endpoint"] == f"http://gpu.example.com:{SERVING_PORT}"
    (replica,) = body["replicas"]
    assert replica["endpoint"] == f"http://203.0.113.7:{SERVING_PORT}", "each replica still says its own"


def test_instances_bill_until_they_are_terminated(handler: ModuleType, store: ProvisioningStore) -> None:
    enable(store, replicas=2)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at="2023-11-14T22:10:00Z")
    place(store, "replica-1", "eu-west-1", "i-0bbb", launched_at="2023-11-14T22:00:00Z")
    store.put_instance("i-0bbb", {"status": InstanceStatus.TERMINATING})
    _, body = get(handler)
    assert {i["instance_id"]: i["billing"] for i in body["instances"]} == {"i-0aaa": True, "i-0bbb": True}
    store.put_instance("i-0bbb", {"status": InstanceStatus.TERMINATED})
    _, body = get(handler)
    assert {i["instance_id"]: i["billing"] for i in body["instances"]} == {"i-0aaa": True}


def test_instances_left_running_by_a_disable_still_bill_and_answer(
    handler: ModuleType, store: ProvisioningStore
) -> None:
    enable(store)
    place(store, "replica-0", "us-west-2", "i-0aaa", launched_at="2023-11-14T22:10:00Z")
    disable(store)
    _, body = get(handler)
    assert body["state"] == "left-running"
    (instance,) = body["instances"]
    assert (instance["billing"], instance["endpoint"]) == (True, f"http://203.0.113.7:{SERVING_PORT}")
    assert body["endpoint"] is None, "no replica serves: no endpoint to send clients to"


@pytest.mark.parametrize("missing", ["SPOTHUB_SERVING_PORT", "SPOTHUB_SERVING_PUBLIC_IP"])
def test_a_cold_start_without_the_serving_settings_fails_naming_them(
    handler: ModuleType, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.delenv(missing)
    with pytest.raises(ValidationError) as raised:
        load_handler("instance_details.handler")
    assert [e["loc"] for e in raised.value.errors()] == [(missing,)]


def test_the_openapi_document_describes_the_answer(handler: ModuleType) -> None:
    schema = handler.app.get_openapi_schema().model_dump(mode="json", by_alias=True, exclude_none=True)
    answer = schema["paths"]["/spot-instances"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/SpotInstances"}
    described = schema["components"]["schemas"]
    assert set(described["SpotInstances"]["properties"]) == {
        "provisioning",
        "state",
        "region",
        "endpoint",
        "replicas",
        "instances",
        "settings",
        "remediations",
        "standbys",
    }
    assert described["StandbyView"]["properties"]["status"]["$ref"] == "#/components/schemas/StandbyStatus"
    assert described["StandbyStatus"]["enum"] == ["launching", "ready"]
    assert described["ProvisioningState"]["enum"] == [
        "failed",
        "replacing",
        "placing",
        "serving",
        "left-running",
        "idle",
    ]
    assert set(described["InstanceView"]["properties"]) >= INSTANCE_KEYS | {"region", "last_seen", "ready", "gpu"}
    assert set(described["ReplicaView"]["properties"]) == REPLICA_KEYS


def test_an_unreadable_state_table_is_503_without_a_traceback(handler: ModuleType) -> None:
    boto3.client("dynamodb").delete_table(TableName=TABLE)
    status, body = get(handler)
    assert status == 503
    assert body["message"].startswith("could not read the provisioning switch: ResourceNotFoundException")
    assert "Traceback" not in json.dumps(body)


def test_another_method_is_a_json_404(handler: ModuleType) -> None:
    response = handler.lambda_handler(rest_proxy_event("DELETE", "/spot-instances"), FakeLambdaContext())
    assert response["statusCode"] == 404
    assert json.loads(response["body"])["message"] == "no route DELETE /spot-instances"


def test_a_warm_standby_is_listed_while_held(handler: ModuleType, store: ProvisioningStore) -> None:
    enable(store)
    place(store, "replica-0", "eu-west-1", "i-serving", launched_at=NOW_ISO)
    standbys = StandbyStore(boto3.resource("dynamodb").Table(TABLE))
    launching = StandbyRecord(
        replica_id="replica-0", launch_id="replica-0-sb-1", region="us-west-2", zone="us-west-2b", launched_at=NOW
    )
    assert standbys.claim(launching)
    _status, body = get(handler)
    assert [i["instance_id"] for i in body["instances"]] == ["i-serving"], "a standby is not a replica's instance"
    assert body["standbys"] == [
        {
            "replica_id": "replica-0",
            "status": "launching",
            "region": "us-west-2",
            "zone": "us-west-2b",
            "capacity_type": "spot",
            "launch_id": "replica-0-sb-1",
            "instance_id": None,
            "launched_at": NOW_ISO,
            "ready_at": None,
            "replaces": None,
        }
    ]
    standbys.mark_ready(
        "replica-0",
        launch_id="replica-0-sb-1",
        instance_id="i-standby",
        zone="us-west-2b",
        public_ip=None,
        private_ip="10.1.0.9",
        now=NOW + 300,
    )
    (ready,) = get(handler)[1]["standbys"]
    assert (ready["status"], ready["instance_id"], ready["ready_at"]) == ("ready", "i-standby", "2023-11-14T22:18:20Z")
    standbys.clear("replica-0", launch_id="replica-0-sb-1")
    assert get(handler)[1]["standbys"] == [], "a released standby is gone from the list"

"""POST /agents/{instance_id}/register and /heartbeat through the real handler against moto."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.integration.conftest import HUB_ENVIRONMENT, STATE_TABLE_KEYS, load_handler, set_environment
from tests.lambda_events import FakeLambdaContext, rest_proxy_event

TABLE = HUB_ENVIRONMENT["SPOTHUB_STATE_TABLE"]
INSTANCE = "i-0123456789abcdef0"
REGISTRATION = {
    "region": "us-west-2",
    "availability_zone": "us-west-2a",
    "instance_type": "g5.xlarge",
    "group": "spothub-gpu",
    "capacity_type": "spot",
    "agent_version": "0.2.0",
}
BEAT = {"ready": True, "workload": {"state": "running", "exit_code": None, "last_lines": ["ok"]}, "gpu": {"count": 1}}


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    set_environment(monkeypatch, {**HUB_ENVIRONMENT, "POWERTOOLS_SERVICE_NAME": "spothub-agent-api"})
    with mock_aws():
        boto3.client("dynamodb").create_table(TableName=TABLE, **STATE_TABLE_KEYS)
        yield load_handler("agent_api.handler")


def post(
    handler: ModuleType, instance_id: str, what: str, body: Any, caller: str | None = None
) -> tuple[int, dict[str, Any]]:
    event = rest_proxy_event("POST", f"/agents/{instance_id}/{what}", body, resource=f"/agents/{{instance_id}}/{what}")
    event["pathParameters"] = {"instance_id": instance_id}
    if caller:
        event["requestContext"]["identity"]["userArn"] = caller
    response = handler.lambda_handler(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def agent_record(instance_id: str = INSTANCE) -> dict[str, Any]:
    table = boto3.resource("dynamodb").Table(TABLE)
    return table.get_item(Key={"pk": "AGENT", "sk": instance_id}).get("Item", {})


def test_register_then_heartbeat_records_last_seen_and_health(handler: ModuleType) -> None:
    assert post(handler, INSTANCE, "register", REGISTRATION) == (200, {"instance_id": INSTANCE, "registered": True})
    before = int(datetime.now(UTC).timestamp())
    status, body = post(handler, INSTANCE, "heartbeat", BEAT)
    assert status == 200 and set(body) == {"instance_id", "last_seen"} and body["instance_id"] == INSTANCE
    # ISO 8601 UTC to the second, as every time the API answers.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["last_seen"]), body
    assert before <= datetime.fromisoformat(body["last_seen"]).timestamp() <= datetime.now(UTC).timestamp()
    record = agent_record()
    assert record["region"] == "us-west-2" and record["ready"] is True and record["status"] == "registered"
    assert record["gpu"] == {"count": 1} and record["workload"]["last_lines"] == ["ok"]
    assert int(record["last_seen"]) == int(datetime.fromisoformat(body["last_seen"]).timestamp())


def test_registering_again_keeps_what_the_heartbeats_said(handler: ModuleType) -> None:
    post(handler, INSTANCE, "register", REGISTRATION)
    post(handler, INSTANCE, "heartbeat", BEAT)
    assert post(handler, INSTANCE, "register", {**REGISTRATION, "agent_version": "0.3.0"})[0] == 200
    record = agent_record()
    assert (record["agent_version"], record["ready"], record["gpu"]) == ("0.3.0", True, {"count": 1})


def test_the_openapi_document_describes_both_answers(handler: ModuleType) -> None:
    schema = handler.app.get_openapi_schema().model_dump(mode="json", by_alias=True, exclude_none=True)
    answers = {
        path.rsplit("/", 1)[-1]: route["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        for path, route in schema["paths"].items()
    }
    assert answers == {
        "register": {"$ref": "#/components/schemas/AgentRegistered"},
        "heartbeat": {"$ref": "#/components/schemas/HeartbeatAccepted"},
    }


def test_a_heartbeat_before_registering_is_404_and_writes_nothing(handler: ModuleType) -> None:
    status, body = post(handler, INSTANCE, "heartbeat", BEAT)
    assert status == 404 and "register first" in body["message"]
    assert agent_record() == {}


@pytest.mark.parametrize(
    ("instance_id", "what", "body", "field"),
    [
        ("not-an-instance", "register", REGISTRATION, "instance_id"),
        (INSTANCE, "register", {**REGISTRATION, "region": ""}, "region"),
        (INSTANCE, "register", {**REGISTRATION, "secret": "x"}, "secret"),
        (INSTANCE, "heartbeat", {"ready": "yes-ish", "workload": {}}, "ready"),
        (INSTANCE, "heartbeat", {}, "ready"),
    ],
)
def test_a_bad_request_is_400_naming_the_field(
    handler: ModuleType, instance_id: str, what: str, body: dict[str, Any], field: str
) -> None:
    status, answer = post(handler, instance_id, what, body)
    assert status == 400, answer
    assert any(field in d["field"] for d in answer["details"]), answer


def test_a_list_body_is_400(handler: ModuleType) -> None:
    status, answer = post(handler, INSTANCE, "register", [REGISTRATION])
    assert status == 400 and "JSON object" in answer["message"]


def test_an_instance_may_not_speak_for_another(handler: ModuleType) -> None:
    other = "arn:aws:sts::123456789012:assumed-role/spothub-instance-role/i-0fedcba9876543210"
    status, answer = post(handler, INSTANCE, "register", REGISTRATION, caller=other)
    assert status == 403 and "i-0fedcba9876543210" in answer["message"]
    assert agent_record() == {}
    itself = f"arn:aws:sts::123456789012:assumed-role/spothub-instance-role/{INSTANCE}"
    assert post(handler, INSTANCE, "register", REGISTRATION, caller=itself)[0] == 200


@pytest.mark.parametrize(
    "gpu",
    [
        {"gpus": [{"index": 0, "power_w": 4.78e307}]},  # beyond DynamoDB's numbers: once a 500
        {"tiny": 3.98e-266},
        {"digits": 10**40},
        {"nested": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]},
    ],
)
def test_a_gpu_report_dynamodb_cannot_store_is_400_not_500(handler: ModuleType, gpu: dict[str, Any]) -> None:
    assert post(handler, INSTANCE, "register", REGISTRATION)[0] == 200
    status, answer = post(handler, INSTANCE, "heartbeat", {**BEAT, "gpu": gpu})
    assert status == 400, answer
    assert [d["field"] for d in answer["details"]] == ["body.gpu"]


def test_a_nan_in_the_gpu_report_is_400_not_500(handler: ModuleType) -> None:
    assert post(handler, INSTANCE, "register", REGISTRATION)[0] == 200
    event = rest_proxy_event("POST", f"/agents/{INSTANCE}/heartbeat", resource="/agents/{instance_id}/heartbeat")
    event["pathParameters"] = {"instance_id": INSTANCE}
    event["body"] = '{"ready": true, "gpu": {"temperature_c": NaN}}'  # Python's JSON reads NaN
    response = handler.lambda_handler(event, FakeLambdaContext())
    assert response["statusCode"] == 400, response["body"]

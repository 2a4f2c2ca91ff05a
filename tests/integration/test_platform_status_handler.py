"""GET /status through the real handler, against DynamoDB in moto."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from types import ModuleType

import boto3
import pytest
from moto import mock_aws

from tests.integration.conftest import STATE_TABLE_KEYS
from tests.lambda_events import FakeLambdaContext, rest_proxy_event

TABLE = "spothub-state"


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    for key, value in {
        "SPOTHUB_PREFIX": "spothub",
        "SPOTHUB_VERSION": "0.1.0",
        "POWERTOOLS_SERVICE_NAME": "spothub-platform-status",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "Spothub",
        "SPOTHUB_HUB_REGION": "us-east-1",
        "SPOTHUB_WORKER_REGIONS": "us-west-2,eu-west-1",
        "SPOTHUB_STATE_TABLE": TABLE,
        "SPOTHUB_CAPACITY_FALLBACK": "on-demand",
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        boto3.client("dynamodb").create_table(TableName=TABLE, **STATE_TABLE_KEYS)
        sys.modules.pop("platform_status.handler", None)
        yield importlib.import_module("platform_status.handler")
    sys.modules.pop("platform_status.handler", None)


def invoke(handler: ModuleType, method: str, path: str) -> tuple[int, dict]:
    response = handler.lambda_handler(rest_proxy_event(method, path), FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def test_status_reports_the_deployment_and_a_reachable_table(handler: ModuleType) -> None:
    status, body = invoke(handler, "GET", "/status")
    assert status == 200
    assert body == {
        "prefix": "spothub",
        "version": "0.1.0",
        "hub_region": "us-east-1",
        "worker_regions": ["us-west-2", "eu-west-1"],
        "capacity_fallback": "on-demand",
        "state_table": "reachable",
    }


def test_the_openapi_document_describes_the_answer(handler: ModuleType) -> None:
    schema = handler.app.get_openapi_schema().model_dump(mode="json", by_alias=True, exclude_none=True)
    answer = schema["paths"]["/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/ControlPlaneStatus"}
    assert schema["components"]["schemas"]["ControlPlaneStatus"]["properties"]["state_table"]["const"] == "reachable"


def test_status_is_503_with_the_reason_when_the_table_is_gone(handler: ModuleType) -> None:
    boto3.client("dynamodb").delete_table(TableName=TABLE)
    status, body = invoke(handler, "GET", "/status")
    assert status == 503
    assert body["message"].startswith(f"state table {TABLE} did not answer: ResourceNotFoundException")


def test_unknown_route_is_404(handler: ModuleType) -> None:
    status, _ = invoke(handler, "POST", "/status")
    assert status == 404


def test_missing_environment_fails_at_cold_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPOTHUB_STATE_TABLE", raising=False)
    sys.modules.pop("platform_status.handler", None)
    with pytest.raises(Exception, match="SPOTHUB_STATE_TABLE"):
        importlib.import_module("platform_status.handler")
    sys.modules.pop("platform_status.handler", None)

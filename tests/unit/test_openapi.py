"""The API's OpenAPI document: generated from the API functions (never by hand), checked in up to date, and
covering every route the stacks put on the REST API."""

from __future__ import annotations

import json

import pytest

from spothub.openapi import DOCUMENT, OpenApiError, document, merge, render


@pytest.fixture(scope="module")
def generated() -> dict:
    return document()


def test_the_checked_in_document_is_the_generated_one(generated: dict) -> None:
    assert DOCUMENT.read_text() == render(generated), "openapi.json is out of date: run `make openapi`"


def test_every_route_of_every_api_function_is_in_it(generated: dict) -> None:
    routes = {(method.upper(), path) for path, operations in generated["paths"].items() for method in operations}
    assert {
        ("GET", "/status"),
        ("GET", "/regions"),
        ("POST", "/spot-provisioning"),
        ("GET", "/spot-instances"),
        ("POST", "/agents/{instance_id}/register"),
        ("POST", "/agents/{instance_id}/heartbeat"),
        ("POST", "/jobs"),
        ("GET", "/jobs"),
        ("GET", "/jobs/{job_id}"),
        ("DELETE", "/jobs/{job_id}"),
        ("POST", "/workers/register"),
        ("GET", "/workers/{worker_id}/assignment"),
        ("POST", "/workers/{worker_id}/ack"),
        ("POST", "/workers/{worker_id}/status"),
        ("POST", "/search/query"),
        ("GET", "/search/status"),
        ("POST", "/search/scale-up"),
        ("POST", "/search/scale-down"),
        ("DELETE", "/search/instances/{instance_id}"),
        ("GET", "/events"),
        ("POST", "/deployments"),
        ("GET", "/deployments"),
        ("GET", "/deployments/{deployment_id}/status"),
        ("DELETE", "/deployments/{deployment_id}"),
        ("POST", "/deployments/{deployment_id}/restart"),
        ("POST", "/deployments/{deployment_id}/scale"),
        ("GET", "/resources/available"),
        ("GET", "/nodes"),
        ("GET", "/nodes/{instance_id}"),
        ("POST", "/nodes/{instance_id}/cordon"),
        ("POST", "/nodes/{instance_id}/uncordon"),
        ("POST", "/nodes/{instance_id}/drain"),
        ("GET", "/gpu-utilization"),
        ("GET", "/scaling/events"),
        ("GET", "/health"),
    } <= routes


def test_answers_are_described_by_their_models(generated: dict) -> None:
    job = generated["paths"]["/jobs/{job_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert job == {"$ref": "#/components/schemas/JobView"}
    assert "batches" in generated["components"]["schemas"]["JobView"]["properties"]


def test_a_route_served_twice_or_a_schema_name_used_twice_is_refused() -> None:
    one = {"paths": {"/x": {"get": {}}}, "components": {"schemas": {"A": {"type": "object"}}}}
    with pytest.raises(OpenApiError, match="GET /x is served by two functions"):
        merge({"first": one, "second": one})
    other = {"paths": {"/y": {"get": {}}}, "components": {"schemas": {"A": {"type": "string"}}}}
    with pytest.raises(OpenApiError, match="two different schemas are named A"):
        merge({"first": one, "second": other})


def test_the_document_is_json_with_sigv4_security(generated: dict) -> None:
    assert json.loads(render(generated))["security"] == [{"sigv4": []}]


def test_error_answers_are_in_the_shape_and_status_the_api_answers_them(generated: dict) -> None:
    """Powertools describes a request that breaks its model as a 422 of its own shape; the API answers a 400 in
    its one error shape (spothub_core.http), as every error: the document says so for every operation."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorAnswer"}}}
    for path, operations in generated["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert responses.get("422", {"content": error})["content"] == error, (method, path)  # not powertools'
            for status in ("400", "403", "500"):
                assert responses[status]["content"] == error, (method, path, status)
            assert ("415" in responses) == ("requestBody" in operation), (method, path)
    assert {"HTTPValidationError", "ValidationError", "ResponseValidationError"}.isdisjoint(
        generated["components"]["schemas"]
    )
    assert generated["components"]["schemas"]["ErrorAnswer"]["required"] == ["error"]
    # A route's own error statuses, and the status of its answer, are its own.
    assert "404" in generated["paths"]["/jobs/{job_id}"]["get"]["responses"]
    assert set(generated["paths"]["/jobs"]["post"]["responses"]) & {"200", "202"} == {"202"}

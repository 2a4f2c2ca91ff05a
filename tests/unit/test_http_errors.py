"""The one mapping from domain errors to HTTP answers: right status, a message, never a traceback."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import BaseModel, Field

from spothub_core.errors import Conflict, DependencyUnavailable, InvalidRequest, NotFound
from spothub_core.http import build_resolver
from tests.lambda_events import FakeLambdaContext, rest_proxy_event


class Widget(BaseModel):
    name: str = Field(min_length=1)
    size: int = Field(ge=1)


def make_app():
    app = build_resolver()

    @app.get("/raise/<kind>")
    def raise_error(kind: str) -> dict:
        errors = {
            "invalid": InvalidRequest("size must be positive"),
            "missing": NotFound("no such widget"),
            "conflict": Conflict("widget is being changed"),
            "down": DependencyUnavailable("state table did not answer"),
            "bug": ZeroDivisionError("division by zero"),
            "decoding": UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        }
        raise errors[kind]

    @app.post("/widgets")
    def create(widget: Widget) -> dict:
        return widget.model_dump()

    return app


def call(method: str, path: str, body=None) -> tuple[int, dict]:
    response = make_app().resolve(rest_proxy_event(method, path, body), FakeLambdaContext(aws_request_id="req-1"))
    return response["statusCode"], json.loads(response["body"])


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        ("invalid", 400, "size must be positive"),
        ("missing", 404, "no such widget"),
        ("conflict", 409, "widget is being changed"),
        ("down", 503, "state table did not answer"),
    ],
)
def test_domain_errors_map_to_their_status(kind: str, status: int, message: str) -> None:
    code, body = call("GET", f"/raise/{kind}")
    assert code == status
    assert body["message"] == message


@pytest.mark.parametrize("kind", ["bug", "decoding"])
def test_unexpected_errors_are_500_with_the_request_id_only(kind: str) -> None:
    code, body = call("GET", f"/raise/{kind}")
    assert code == 500
    assert body == {"error": "Internal Server Error", "message": "internal error, request id req-1"}


def test_invalid_body_is_400_naming_each_field() -> None:
    code, body = call("POST", "/widgets", {"name": "", "size": 0})
    assert code == 400
    fields = {detail["field"] for detail in body["details"]}
    assert fields == {"body.name", "body.size"}


def test_malformed_json_is_400() -> None:
    code, body = call("POST", "/widgets", "{not json")
    assert code == 400
    assert body["error"] == "Bad Request"


def test_unknown_route_is_404_naming_it() -> None:
    code, body = call("DELETE", "/nothing")
    assert code == 404
    assert body["message"] == "no route DELETE /nothing"


def test_valid_request_passes_through() -> None:
    code, body = call("POST", "/widgets", {"name": "a", "size": 2})
    assert (code, body) == (200, {"name": "a", "size": 2})


@pytest.mark.parametrize("raw", [b"\xff\xfe{}", b'{"name": "caf\xe9", "size": 2}'])
def test_a_body_that_is_not_utf8_is_400_saying_so(raw: bytes) -> None:
    # API Gateway hands a body that is not valid UTF-8 to the function base64-encoded.
    event = {**rest_proxy_event("POST", "/widgets"), "body": base64.b64encode(raw).decode(), "isBase64Encoded": True}
    response = make_app().resolve(event, FakeLambdaContext(aws_request_id="req-1"))
    assert response["statusCode"] == 400
    assert json.loads(response["body"]) == {
        "error": "Bad Request",
        "message": "the request body is not valid UTF-8 text",
    }


class Answer(BaseModel):
    count: int


def test_an_answer_that_breaks_its_response_model_is_a_500_not_a_400() -> None:
    app = build_resolver()

    @app.get("/broken")
    def broken() -> Answer:
        return {"count": "many"}  # type: ignore[return-value]

    response = app.resolve(rest_proxy_event("GET", "/broken"), FakeLambdaContext(aws_request_id="req-1"))
    assert response["statusCode"] == 500
    assert json.loads(response["body"])["message"] == "internal error, request id req-1"


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data", "application/xml"])
def test_a_body_that_is_not_json_is_415_saying_what_to_send(content_type: str) -> None:
    # Powertools refuses the first and third itself, and fails to read the second (no boundary): all the caller's.
    event = rest_proxy_event("POST", "/widgets", {"name": "a", "size": 2})
    event = {**event, "headers": {"Content-Type": content_type}, "multiValueHeaders": {"Content-Type": [content_type]}}
    response = make_app().resolve(event, FakeLambdaContext(aws_request_id="req-1"))
    assert response["statusCode"] == 415
    assert json.loads(response["body"]) == {
        "error": "Unsupported Media Type",
        "message": f"the request body must be JSON (Content-Type: application/json), not {content_type}",
    }

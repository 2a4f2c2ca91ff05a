"""The search router (lambdas/search_router) against a local HTTP server standing in for the search service: health
and query answers, failures as ok False (never an exception), the address rule, and the contract with the hub's
SearchRouter (dal/search_router.py), which reads what the function returns."""

from __future__ import annotations

import importlib
import io
import ipaddress
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

import pytest

from spothub.sandbox.ports import free_port
from spothub_core.dal.search_router import SearchRouter
from spothub_core.models.search_tasks import RouterResponse
from tests.lambda_events import FakeLambdaContext

ANSWER = {
    "results": [{"id": "doc-1", "score": 2.5, "title": "Spot instances", "snippet": "spare capacity"}],
    "total_documents": 3,
    "timings": {"search_ms": 1.5},
}


class Service:
    """The search service as the router sees it: GET /health, POST /search; a few paths that misbehave."""

    def __init__(self) -> None:
        self.health_status = 200
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                service.requests.append(("GET", self.path, dict(self.headers.items()), b""))
                if self.path == "/health":
                    self._answer(service.health_status, json.dumps({"status": "ok", "documents": 3}).encode())
                elif self.path == "/slow":
                    time.sleep(2)
                    self._answer(200, b"{}")
                elif self.path == "/text":
                    self._answer(200, b"plain words", "text/plain")
                elif self.path == "/huge":
                    self._answer(200, b"x" * (2 * 1024 * 1024), "text/plain")
                elif self.path == "/moved":
                    self.send_response(302)
                    self.send_header("Location", "http://example.com/")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._answer(404, b'{"error": "no such path"}')

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                service.requests.append(("POST", self.path, dict(self.headers.items()), body))
                try:
                    query = json.loads(body)
                except ValueError:
                    return self._answer(400, b'{"error": "not JSON"}')
                if not isinstance(query.get("query"), str):
                    return self._answer(400, b'{"error": "query is required"}')
                return self._answer(200, json.dumps(ANSWER).encode())

            def _answer(self, status: int, data: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    for key, value in {
        "SPOTHUB_PREFIX": "spothub",
        "SPOTHUB_VERSION": "0.1.0",
        "POWERTOOLS_SERVICE_NAME": "spothub-search-router",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    sys.modules.pop("search_router.handler", None)
    yield importlib.import_module("search_router.handler")
    sys.modules.pop("search_router.handler", None)


@pytest.fixture
def loopback(handler: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test hook: the local service listens on 127.0.0.1, which the router refuses otherwise."""
    monkeypatch.setattr(handler, "ALLOWED_NETWORKS", (*handler.ALLOWED_NETWORKS, ipaddress.IPv4Network("127.0.0.0/8")))


@pytest.fixture
def service() -> Iterator[Service]:
    server = Service()
    yield server
    server.stop()


def route(handler: ModuleType, event: Any) -> RouterResponse:
    answer = handler.lambda_handler(event, FakeLambdaContext())
    json.dumps(answer)  # what Lambda returns to the caller must serialize
    return RouterResponse.model_validate(answer)


def health(port: int, path: str = "/health", address: str = "127.0.0.1", timeout_s: float = 2.0) -> dict[str, Any]:
    return {"action": "health", "address": address, "port": port, "path": path, "timeout_s": timeout_s}


@pytest.mark.usefixtures("loopback")
def test_health_of_a_serving_instance_is_ok_with_its_answer(handler: ModuleType, service: Service) -> None:
    answer = route(handler, health(service.port))
    assert answer.ok
    assert answer.status_code == 200
    assert answer.body == {"status": "ok", "documents": 3}
    assert answer.error is None
    assert answer.elapsed_ms >= 0
    assert [(method, path) for method, path, _, _ in service.requests] == [("GET", "/health")]


@pytest.mark.usefixtures("loopback")
def test_a_health_check_answered_503_is_not_ok_and_says_the_status(handler: ModuleType, service: Service) -> None:
    service.health_status = 503
    answer = route(handler, health(service.port))
    assert not answer.ok
    assert answer.status_code == 503
    assert answer.body == {"status": "ok", "documents": 3}
    assert answer.error is None


@pytest.mark.usefixtures("loopback")
def test_nothing_listening_is_not_ok_with_the_connection_error(handler: ModuleType) -> None:
    answer = route(handler, health(free_port()))
    assert not answer.ok
    assert answer.status_code is None
    assert answer.error is not None
    assert answer.error.startswith("cannot connect:")
    assert "refused" in answer.error.lower()


@pytest.mark.usefixtures("loopback")
def test_a_service_slower_than_the_timeout_is_not_ok(handler: ModuleType, service: Service) -> None:
    started = time.monotonic()
    answer = route(handler, health(service.port, path="/slow", timeout_s=0.3))
    assert time.monotonic() - started < 1.5
    assert not answer.ok
    assert answer.status_code is None
    assert answer.error == "no answer within 0.3s"


@pytest.mark.usefixtures("loopback")
def test_a_query_posts_its_body_as_json_and_returns_the_services_answer(handler: ModuleType, service: Service) -> None:
    event = {
        "action": "query",
        "address": "127.0.0.1",
        "port": service.port,
        "path": "/search",
        "body": {"query": "spot capacity", "top_k": 5},
        "timeout_s": 5,
    }
    answer = route(handler, event)
    assert answer.ok
    assert answer.status_code == 200
    assert answer.body == ANSWER
    ((method, path, headers, body),) = service.requests
    assert (method, path) == ("POST", "/search")
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"query": "spot capacity", "top_k": 5}


@pytest.mark.usefixtures("loopback")
def test_a_query_the_service_rejects_is_not_ok_with_its_error(handler: ModuleType, service: Service) -> None:
    event = {"action": "query", "address": "127.0.0.1", "port": service.port, "path": "/search", "body": {"top_k": 5}}
    answer = route(handler, event)
    assert not answer.ok
    assert answer.status_code == 400
    assert answer.body == {"error": "query is required"}


@pytest.mark.usefixtures("loopback")
def test_text_is_returned_as_text_a_huge_answer_is_cut_and_a_redirect_is_not_followed(
    handler: ModuleType, service: Service
) -> None:
    text = route(handler, health(service.port, path="/text"))
    assert text.ok
    assert text.body == "plain words"
    huge = route(handler, health(service.port, path="/huge"))
    assert not huge.ok
    assert huge.status_code == 200
    assert len(huge.body) == handler.MAX_BODY_BYTES
    assert "larger than" in huge.error
    moved = route(handler, health(service.port, path="/moved"))
    assert not moved.ok
    assert moved.status_code == 302
    assert [path for _, path, _, _ in service.requests] == ["/text", "/huge", "/moved"]


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",  # the internet
        "127.0.0.1",  # the function's own loopback (the Lambda runtime API): Python's is_private says True
        "169.254.169.254",  # link-local
        "100.64.0.1",  # shared address space (carrier-grade NAT), not RFC 1918
        "fd00::1",  # an IPv6 unique local address: the instance is reached on its IPv4 address
        "search.example.com",  # a name: nothing is resolved
    ],
)
def test_an_address_outside_the_private_blocks_is_refused(handler: ModuleType, address: str) -> None:
    answer = route(handler, health(8000, address=address))
    assert not answer.ok
    assert answer.status_code is None
    assert answer.error is not None
    assert answer.error.startswith("refused:")


@pytest.mark.parametrize("address", ["10.0.1.23", "172.31.4.5", "192.168.0.9"])
def test_rfc1918_addresses_are_allowed(handler: ModuleType, address: str) -> None:
    from spothub_core.models.search_tasks import RouterRequest  # noqa: PLC0415

    request = RouterRequest.model_validate(health(8000, address=address, path="/health"))
    assert handler.check_target(request) == f"http://{address}:8000/health"


@pytest.mark.parametrize("path", ["//example.com/x", "health", "@example.com/"])
def test_a_path_that_is_not_absolute_is_refused(handler: ModuleType, path: str) -> None:
    answer = route(handler, health(8000, address="10.0.0.5", path=path))
    assert not answer.ok
    assert answer.error is not None
    assert answer.error.startswith("refused: path")


@pytest.mark.parametrize(
    "event",
    [
        {"action": "shutdown", "address": "10.0.0.5", "port": 8000},
        {"action": "health", "address": "10.0.0.5", "port": 70000},
        {"action": "health", "address": "10.0.0.5", "port": 8000, "timeout_s": 600},
        {"action": "health"},
        {},
        "health",
        None,
    ],
)
def test_a_bad_event_is_answered_not_ok_with_the_problem(handler: ModuleType, event: Any) -> None:
    answer = route(handler, event)
    assert not answer.ok
    assert answer.status_code is None
    assert answer.elapsed_ms == 0.0
    assert answer.error is not None
    assert answer.error.startswith("invalid request:")


class FakeLambda:
    """Lambda's synchronous Invoke of the router, in process: the hub's client reads what the function returns."""

    def __init__(self, handler: ModuleType) -> None:
        self.handler = handler
        self.payloads: list[dict[str, Any]] = []

    def invoke(self, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:
        assert InvocationType == "RequestResponse"
        event = json.loads(Payload)
        self.payloads.append(event)
        answer = self.handler.lambda_handler(event, FakeLambdaContext())
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(answer).encode())}


@pytest.mark.usefixtures("loopback")
def test_the_hubs_search_router_client_reads_the_functions_answers(handler: ModuleType, service: Service) -> None:
    router = SearchRouter(FakeLambda(handler), "arn:aws:lambda:us-west-2:123456789012:function:spothub-search-router")
    healthy = router.health("127.0.0.1", service.port, "/health", timeout_s=2)
    assert healthy.ok
    assert healthy.body["status"] == "ok"
    answer = router.query("127.0.0.1", service.port, {"query": "spot", "top_k": 1}, timeout_s=2)
    assert answer.ok
    assert answer.body == ANSWER
    refused = router.health("127.0.0.1", free_port(), "/health", timeout_s=2)
    assert not refused.ok
    assert refused.error

"""A stand-in spothub API for the CLI's tests: a local HTTP server that refuses what API Gateway would refuse
(no or a wrong SigV4 signature, checked by the sandbox's verifier) and answers canned JSON per route."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from spothub.sandbox import sigv4

STAGE = "v1"
REGION = "us-east-1"
# The tests' environment credentials (tests/conftest.py) and a sandbox's.
KEYS = {"testing": "testing", "AKIASANDBOXEXAMPLE": "sandbox-secret"}

Answer = tuple[int, Any]  # status, JSON body (a str is sent as it is, not as JSON)


@dataclass
class Seen:
    method: str
    path: str  # without the stage: "/jobs/job-1"
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]
    caller: str  # the access key id that signed it


@dataclass
class FakeApi:
    region: str = REGION
    keys: dict[str, str] = field(default_factory=lambda: dict(KEYS))
    answers: dict[tuple[str, str], deque[Answer] | Callable[[Seen], Answer]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def on(self, method: str, path: str, *answers: Answer) -> None:
        """Answer `method path` with these in turn; the last one repeats."""
        self.answers[(method, path)] = deque(answers)

    def answer(self, seen: Seen) -> Answer:
        planned = self.answers.get((seen.method, seen.path))
        if planned is None:
            return 403, {"error": "Missing Authentication Token", "request_id": "gw-1"}
        if callable(planned):
            return planned(seen)
        return planned.popleft() if len(planned) > 1 else planned[0]

    def requests(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if (s.method, s.path) == (method, path)]


def serve(api: FakeApi) -> tuple[ThreadingHTTPServer, threading.Thread]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = dict(self.headers.items())
            primary = next(iter(api.keys))
            try:
                caller = sigv4.verify(
                    method=self.command,
                    url=f"http://{self.headers['Host']}{self.path}",
                    headers=headers,
                    body=body,
                    access_key_id=primary,
                    secret_access_key=api.keys[primary],
                    region=api.region,
                    other_secrets=api.keys.get,
                )
            except sigv4.SignatureError as refused:
                self._send(403, {"error": str(refused), "request_id": "gw-refused"})
                return
            parts = urlsplit(self.path)
            path = parts.path.removeprefix(f"/{STAGE}")
            seen = Seen(
                self.command,
                path,
                parse_qs(parts.query),
                json.loads(body) if body else None,
                headers,
                caller.access_key_id,
            )
            api.seen.append(seen)
            self._send(*api.answer(seen))

        def _send(self, status: int, payload: Any) -> None:
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}/{STAGE}/"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    return server, thread


def closed_port_url() -> str:
    """A URL nothing listens on: connection refused."""
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{STAGE}/"


# --- canned answers, shaped like the API's models ---------------------------------------------------------

STATUS = {
    "prefix": "spothub",
    "version": "0.1.0",
    "hub_region": REGION,
    "worker_regions": ["us-west-2", "eu-west-1"],
    "capacity_fallback": "on-demand",
    "state_table": "reachable",
}


def replica(status: str, **fields: Any) -> dict[str, Any]:
    base = {
        "replica_id": "r-0",
        "status": status,
        "region": None,
        "instance_id": None,
        "capacity_type": None,
        "reason": None,
        "target_region": None,
        "error": None,
        "placed_at": None,
        "endpoint": None,
    }
    return base | fields


def instance(**fields: Any) -> dict[str, Any]:
    base = {
        "instance_id": "i-0abc",
        "region": "us-west-2",
        "replica_id": "r-0",
        "status": "serving",
        "public_ip": "203.0.113.7",
        "private_ip": "10.0.0.7",
        "capacity_type": "spot",
        "availability_zone": "us-west-2a",
        "instance_type": "g5.xlarge",
        "launched_at": "2026-11-27T16:00:00Z",
        "last_seen": "2026-11-27T16:05:00Z",
        "ready": True,
        "gpu": None,
        "endpoint": "http://203.0.113.7:8000",
        "billing": True,
    }
    return base | fields


def spot_instances(state: str, replicas: list[dict[str, Any]], instances: list[dict[str, Any]], **fields: Any) -> dict:
    base = {
        "provisioning": "enabled",
        "state": state,
        "region": next((r["region"] for r in replicas if r["status"] == "serving"), None),
        "endpoint": None,
        "replicas": replicas,
        "instances": instances,
        "settings": {"replicas": 1, "instance_types": None, "allowed_regions": None, "denied_regions": None},
        "remediations": [],
    }
    return base | fields


def job_view(status: str, *, completed: int = 0, failed: int = 0, pending: int = 0, **fields: Any) -> dict:
    base = {
        "job_id": "job-0123456789ab",
        "status": status,
        "reason": None,
        "input_bucket": "in-bucket",
        "input_prefix": "data/",
        "output_bucket": "out-bucket",
        "output_prefix": "results/",
        "image": "spothub/batch-transform:latest",
        "files": 200,
        "batches": {"pending": pending, "assigned": 0, "processing": 0, "completed": completed, "failed": failed},
        "max_workers": 3,
        "workers": [],
        "fleet": [],
        "errors": [],
        "created_at": "2026-11-27T16:00:00Z",
        "started_at": "2026-11-27T16:00:05Z",
        "finished_at": None,
    }
    return base | fields

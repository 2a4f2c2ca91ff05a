"""`spothub dashboard`: a local web page over the spothub API, for people to glance at.

A small HTTP server on 127.0.0.1 serves the page (spothub/dashboard_static/) and forwards the page's reads to the
API, signing each with the operator's credentials (the same connection as every API command: --sandbox, --url,
--profile/--region/--prefix). Nothing about the API's IAM auth changes, and the page never holds credentials.

Only reads go through, and only of the routes the panels show (READABLE): the page can look, never act. The
server answers only requests whose Host is its own address (a web page elsewhere cannot use it through DNS
rebinding), and sends no CORS headers (another origin cannot read its answers).
"""

from __future__ import annotations

import json
import mimetypes
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from spothub.api_client import ApiClient, ApiError, ApiUnreachable

STATIC = Path(__file__).with_name("dashboard_static")
# The API routes the page reads (GET only), by the prefix of their path.
READABLE = (
    "status",
    "spot-instances",
    "regions",
    "events",
    "jobs",
    "search/status",
    "deployments",
    "resources/available",
    "nodes",
    "gpu-utilization",
    "scaling/events",
    "health",
)
API_PREFIX = "/api/"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def readable(path: str) -> bool:
    return any(path == route or path.startswith(route + "/") for route in READABLE)


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], client: Callable[[], ApiClient], *, api_url: str) -> None:
        self.client_factory = client
        self.api_url = api_url
        self._client: ApiClient | None = None
        self._client_lock = threading.Lock()
        super().__init__(address, DashboardHandler)

    @property
    def client(self) -> ApiClient:
        with self._client_lock:
            if self._client is None:
                self._client = self.client_factory()
            return self._client

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class DashboardHandler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "spothub-dashboard"

    def log_message(self, *_args: object) -> None:
        """Quiet: the terminal shows the URL and errors only."""

    def do_GET(self) -> None:
        if not self._host_is_local():
            self._json(HTTPStatus.FORBIDDEN, {"message": "the dashboard answers requests to its own address only"})
            return
        parts = urlsplit(self.path)
        if parts.path.startswith(API_PREFIX):
            self._forward(parts.path[len(API_PREFIX) :], dict(parse_qsl(parts.query)))
        elif parts.path in ("/", "/index.html"):
            self._static("index.html")
        elif parts.path == "/config.json":
            self._json(HTTPStatus.OK, {"api_url": self.server.api_url})
        else:
            self._static(parts.path.lstrip("/"))

    def do_POST(self) -> None:
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"message": "the dashboard only reads"})

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _host_is_local(self) -> bool:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        return host in LOCAL_HOSTS

    def _forward(self, path: str, query: dict[str, str]) -> None:
        if not readable(path):
            self._json(HTTPStatus.NOT_FOUND, {"message": f"/{path} is not read by the dashboard"})
            return
        try:
            answer = self.server.client.request("GET", path, query=query or None)
        except ApiError as exc:
            self._json(exc.status, {"message": exc.line(), "status": exc.status})
            return
        except ApiUnreachable as exc:
            self._json(HTTPStatus.BAD_GATEWAY, {"message": str(exc), "status": HTTPStatus.BAD_GATEWAY})
            return
        except Exception as exc:  # credentials missing, a target that cannot be resolved: said on the page
            self._json(HTTPStatus.BAD_GATEWAY, {"message": str(exc) or type(exc).__name__, "status": 502})
            return
        self._json(HTTPStatus.OK, answer)

    def _static(self, name: str) -> None:
        file = (STATIC / name).resolve()
        if STATIC.resolve() not in file.parents or not file.is_file():
            self._json(HTTPStatus.NOT_FOUND, {"message": "not found"})
            return
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        self._send(HTTPStatus.OK, file.read_bytes(), f"{kind}; charset=utf-8" if kind.startswith("text/") else kind)

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
        self.end_headers()
        self.wfile.write(data)


def serve(client: Callable[[], ApiClient], *, api_url: str, host: str = "127.0.0.1", port: int = 0) -> DashboardServer:
    """Start the dashboard's server on a thread; the caller shuts it down."""
    server = DashboardServer((host, port), client, api_url=api_url)
    threading.Thread(target=server.serve_forever, name="spothub-dashboard", daemon=True).start()
    return server

"""Instance metadata (IMDSv2) for a simulated instance: session tokens with TTLs, metadata paths,
tags, the identity document, and the spot notices the market sends."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_TOKEN_TTL = 21600


class InstanceMetadataServer:
    def __init__(
        self,
        metadata: dict[str, str],
        tags: dict[str, str],
        identity: dict[str, Any],
        host: str = "127.0.0.1",
        live_tags: Callable[[], dict[str, str]] | None = None,
        *,
        tags_enabled: bool = True,
    ) -> None:
        self.metadata = dict(metadata)
        self.tags = dict(tags)
        # Instance metadata tags (the launch's MetadataOptions.InstanceMetadataTags): off, IMDS has no tags/ paths.
        self.tags_enabled = tags_enabled
        # The instance's tags as they are now (IMDS shows tags added after launch, e.g. a launch's claim).
        self._live_tags = live_tags
        self.identity = dict(identity)
        self.tokens: dict[str, float] = {}
        self.token_requests = 0
        self._lock = threading.Lock()
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_PUT(self) -> None:
                if self.path != "/latest/api/token":
                    return self._answer(404, "")
                try:
                    ttl = int(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "0"))
                except ValueError:
                    ttl = 0
                if not 1 <= ttl <= MAX_TOKEN_TTL:
                    return self._answer(400, "")
                return self._answer(200, imds.issue_token(ttl))

            def do_GET(self) -> None:
                if not imds.token_valid(self.headers.get("X-aws-ec2-metadata-token", "")):
                    return self._answer(401, "")
                value = imds.lookup(self.path)
                return self._answer(404, "") if value is None else self._answer(200, value)

            def _answer(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox-imds", daemon=True)

    def issue_token(self, ttl: int) -> str:
        token = secrets.token_hex(16)
        with self._lock:
            self.tokens[token] = time.monotonic() + ttl
            self.token_requests += 1
        return token

    def token_valid(self, token: str) -> bool:
        with self._lock:
            return self.tokens.get(token, 0.0) >= time.monotonic()

    def revoke_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def lookup(self, path: str) -> str | None:
        if path == "/latest/dynamic/instance-identity/document":
            return json.dumps(self.identity)
        prefix = "/latest/meta-data/"
        if not path.startswith(prefix):
            return None
        key = path[len(prefix) :]
        if key.startswith("tags/") and not self.tags_enabled:
            return None
        tags = {**self.tags, **self._live_tags()} if self._live_tags else self.tags
        if key == "tags/instance":
            return "\n".join(tags) if tags else None
        if key.startswith("tags/instance/"):
            return tags.get(key[len("tags/instance/") :])
        return self.metadata.get(key)

    def start(self) -> InstanceMetadataServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> InstanceMetadataServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

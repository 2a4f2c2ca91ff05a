"""A local IMDSv2 for agent tests: session tokens with TTLs, metadata, tags and identity."""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeImds:
    def __init__(self, metadata: dict[str, str], tags: dict[str, str], identity: dict[str, Any]) -> None:
        self.metadata = metadata
        self.tags = tags
        self.identity = identity
        self.tokens: dict[str, float] = {}
        self.token_requests = 0
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_PUT(self) -> None:
                if self.path != "/latest/api/token":
                    return self._answer(404, "")
                ttl = int(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "0"))
                if not 1 <= ttl <= 21600:
                    return self._answer(400, "")
                token = secrets.token_hex(8)
                imds.tokens[token] = time.monotonic() + ttl
                imds.token_requests += 1
                return self._answer(200, token)

            def do_GET(self) -> None:
                token = self.headers.get("X-aws-ec2-metadata-token", "")
                if imds.tokens.get(token, 0) < time.monotonic():
                    return self._answer(401, "")
                value = imds.lookup(self.path)
                return self._answer(404, "") if value is None else self._answer(200, value)

            def _answer(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def lookup(self, path: str) -> str | None:
        if path == "/latest/dynamic/instance-identity/document":
            return json.dumps(self.identity)
        prefix = "/latest/meta-data/"
        if not path.startswith(prefix):
            return None
        key = path[len(prefix) :]
        if key == "tags/instance":
            return "\n".join(self.tags) if self.tags else None
        if key.startswith("tags/instance/"):
            return self.tags.get(key.rsplit("/", 1)[-1])
        return self.metadata.get(key)

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def __enter__(self) -> FakeImds:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

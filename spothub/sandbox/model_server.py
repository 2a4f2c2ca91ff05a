"""A stand-in for the serving workload on a simulated instance: an OpenAI-compatible server as vLLM and
SGLang are, without a model. It answers `GET <health path>` with 503 while it "loads the model" and 200
after; `GET /v1/models`, `POST /v1/completions` and `POST /v1/chat/completions` with OpenAI-shaped JSON
naming the served model, and a header `x-spothub-instance` naming the instance that answered. With
SPOTHUB_API_KEY (or VLLM_API_KEY) in its environment, every request but the health check needs
`Authorization: Bearer <key>` and is otherwise refused with 401 and an OpenAI-shaped error, as vLLM's
`--api-key` does; without one it serves anyone, as vLLM does. Exits 0 on SIGTERM, as SGLang does.

Run by the agent's process runner in the sandbox, inside `container_entry.py` (the container's
environment): `python model_server.py --port P --load-seconds S --model M --instance-id I`; and by the sandbox's
deployment runtime (deployment_tasks.py) for each deployment task, with `--gpu-file F` once per GPU of the task.

GPU utilization the test sets: `GET /_sandbox/utilization` answers each GPU file's figures, `POST
/_sandbox/utilization {"utilization_pct": N}` (0-100, optionally "memory_used_mib") writes them into every GPU file,
where the node's stand-in NVML reads them (gpu_files.py has the format). No API key on these, as on the health path.

What a deployment's environment can ask of the stand-in, to play a failing model (read at start):
  SPOTHUB_SANDBOX_LOAD_SECONDS        the model loads this long instead of --load-seconds (large: never healthy)
  SPOTHUB_SANDBOX_EXIT_AFTER_SECONDS  the server exits by itself this long after its start (a crash) ...
  SPOTHUB_SANDBOX_EXIT_CODE           ... with this exit code (default 1)
Standard library only.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import signal
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INSTANCE_HEADER = "x-spothub-instance"
DEFAULT_MODEL = "spothub-sandbox-model"
# What the stand-in "generates": fixed, so a client can tell it reached the stand-in.
COMPLETION_TEXT = "Hello from the spothub sandbox."
UTILIZATION_PATH = "/_sandbox/utilization"
LOAD_SECONDS_VARIABLE = "SPOTHUB_SANDBOX_LOAD_SECONDS"
EXIT_AFTER_VARIABLE = "SPOTHUB_SANDBOX_EXIT_AFTER_SECONDS"
EXIT_CODE_VARIABLE = "SPOTHUB_SANDBOX_EXIT_CODE"


def api_key_from(environment: dict[str, str]) -> str:
    return environment.get("SPOTHUB_API_KEY") or environment.get("VLLM_API_KEY") or ""


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _usage(prompt: str, completion: str) -> dict[str, int]:
    prompt_tokens, completion_tokens = len(prompt.split()), len(completion.split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(body: dict[str, Any], model: str) -> dict[str, Any]:
    prompt = body.get("prompt", "")
    prompt = " ".join(prompt) if isinstance(prompt, list) else str(prompt)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": COMPLETION_TEXT, "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(prompt, COMPLETION_TEXT),
    }


def chat_completion(body: dict[str, Any], model: str) -> dict[str, Any]:
    messages = body.get("messages") or []
    prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": COMPLETION_TEXT},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(prompt, COMPLETION_TEXT),
    }


def read_gpu_file(path: str) -> dict[str, Any]:
    try:
        with open(path) as handle:
            figures = json.load(handle)
    except (OSError, ValueError):
        return {}
    return figures if isinstance(figures, dict) else {}


def write_gpu_file(path: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge `changes` into a GPU's figures, replacing the file whole (the stand-in NVML reads it concurrently)."""
    figures = {**read_gpu_file(path), **changes}
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(temporary, "w") as handle:
        json.dump(figures, handle)
    os.replace(temporary, path)
    return figures


def utilization_changes(body: Any) -> dict[str, Any]:
    """The figures a POST /_sandbox/utilization sets; ValueError naming what is wrong."""
    if not isinstance(body, dict) or "utilization_pct" not in body:
        raise ValueError('the body must be {"utilization_pct": 0-100}')
    changes: dict[str, Any] = {}
    for key, top in (("utilization_pct", 100), ("memory_used_mib", None)):
        if key not in body:
            continue
        value = body[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (top and value > top):
            raise ValueError(f"{key} must be a number from 0{f' to {top}' if top else ''}, got {value!r}")
        changes[key] = value
    return changes


def _exit_later(seconds: float, code: int) -> None:
    def exit_now() -> None:
        print(f"model server exits by itself with code {code} ({EXIT_AFTER_VARIABLE})", flush=True)
        os._exit(code)

    timer = threading.Timer(seconds, exit_now)
    timer.daemon = True
    timer.start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--load-seconds", type=float, default=1.0)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the model name it answers with")
    parser.add_argument("--instance-id", default="", help="answered in the x-spothub-instance header")
    parser.add_argument("--health-path", default="/health")
    parser.add_argument("--gpu-file", action="append", default=[], help="a GPU's figures file (gpu_files.py)")
    args = parser.parse_args(argv)
    load_seconds = float(os.environ.get(LOAD_SECONDS_VARIABLE) or args.load_seconds)
    ready_at = time.monotonic() + load_seconds
    if os.environ.get(EXIT_AFTER_VARIABLE):
        _exit_later(float(os.environ[EXIT_AFTER_VARIABLE]), int(os.environ.get(EXIT_CODE_VARIABLE) or 1))
    key = api_key_from(dict(os.environ))
    started = int(time.time())

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if args.instance_id:
                self.send_header(INSTANCE_HEADER, args.instance_id)
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if not key:
                return True
            given = self.headers.get("Authorization", "")
            if given.startswith("Bearer ") and hmac.compare_digest(
                given.removeprefix("Bearer ").encode(), key.encode()
            ):
                return True
            self._send(
                HTTPStatus.UNAUTHORIZED,
                _error("Invalid or missing API key: send Authorization: Bearer <key>", "invalid_request_error"),
            )
            return False

        def _set_utilization(self, raw: bytes) -> None:
            try:
                changes = utilization_changes(json.loads(raw or b"{}"))
            except ValueError as exc:
                self._send(HTTPStatus.BAD_REQUEST, _error(str(exc), "invalid_request_error"))
                return
            written = [{"file": f, **write_gpu_file(f, changes)} for f in args.gpu_file]
            self._send(HTTPStatus.OK, {"gpus": written})

        def _loaded(self) -> bool:
            if time.monotonic() >= ready_at:
                return True
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, _error("the model is loading", "service_unavailable"))
            return False

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == args.health_path:
                loaded = time.monotonic() >= ready_at
                self._send(
                    HTTPStatus.OK if loaded else HTTPStatus.SERVICE_UNAVAILABLE,
                    b"ok" if loaded else b"loading",
                    "text/plain",
                )
                return
            if path == UTILIZATION_PATH:
                self._send(HTTPStatus.OK, {"gpus": [{"file": f, **read_gpu_file(f)} for f in args.gpu_file]})
                return
            if not self._authorized():
                return
            if path == "/v1/models":
                if self._loaded():
                    model = {"id": args.model, "object": "model", "created": started, "owned_by": "spothub-sandbox"}
                    self._send(HTTPStatus.OK, {"object": "list", "data": [model]})
                return
            self._send(HTTPStatus.NOT_FOUND, _error(f"no route GET {path}", "not_found_error"))

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if path == UTILIZATION_PATH:
                self._set_utilization(raw)
                return
            if not self._authorized():
                return
            answers = {"/v1/completions": completion, "/v1/chat/completions": chat_completion}
            if path not in answers:
                self._send(HTTPStatus.NOT_FOUND, _error(f"no route POST {path}", "not_found_error"))
                return
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError as exc:
                self._send(HTTPStatus.BAD_REQUEST, _error(f"the body is not JSON: {exc}", "invalid_request_error"))
                return
            if not isinstance(body, dict):
                self._send(HTTPStatus.BAD_REQUEST, _error("the body is not a JSON object", "invalid_request_error"))
                return
            if body.get("model") not in (None, args.model):
                message = f"The model `{body.get('model')}` does not exist."
                self._send(HTTPStatus.NOT_FOUND, _error(message, "NotFoundError", "model_not_found"))
                return
            if self._loaded():
                self._send(HTTPStatus.OK, answers[path](body, args.model))

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(
        f"model server for {args.model} on port {args.port}, healthy in {load_seconds:.0f}s, "
        + ("API key required" if key else "no API key (serving anyone)"),
        flush=True,
    )
    server.serve_forever()
    print("model server stopped on SIGTERM", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

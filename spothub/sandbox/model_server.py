"""A stand-in for the serving workload on a simulated instance: answers `GET /health` with 503 while it
"loads the model" and 200 after, and exits 0 on SIGTERM, as SGLang does. Run by the agent's process
runner in the sandbox (`python model_server.py --port P --load-seconds S`); standard library only."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--load-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    ready_at = time.monotonic() + args.load_seconds

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def do_GET(self) -> None:
            loaded = time.monotonic() >= ready_at
            status = 200 if self.path == "/health" and loaded else 404 if self.path != "/health" else 503
            body = b"ok" if status == 200 else b"loading"  # noqa: PLR2004
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"model server on port {args.port}, healthy in {args.load_seconds:.0f}s", flush=True)
    server.serve_forever()
    print("model server stopped on SIGTERM", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

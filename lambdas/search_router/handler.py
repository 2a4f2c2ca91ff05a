"""Search region function, in the VPC: forwards one request of the hub's search functions to the search instance's
private address (`RouterRequest` -> `RouterResponse`, spothub_core/models/search_tasks.py). It is the only way to
the service port (the instance's security group lets in this function's group only), and calls no AWS API.

- health: `GET http://<address>:<port><path>`; query: `POST` of the JSON body. One attempt, no redirect followed,
  within the request's timeout (connect and read together).
- The answer: ok when the service answered 2xx; the body JSON-decoded when it is JSON, else its text; at most
  MAX_BODY_BYTES (a longer answer is cut and not ok: no caller could use it). A connection that failed or timed
  out, and a request it refuses, are ok False with the error and no status code. It never raises: whatever the
  event, the caller gets a RouterResponse, not a Lambda error.
- Addresses: IPv4 literals in the RFC 1918 blocks only (ALLOWED_NETWORKS), no names (nothing to resolve, so
  nothing to rebind): the function cannot be turned into a way to the internet, nor to its own loopback (the
  Lambda runtime API listens there) or link-local addresses, all of which Python's `is_private` would accept.
  Tests widen ALLOWED_NETWORKS to reach a local server on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

import urllib3
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from spothub_core.models.search_tasks import RouterAction, RouterRequest, RouterResponse
from spothub_core.observability import logger, tracer
from spothub_core.settings import BaseSettings, load_settings

ALLOWED_NETWORKS: tuple[ipaddress.IPv4Network, ...] = (
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
)
MAX_BODY_BYTES = 1024 * 1024  # a search answer is a few kB; Lambda's synchronous answer is limited to 6 MB
MAX_ERROR_CHARS = 500
HTTP_OK_FROM, HTTP_OK_TO = 200, 300  # ok: 2xx

settings = load_settings(BaseSettings)
# Kept across invocations of a warm function: the connection to the instance is reused. retries=False: a failed
# attempt is the caller's to retry (the monitor counts a miss, the API answers 503), within its own time budget.
http = urllib3.PoolManager(retries=False, maxsize=4)


class Refused(ValueError):
    """A request the router does not send."""


def check_target(request: RouterRequest) -> str:
    """The URL to call; Refused for an address outside ALLOWED_NETWORKS or a path that is not absolute."""
    try:
        address = ipaddress.ip_address(request.address)
    except ValueError as exc:
        raise Refused(f"address {request.address!r} is not an IP address") from exc
    if not any(address in network for network in ALLOWED_NETWORKS):
        raise Refused(f"address {address} is not a private (RFC 1918) address")
    # "//host" or "@host" after the port would name another host: only an absolute path is appended.
    if not request.path.startswith("/") or request.path.startswith("//"):
        raise Refused(f"path {request.path[:100]!r} must be an absolute path")
    return f"http://{address}:{request.port}{request.path}"


def forward(request: RouterRequest) -> RouterResponse:
    started = time.monotonic()

    def elapsed_ms() -> float:
        return round((time.monotonic() - started) * 1000, 1)

    try:
        url = check_target(request)
    except Refused as exc:
        return RouterResponse(ok=False, elapsed_ms=elapsed_ms(), error=f"refused: {exc}")
    headers = {"Accept": "application/json"}
    body = None
    method = "GET"
    if request.action == RouterAction.QUERY:
        method = "POST"
        body = json.dumps(request.body or {}).encode()
        headers["Content-Type"] = "application/json"
    try:
        response = http.request(
            method,
            url,
            body=body,
            headers=headers,
            timeout=urllib3.Timeout(total=request.timeout_s),
            redirect=False,
            preload_content=False,
        )
        try:
            data = response.read(MAX_BODY_BYTES + 1)
        finally:
            response.release_conn()
    # NewConnectionError (refused, unreachable) is a subclass of ConnectTimeoutError: it goes first.
    except urllib3.exceptions.NewConnectionError as exc:
        return RouterResponse(ok=False, elapsed_ms=elapsed_ms(), error=f"cannot connect: {_reason(exc)}")
    except urllib3.exceptions.TimeoutError:
        return RouterResponse(ok=False, elapsed_ms=elapsed_ms(), error=f"no answer within {request.timeout_s:g}s")
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return RouterResponse(ok=False, elapsed_ms=elapsed_ms(), error=f"cannot connect: {_reason(exc)}")
    status = int(response.status)
    ok = HTTP_OK_FROM <= status < HTTP_OK_TO
    if len(data) > MAX_BODY_BYTES:
        text = data[:MAX_BODY_BYTES].decode(errors="replace")
        error = f"the answer is larger than {MAX_BODY_BYTES} bytes: cut"
        return RouterResponse(ok=False, status_code=status, body=text, elapsed_ms=elapsed_ms(), error=error)
    return RouterResponse(ok=ok, status_code=status, body=_decoded(data), elapsed_ms=elapsed_ms())


def _decoded(data: bytes) -> Any:
    """JSON when it parses as JSON (whatever the Content-Type says), else the text; None when empty."""
    if not data:
        return None
    text = data.decode(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _reason(exc: BaseException) -> str:
    # urllib3 wraps the socket error (NewConnectionError's message names the connection object): its cause says it.
    cause = exc.__cause__ or exc.__context__
    reason = str(cause) if isinstance(cause, OSError) and str(cause) else str(exc)
    return reason[:MAX_ERROR_CHARS]


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    try:
        request = RouterRequest.model_validate(event)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors())
        logger.warning("invalid router request", extra={"problems": problems})
        return RouterResponse(
            ok=False, elapsed_ms=0.0, error=f"invalid request: {problems}"[:MAX_ERROR_CHARS]
        ).model_dump(mode="json")
    answer = forward(request)
    logger.info(
        "routed",
        extra={
            "action": request.action.value,
            "address": request.address,
            "port": request.port,
            "path": request.path,
            "ok": answer.ok,
            "status_code": answer.status_code,
            "elapsed_ms": answer.elapsed_ms,
            "error": answer.error,
        },
    )
    return answer.model_dump(mode="json")

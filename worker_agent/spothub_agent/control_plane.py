"""The control plane's agent API (hub region, AWS_IAM auth): register and heartbeat, signed with SigV4
for `execute-api` with the instance role's credentials, sent with urllib. The bodies are the models the
API validates them with (spothub_core.models.agent), serialized as they serialize themselves.

    POST {api_url}agents/{instance_id}/register   Registration {region, availability_zone, instance_type,
                                                   group, capacity_type, agent_version}
    POST {api_url}agents/{instance_id}/heartbeat  Heartbeat {ready, workload: {state, exit_code, last_lines},
                                                   gpu, drained}

Batch mode's worker API (spothub_core.models.batch_workers), signed the same way:

    POST {api_url}workers/register                WorkerRegistration -> WorkerRegistered
    GET  {api_url}workers/{worker_id}/assignment  -> BatchAssignment | WorkerCommand (shutdown, wait)
    POST {api_url}workers/{worker_id}/ack         BatchAck -> BatchUpdate
    POST {api_url}workers/{worker_id}/status      BatchStatusReport -> BatchUpdate

A 404 means the control plane does not know this instance or worker (never registered, or its record
expired): `InstanceUnknown`, and the caller registers again. A 409 on a worker call means the batch is not
this worker's any more (taken back): `Conflict`, and the caller drops it. Anything else that is not a 2xx
answer, including no answer at all or an answer that is not what the route answers, is `ApiUnavailable`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from pydantic import BaseModel, ValidationError

from spothub_core.models.agent import Heartbeat, Registration
from spothub_core.models.batch_workers import (
    BatchAck,
    BatchAssignment,
    BatchStatusReport,
    BatchUpdate,
    WorkerCommand,
    WorkerRegistered,
    WorkerRegistration,
)
from spothub_core.timings import AGENT_API_TIMEOUT_SECONDS

SERVICE = "execute-api"
Answer = TypeVar("Answer", bound=BaseModel)  # a TypeVar, not PEP 695: the agent runs on Python 3.11
HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409
ERROR_BODY_CHARS = 300


class ApiError(RuntimeError):
    pass


class ApiUnavailable(ApiError):
    """No answer, or an answer that is not a success: the caller backs off and re-reads the URL."""


class InstanceUnknown(ApiError):
    """404: the control plane has no record of this instance; register, then carry on."""


class Conflict(ApiError):
    """409 on a worker call: the batch is no longer this worker's (taken back after a timeout); drop it."""


def join_url(api_url: str, *parts: str) -> str:
    """`api_url` (with or without its trailing slash, e.g. `https://x.execute-api.../v1/`) plus path parts."""
    if not api_url.startswith(("http://", "https://")):
        raise ApiError(f"the API URL must be http(s), got {api_url!r}")
    return api_url.rstrip("/") + "/" + "/".join(urllib.parse.quote(part, safe="") for part in parts)


class ControlPlaneClient:
    def __init__(
        self,
        api_url: str,
        region: str,
        credentials: Callable[[], ReadOnlyCredentials | None],
        timeout: float = AGENT_API_TIMEOUT_SECONDS,
    ) -> None:
        self.api_url = api_url
        self._region = region
        self._credentials = credentials
        self._timeout = timeout

    def register(self, instance_id: str, registration: Registration) -> dict[str, Any]:
        return self._post(join_url(self.api_url, "agents", instance_id, "register"), registration)

    def heartbeat(self, instance_id: str, beat: Heartbeat) -> dict[str, Any]:
        return self._post(join_url(self.api_url, "agents", instance_id, "heartbeat"), beat)

    # --- batch mode: the worker API ---------------------------------------------------------

    def register_worker(self, registration: WorkerRegistration) -> WorkerRegistered:
        url = join_url(self.api_url, "workers", "register")
        return _parse(WorkerRegistered, self._post(url, registration), url)

    def assignment(self, worker_id: str) -> BatchAssignment | WorkerCommand:
        url = join_url(self.api_url, "workers", worker_id, "assignment")
        answer = self._send("GET", url, None)
        # A batch carries the job's command too (a list): a batch id is what tells the two apart.
        if "batch_id" in answer:
            return _parse(BatchAssignment, answer, url)
        return _parse(WorkerCommand, answer, url)

    def ack(self, worker_id: str, ack: BatchAck) -> BatchUpdate:
        url = join_url(self.api_url, "workers", worker_id, "ack")
        return _parse(BatchUpdate, self._post(url, ack), url)

    def report(self, worker_id: str, report: BatchStatusReport) -> BatchUpdate:
        url = join_url(self.api_url, "workers", worker_id, "status")
        return _parse(BatchUpdate, self._post(url, report), url)

    # --- the wire ------------------------------------------------------------------------------

    def _post(self, url: str, body: BaseModel) -> dict[str, Any]:
        return self._send("POST", url, json.dumps(body.model_dump(mode="json"), separators=(",", ":")).encode())

    def _send(self, method: str, url: str, data: bytes | None) -> dict[str, Any]:
        headers = self._signed_headers(method, url, data)
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 (http(s) checked)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:ERROR_BODY_CHARS].decode(errors="replace")
            if exc.code == HTTP_NOT_FOUND:
                raise InstanceUnknown(f"{url}: 404 {detail}") from exc
            if exc.code == HTTP_CONFLICT:
                raise Conflict(f"{url}: 409 {detail}") from exc
            raise ApiUnavailable(f"{url}: {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ApiUnavailable(f"{url}: no answer ({exc})") from exc
        try:
            answer = json.loads(payload) if payload else {}
        except ValueError as exc:
            raise ApiUnavailable(f"{url}: the answer is not JSON") from exc
        return answer if isinstance(answer, dict) else {}

    def _signed_headers(self, method: str, url: str, data: bytes | None) -> dict[str, str]:
        credentials = self._credentials()
        if credentials is None:
            raise ApiUnavailable("no AWS credentials to sign the request with (is the instance role attached?)")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        request = AWSRequest(method=method, url=url, data=data or b"", headers=headers)
        SigV4Auth(credentials, SERVICE, self._region).add_auth(request)
        return dict(request.headers.items())


def _parse(model: type[Answer], answer: dict[str, Any], url: str) -> Answer:
    try:
        return model.model_validate(answer)
    except ValidationError as exc:
        raise ApiUnavailable(f"{url}: the answer is not a {model.__name__}: {str(exc)[:ERROR_BODY_CHARS]}") from exc

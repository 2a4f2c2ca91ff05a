"""The control plane's agent API (hub region, AWS_IAM auth): register and heartbeat, signed with SigV4
for `execute-api` with the instance role's credentials, sent with urllib. The bodies are the models the
API validates them with (spothub_core.models.agent), serialized as they serialize themselves.

    POST {api_url}agents/{instance_id}/register   Registration {region, availability_zone, instance_type,
                                                   group, capacity_type, agent_version}
    POST {api_url}agents/{instance_id}/heartbeat  Heartbeat {ready, workload: {state, exit_code, last_lines},
                                                   gpu, drained}

A 404 on a heartbeat means the control plane does not know this instance (never registered, or its
record expired): `InstanceUnknown`, and the caller registers again. Anything else that is not a 2xx
answer, including no answer at all, is `ApiUnavailable`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from pydantic import BaseModel

from spothub_core.models.agent import Heartbeat, Registration
from spothub_core.timings import AGENT_API_TIMEOUT_SECONDS

SERVICE = "execute-api"
HTTP_NOT_FOUND = 404
ERROR_BODY_CHARS = 300


class ApiError(RuntimeError):
    pass


class ApiUnavailable(ApiError):
    """No answer, or an answer that is not a success: the caller backs off and re-reads the URL."""


class InstanceUnknown(ApiError):
    """404: the control plane has no record of this instance; register, then carry on."""


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

    def _post(self, url: str, body: BaseModel) -> dict[str, Any]:
        data = json.dumps(body.model_dump(mode="json"), separators=(",", ":")).encode()
        headers = self._signed_headers(url, data)
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")  # noqa: S310 (http(s) checked)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:ERROR_BODY_CHARS].decode(errors="replace")
            if exc.code == HTTP_NOT_FOUND:
                raise InstanceUnknown(f"{url}: 404 {detail}") from exc
            raise ApiUnavailable(f"{url}: {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ApiUnavailable(f"{url}: no answer ({exc})") from exc
        try:
            answer = json.loads(payload) if payload else {}
        except ValueError as exc:
            raise ApiUnavailable(f"{url}: the answer is not JSON") from exc
        return answer if isinstance(answer, dict) else {}

    def _signed_headers(self, url: str, data: bytes) -> dict[str, str]:
        credentials = self._credentials()
        if credentials is None:
            raise ApiUnavailable("no AWS credentials to sign the request with (is the instance role attached?)")
        request = AWSRequest(method="POST", url=url, data=data, headers={"Content-Type": "application/json"})
        SigV4Auth(credentials, SERVICE, self._region).add_auth(request)
        return dict(request.headers.items())

"""A client of the deployed spothub API: where it is, SigV4 signing with the caller's AWS credentials, and
the API's errors as one readable line.

Where the API is, first match wins: an explicit URL (`--url`, or SPOTHUB_API_URL); the running sandbox
(`--sandbox`: its state file holds the URL, the hub region and the sandbox's credentials); else the hub's
SSM parameter /spothub/<prefix>/api-url in the hub region, read with the standard credential chain
(`--profile`, environment, ~/.aws, SSO, instance roles), the same credentials that then sign each request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

if TYPE_CHECKING:
    import requests

# requests and botocore are imported where they are used: `spothub --help` stays fast.

SERVICE = "execute-api"
DEFAULT_PREFIX = "spothub"
REQUEST_TIMEOUT_S = 30.0
# https://<api id>.execute-api.<region>.amazonaws.com[.cn]/<stage>/: the region a signature must be scoped to.
EXECUTE_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.(?P<region>[a-z]{2}(-[a-z]+)+-\d+)\.amazonaws\.com(\.cn)?$")


class CliError(Exception):
    """Something the operator can fix, said in one line: no URL, no credentials, no region, no sandbox."""


class ApiUnreachable(CliError):
    """The API did not answer at all (connection refused, DNS, timeout)."""


class ApiError(CliError):
    """The API answered with an error status. Bodies are the API's `{"error", "message"[, "details"]}` or API
    Gateway's own `{"error": "<message>", "request_id"}` / `{"message"}`; anything else is shown as text."""

    def __init__(self, method: str, path: str, status: int, body: Any, hint: str = "") -> None:
        self.method, self.path, self.status, self.body, self.hint = method, path, status, body, hint
        super().__init__(self.line())

    @property
    def message(self) -> str:
        if isinstance(self.body, Mapping):
            text = self.body.get("message") or self.body.get("error")
            if text:
                return str(text)
        if isinstance(self.body, str) and self.body.strip():
            return " ".join(self.body.split())[:300]
        return "(no message)"

    @property
    def details(self) -> list[dict[str, Any]]:
        details = self.body.get("details") if isinstance(self.body, Mapping) else None
        return [item for item in details if isinstance(item, Mapping)] if isinstance(details, list) else []

    @property
    def request_id(self) -> str | None:
        value = self.body.get("request_id") if isinstance(self.body, Mapping) else None
        return str(value) if value else None

    def line(self) -> str:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "error"
        text = f"{self.status} {phrase}: {self.message}"
        if self.details:
            text += " (" + "; ".join(_detail(item) for item in self.details) + ")"
        if self.request_id:
            text += f" [request id {self.request_id}]"
        if self.hint:
            text += f"; {self.hint}"
        return text


def _detail(item: Mapping[str, Any]) -> str:
    where = item.get("field") or item.get("loc") or "request"
    if isinstance(where, list | tuple):
        where = ".".join(str(part) for part in where)
    # The field as the caller wrote it: validation names body fields "body.<field>".
    where = str(where).removeprefix("body.")
    return f"{where}: {item.get('problem') or item.get('msg') or 'invalid'}"


@dataclass(frozen=True)
class Target:
    """Where the API is and how to sign for it."""

    url: str  # the stage's base URL, ending in "/"
    region: str  # the hub region: the signature's scope
    credentials: Any = field(repr=False)  # botocore Credentials (refreshable ones refresh as they sign)
    source: str  # where the URL came from, for messages: "--url", "the sandbox (<file>)", "SSM <name> in <region>"


@dataclass(frozen=True)
class Connection:
    """What the command line said about the API (each field None/False when not given)."""

    url: str | None = None
    sandbox: bool = False
    state_dir: Path | None = None
    profile: str | None = None
    region: str | None = None
    prefix: str = DEFAULT_PREFIX


NO_CREDENTIALS = (
    "no AWS credentials found: pass --profile NAME (a profile in ~/.aws/config; `aws sso login --profile NAME` "
    "when it is an SSO one), or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; "
    "for the local sandbox use --sandbox"
)


def resolve_target(connection: Connection, *, default_state_dir: Path | None = None) -> Target:
    """Find the API and the credentials that sign for it, or raise CliError saying what to do."""
    if connection.url and connection.sandbox:
        raise CliError("give either --url or --sandbox, not both")
    if connection.sandbox:
        return _sandbox_target(connection.state_dir or default_state_dir or Path(".spothub"))
    session = _session(connection)
    if connection.url:
        url = _base_url(connection.url)
        region = connection.region or _region_of(url) or session.region_name
        if not region:
            raise CliError(
                f"no region to sign for {url}: pass --region (the hub region, where the API is) or set AWS_REGION"
            )
        return Target(url=url, region=region, credentials=_credentials(session), source="--url")
    region = connection.region or session.region_name
    if not region:
        raise CliError(
            "no hub region: pass --region (the region the hub is deployed in) or set AWS_REGION; "
            "or give the API's URL with --url, or use --sandbox for the local sandbox"
        )
    credentials = _credentials(session)
    parameter = f"/spothub/{connection.prefix}/api-url"
    url = _read_api_url(session, region, parameter, connection.prefix)
    return Target(url=_base_url(url), region=region, credentials=credentials, source=f"SSM {parameter} in {region}")


def sandbox_state(state_dir: Path) -> dict[str, Any]:
    """The running sandbox's state file (`spothub sandbox up` writes it, and removes it when it stops)."""
    state_file = state_dir / "sandbox.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(
            f"no running sandbox ({state_file}: {getattr(exc, 'strerror', None) or exc}); start one with "
            "`spothub sandbox up` (or `make sandbox`) in another terminal"
        ) from None
    if not isinstance(state, dict):
        raise CliError(f"{state_file} is not a sandbox state file")
    return state


def _sandbox_target(state_dir: Path) -> Target:
    state = sandbox_state(state_dir)
    state_file = state_dir / "sandbox.json"
    missing = [key for key in ("api_url", "hub_region") if not state.get(key)]
    if missing:
        raise CliError(f"{state_file} lacks {', '.join(missing)}: restart the sandbox (`spothub sandbox up`)")
    from botocore.credentials import Credentials  # noqa: PLC0415

    credentials = None
    if state.get("aws_access_key_id") and state.get("aws_secret_access_key"):
        credentials = Credentials(state["aws_access_key_id"], state["aws_secret_access_key"])
    else:  # a sandbox that does not publish its credentials: the caller's own, as against real AWS
        credentials = _credentials(_session(Connection()))
    return Target(
        url=_base_url(state["api_url"]),
        region=state["hub_region"],
        credentials=credentials,
        source=f"the sandbox ({state_file})",
    )


def _session(connection: Connection) -> Any:
    import boto3  # noqa: PLC0415 (keeps `spothub --help` fast)
    from botocore.exceptions import ProfileNotFound  # noqa: PLC0415

    try:
        return boto3.Session(profile_name=connection.profile, region_name=connection.region)
    except ProfileNotFound:
        raise CliError(
            f"AWS profile {connection.profile!r} not found in ~/.aws/config or ~/.aws/credentials: "
            f"create it with `aws configure --profile {connection.profile}` (or `aws configure sso`)"
        ) from None


def _credentials(session: Any) -> Any:
    from botocore.exceptions import BotoCoreError  # noqa: PLC0415

    try:
        credentials = session.get_credentials()
    except BotoCoreError as exc:  # a broken profile, an SSO token that expired, a credential process failing
        raise CliError(f"could not load AWS credentials: {exc}") from None
    if credentials is None:
        raise CliError(NO_CREDENTIALS)
    return credentials


def _read_api_url(session: Any, region: str, parameter: str, prefix: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError  # noqa: PLC0415

    try:
        ssm = session.client("ssm", region_name=region)
        return str(ssm.get_parameter(Name=parameter)["Parameter"]["Value"])
    except NoCredentialsError:
        raise CliError(NO_CREDENTIALS) from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ParameterNotFound":
            raise CliError(
                f"no spothub hub with prefix {prefix!r} in {region} ({parameter} does not exist): pass the hub's "
                "region with --region and its prefix with --prefix, or the API's URL with --url"
            ) from None
        if code in {"UnrecognizedClientException", "InvalidClientTokenId", "ExpiredTokenException", "ExpiredToken"}:
            raise CliError(
                f"AWS refused the credentials ({code}): they are wrong or expired; renew them "
                "(`aws sso login`, or new keys) or pick others with --profile"
            ) from None
        if code in {"AccessDeniedException", "AccessDenied"}:
            raise CliError(
                f"not allowed to read {parameter} in {region} (ssm:GetParameter): use credentials that may, "
                "or give the API's URL with --url"
            ) from None
        raise CliError(f"could not read {parameter} in {region}: {exc}") from None
    except BotoCoreError as exc:
        raise CliError(f"could not read {parameter} in {region}: {exc}") from None


def _base_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise CliError(f"not an API URL: {url!r} (expected https://<api id>.execute-api.<region>.amazonaws.com/v1/)")
    return url.strip().rstrip("/") + "/"


def _region_of(url: str) -> str | None:
    match = EXECUTE_API_HOST.match(urlsplit(url).hostname or "")
    return match["region"] if match else None


class ApiClient:
    """Signed JSON requests to the spothub API. Every answer is parsed JSON; every failure an ApiError
    (the API answered an error) or ApiUnreachable (it did not answer)."""

    def __init__(self, target: Target, *, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        import requests  # noqa: PLC0415

        self.target = target
        self.timeout_s = timeout_s
        self._http = requests.Session()

    def request(self, method: str, path: str, *, body: Any = None, query: Mapping[str, Any] | None = None) -> Any:
        import requests  # noqa: PLC0415
        from botocore.auth import SigV4Auth  # noqa: PLC0415
        from botocore.awsrequest import AWSRequest  # noqa: PLC0415

        url = self.target.url + path.lstrip("/")
        params = {key: value for key, value in (query or {}).items() if value is not None}
        if params:
            url += "?" + urlencode(params, quote_via=quote)
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        signable = AWSRequest(method=method, url=url, data=data, headers=headers)
        credentials = self.target.credentials
        frozen = credentials.get_frozen_credentials() if hasattr(credentials, "get_frozen_credentials") else credentials
        SigV4Auth(frozen, SERVICE, self.target.region).add_auth(signable)
        shown = f"{method} /{path.lstrip('/')}"
        try:
            response = self._http.request(
                method, url, data=data or None, headers=dict(signable.headers.items()), timeout=self.timeout_s
            )
        except requests.Timeout:
            raise ApiUnreachable(
                f"{shown}: no answer from {self.target.url} within {self.timeout_s:g}s ({self._where()})"
            ) from None
        except requests.ConnectionError as exc:
            raise ApiUnreachable(
                f"{shown}: could not reach {self.target.url} ({_reason(exc)}); {self._where()}"
            ) from None
        body_out = _parse(response)
        if response.status_code >= HTTPStatus.BAD_REQUEST:
            raise ApiError(method, path, response.status_code, body_out, self._hint(response.status_code, body_out))
        if not isinstance(body_out, dict | list):
            raise ApiError(
                method, path, response.status_code, body_out, "the answer is not JSON: is the URL the API's?"
            )
        return body_out

    # --- the routes -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self.request("GET", "status")

    def spot_instances(self) -> dict[str, Any]:
        return self.request("GET", "spot-instances")

    def regions(self) -> dict[str, Any]:
        return self.request("GET", "regions")

    def spot_provisioning(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "spot-provisioning", body=body)

    def submit_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "jobs", body=body)

    def jobs(self, *, limit: int | None = None, next_token: str | None = None) -> dict[str, Any]:
        return self.request("GET", "jobs", query={"limit": limit, "next_token": next_token})

    def job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"jobs/{quote(job_id, safe='')}")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"jobs/{quote(job_id, safe='')}")

    def search_query(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "search/query", body=body)

    def search_status(self) -> dict[str, Any]:
        return self.request("GET", "search/status")

    def search_scale(self, direction: str) -> dict[str, Any]:
        return self.request("POST", f"search/scale-{direction}", query={"count": 1})

    def search_terminate(self, instance_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"search/instances/{quote(instance_id, safe='')}")

    # --- messages ---------------------------------------------------------------------------------

    def _where(self) -> str:
        source = self.target.source
        if source.startswith("the sandbox"):
            return "is the sandbox still running? start it with `spothub sandbox up`"
        if source == "--url":
            return "check --url"
        return f"the URL came from {source}: is that deployment up?"

    def _hint(self, status: int, body: Any) -> str:
        if status != HTTPStatus.FORBIDDEN:
            return ""
        message = (body.get("message") or body.get("error") or "") if isinstance(body, Mapping) else str(body)
        if "Missing Authentication Token" in str(message):
            return "the API has no such route (a deployment older than this command?)"
        return (
            f"check the credentials (they need execute-api:Invoke on this API) and that {self.target.region} is the "
            "hub region"
        )


def _parse(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _reason(exc: Exception) -> str:
    text = str(exc)
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("getaddrinfo failed", "unknown host"),
        ("timed out", "timed out"),
    ):
        if needle in text:
            return reason
    return text.rsplit(": ", maxsplit=1)[-1][:200] or type(exc).__name__

"""The API client: where the API is (--url, the sandbox's state file, SSM), SigV4 signing the API accepts, and
every kind of failure as one line that says what to do."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
import requests
from moto import mock_aws

from spothub.api_client import (
    NO_CREDENTIALS,
    ApiClient,
    ApiError,
    ApiUnreachable,
    CliError,
    Connection,
    resolve_target,
)
from tests.unit.fake_spothub_api import STATUS, FakeApi, closed_port_url


@pytest.fixture
def no_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No profile files, no instance metadata: only what a test sets in the environment."""
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def no_credentials(no_aws_config: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def write_state(folder: Path, url: str, **extra: str) -> Path:
    state = {
        "api_url": url,
        "hub_region": "us-east-1",
        "aws_access_key_id": "AKIASANDBOXEXAMPLE",
        "aws_secret_access_key": "sandbox-secret",
        "aws_endpoint_url": "http://127.0.0.1:1/",
    } | extra
    (folder / "sandbox.json").write_text(json.dumps(state))
    return folder


def client_for(api: FakeApi, **connection: object) -> ApiClient:
    return ApiClient(resolve_target(Connection(url=api.url, **connection)))  # type: ignore[arg-type]


# --- where the API is --------------------------------------------------------------------------------


def test_url_signs_with_the_environment_credentials_for_the_given_region(api: FakeApi) -> None:
    target = resolve_target(Connection(url=api.url.rstrip("/"), region="us-east-1"))
    assert (target.url, target.region, target.source) == (api.url, "us-east-1", "--url")
    api.on("GET", "/status", (200, STATUS))
    assert ApiClient(target).status() == STATUS
    assert api.seen[-1].caller == "testing"


def test_url_takes_the_region_from_an_execute_api_host_before_the_environments() -> None:
    target = resolve_target(Connection(url="https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/v1"))
    assert (target.url, target.region) == ("https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/v1/", "eu-west-1")
    assert resolve_target(Connection(url="http://localhost:9/v1/")).region == "us-east-1"  # AWS_DEFAULT_REGION


def test_url_without_any_region_says_to_pass_one(no_aws_config: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(CliError, match="pass --region"):
        resolve_target(Connection(url="http://localhost:9/v1/"))


def test_a_url_that_is_no_url_is_refused() -> None:
    with pytest.raises(CliError, match="not an API URL"):
        resolve_target(Connection(url="abc123.execute-api"))


def test_url_and_sandbox_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="either --url or --sandbox"):
        resolve_target(Connection(url="http://localhost:9/v1/", sandbox=True, state_dir=tmp_path))


def test_sandbox_reads_url_region_and_credentials_from_its_state_file(api: FakeApi, tmp_path: Path) -> None:
    target = resolve_target(Connection(sandbox=True, state_dir=write_state(tmp_path, api.url)))
    assert (target.url, target.region) == (api.url, "us-east-1")
    assert target.source == f"the sandbox ({tmp_path / 'sandbox.json'})"
    api.on("GET", "/status", (200, STATUS))
    assert ApiClient(target).status() == STATUS
    assert api.seen[-1].caller == "AKIASANDBOXEXAMPLE"


def test_sandbox_without_its_state_file_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(CliError, match=r"no running sandbox .*start one with `spothub sandbox up`"):
        resolve_target(Connection(sandbox=True, state_dir=tmp_path))
    (tmp_path / "sandbox.json").write_text(json.dumps({"hub_region": "us-east-1"}))
    with pytest.raises(CliError, match="lacks api_url"):
        resolve_target(Connection(sandbox=True, state_dir=tmp_path))


@mock_aws
def test_ssm_parameter_of_the_prefix_names_the_api() -> None:
    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(Name="/spothub/spothub/api-url", Value="https://one.example/v1/", Type="String")
    ssm.put_parameter(Name="/spothub/blue/api-url", Value="https://blue.example/v1", Type="String")
    target = resolve_target(Connection())
    assert (target.url, target.region) == ("https://one.example/v1/", "us-east-1")
    assert target.source == "SSM /spothub/spothub/api-url in us-east-1"
    assert resolve_target(Connection(prefix="blue", region="us-east-1")).url == "https://blue.example/v1/"


@mock_aws
def test_no_hub_under_the_prefix_names_the_parameter_and_the_way_out() -> None:
    with pytest.raises(CliError) as raised:
        resolve_target(Connection(prefix="green", region="eu-west-1"))
    message = str(raised.value)
    assert "no spothub hub with prefix 'green' in eu-west-1" in message
    assert "/spothub/green/api-url" in message
    assert "--url" in message


@pytest.mark.usefixtures("no_credentials")
@pytest.mark.parametrize("connection", [Connection(), Connection(url="http://localhost:9/v1/")])
def test_no_credentials_say_where_to_get_them(connection: Connection) -> None:
    with pytest.raises(CliError) as raised:
        resolve_target(connection)
    assert str(raised.value) == NO_CREDENTIALS
    assert "--profile" in NO_CREDENTIALS
    assert "AWS_ACCESS_KEY_ID" in NO_CREDENTIALS


@pytest.mark.usefixtures("no_aws_config")
def test_an_unknown_profile_says_how_to_create_it() -> None:
    with pytest.raises(CliError, match=r"'ops' not found.*aws configure --profile ops"):
        resolve_target(Connection(profile="ops", url="http://localhost:9/v1/"))


@pytest.mark.usefixtures("no_credentials")
def test_a_profile_supplies_the_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "credentials").write_text("[ops]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    target = resolve_target(Connection(profile="ops", url="http://localhost:9/v1/", region="us-east-1"))
    assert target.credentials.get_frozen_credentials().access_key == "testing"


# --- signed requests ----------------------------------------------------------------------------------


def test_every_request_is_signed_as_the_api_checks_it(api: FakeApi) -> None:
    api.on("GET", "/status", (200, STATUS))
    api.on("POST", "/spot-provisioning", (200, {"message": "Spot provisioning enabled successfully"}))
    api.on("GET", "/jobs", (200, {"jobs": [], "next_token": None}))
    api.on("DELETE", "/jobs/job-0123456789ab", (200, {"job_id": "job-0123456789ab", "status": "cancelled"}))
    client = client_for(api)
    assert client.status() == STATUS
    assert client.spot_provisioning({"action": "enable", "replicas": 2})["message"].endswith("successfully")
    token = "eyJrIjogIkpPQiMxIn0=/+x y"  # an opaque token: padding, slashes, a plus, a space
    assert client.jobs(limit=5, next_token=token) == {"jobs": [], "next_token": None}
    assert client.cancel_job("job-0123456789ab")["status"] == "cancelled"
    assert [(s.method, s.path) for s in api.seen] == [
        ("GET", "/status"),
        ("POST", "/spot-provisioning"),
        ("GET", "/jobs"),
        ("DELETE", "/jobs/job-0123456789ab"),
    ]
    assert all(s.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/") for s in api.seen)
    assert all("/us-east-1/execute-api/aws4_request" in s.headers["Authorization"] for s in api.seen)
    assert all(s.headers["X-Amz-Security-Token"] == "testing" for s in api.seen)  # the session's token travels
    assert api.seen[1].body == {"action": "enable", "replicas": 2}
    assert api.seen[1].headers["Content-Type"] == "application/json"
    assert api.seen[2].query == {"limit": ["5"], "next_token": [token]}


def test_unsigned_requests_are_what_the_fake_refuses(api: FakeApi) -> None:
    api.on("GET", "/status", (200, STATUS))
    assert requests.get(api.url + "status", timeout=10).status_code == 403
    assert api.seen == []


def test_a_job_id_is_one_path_segment(api: FakeApi) -> None:
    api.on("GET", "/jobs/a%2Fb", (200, {"job_id": "a/b"}))
    assert client_for(api).job("a/b") == {"job_id": "a/b"}


# --- failures ---------------------------------------------------------------------------------------------


def test_a_400_names_each_field_at_fault(api: FakeApi) -> None:
    details = [
        {"field": "input_bucket", "problem": "String should match pattern '^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$'"},
        {"field": "body.batch_size", "problem": "Input should be less than or equal to 1000"},
    ]
    api.on("POST", "/jobs", (400, {"error": "Bad Request", "message": "the request is not valid", "details": details}))
    with pytest.raises(ApiError) as raised:
        client_for(api).submit_job({"input_bucket": "Bad_Bucket", "batch_size": 5000})
    error = raised.value
    assert (error.status, error.method, error.path) == (400, "POST", "jobs")
    assert str(error) == (
        "400 Bad Request: the request is not valid (input_bucket: String should match pattern "
        "'^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$'; batch_size: Input should be less than or equal to 1000)"
    )
    assert "\n" not in str(error)


def test_a_404_says_what_is_missing(api: FakeApi) -> None:
    api.on("GET", "/jobs/job-000000000000", (404, {"error": "Not Found", "message": "no job job-000000000000"}))
    with pytest.raises(ApiError, match=r"^404 Not Found: no job job-000000000000$"):
        client_for(api).job("job-000000000000")


def test_a_500_carries_its_request_id(api: FakeApi) -> None:
    api.on("GET", "/status", (500, {"error": "Internal Server Error", "message": "internal error, request id r-42"}))
    with pytest.raises(ApiError, match=r"^500 Internal Server Error: internal error, request id r-42$"):
        client_for(api).status()


def test_api_gateways_own_refusals_are_shown_with_a_hint(api: FakeApi) -> None:
    with pytest.raises(ApiError) as raised:
        client_for(api).request("GET", "nowhere")
    assert str(raised.value) == (
        "403 Forbidden: Missing Authentication Token [request id gw-1]; the API has no such route "
        "(a deployment older than this command?)"
    )


def test_a_refused_signature_points_at_the_credentials_and_region(api: FakeApi) -> None:
    with pytest.raises(ApiError) as raised:
        client_for(api, region="eu-west-1").status()
    assert raised.value.status == 403
    assert "Credential should be scoped to a valid region" in str(raised.value)
    assert "execute-api:Invoke" in str(raised.value)
    assert "eu-west-1 is the hub region" in str(raised.value)


def test_an_answer_that_is_not_json_is_shown_as_text(api: FakeApi) -> None:
    api.on("GET", "/status", (502, "<html>\n  Bad gateway\n</html>"))
    with pytest.raises(ApiError, match=r"^502 Bad Gateway: <html> Bad gateway </html>$"):
        client_for(api).status()
    api.on("GET", "/status", (200, "OK"))
    with pytest.raises(ApiError, match="the answer is not JSON"):
        client_for(api).status()


def test_connection_refused_says_what_to_check(tmp_path: Path) -> None:
    url = closed_port_url()
    with pytest.raises(ApiUnreachable) as raised:
        ApiClient(resolve_target(Connection(url=url))).status()
    assert str(raised.value) == f"GET /status: could not reach {url} (connection refused); check --url"
    with pytest.raises(ApiUnreachable, match=r"is the sandbox still running\? start it with `spothub sandbox up`"):
        ApiClient(resolve_target(Connection(sandbox=True, state_dir=write_state(tmp_path, url)))).status()

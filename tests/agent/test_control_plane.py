"""The control plane's agent API client: SigV4 for execute-api in the hub region, the two calls, errors."""

from __future__ import annotations

import re

import pytest
from botocore.credentials import ReadOnlyCredentials

from spothub_agent.control_plane import (
    ApiError,
    ApiUnavailable,
    ControlPlaneClient,
    InstanceUnknown,
    join_url,
)
from spothub_core.models.agent import Heartbeat, Registration
from tests.agent.conftest import HUB_REGION, INSTANCE_ID, FakeControlPlane

CREDENTIALS = ReadOnlyCredentials("AKIDAGENTTEST", "secret", None)
REGISTRATION = Registration(
    region="us-west-2",
    availability_zone="us-west-2b",
    instance_type="g5.xlarge",
    group="spothub-gpu",
    capacity_type="spot",
    agent_version="0.2.0",
)


@pytest.mark.parametrize(
    "base",
    ["https://abc.execute-api.us-east-1.amazonaws.com/v1/", "https://abc.execute-api.us-east-1.amazonaws.com/v1"],
)
def test_paths_join_with_or_without_the_trailing_slash(base: str) -> None:
    assert (
        join_url(base, "agents", "i-0abc", "register")
        == "https://abc.execute-api.us-east-1.amazonaws.com/v1/agents/i-0abc/register"
    )
    with pytest.raises(ApiError):
        join_url("abc.execute-api.us-east-1.amazonaws.com/v1/", "agents")


def test_register_and_heartbeat_are_signed_for_execute_api_in_the_hub_region(api: FakeControlPlane) -> None:
    api.assignment = {"replica_id": "r-1"}
    client = ControlPlaneClient(api.url, HUB_REGION, lambda: CREDENTIALS)
    assert client.register(INSTANCE_ID, REGISTRATION) == {
        "instance_id": INSTANCE_ID,
        "assignment": {"replica_id": "r-1"},
    }
    beat = Heartbeat(ready=True, workload={"state": "running"})
    assert client.heartbeat(INSTANCE_ID, beat)["instance_id"] == INSTANCE_ID
    assert api.actions() == ["register", "heartbeat"]
    assert api.calls[0].body == {
        "region": "us-west-2",
        "availability_zone": "us-west-2b",
        "instance_type": "g5.xlarge",
        "group": "spothub-gpu",
        "capacity_type": "spot",
        "agent_version": "0.2.0",
    }
    assert api.calls[1].body == {
        "ready": True,
        "workload": {"state": "running", "exit_code": None, "last_lines": []},
        "gpu": {},
        "drained": False,
    }
    # What the agent sends is what the agent API validates it with.
    assert Registration.model_validate(api.calls[0].body) == REGISTRATION
    assert Heartbeat.model_validate(api.calls[1].body) == beat
    for call in api.calls:
        authorization = call.headers["Authorization"]
        assert re.fullmatch(
            r"AWS4-HMAC-SHA256 Credential=AKIDAGENTTEST/\d{8}/us-east-1/execute-api/aws4_request, "
            r"SignedHeaders=[a-z0-9;-]*host[a-z0-9;-]*, Signature=[0-9a-f]{64}",
            authorization,
        ), authorization
        assert "X-Amz-Date" in call.headers


def test_a_session_token_is_sent(api: FakeControlPlane) -> None:
    client = ControlPlaneClient(api.url, HUB_REGION, lambda: ReadOnlyCredentials("ASIA", "s", "role-session-token"))
    client.register(INSTANCE_ID, REGISTRATION)
    assert api.calls[0].headers["X-Amz-Security-Token"] == "role-session-token"


def test_a_heartbeat_of_an_unknown_instance_is_instance_unknown(api: FakeControlPlane) -> None:
    client = ControlPlaneClient(api.url, HUB_REGION, lambda: CREDENTIALS)
    with pytest.raises(InstanceUnknown, match="register first"):
        client.heartbeat(INSTANCE_ID, Heartbeat(ready=False))


def test_failures_are_api_unavailable(api: FakeControlPlane) -> None:
    api.fail_with = 503
    with pytest.raises(ApiUnavailable, match="503"):
        ControlPlaneClient(api.url, HUB_REGION, lambda: CREDENTIALS).register(INSTANCE_ID, REGISTRATION)
    with pytest.raises(ApiUnavailable, match="no answer"):
        ControlPlaneClient("http://127.0.0.1:9/v1/", HUB_REGION, lambda: CREDENTIALS, timeout=1).register(
            INSTANCE_ID, REGISTRATION
        )
    with pytest.raises(ApiUnavailable, match="no AWS credentials"):
        ControlPlaneClient(api.url, HUB_REGION, lambda: None).register(INSTANCE_ID, REGISTRATION)

"""The agent's IMDSv2 client and configuration, against a local IMDS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spothub.sandbox.imds import InstanceMetadataServer
from spothub_agent.config import ConfigError, load_config
from spothub_agent.imds import Imds, ImdsError

IDENTITY = {
    "instanceId": "i-0abc",
    "region": "us-west-2",
    "availabilityZone": "us-west-2b",
    "instanceType": "g5.xlarge",
}
TAGS = {
    "spothub:prefix": "spothub",
    "spothub:hub-region": "us-east-1",
    "spothub:lifecycle-hook": "spothub-workload-healthy",
    "spothub:model-cache": "/mnt/model-cache",
    "aws:autoscaling:groupName": "spothub-gpu",
}


@pytest.fixture
def imds() -> Iterator[InstanceMetadataServer]:
    with InstanceMetadataServer({"instance-id": "i-0abc"}, dict(TAGS), IDENTITY) as server:
        yield server


def test_reads_metadata_with_one_token(imds: InstanceMetadataServer) -> None:
    client = Imds(imds.endpoint)
    assert client.get("instance-id") == "i-0abc"
    assert client.get("spot/instance-action") is None
    assert imds.token_requests == 1


def test_token_is_renewed_before_it_expires(imds: InstanceMetadataServer) -> None:
    now = [1000.0]
    client = Imds(imds.endpoint, token_ttl=120, clock=lambda: now[0])
    client.get("instance-id")
    now[0] += 30
    client.get("instance-id")
    assert imds.token_requests == 1
    now[0] += 40  # 70 s old: inside the 60 s renewal margin of a 120 s token
    client.get("instance-id")
    assert imds.token_requests == 2


def test_a_revoked_token_is_replaced_once(imds: InstanceMetadataServer) -> None:
    client = Imds(imds.endpoint)
    client.get("instance-id")
    imds.revoke_tokens()
    assert client.get("instance-id") == "i-0abc"
    assert imds.token_requests == 2


def test_unreachable_imds_is_a_clear_error() -> None:
    with pytest.raises(ImdsError, match="did not answer"):
        Imds("http://127.0.0.1:9", timeout=0.5).get("instance-id")


def test_configuration_comes_from_identity_and_tags(imds: InstanceMetadataServer) -> None:
    config = load_config(Imds(imds.endpoint))
    assert config.instance_id == "i-0abc"
    assert config.region == "us-west-2"
    assert config.hub_region == "us-east-1"
    assert config.auto_scaling_group == "spothub-gpu"
    assert config.lifecycle_hook == "spothub-workload-healthy"
    assert config.ssm_prefix == "/spothub/spothub"


def test_missing_tags_are_named(imds: InstanceMetadataServer) -> None:
    del imds.tags["spothub:hub-region"]
    with pytest.raises(ConfigError, match="spothub:hub-region"):
        load_config(Imds(imds.endpoint))

"""The search region's EC2 and SSM as the launcher reads and calls them, against moto: the SearchHost parameter
(read once per container; missing or malformed is fatal), the volume and the subnets' zones, the launch's
instances by tag, and AttachVolume's refusals by class."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from spothub_core.dal.search_placement import SearchPlacement
from spothub_core.errors import FatalError, TransientError
from tests.integration.conftest import ApiCalls
from tests.integration.search_launcher_fixtures import (  # noqa: F401 (search_region_fixture: a fixture)
    HOST_PARAMETER,
    LAUNCH_ID,
    SEARCH_REGION,
    SearchRegion,
    build_search_region,
    running,
    search_region_fixture,
)


def _placement(region: SearchRegion) -> SearchPlacement:
    return SearchPlacement(region.ec2, region.ssm, HOST_PARAMETER)


def test_the_host_is_read_once_per_container(search_region: SearchRegion) -> None:
    placement = _placement(search_region)
    calls = ApiCalls(search_region.ssm, "GetParameter")
    assert placement.host() == search_region.host
    assert placement.host() == search_region.host
    assert len(calls.of("GetParameter")) == 1
    assert placement.region == SEARCH_REGION


@pytest.fixture
def unpublished() -> Iterator[SearchRegion]:
    with mock_aws():
        yield build_search_region(publish_host=False)


def test_a_missing_host_parameter_is_fatal_and_says_where(unpublished: SearchRegion) -> None:
    with pytest.raises(FatalError, match=f"{HOST_PARAMETER} does not exist in {SEARCH_REGION}"):
        _placement(unpublished).host()


def test_a_malformed_host_parameter_is_fatal(unpublished: SearchRegion) -> None:
    unpublished.ssm.put_parameter(Name=HOST_PARAMETER, Type="String", Value='{"region": "us-west-2"}')
    with pytest.raises(FatalError, match="is not a SearchHost"):
        _placement(unpublished).host()


def test_a_failing_ssm_is_transient(search_region: SearchRegion) -> None:
    ApiCalls(search_region.ssm).answer("GetParameter", error=("ThrottlingException", "slow down"))
    with pytest.raises(TransientError, match="ThrottlingException"):
        _placement(search_region).host()


def test_the_volume_and_the_subnets_zones(search_region: SearchRegion) -> None:
    region = search_region
    placement = _placement(region)
    volume = placement.volume(region.volume_id)
    assert volume is not None
    assert (volume.availability_zone, volume.state, volume.attachments) == ("us-west-2a", "available", ())
    assert placement.volume("vol-0123456789abcdef0") is None
    assert placement.subnet_zones([region.subnet_a, region.subnet_b]) == {
        region.subnet_a: "us-west-2a",
        region.subnet_b: "us-west-2b",
    }


def test_a_launchs_instances_are_found_by_its_tag_while_alive(search_region: SearchRegion) -> None:
    region = search_region
    placement = _placement(region)
    assert placement.launched_by(LAUNCH_ID) == []
    region.other_instance()  # not the launch's
    region.claim()
    instance_id = running(region)
    (found,) = placement.launched_by(LAUNCH_ID)
    assert (found.instance_id, found.state, found.facts.capacity_type) == (instance_id, "running", "spot")
    assert placement.instance(instance_id) == found
    assert placement.instance("i-0123456789abcdef0") is None
    region.ec2.terminate_instances(InstanceIds=[instance_id])
    assert placement.launched_by(LAUNCH_ID) == []


def test_attach_refusals_by_class(search_region: SearchRegion) -> None:
    region = search_region
    placement = _placement(region)
    instance_id = region.other_instance()
    calls = ApiCalls(region.ec2)
    calls.answer("AttachVolume", error=("InvalidVolume.ZoneMismatch", "not in the same zone"))
    with pytest.raises(FatalError, match="ZoneMismatch"):
        placement.attach(region.volume_id, instance_id, "/dev/sdf")
    calls.answer("AttachVolume", error=("VolumeInUse", f"{region.volume_id} is already attached to an instance"))
    with pytest.raises(TransientError, match="VolumeInUse"):
        placement.attach(region.volume_id, instance_id, "/dev/sdf")
    calls.forget("AttachVolume")
    assert placement.attach(region.volume_id, instance_id, "/dev/sdf") == "/dev/sdf"
    volume = placement.volume(region.volume_id)
    assert volume is not None and [(a.instance_id, a.state) for a in volume.attachments] == [(instance_id, "attached")]

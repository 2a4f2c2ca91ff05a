"""The search region in moto (us-west-2) as the launcher sees it: a VPC with a subnet in us-west-2a and one in
us-west-2b, the instance security group, the search launch template, the index volume in us-west-2a and the
SearchHost parameter; with the hub's search table (us-east-1) and a router that answers as told.

Import the fixture into a test module (it is named `search_region`):
`from tests.integration.search_launcher_fixtures import search_region_fixture  # noqa: F401`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spothub_core.contracts import search_template_name
from spothub_core.dal.search_instances import SearchInstances
from spothub_core.dal.search_placement import SearchPlacement
from spothub_core.dal.search_store import SearchStore
from spothub_core.errors import DependencyUnavailable
from spothub_core.logic.search_launcher import SearchLauncher
from spothub_core.models.search_records import SearchHost, SearchInstance, SearchStatus
from spothub_core.models.search_tasks import RouterResponse
from tests.integration.search_fixtures import create_search_table

SEARCH_REGION = "us-west-2"
PREFIX = "spothub"
HOST_PARAMETER = f"/spothub/{PREFIX}/search-host"
INSTANCE_TYPE = "g5.xlarge"
PORT = 8000
NOW = 1_800_000_000.0
LAUNCH_ID = "s-20270115080000-0a1b2c3d"


class FakeRouter:
    """The router function's answers, as told: `ok`, or a router that cannot be reached (`unreachable`)."""

    def __init__(self) -> None:
        self.ok = False
        self.unreachable = False
        self.asked: list[tuple[str, int, str]] = []

    def health(self, address: str, port: int, path: str, timeout_s: float) -> RouterResponse:
        self.asked.append((address, port, path))
        if self.unreachable:
            raise DependencyUnavailable("could not reach the search router: TooManyRequestsException")
        if self.ok:
            return RouterResponse(ok=True, status_code=200, body={"status": "ok"}, elapsed_ms=12.0)
        return RouterResponse(ok=False, elapsed_ms=5000.0, error="timed out")


@dataclass
class SearchRegion:
    ec2: Any
    ssm: Any
    table: Any
    store: SearchStore
    vpc_id: str
    subnet_a: str  # us-west-2a, the volume's zone
    subnet_b: str  # us-west-2b
    security_group_id: str
    template_id: str
    volume_id: str
    router: FakeRouter = field(default_factory=FakeRouter)

    @property
    def host(self) -> SearchHost:
        return SearchHost(
            region=SEARCH_REGION,
            launch_template_id=self.template_id,
            security_group_id=self.security_group_id,
            subnet_ids=[self.subnet_b, self.subnet_a],
        )

    def launcher(self, **overrides: Any) -> SearchLauncher:
        fields: dict[str, Any] = {
            "store": self.store,
            "placement": SearchPlacement(self.ec2, self.ssm, HOST_PARAMETER),
            "instances": SearchInstances(self.ec2),
            "router": self.router,
            "prefix": PREFIX,
            "hub_region": "us-east-1",
            "instance_type": INSTANCE_TYPE,
            "spot_max_price": "",
            "port": PORT,
            "health_path": "/health",
        }
        return SearchLauncher(**{**fields, **overrides})

    def claim(self, launch_id: str = LAUNCH_ID, *, replaces: str | None = None) -> SearchInstance:
        """What start_launch leaves: the slot held by the launch, its record launching."""
        record = SearchInstance(launch_id=launch_id, volume_id=self.volume_id, created_at=NOW, replaces=replaces)
        if replaces:
            assert self.store.transfer_slot(replaces, launch_id, NOW)
        else:
            assert self.store.claim_slot(launch_id, NOW)
        assert self.store.create(record)
        return record

    def other_instance(self, tags: dict[str, str] | None = None) -> str:
        """An instance in the volume's zone launched outside the launcher."""
        reservation = self.ec2.run_instances(
            LaunchTemplate={"LaunchTemplateId": self.template_id},
            MinCount=1,
            MaxCount=1,
            SubnetId=self.subnet_a,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()]}
            ]
            if tags
            else [],
        )
        return str(reservation["Instances"][0]["InstanceId"])

    def state(self, instance_id: str) -> str:
        reservations = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return str(reservations[0]["Instances"][0]["State"]["Name"])

    def record(self, launch_id: str = LAUNCH_ID) -> SearchInstance:
        record = self.store.get(launch_id)
        assert record is not None
        return record

    def set_record(self, launch_id: str, **fields: Any) -> None:
        assert self.store.update(launch_id, fields) is not None


def build_search_region(*, publish_host: bool = True) -> SearchRegion:
    ec2 = boto3.client("ec2", region_name=SEARCH_REGION)
    ssm = boto3.client("ssm", region_name=SEARCH_REGION)
    vpc_id = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet_a = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.40.1.0/24", AvailabilityZone="us-west-2a")["Subnet"][
        "SubnetId"
    ]
    subnet_b = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.40.2.0/24", AvailabilityZone="us-west-2b")["Subnet"][
        "SubnetId"
    ]
    group_id = ec2.create_security_group(GroupName="spothub-search", Description="search", VpcId=vpc_id)["GroupId"]
    template_id = ec2.create_launch_template(
        LaunchTemplateName=search_template_name(PREFIX), LaunchTemplateData={"ImageId": "ami-12c6146b"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    volume_id = ec2.create_volume(AvailabilityZone="us-west-2a", Size=100)["VolumeId"]
    table = create_search_table()
    region = SearchRegion(
        ec2=ec2,
        ssm=ssm,
        table=table,
        store=SearchStore(table),
        vpc_id=vpc_id,
        subnet_a=subnet_a,
        subnet_b=subnet_b,
        security_group_id=group_id,
        template_id=template_id,
        volume_id=volume_id,
    )
    if publish_host:
        ssm.put_parameter(Name=HOST_PARAMETER, Type="String", Value=region.host.model_dump_json())
    return region


@pytest.fixture(name="search_region")
def search_region_fixture() -> Iterator[SearchRegion]:
    with mock_aws():
        yield build_search_region()


def running(region: SearchRegion, launch_id: str = LAUNCH_ID) -> str:
    """A launch placed and launched (spot): its record starting with its instance; the instance id."""
    from spothub_core.logic import search_launcher  # noqa: PLC0415
    from spothub_core.models.search_tasks import Launch, Place  # noqa: PLC0415

    launcher = region.launcher()
    placement = search_launcher.place(launcher, Place(launch_id=launch_id), now=NOW)
    launched = search_launcher.launch(
        launcher, Launch(launch_id=launch_id, capacity_type="spot", placement=placement), now=NOW
    )
    assert region.record(launch_id).status == SearchStatus.STARTING
    return launched.instance_id

"""What the sandbox's emulated AWS does for the search workload, as AWS does it: the index volume (created with the
deployment's id, filled with the corpus), RunInstances outside any group (spot against the market, refused with
InsufficientInstanceCapacity where a zone has none; ClientToken; the instance booted with its tags, addresses and
agent), AttachVolume (the documents on the instance; IncorrectState, InvalidVolume.ZoneMismatch, VolumeInUse),
termination detaching the volume, the router's HTTP through the VPC's security groups, and the implied IAM checks
of RunInstances and AttachVolume.

Tests that need the deployed search part (the search host's launch template, subnets and security group; the
router) skip when the synthesized stacks have none."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from spothub.sandbox import emulator_patches
from spothub.sandbox.iam.actions import ApiRequest, ResourceFacts, authorizations_for
from spothub.sandbox.iam.evaluator import Caller, NamedPolicy, evaluate
from spothub.sandbox.iam.reference import context_for
from spothub.sandbox.sandbox import ACCOUNT, SEARCH_VOLUME_ID, Sandbox
from spothub.sandbox.search_volume import DOCUMENTS, device_name
from spothub_core.contracts import (
    MANAGED_BY,
    SEARCH_SERVICE,
    InstanceTag,
    SearchTag,
    search_router_name,
    search_template_name,
)
from spothub_core.models.search_records import SearchAgentConfig, SearchHost

REGION = "us-west-2"
ZONE = f"{REGION}a"
INSTANCE_TYPE = "g5.xlarge"
DEVICE = "/dev/sdf"


# --- helpers ------------------------------------------------------------------------------------------------


def _host(sandbox: Sandbox) -> SearchHost:
    """What the search region publishes; the test skips when the deployment has no search part."""
    ssm = sandbox.client("ssm", REGION)
    try:
        value = ssm.get_parameter(Name=f"/spothub/{sandbox.prefix}/search-host")["Parameter"]["Value"]
    except ClientError:
        pytest.skip("the synthesized stacks have no search part (no /spothub/<prefix>/search-host)")
    return SearchHost.model_validate_json(value)


def _service_port(sandbox: Sandbox) -> int:
    ssm = sandbox.client("ssm", REGION)
    value = ssm.get_parameter(Name=f"/spothub/{sandbox.prefix}/search-config")["Parameter"]["Value"]
    return SearchAgentConfig.model_validate_json(value).port


def _subnet_in(sandbox: Sandbox, host: SearchHost, zone: str) -> str:
    subnets = sandbox.client("ec2", REGION).describe_subnets(SubnetIds=host.subnet_ids)["Subnets"]
    return next(s["SubnetId"] for s in subnets if s["AvailabilityZone"] == zone)


def _launch_request(sandbox: Sandbox, host: SearchHost, *, zone: str = ZONE, spot: bool = False) -> dict[str, Any]:
    """RunInstances as the search launcher asks it (see the design: template, interface, market, tags)."""
    tags = {
        SearchTag.NAME: "semantic-search-20260101-000000",
        SearchTag.SERVICE: SEARCH_SERVICE,
        SearchTag.MANAGED_BY: MANAGED_BY,
        SearchTag.VOLUME: SEARCH_VOLUME_ID,
        InstanceTag.PREFIX: sandbox.prefix,
        InstanceTag.HUB_REGION: sandbox.hub.region,
        InstanceTag.LAUNCH: "test-launch",
    }
    tag_list = [{"Key": str(k), "Value": v} for k, v in tags.items()]
    request: dict[str, Any] = {
        "MinCount": 1,
        "MaxCount": 1,
        "LaunchTemplate": {"LaunchTemplateName": search_template_name(sandbox.prefix)},
        "InstanceType": INSTANCE_TYPE,
        "NetworkInterfaces": [
            {
                "DeviceIndex": 0,
                "SubnetId": _subnet_in(sandbox, host, zone),
                "Groups": [host.security_group_id],
                "AssociatePublicIpAddress": True,
            }
        ],
        "TagSpecifications": [{"ResourceType": kind, "Tags": tag_list} for kind in ("instance", "volume")],
    }
    if spot:
        request["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
        }
    return request


def _launch(sandbox: Sandbox, host: SearchHost, ec2: Any = None, **options: Any) -> str:
    ec2 = ec2 or sandbox.client("ec2", REGION)
    return str(ec2.run_instances(**_launch_request(sandbox, host, **options))["Instances"][0]["InstanceId"])


def _volume(sandbox: Sandbox) -> dict[str, Any]:
    return sandbox.client("ec2", REGION).describe_volumes(VolumeIds=[SEARCH_VOLUME_ID])["Volumes"][0]


def _router(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    answer = sandbox.client("lambda", REGION).invoke(
        FunctionName=search_router_name(sandbox.prefix), Payload=json.dumps(request)
    )
    return json.loads(answer["Payload"].read())


def _health(sandbox: Sandbox, address: str, port: int) -> dict[str, Any]:
    return _router(sandbox, {"action": "health", "address": address, "port": port, "path": "/health", "timeout_s": 2})


def _serving(sandbox: Sandbox, instance_id: str) -> Any:
    """Launched, attached, and its service answering through the router."""
    instance = sandbox.fleet.instances[instance_id]  # type: ignore[union-attr]
    port = _service_port(sandbox)
    sandbox.wait_for(lambda: _health(sandbox, instance.private_ip, port).get("ok"), timeout_s=30, interval_s=0.2)
    return instance


def _role_client(sandbox: Sandbox, role_arn: str, session: str) -> Any:
    variables = sandbox.principals.credentials_for(role_arn, session)
    return boto3.session.Session().client(
        "ec2",
        region_name=REGION,
        endpoint_url=sandbox.aws_endpoint_url,
        aws_access_key_id=variables["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=variables["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 1}),
    )


def _hub_function_role(sandbox: Sandbox, handler_package: str) -> tuple[str, str]:
    from moto.awslambda.models import lambda_backends  # noqa: PLC0415

    for function in lambda_backends[ACCOUNT][sandbox.hub.region]._lambdas.all():
        if function.handler.startswith(f"{handler_package}."):
            return function.role, function.function_name
    pytest.skip(f"the hub has no {handler_package} function")
    raise AssertionError  # unreachable: skip raises


@pytest.fixture
def search_sandbox(fresh_sandbox: Sandbox) -> Iterator[Sandbox]:
    """The fresh sandbox with the search monitor's sweep paused: the tests' instances have no launch record, and
    the reconciliation would adopt them or terminate them under the test."""
    events = fresh_sandbox.client("events", fresh_sandbox.hub.region)
    sweeps = [r["Name"] for r in events.list_rules()["Rules"] if "SearchSweep" in r["Name"]]
    for name in sweeps:
        events.disable_rule(Name=name)
    yield fresh_sandbox
    for name in sweeps:
        events.enable_rule(Name=name)


# --- the volume ------------------------------------------------------------------------------------------------


def test_the_volume_exists_with_the_context_id_in_the_region_first_zone_and_holds_the_corpus(sandbox: Sandbox) -> None:
    volume = _volume(sandbox)
    assert (volume["VolumeId"], volume["AvailabilityZone"], volume["State"]) == (SEARCH_VOLUME_ID, ZONE, "available")
    assert {t["Key"]: t["Value"] for t in volume["Tags"]}["ManagedBy"] == MANAGED_BY
    documents = (sandbox.search_volume_dir / DOCUMENTS).read_text(encoding="utf-8").splitlines()
    assert 40 <= len(documents) <= 100
    assert {"id", "title", "text"} <= set(json.loads(documents[0]))


def test_a_reset_refills_the_volume_and_recreates_it_when_deleted(sandbox: Sandbox) -> None:
    (sandbox.search_volume_dir / "scratch.txt").write_text("left by a test")
    sandbox.client("ec2", REGION).delete_volume(VolumeId=SEARCH_VOLUME_ID)
    sandbox.reset()
    assert _volume(sandbox)["State"] == "available"
    assert sorted(p.name for p in sandbox.search_volume_dir.iterdir()) == [DOCUMENTS]


# --- RunInstances outside a group ----------------------------------------------------------------------------


def test_spot_in_a_zone_without_capacity_is_refused_as_ec2_does_and_on_demand_launches(
    search_sandbox: Sandbox,
) -> None:
    sandbox = search_sandbox
    host = _host(sandbox)
    assert sandbox.market is not None
    sandbox.market.set_zone(ZONE, INSTANCE_TYPE, capacity=0)
    with pytest.raises(ClientError) as refused:
        _launch(sandbox, host, spot=True)
    assert refused.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    assert "no Spot capacity" in refused.value.response["Error"]["Message"]
    assert not sandbox.search_instances()

    instance_id = _launch(sandbox, host, spot=False)
    described = sandbox.client("ec2", REGION).describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    assert "InstanceLifecycle" not in described["Instances"][0]
    assert [i.capacity_type for i in sandbox.search_instances()] == ["on-demand"]
    pool = next(p for p in sandbox.market.pools(REGION, [INSTANCE_TYPE]) if p.zone == ZONE)
    assert pool.in_use == 0  # on-demand takes nothing from the spot pool


def test_a_spot_launch_boots_like_a_group_instance_and_its_termination_stops_it(search_sandbox: Sandbox) -> None:
    sandbox = search_sandbox
    host = _host(sandbox)
    ec2 = sandbox.client("ec2", REGION)
    request = {**_launch_request(sandbox, host, spot=True), "ClientToken": "search-test-spot"}
    launched = ec2.run_instances(**request)["Instances"][0]
    instance_id = launched["InstanceId"]
    assert launched["InstanceLifecycle"] == "spot" and launched["Placement"]["AvailabilityZone"] == ZONE
    # The same client token answers the same instance, as EC2 does: a retried launch launches nothing more.
    assert ec2.run_instances(**request)["Instances"][0]["InstanceId"] == instance_id
    assert [i.instance_id for i in sandbox.search_instances()] == [instance_id]

    instance = sandbox.fleet.instances[instance_id]  # type: ignore[union-attr]
    assert instance.capacity_type == "spot" and instance.service == SEARCH_SERVICE
    assert instance.public_ip and instance.public_ip.startswith(("203.0.113.", "198.51.100."))
    assert instance.private_ip and instance.security_groups == [host.security_group_id]
    assert [g["GroupId"] for g in launched["SecurityGroups"]] == [host.security_group_id]
    token = requests.put(
        f"{instance.imds.endpoint}/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}, timeout=5
    ).text

    def metadata(path: str) -> str:
        answer = requests.get(
            f"{instance.imds.endpoint}/latest/meta-data/{path}", headers={"X-aws-ec2-metadata-token": token}, timeout=5
        )
        return answer.text

    assert metadata("tags/instance/Service") == SEARCH_SERVICE
    assert metadata(f"tags/instance/{SearchTag.VOLUME}") == SEARCH_VOLUME_ID
    assert metadata("instance-life-cycle") == "spot"
    assert metadata("local-ipv4") == instance.private_ip
    assert instance.agent is not None and instance.agent.poll() is None
    pool = next(p for p in sandbox.market.pools(REGION, [INSTANCE_TYPE]) if p.zone == ZONE)  # type: ignore[union-attr]
    assert pool.in_use == 1

    ec2.terminate_instances(InstanceIds=[instance_id])
    sandbox.fleet.wait_until_stopped()  # type: ignore[union-attr]
    assert instance.state == "terminated" and instance.agent.poll() is not None
    assert pool.in_use == 0


def test_a_spot_price_above_the_maximum_is_refused(search_sandbox: Sandbox) -> None:
    sandbox = search_sandbox
    request = _launch_request(sandbox, _host(sandbox), spot=True)
    request["InstanceMarketOptions"]["SpotOptions"]["MaxPrice"] = "0.0001"
    with pytest.raises(ClientError) as refused:
        sandbox.client("ec2", REGION).run_instances(**request)
    assert refused.value.response["Error"]["Code"] == "SpotMaxPriceTooLow"
    assert all(p.in_use == 0 for p in sandbox.market.pools(REGION, [INSTANCE_TYPE]))  # type: ignore[union-attr]


def test_without_instance_metadata_tags_imds_shows_no_tags(search_sandbox: Sandbox) -> None:
    sandbox = search_sandbox
    request = {**_launch_request(sandbox, _host(sandbox)), "MetadataOptions": {"InstanceMetadataTags": "disabled"}}
    instance_id = sandbox.client("ec2", REGION).run_instances(**request)["Instances"][0]["InstanceId"]
    imds = sandbox.fleet.instances[instance_id].imds  # type: ignore[union-attr]
    token = imds.issue_token(60)
    assert imds.lookup("/latest/meta-data/tags/instance") is None  # 404, as IMDS answers with tags off
    assert imds.lookup("/latest/meta-data/instance-id") == instance_id
    assert token


# --- AttachVolume ------------------------------------------------------------------------------------------


def test_attaching_shows_the_documents_on_the_instance_and_terminating_detaches(search_sandbox: Sandbox) -> None:
    sandbox = search_sandbox
    ec2 = sandbox.client("ec2", REGION)
    instance_id = _launch(sandbox, _host(sandbox))
    instance = sandbox.fleet.instances[instance_id]  # type: ignore[union-attr]
    device = instance.block_device_dir / device_name(SEARCH_VOLUME_ID)
    assert not device.exists()

    answer = ec2.attach_volume(VolumeId=SEARCH_VOLUME_ID, InstanceId=instance_id, Device=DEVICE)
    assert (answer["InstanceId"], answer["Device"]) == (instance_id, DEVICE)
    assert (device / DOCUMENTS).read_bytes() == (sandbox.search_volume_dir / DOCUMENTS).read_bytes()
    volume = _volume(sandbox)
    assert volume["State"] == "in-use" and volume["Attachments"][0]["InstanceId"] == instance_id

    ec2.terminate_instances(InstanceIds=[instance_id])
    assert _volume(sandbox)["State"] == "available"
    assert not device.exists() and instance.volumes == {}


def test_ec2_refuses_an_attach_in_another_zone_of_a_held_volume_and_to_a_terminated_instance(
    search_sandbox: Sandbox,
) -> None:
    sandbox = search_sandbox
    host = _host(sandbox)
    ec2 = sandbox.client("ec2", REGION)

    def refusal(instance_id: str) -> str:
        with pytest.raises(ClientError) as refused:
            ec2.attach_volume(VolumeId=SEARCH_VOLUME_ID, InstanceId=instance_id, Device=DEVICE)
        return str(refused.value.response["Error"]["Code"])

    elsewhere = _launch(sandbox, host, zone=f"{REGION}b")
    assert refusal(elsewhere) == "InvalidVolume.ZoneMismatch"

    holder, second = _launch(sandbox, host), _launch(sandbox, host)
    ec2.attach_volume(VolumeId=SEARCH_VOLUME_ID, InstanceId=holder, Device=DEVICE)
    assert refusal(second) == "VolumeInUse"
    second_device = sandbox.fleet.instances[second].block_device_dir / device_name(SEARCH_VOLUME_ID)  # type: ignore[union-attr]
    assert not second_device.exists()

    ec2.terminate_instances(InstanceIds=[holder])
    assert refusal(holder) == "IncorrectState"
    ec2.attach_volume(VolumeId=SEARCH_VOLUME_ID, InstanceId=second, Device=DEVICE)  # free again: the next one gets it
    assert second_device.is_dir()


# --- the router's HTTP, through the VPC -------------------------------------------------------------------


def test_the_router_reaches_the_service_only_from_its_security_group_inside_the_vpc(search_sandbox: Sandbox) -> None:
    sandbox = search_sandbox
    host = _host(sandbox)
    ec2 = sandbox.client("ec2", REGION)
    instance_id = _launch(sandbox, host)
    ec2.attach_volume(VolumeId=SEARCH_VOLUME_ID, InstanceId=instance_id, Device=DEVICE)
    instance = _serving(sandbox, instance_id)
    port = _service_port(sandbox)

    query = {"action": "query", "address": instance.private_ip, "port": port, "path": "/search"}
    answer = _router(sandbox, {**query, "body": {"query": "attach a volume already attached elsewhere", "top_k": 3}})
    assert answer["ok"] and answer["body"]["results"][0]["id"] == "ebs-volume-in-use"
    refused_port = _router(sandbox, {**query, "port": port + 1, "body": {"query": "x"}})
    assert not refused_port["ok"] and refused_port["status_code"] is None  # nothing else is let in

    lambda_client = sandbox.client("lambda", REGION)
    name = search_router_name(sandbox.prefix)
    original = lambda_client.get_function_configuration(FunctionName=name)["VpcConfig"]
    vpc_id = ec2.describe_subnets(SubnetIds=original["SubnetIds"][:1])["Subnets"][0]["VpcId"]
    other_group = ec2.create_security_group(GroupName="not-the-router", Description="test", VpcId=vpc_id)["GroupId"]
    try:
        for config in (
            {"SubnetIds": original["SubnetIds"], "SecurityGroupIds": [other_group]},  # in the VPC, wrong group
            {"SubnetIds": [], "SecurityGroupIds": []},  # not in a VPC at all
        ):
            lambda_client.update_function_configuration(FunctionName=name, VpcConfig=config)
            dropped = _health(sandbox, instance.private_ip, port)
            assert not dropped["ok"] and dropped["status_code"] is None
            assert dropped["error"] and "refused" not in dropped["error"]  # dropped (a timeout), not refused
    finally:
        lambda_client.update_function_configuration(
            FunctionName=name,
            VpcConfig={"SubnetIds": original["SubnetIds"], "SecurityGroupIds": original["SecurityGroupIds"]},
        )
        ec2.delete_security_group(GroupId=other_group)
    assert _health(sandbox, instance.private_ip, port)["ok"]
    # Nor from outside any function (this test process): the private address is the VPC's.
    with pytest.raises(requests.exceptions.ConnectTimeout):
        requests.get(f"http://{instance.private_ip}:{port}/health", timeout=2)


def test_the_control_route_makes_the_service_fail_its_health_checks(search_sandbox: Sandbox) -> None:
    sandbox = search_sandbox
    ec2 = sandbox.client("ec2", REGION)
    instance_id = _launch(sandbox, _host(sandbox))
    ec2.attach_volume(VolumeId=SEARCH_VOLUME_ID, InstanceId=instance_id, Device=DEVICE)
    instance = _serving(sandbox, instance_id)
    port = _service_port(sandbox)

    control = f"{sandbox.control_url}instances/{instance_id}/search/health"
    assert requests.post(control, json={"healthy": False}, timeout=10).status_code == 200
    failing = _health(sandbox, instance.private_ip, port)
    assert not failing["ok"] and failing["status_code"] == 503
    assert requests.post(control, json={"healthy": "no"}, timeout=10).status_code == 400
    sandbox.search_health(instance_id, healthy=True)
    assert _health(sandbox, instance.private_ip, port)["ok"]


# --- the gaps in the pinned moto these rely on (checked without a sandbox) ---------------------------------


def test_moto_ignores_client_tokens_and_the_patch_answers_the_first_launch() -> None:
    from moto.ec2.models.instances import InstanceBackend  # noqa: PLC0415
    from moto.ec2.responses import EC2Response  # noqa: PLC0415

    emulator_patches.apply()
    assert "client_token" not in inspect.getsource(InstanceBackend.run_instances)
    assert EC2Response.run_instances is emulator_patches._run_instances


def test_moto_attaches_any_volume_anywhere_and_the_patch_refuses_as_ec2() -> None:
    from moto.ec2.models.elastic_block_store import EBSBackend  # noqa: PLC0415

    emulator_patches.apply()
    source = inspect.getsource(emulator_patches._original_attach_volume)
    assert "zone" not in source and "attachment" in source and "raise" not in source
    assert EBSBackend.attach_volume is emulator_patches._attach_volume
    assert EBSBackend.detach_volume is emulator_patches._detach_volume


def test_moto_ignores_inline_egress_and_has_no_egress_resource_and_the_sandbox_adds_both() -> None:
    from moto.cloudformation import parsing  # noqa: PLC0415
    from moto.ec2.models import security_groups  # noqa: PLC0415

    emulator_patches.apply()
    assert not hasattr(security_groups, "SecurityGroupEgress")
    model = inspect.getsource(security_groups.SecurityGroup)  # the class as moto wrote it
    assert "SecurityGroupIngress" in model and "SecurityGroupEgress" not in model
    assert parsing.get_model_map()["AWS::EC2::SecurityGroupEgress"].__name__ == "Ec2SecurityGroupEgress"


# --- IAM: what RunInstances and AttachVolume imply -------------------------------------------------------


def test_the_launcher_role_launches_spot_attaches_and_terminates_the_search_instance(search_sandbox: Sandbox) -> None:
    sandbox = search_sandbox
    host = _host(sandbox)
    role_arn, session = _hub_function_role(sandbox, "search_tasks")
    ec2 = _role_client(sandbox, role_arn, session)
    instance_id = _launch(sandbox, host, ec2, spot=True)
    ec2.attach_volume(VolumeId=SEARCH_VOLUME_ID, InstanceId=instance_id, Device=DEVICE)
    ec2.terminate_instances(InstanceIds=[instance_id])
    used = sandbox.iam.usage()[role_arn.rsplit("/", 1)[-1]]
    assert {"ec2:RunInstances", "ec2:CreateTags", "iam:PassRole", "ec2:AttachVolume"} <= set(used)


@pytest.mark.access_denied_expected
def test_a_role_without_the_grants_may_not_launch_nor_attach(search_sandbox: Sandbox) -> None:
    sandbox = search_sandbox
    host = _host(sandbox)
    role_arn, session = _hub_function_role(sandbox, "search_monitor")
    ec2 = _role_client(sandbox, role_arn, session)
    with pytest.raises(ClientError) as refused:
        _launch(sandbox, host, ec2)
    assert refused.value.response["Error"]["Code"] == "UnauthorizedOperation"
    instance_id = _launch(sandbox, host)
    with pytest.raises(ClientError) as refused:
        ec2.attach_volume(VolumeId=SEARCH_VOLUME_ID, InstanceId=instance_id, Device=DEVICE)
    assert refused.value.response["Error"]["Code"] == "UnauthorizedOperation"
    assert not sandbox.search_instances()[0].volumes


class _Facts(ResourceFacts):
    """The emulator's resources as the resolvers see them, without an emulator."""

    TEMPLATE_ARN = "arn:aws:ec2:us-west-2:210987654321:launch-template/lt-0123456789abcdef0"
    ROLE_ARN = "arn:aws:iam::210987654321:role/search-instance"

    def launch_template(self, request: ApiRequest, template: dict[str, str]) -> tuple[str, str | None, bool]:
        return self.TEMPLATE_ARN, self.ROLE_ARN, False

    def launch_template_data(self, request: ApiRequest, template: dict[str, str]) -> dict[str, Any]:
        return {"ImageId": "ami-0abc", "IamInstanceProfile": {"Arn": "arn:aws:iam::210987654321:instance-profile/p"}}

    def instance_profile_role(self, request: ApiRequest, profile: dict[str, str]) -> str | None:
        return None

    def volume(self, request: ApiRequest, volume_id: str) -> tuple[str, dict[str, str]]:
        return "us-west-2a", {"ManagedBy": "spothub"}

    def instance_tags(self, request: ApiRequest, instance_id: str) -> dict[str, str]:
        return {"Service": SEARCH_SERVICE}

    def instance_zone(self, request: ApiRequest, instance_id: str) -> str:
        return "us-west-2a"


def _ec2_request(operation: str, params: dict[str, str]) -> ApiRequest:
    return ApiRequest("ec2", operation, REGION, "210987654321", params)


SPOT_LAUNCH = {
    "LaunchTemplate.LaunchTemplateName": "spothub-search",
    "InstanceType": INSTANCE_TYPE,
    "NetworkInterface.1.DeviceIndex": "0",
    "NetworkInterface.1.SubnetId": "subnet-0123",
    "NetworkInterface.1.SecurityGroupId.1": "sg-0123",
    "InstanceMarketOptions.MarketType": "spot",
    "TagSpecification.1.ResourceType": "instance",
    "TagSpecification.1.Tag.1.Key": "Service",
    "TagSpecification.1.Tag.1.Value": SEARCH_SERVICE,
}


def test_a_spot_launch_from_a_template_implies_the_spot_request_the_tags_and_the_role() -> None:
    authorizations = authorizations_for(_ec2_request("RunInstances", SPOT_LAUNCH), _Facts())
    on = {(a.action, r): a.context for a in authorizations for r in a.resources}
    arn = "arn:aws:ec2:us-west-2:210987654321:"
    for resource in ("instance/*", "volume/*", "network-interface/*", "subnet/subnet-0123", "security-group/sg-0123"):
        assert on[("ec2:RunInstances", arn + resource)]["ec2:LaunchTemplate"] == _Facts.TEMPLATE_ARN
    assert ("ec2:RunInstances", "arn:aws:ec2:us-west-2::image/ami-0abc") in on
    assert on[("ec2:RunInstances", arn + "instance/*")]["ec2:InstanceMarketType"] == "spot"
    assert on[("ec2:RunInstances", arn + "instance/*")]["aws:RequestTag/Service"] == SEARCH_SERVICE
    assert ("ec2:RunInstances", arn + "spot-instances-request/*") in on
    assert on[("ec2:CreateTags", arn + "instance/*")]["ec2:CreateAction"] == "RunInstances"
    assert on[("iam:PassRole", _Facts.ROLE_ARN)] == {"iam:PassedToService": "ec2.amazonaws.com"}
    on_demand = {k: v for k, v in SPOT_LAUNCH.items() if not k.startswith("InstanceMarketOptions")}
    resources = {r for a in authorizations_for(_ec2_request("RunInstances", on_demand), _Facts()) for r in a.resources}
    assert arn + "spot-instances-request/*" not in resources


def test_a_launch_template_condition_does_not_cover_the_spot_request_as_on_aws() -> None:
    """ec2:LaunchTemplate is no key of spot-instances-request: RunInstances on * with that condition alone allows an
    on-demand launch and refuses a spot one, as AWS does; the spot request needs a grant of its own."""
    statement = {
        "Effect": "Allow",
        "Action": "ec2:RunInstances",
        "Resource": "*",
        "Condition": {"ArnLike": {"ec2:LaunchTemplate": _Facts.TEMPLATE_ARN}},
    }
    policy = NamedPolicy("launcher", {"Statement": [statement]})
    caller = Caller(
        arn="arn:aws:sts::210987654321:assumed-role/launcher/s", role_arn="arn:aws:iam::210987654321:role/l"
    )

    def allowed(params: dict[str, str]) -> bool:
        return all(
            evaluate(caller, a.action, r, context_for(a.action, r, a.context), [policy]).allowed
            for a in authorizations_for(_ec2_request("RunInstances", params), _Facts())
            if a.action == "ec2:RunInstances"
            for r in a.resources
        )

    assert allowed({k: v for k, v in SPOT_LAUNCH.items() if not k.startswith("InstanceMarketOptions")})
    assert not allowed(SPOT_LAUNCH)


def test_attach_volume_is_authorized_on_the_instance_and_the_volume_with_their_tags() -> None:
    params = {"VolumeId": SEARCH_VOLUME_ID, "InstanceId": "i-0123456789abcdef0", "Device": DEVICE}
    authorizations = authorizations_for(_ec2_request("AttachVolume", params), _Facts())
    assert [(a.action, a.resources) for a in authorizations] == [
        ("ec2:AttachVolume", ["arn:aws:ec2:us-west-2:210987654321:instance/i-0123456789abcdef0"]),
        ("ec2:AttachVolume", [f"arn:aws:ec2:us-west-2:210987654321:volume/{SEARCH_VOLUME_ID}"]),
    ]
    assert authorizations[0].context["aws:ResourceTag/Service"] == SEARCH_SERVICE
    assert authorizations[1].context["aws:ResourceTag/ManagedBy"] == "spothub"
    assert authorizations[1].context["ec2:AvailabilityZone"] == "us-west-2a"

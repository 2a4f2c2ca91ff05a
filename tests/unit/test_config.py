"""The deployment configuration: defaults, both context forms, and one clear line per bad value."""

from __future__ import annotations

import pytest

from stacks.config import ConfigError, SpothubConfig


def test_defaults_describe_a_hub_and_two_workers() -> None:
    config = SpothubConfig.from_context({})
    assert config.prefix == "spothub"
    assert config.hub_region == "us-east-1"
    assert config.deployed_worker_regions == ["us-east-2", "us-west-2"]
    assert config.capacity_fallback == "on-demand"
    assert config.instance_types == ["g5.xlarge", "g6.xlarge", "g6e.xlarge"]
    assert config.ssm_prefix == "/spothub/spothub"


# GPU families with bf16 (Ampere and later): A10G, L4, L40S, A100, H100/H200. Not T4 (g4dn), V100 (p3), K80 (p2).
BF16_FAMILIES = ("g5", "g6", "g6e", "p4d", "p4de", "p5", "p5e", "p5en")


def test_every_default_instance_type_serves_the_default_model_in_bf16() -> None:
    config = SpothubConfig.from_context({})
    assert "Qwen2.5" in config.serving_model  # published in bf16
    assert all(t.split(".")[0] in BF16_FAMILIES for t in config.instance_types), config.instance_types


def test_command_line_strings_and_cdk_json_values_mean_the_same() -> None:
    from_cli = SpothubConfig.from_context(
        {"workerRegions": "us-west-2, eu-west-1", "hubAsWorker": "true", "instanceTypes": "p3.2xlarge"}
    )
    from_json = SpothubConfig.from_context(
        {"workerRegions": ["us-west-2", "eu-west-1"], "hubAsWorker": True, "instanceTypes": ["p3.2xlarge"]}
    )
    assert from_cli == from_json
    assert from_cli.deployed_worker_regions == ["us-east-1", "us-west-2", "eu-west-1"]


def test_keys_owned_by_cdk_are_ignored() -> None:
    config = SpothubConfig.from_context(
        {"@aws-cdk/core:newStyleStackSynthesis": True, "aws:cdk:enable-path-metadata": True, "cdk-nag": 1}
    )
    assert config.prefix == "spothub"


def test_keys_the_cdk_cli_writes_are_ignored() -> None:
    assert SpothubConfig.from_context({"acknowledged-issue-numbers": [34892]}).prefix == "spothub"


def test_existing_vpc_from_a_json_string() -> None:
    config = SpothubConfig.from_context(
        {"vpcs": '{"us-west-2": {"vpcId": "vpc-0123abcd", "subnetIds": ["subnet-0123abcd"]}}'}
    )
    assert config.vpcs["us-west-2"].subnet_ids == ["subnet-0123abcd"]


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"hubRegion": "us-east-9"}, "context key 'hubRegion': unknown region 'us-east-9' (did you mean"),
        ({"workerRegions": "us-west-2,mars-1"}, "context key 'workerRegions': unknown region 'mars-1'"),
        (
            {"workerRegions": "", "hubAsWorker": "false"},
            "workerRegions is empty and hubAsWorker is false: name at least one worker region",
        ),
        ({"workerRegions": "us-west-2,us-west-2"}, "context key 'workerRegions': lists us-west-2 more than once"),
        (
            {"workerRegions": "us-east-1,us-west-2"},
            "hubRegion us-east-1 is also in workerRegions: drop it from workerRegions and set hubAsWorker=true instead",
        ),
        (
            {"instanceTypes": "g5.xlarge,P3.2XLARGE"},
            "context key 'instanceTypes': 'P3.2XLARGE' is not an EC2 instance type name (like g5.xlarge)",
        ),
        ({"instanceTypes": "gpu-large"}, "'gpu-large' is not an EC2 instance type name"),
        ({"instanceTypes": ""}, "context key 'instanceTypes': List should have at least 1 item"),
        (
            {"capacityFallback": "spot"},
            "context key 'capacityFallback': got 'spot', input should be 'on-demand' or 'none'",
        ),
        ({"account": "12345"}, "context key 'account': '12345' is not a 12-digit AWS account id"),
        ({"alertEmail": "oncall"}, "context key 'alertEmail': 'oncall' is not an e-mail address"),
        ({"hostedZoneId": "Z0123456789"}, "hostedZoneId and endpointName go together: set both or neither"),
        ({"endpointName": "Not A Name"}, "context key 'endpointName': 'Not A Name' is not a lower-case DNS name"),
        ({"prefix": "Spot_Hub"}, "context key 'prefix': 'Spot_Hub' must be 3-20 characters"),
        ({"prefix": "ecs-team"}, "context key 'prefix': 'ecs-team' must not start with aws, ecs, fargate"),
        ({"maxAzs": "9"}, "context key 'maxAzs': Input should be less than or equal to 6"),
        ({"logRetentionDays": "10"}, "context key 'logRetentionDays': 10 is not a CloudWatch Logs retention"),
        ({"hubAsWorker": "maybe"}, "context key 'hubAsWorker': Input should be a valid boolean"),
        ({"workerRegion": "us-west-2"}, "unknown context key 'workerRegion' (did you mean 'workerRegions'?)"),
        ({"vpcs": "{not json"}, "context key 'vpcs': is not valid JSON"),
        (
            {"vpcs": {"eu-west-1": {"vpcId": "vpc-0123abcd", "subnetIds": ["subnet-0123abcd"]}}},
            "vpcs names eu-west-1, which is not a worker region",
        ),
        (
            {"vpcs": {"us-west-2": {"vpcId": "vpc-zz", "subnetIds": ["subnet-0123abcd"]}}},
            "context key 'vpcs.us-west-2.vpcId': 'vpc-zz' is not a VPC id",
        ),
        (
            {"vpcs": {"us-west-2": {"vpcId": "vpc-0123abcd", "subnetIds": []}}},
            "context key 'vpcs.us-west-2.subnetIds': List should have at least 1 item",
        ),
        (
            {"vpcs": {"us-west-2": {"vpcId": "vpc-0123abcd", "subnets": ["subnet-0123abcd"]}}},
            "unknown key 'vpcs.us-west-2.subnets'",
        ),
        (
            {"hubRegion": "cn-north-1", "workerRegions": "us-west-2"},
            "regions span partitions aws, aws-cn: EventBridge cannot route events between them",
        ),
    ],
)
def test_bad_context_fails_with_one_clear_line(context: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SpothubConfig.from_context(context)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text

"""The deployment configuration: defaults, both context forms, and one clear line per bad value."""

from __future__ import annotations

import pytest

from stacks.config import ConfigError, SpothubConfig
from stacks.serving_presets import GPU_COUNTS, ServingPreset


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
        # Serving
        ({"servingPreset": "tgi"}, "context key 'servingPreset': unknown preset 'tgi'; one of vllm, sglang"),
        (
            {"servingIngressCidrs": "203.0.113.0/24,10.0.0.1/8"},
            "context key 'servingIngressCidrs': '10.0.0.1/8' is not a CIDR range (10.0.0.1/8 has host bits set)",
        ),
        ({"servingIngressCidrs": "203.0.113.7"}, "'203.0.113.7' is not a CIDR range: name the prefix length"),
        ({"servingIngressCidrs": "2001:db8::/129"}, "'2001:db8::/129' is not a CIDR range"),
        ({"servingIngressCidrs": "office"}, "'office' is not a CIDR range"),
        (
            {"servingIngressPrefixLists": '{"us-west-2": ["pl-xyz"]}'},
            "context key 'servingIngressPrefixLists': not prefix list ids: pl-xyz (pl-0123abcd…)",
        ),
        (
            {"servingIngressPrefixLists": {"eu-west-1": ["pl-0123abcd"]}},
            "servingIngressPrefixLists names eu-west-1, which is not a worker region",
        ),
        (
            {"servingIngressSecurityGroups": {"us-west-2": "sg-0123abcd,group-1"}},
            "context key 'servingIngressSecurityGroups': not security group ids: group-1 (sg-0123abcd…)",
        ),
        (
            {"servingIngressSecurityGroups": {"us-east-1": ["sg-0123abcd"]}},
            "servingIngressSecurityGroups names us-east-1, which is not a worker region",
        ),
        ({"servingIngressSecurityGroups": "{oops"}, "context key 'servingIngressSecurityGroups': is not valid JSON"),
        (
            {"servingGpus": "4"},
            "servingGpus=4 does not fit every instance type: g5.xlarge has 1, g6.xlarge has 1, g6e.xlarge has 1",
        ),
        (
            {"servingGpus": "8", "instanceTypes": "g5.48xlarge,g6.12xlarge"},
            "servingGpus=8 does not fit every instance type: g6.12xlarge has 4",
        ),
        (
            {"servingGpus": "2", "instanceTypes": "g5.12xlarge,x9gpu.4xlarge"},
            "servingGpus=2 but the GPU count of x9gpu.4xlarge is not known to spothub",
        ),
        ({"servingGpus": "9"}, "context key 'servingGpus': Input should be less than or equal to 8"),
        (
            {"servingPublicIp": "false"},
            "servingPublicIp=false needs vpcs for every worker region; none for us-east-2, us-west-2",
        ),
        (
            {
                "servingPublicIp": "false",
                "vpcs": {"us-west-2": {"vpcId": "vpc-0123abcd", "subnetIds": ["subnet-0123abcd"]}},
            },
            "servingPublicIp=false needs vpcs for every worker region; none for us-east-2",
        ),
        ({"servingPublicIp": "sometimes"}, "context key 'servingPublicIp': Input should be a valid boolean"),
        (
            {"servingSecrets": {"HF-TOKEN": "hf-token"}},
            "context key 'servingSecrets': 'HF-TOKEN' is not an environment variable name",
        ),
        (
            {"servingSecrets": {"1TOKEN": "hf-token"}},
            "context key 'servingSecrets': '1TOKEN' is not an environment variable name",
        ),
        (
            {"servingSecrets": {"HF_TOKEN": "hf token"}},
            "context key 'servingSecrets': 'hf token' is not a Secrets Manager secret name",
        ),
        (
            {"servingSecrets": {"HF_TOKEN": "arn:aws:secretsmanager:us-west-2:1234:secret:hf"}},
            "is not a Secrets Manager secret ARN",
        ),
        (
            {"servingSecrets": {"HF_TOKEN": "arn:aws:secretsmanager:us-weast-2:123456789012:secret:hf"}},
            "unknown region 'us-weast-2'",
        ),
        (
            {"servingSecrets": {"SPOTHUB_API_KEY": "mine"}},
            "servingSecrets sets SPOTHUB_API_KEY, which holds the model API key (servingApiKeySecret)",
        ),
        (
            {"servingEnv": {"VLLM_API_KEY": "x"}},
            "context key 'servingEnv': 'VLLM_API_KEY' looks like a credential",
        ),
        (
            {"servingEnv": {"HF_TOKEN": "hf_abc"}},
            "context key 'servingEnv': 'HF_TOKEN' looks like a credential: plain environment is in the task "
            "definition for anyone who can describe it; put the value in Secrets Manager and name it in servingSecrets",
        ),
        ({"servingEnv": {"MY-VAR": "1"}}, "context key 'servingEnv': 'MY-VAR' is not an environment variable name"),
        (
            {"servingEnv": {"MODE": "1"}, "servingSecrets": {"MODE": "mode"}},
            "MODE is in both servingEnv and servingSecrets: name it once",
        ),
        ({"servingEnv": "[1]"}, "context key 'servingEnv': Input should be a valid dictionary"),
        ({"servingApiKeySecret": "my key"}, "context key 'servingApiKeySecret': 'my key' is not a Secrets Manager"),
        ({"servingHealthPath": "health"}, "context key 'servingHealthPath': 'health' is not a URL path (/health)"),
        ({"servingHealthPath": "/health'; reboot"}, "is not a URL path"),
        ({"servingStartPeriod": "600"}, "context key 'servingStartPeriod': Input should be less than or equal to 300"),
        ({"servingPort": "80"}, "context key 'servingPort': Input should be greater than or equal to 1024"),
        ({"servingArgs": "--chat-template 'unclosed"}, "context key 'servingArgs': cannot be split into arguments"),
        ({"servingCommand": "[]"}, "context key 'servingCommand': List should have at least 1 item"),
        ({"servingModel": "my model"}, "context key 'servingModel': 'my model' must not contain spaces"),
        ({"servingImage": "vllm/vllm-openai:v0.8.5 --privileged"}, "context key 'servingImage'"),
    ],
)
def test_bad_context_fails_with_one_clear_line(context: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SpothubConfig.from_context(context)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_the_vllm_preset_serves_the_default_model_on_its_port_with_a_bounded_context() -> None:
    config = SpothubConfig.from_context({})
    assert config.serving_preset is ServingPreset.VLLM
    assert config.serving_image == "vllm/vllm-openai:v0.8.5"
    assert (config.serving_port, config.serving_health_path) == (8000, "/health")
    assert config.serving_command_line == [
        "--model",
        "Qwen/Qwen2.5-7B-Instruct",
        "--host",
        "0.0.0.0",  # noqa: S104
        "--port",
        "8000",
        "--max-model-len",
        "8192",
    ]
    assert config.serving_api_key_environment == ("SPOTHUB_API_KEY", "VLLM_API_KEY")
    assert config.serving_health_url == "http://127.0.0.1:8000/health"
    assert config.api_key_secret_name == "spothub/spothub/model-api-key"
    assert config.generates_api_key
    assert config.serving_public_ip is True
    assert (config.serving_ingress_cidrs, config.serving_ingress_prefix_lists) == ([], {})
    assert config.serving_ingress_security_groups == {}


def test_the_sglang_preset_passes_the_key_by_its_variables_name_and_the_arguments_after_it() -> None:
    config = SpothubConfig.from_context(
        {"servingPreset": "SGLang", "servingArgs": '["--chat-template", "chatml"]', "servingModel": "org/m(1)"}
    )
    assert config.serving_preset is ServingPreset.SGLANG
    assert (config.serving_image, config.serving_port) == ("lmsysorg/sglang:v0.4.6.post1-cu124", 30000)
    assert config.serving_command_line == [
        "sh",
        "-c",
        "exec python3 -m sglang.launch_server --model-path 'org/m(1)' --host 0.0.0.0 --port 30000 "
        '--api-key "$SPOTHUB_API_KEY" "$@"',
        "sglang",
        "--chat-template",
        "chatml",
    ]
    assert config.serving_api_key_environment == ("SPOTHUB_API_KEY",)


def test_the_operators_keys_override_the_preset() -> None:
    config = SpothubConfig.from_context(
        {
            "servingPreset": "sglang",
            "servingImage": "ghcr.io/acme/server:1.2",
            "servingPort": "9000",
            "servingHealthPath": "/v1/health?ready=1",
            "servingCommand": "serve --port 9000",
            "servingArgs": "--verbose",
            "servingGpus": "2",
            "instanceTypes": "g5.12xlarge",
            "servingStartPeriod": "0",
        }
    )
    assert config.serving_image == "ghcr.io/acme/server:1.2"
    assert config.serving_command_line == ["serve", "--port", "9000", "--verbose"]
    assert config.serving_health_url == "http://127.0.0.1:9000/v1/health?ready=1"
    assert config.serving_start_period == 0


def test_several_gpus_split_the_model_across_them() -> None:
    vllm = SpothubConfig.from_context({"servingGpus": 4, "instanceTypes": "g5.12xlarge,g6.48xlarge"})
    assert vllm.serving_command_line[-2:] == ["--tensor-parallel-size", "4"]
    sglang = SpothubConfig.from_context({"servingGpus": 8, "servingPreset": "sglang", "instanceTypes": "p4d.24xlarge"})
    assert " --tp 8 " in sglang.serving_command_line[2]
    # An instance type spothub does not know serves a one-GPU model.
    assert SpothubConfig.from_context({"instanceTypes": "g7.xlarge"}).serving_gpus == 1


def test_ingress_sources_in_both_context_forms() -> None:
    from_cli = SpothubConfig.from_context(
        {
            "servingIngressCidrs": "203.0.113.0/24, 2001:DB8::/32",
            "servingIngressPrefixLists": '{"us-west-2": "pl-0123abcd,pl-0456abcd"}',
            "servingIngressSecurityGroups": '{"us-east-2": ["sg-0123abcd"]}',
            "servingPublicIp": "false",
            "vpcs": {
                "us-east-2": {"vpcId": "vpc-0123abcd", "subnetIds": ["subnet-0123abcd"]},
                "us-west-2": {"vpcId": "vpc-0456abcd", "subnetIds": ["subnet-0456abcd"]},
            },
        }
    )
    from_json = SpothubConfig.from_context(
        {
            "servingIngressCidrs": ["203.0.113.0/24", "2001:db8::/32"],
            "servingIngressPrefixLists": {"us-west-2": ["pl-0123abcd", "pl-0456abcd"]},
            "servingIngressSecurityGroups": {"us-east-2": ["sg-0123abcd"]},
            "servingPublicIp": False,
            "vpcs": {
                "us-east-2": {"vpcId": "vpc-0123abcd", "subnetIds": ["subnet-0123abcd"]},
                "us-west-2": {"vpcId": "vpc-0456abcd", "subnetIds": ["subnet-0456abcd"]},
            },
        }
    )
    assert from_cli == from_json
    assert from_cli.serving_ingress_cidrs == ["203.0.113.0/24", "2001:db8::/32"]


def test_secrets_by_name_or_arn_and_a_supplied_api_key() -> None:
    config = SpothubConfig.from_context(
        {
            "servingSecrets": '{"HF_TOKEN": "team/hf-token", '
            '"OTHER": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:other-AbC123"}',
            "servingApiKeySecret": "platform/model-key",
            "servingEnv": '{"TOKENIZERS_PARALLELISM": "false"}',
        }
    )
    assert config.serving_secrets["HF_TOKEN"] == "team/hf-token"
    assert config.api_key_secret_name == "platform/model-key"
    assert not config.generates_api_key


def test_the_gpu_table_agrees_with_the_ec2_instance_type_data() -> None:
    from moto.ec2.models.instance_types import INSTANCE_TYPES  # noqa: PLC0415

    known = {t: data for t, data in INSTANCE_TYPES.items() if t in GPU_COUNTS}
    assert len(known) >= len(GPU_COUNTS) - 3, "only the p3 family is missing from the data"
    for instance_type, data in known.items():
        gpus = sum(int(g.get("Count", 0)) for g in data.get("GpuInfo", {}).get("Gpus", []))
        assert GPU_COUNTS[instance_type] == gpus, instance_type
    for instance_type in SpothubConfig.from_context({}).instance_types:
        assert GPU_COUNTS[instance_type] == 1

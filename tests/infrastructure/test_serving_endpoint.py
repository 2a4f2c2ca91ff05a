"""The model endpoint as synthesized: who may reach it (nothing unless configured, exactly the configured
sources otherwise), the public address, the API key (generated or supplied, never a value in a template,
handed to the container as ECS secrets that only the execution role reads), the presets' commands, and
what the hub publishes and hands its functions."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from spothub_core.timings import SERVING_HEALTH_START_PERIOD_SECONDS
from stacks.serving_presets import PRESET_MAX_MODEL_LEN
from tests.infrastructure.synth import Synthesized

ACCOUNT = {"Ref": "AWS::AccountId"}


def _deployments(*synthesized: Synthesized) -> list[tuple[Synthesized, str]]:
    return [(s, r) for s in synthesized for r in s.config.deployed_worker_regions]


def _one(synthesized: Synthesized, region: str, resource_type: str) -> tuple[str, dict[str, Any]]:
    resources = synthesized.resources(synthesized.config.worker_stack_name(region), resource_type).items()
    if resource_type == "AWS::EC2::LaunchTemplate":  # the serving instances', not the batch workers'
        resources = [(k, t) for k, t in resources if t["Properties"]["LaunchTemplateName"].endswith("-gpu")]
    (found,) = resources
    return found


def _instance_security_group(synthesized: Synthesized, region: str) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (logical_id, group)
        for logical_id, group in synthesized.resources(
            synthesized.config.worker_stack_name(region), "AWS::EC2::SecurityGroup"
        ).items()
        if logical_id.startswith("GpuCapacityInstanceSecurityGroup")
    ]
    return found


def _inbound(synthesized: Synthesized, region: str) -> set[tuple[Any, ...]]:
    """Every inbound rule of the GPU instances' group, inline or a separate resource, as (protocol, ports, source)."""
    group_id, group = _instance_security_group(synthesized, region)
    rules = list(group["Properties"].get("SecurityGroupIngress", []))
    stack_name = synthesized.config.worker_stack_name(region)
    rules += [
        ingress["Properties"]
        for ingress in synthesized.resources(stack_name, "AWS::EC2::SecurityGroupIngress").values()
        if ingress["Properties"]["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}
    ]
    sources = ("CidrIp", "CidrIpv6", "SourcePrefixListId", "SourceSecurityGroupId")
    found = set()
    for rule in rules:
        (source,) = [(key, json.dumps(rule[key])) for key in sources if key in rule]
        found.add((rule["IpProtocol"], rule.get("FromPort"), rule.get("ToPort"), *source))
    return found


def _container(synthesized: Synthesized, region: str) -> dict[str, Any]:
    _, definition = _one(synthesized, region, "AWS::ECS::TaskDefinition")
    (container,) = definition["Properties"]["ContainerDefinitions"]
    return container


def _partial_arn(region: str, name: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [f"arn:aws:secretsmanager:{region}:", ACCOUNT, f":secret:{name}"]]}


# Ingress


def test_nothing_reaches_the_instances_when_no_source_is_configured(
    reference: Synthesized, hub_as_worker: Synthesized, operator_vpc: Synthesized
) -> None:
    for synthesized, region in _deployments(reference, hub_as_worker, operator_vpc):
        assert _inbound(synthesized, region) == set(), f"{synthesized.config.prefix} {region}"


def test_exactly_the_configured_sources_reach_the_model_port_and_nothing_else(serving: Synthesized) -> None:
    cidrs = {("tcp", 9000, 9000, "CidrIp", '"203.0.113.0/24"'), ("tcp", 9000, 9000, "CidrIpv6", '"2001:db8::/48"')}
    assert _inbound(serving, "us-west-2") == cidrs | {
        ("tcp", 9000, 9000, "SourcePrefixListId", '"pl-0123456789abcdef0"')
    }
    assert _inbound(serving, "eu-west-1") == cidrs | {
        ("tcp", 9000, 9000, "SourceSecurityGroupId", '"sg-0123456789abcdef0"'),
        ("tcp", 9000, 9000, "SourceSecurityGroupId", '"sg-0fedcba9876543210"'),
    }


def test_the_model_cache_still_admits_only_the_instances(serving: Synthesized) -> None:
    for region in serving.config.deployed_worker_regions:
        group_id, _ = _instance_security_group(serving, region)
        (nodes_id,) = [
            logical_id
            for logical_id in serving.resources(serving.config.worker_stack_name(region), "AWS::EC2::SecurityGroup")
            if logical_id.startswith("DeploymentNodesNodeSecurityGroup")
        ]
        nfs = [
            ingress["Properties"]
            for ingress in serving.resources(
                serving.config.worker_stack_name(region), "AWS::EC2::SecurityGroupIngress"
            ).values()
            if ingress["Properties"].get("FromPort") == 2049
        ]
        # The serving instances and the model deployments' nodes (which boot the same way).
        assert sorted(rule["SourceSecurityGroupId"]["Fn::GetAtt"][0] for rule in nfs) == sorted([group_id, nodes_id])
        assert all(rule["SourceSecurityGroupId"]["Fn::GetAtt"][1] == "GroupId" for rule in nfs)


@pytest.mark.parametrize(("fixture", "public"), [("reference", True), ("serving", True), ("operator_vpc", False)])
def test_instances_get_a_public_address_as_configured(
    request: pytest.FixtureRequest, fixture: str, public: bool
) -> None:
    synthesized: Synthesized = request.getfixturevalue(fixture)
    for region in synthesized.config.deployed_worker_regions:
        _, template = _one(synthesized, region, "AWS::EC2::LaunchTemplate")
        (interface,) = template["Properties"]["LaunchTemplateData"]["NetworkInterfaces"]
        assert interface["AssociatePublicIpAddress"] is public, region
        assert interface["DeviceIndex"] == 0


# The API key


def test_the_hub_generates_the_key_with_a_replica_in_every_other_worker_region(reference: Synthesized) -> None:
    (secret,) = reference.resources("spothub-hub", "AWS::SecretsManager::Secret").values()
    properties = secret["Properties"]
    assert properties["Name"] == "spothub/spothub/model-api-key"
    assert properties["GenerateSecretString"] == {"ExcludePunctuation": True, "PasswordLength": 40}
    assert "SecretString" not in properties
    assert properties["ReplicaRegions"] == [{"Region": "us-west-2"}, {"Region": "eu-west-1"}]
    for stack_name in reference.templates:
        if stack_name != "spothub-hub":
            assert reference.resources(stack_name, "AWS::SecretsManager::Secret") == {}, stack_name


def test_no_replica_in_the_hub_region_when_it_is_also_a_worker(hub_as_worker: Synthesized) -> None:
    (secret,) = hub_as_worker.resources("gpu-prod-hub", "AWS::SecretsManager::Secret").values()
    assert secret["Properties"]["Name"] == "spothub/gpu-prod/model-api-key"
    assert "ReplicaRegions" not in secret["Properties"]


def test_a_supplied_key_is_used_and_nothing_is_generated(operator_vpc: Synthesized) -> None:
    for stack_name in operator_vpc.templates:
        assert operator_vpc.resources(stack_name, "AWS::SecretsManager::Secret") == {}, stack_name
    operator_vpc.hub.has_resource_properties(
        "AWS::SSM::Parameter", {"Name": "/spothub/spothub/model-api-key-secret", "Value": "platform/model-key"}
    )
    for region in operator_vpc.config.deployed_worker_regions:
        secrets = {s["Name"]: s["ValueFrom"] for s in _container(operator_vpc, region)["Secrets"]}
        assert secrets == {
            "SPOTHUB_API_KEY": _partial_arn(region, "platform/model-key"),
            "VLLM_API_KEY": _partial_arn(region, "platform/model-key"),
        }


# A generated key: letters and digits, API_KEY_LENGTH of them, standing alone.
KEY_SHAPED = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{40}(?![A-Za-z0-9])")


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def test_no_template_holds_a_secret_value(
    reference: Synthesized, hub_as_worker: Synthesized, serving: Synthesized, operator_vpc: Synthesized
) -> None:
    for synthesized in (reference, hub_as_worker, serving, operator_vpc):
        for stack_name, template in synthesized.templates.items():
            # References name logical ids, which can be as long; no other value may look like a key.
            names = {*template["Resources"], *template.get("Parameters", {}), *template.get("Outputs", {})}
            key_shaped = [k for s in _strings(template) if s not in names for k in KEY_SHAPED.findall(s)]
            assert key_shaped == [], stack_name
            # A SecretString would be a value written into the template; GenerateSecretString is Secrets Manager's.
            assert "SecretString" not in _keys(template), stack_name


@pytest.mark.parametrize("fixture", ["reference", "serving", "operator_vpc"])
def test_the_container_gets_credentials_as_secrets_never_as_environment_or_command(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    synthesized: Synthesized = request.getfixturevalue(fixture)
    credentials = {*synthesized.config.serving_api_key_environment, *synthesized.config.serving_secrets}
    for region in synthesized.config.deployed_worker_regions:
        container = _container(synthesized, region)
        assert credentials == {s["Name"] for s in container["Secrets"]}
        assert not credentials & {e["Name"] for e in container["Environment"]}
        # The command names the key's variable at most, never a secret.
        command = json.dumps(container.get("Command", []))
        assert "secretsmanager" not in command
        assert "model-api-key" not in command


def test_the_container_secrets_reference_the_key_and_the_configured_secrets(serving: Synthesized) -> None:
    for region in serving.config.deployed_worker_regions:
        secrets = {s["Name"]: s["ValueFrom"] for s in _container(serving, region)["Secrets"]}
        assert secrets == {
            # sglang reads no variable of its own: the preset passes --api-key "$SPOTHUB_API_KEY".
            "SPOTHUB_API_KEY": _partial_arn(region, "spothub/spothub/model-api-key"),
            "HF_TOKEN": _partial_arn(region, "team/hf-token"),
            "EXTRA_CREDENTIALS": "arn:aws:secretsmanager:us-east-1:123456789012:secret:team/extra-AbC123",
        }


def _policy_statements(synthesized: Synthesized, stack_name: str, role_id: str) -> list[dict[str, Any]]:
    return [
        statement
        for policy in synthesized.resources(stack_name, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize(
    ("fixture", "names", "arns"),
    [
        ("reference", ["spothub/spothub/model-api-key"], []),
        (
            "serving",
            ["spothub/spothub/model-api-key", "team/hf-token"],
            ["arn:aws:secretsmanager:us-east-1:123456789012:secret:team/extra-AbC123"],
        ),
        ("operator_vpc", ["platform/model-key"], []),
    ],
)
def test_only_the_execution_role_reads_secrets_and_exactly_those(
    request: pytest.FixtureRequest, fixture: str, names: list[str], arns: list[str]
) -> None:
    synthesized: Synthesized = request.getfixturevalue(fixture)
    for region in synthesized.config.deployed_worker_regions:
        stack_name = synthesized.config.worker_stack_name(region)
        _, definition = _one(synthesized, region, "AWS::ECS::TaskDefinition")
        execution_role = definition["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0]
        statements = _policy_statements(synthesized, stack_name, execution_role)
        (read,) = [s for s in statements if any(a.startswith("secretsmanager:") for a in _as_list(s["Action"]))]
        assert read["Action"] == "secretsmanager:GetSecretValue"
        assert read["Effect"] == "Allow" and "Condition" not in read
        expected = [
            {"Fn::Join": ["", [f"arn:aws:secretsmanager:{region}:", ACCOUNT, f":secret:{name}-??????"]]}
            for name in names
        ] + arns
        assert sorted(map(json.dumps, _as_list(read["Resource"]))) == sorted(map(json.dumps, expected))
    # No other principal in any stack may read a secret: the operator reads the key with their own credentials.
    for stack_name in synthesized.templates:
        for logical_id, policy in synthesized.resources(stack_name, "AWS::IAM::Policy").items():
            if "ExecutionRole" in logical_id:
                continue
            actions = {a for s in policy["Properties"]["PolicyDocument"]["Statement"] for a in _as_list(s["Action"])}
            assert not {a for a in actions if a.startswith("secretsmanager:")}, f"{stack_name}/{logical_id}"


# Presets and the serving keys


def test_the_default_preset_serves_the_default_model_with_vllm(reference: Synthesized) -> None:
    for region in reference.config.deployed_worker_regions:
        container = _container(reference, region)
        assert container["Image"] == "vllm/vllm-openai:v0.8.5"
        # The image's entrypoint is vLLM's OpenAI server: the command is its arguments.
        assert container["Command"] == [
            "--model",
            "Qwen/Qwen2.5-7B-Instruct",
            "--host",
            "0.0.0.0",  # noqa: S104
            "--port",
            "8000",
            "--max-model-len",
            str(PRESET_MAX_MODEL_LEN),
        ]
        health = container["HealthCheck"]
        assert "http://127.0.0.1:8000/health" in health["Command"][1]
        assert health["StartPeriod"] == SERVING_HEALTH_START_PERIOD_SECONDS
        assert {"Type": "GPU", "Value": "1"} in container["ResourceRequirements"]
        assert "LinuxParameters" not in container
        # vLLM reads its key from VLLM_API_KEY; SPOTHUB_API_KEY is every server's.
        assert {s["Name"] for s in container["Secrets"]} == {"SPOTHUB_API_KEY", "VLLM_API_KEY"}


def test_the_sglang_preset_with_the_operators_port_path_arguments_and_environment(serving: Synthesized) -> None:
    for region in serving.config.deployed_worker_regions:
        container = _container(serving, region)
        assert container["Image"] == "lmsysorg/sglang:v0.4.6.post1-cu124"
        assert container["Command"] == [
            "sh",
            "-c",
            "exec python3 -m sglang.launch_server --model-path meta-llama/Llama-3.1-8B-Instruct --host 0.0.0.0 "
            '--port 9000 --api-key "$SPOTHUB_API_KEY" "$@"',
            "sglang",
            "--mem-fraction-static",
            "0.85",
            "--served-model-name",
            "llama",
        ]
        health = container["HealthCheck"]
        assert health["Command"][0] == "CMD-SHELL"
        assert "http://127.0.0.1:9000/ready" in health["Command"][1]
        assert health["StartPeriod"] == 120
        environment = {e["Name"]: e["Value"] for e in container["Environment"]}
        assert environment == {
            "HF_HOME": "/model-cache/huggingface",
            "HOME": "/tmp",
            "TOKENIZERS_PARALLELISM": "false",
        }


def test_a_model_on_four_gpus_reserves_them_and_shares_memory_between_its_workers(operator_vpc: Synthesized) -> None:
    for region in operator_vpc.config.deployed_worker_regions:
        container = _container(operator_vpc, region)
        assert {"Type": "GPU", "Value": "4"} in container["ResourceRequirements"]
        assert container["Command"][-2:] == ["--tensor-parallel-size", "4"]
        assert container["LinuxParameters"]["SharedMemorySize"] == 16 * 1024


# What the hub publishes and hands its functions


def test_the_hub_publishes_the_port_where_the_key_is_and_the_agents_health_url(
    reference: Synthesized, serving: Synthesized
) -> None:
    for synthesized, port, path in ((reference, "8000", "/health"), (serving, "9000", "/ready")):
        parameters = {
            p["Properties"]["Name"]: p["Properties"]["Value"]
            for p in synthesized.resources(synthesized.config.hub_stack_name(), "AWS::SSM::Parameter").values()
        }
        assert parameters["/spothub/spothub/serving-port"] == port
        assert parameters["/spothub/spothub/model-api-key-secret"] == "spothub/spothub/model-api-key"
        assert json.loads(parameters["/spothub/spothub/agent-config"]) == {
            "health_url": f"http://127.0.0.1:{port}{path}"
        }


def test_the_agent_reads_its_config_where_the_hub_publishes_it(reference: Synthesized) -> None:
    """The agent reads /spothub/<prefix>/agent-config in the hub region with the instance role."""
    for region in reference.config.deployed_worker_regions:
        stack_name = reference.config.worker_stack_name(region)
        (role_id,) = [
            logical_id
            for logical_id in reference.resources(stack_name, "AWS::IAM::Role")
            if logical_id.startswith("GpuCapacityInstanceRole")
        ]
        (read,) = [s for s in _policy_statements(reference, stack_name, role_id) if s.get("Sid") == "ReadHubParameters"]
        assert "ssm:GetParameter" in read["Action"]
        assert {"Fn::Join": ["", ["arn:aws:ssm:us-east-1:", ACCOUNT, ":parameter/spothub/spothub/*"]]} in read[
            "Resource"
        ]


def _function(synthesized: Synthesized, concern: str) -> dict[str, Any]:
    (function,) = [
        f
        for f in synthesized.resources(synthesized.config.hub_stack_name(), "AWS::Lambda::Function").values()
        if f["Properties"]["Handler"] == f"{concern}.handler.lambda_handler"
    ]
    return function["Properties"]["Environment"]["Variables"]


@pytest.mark.parametrize("concern", ["capacity_handler", "instance_details", "toggle_provisioning"])
def test_the_functions_that_answer_endpoints_know_the_port_the_address_and_the_name(
    reference: Synthesized, operator_vpc: Synthesized, concern: str
) -> None:
    with_name = _function(reference, concern)
    assert with_name["SPOTHUB_SERVING_PORT"] == "8000"
    assert with_name["SPOTHUB_SERVING_PUBLIC_IP"] == "true"
    assert with_name["SPOTHUB_ENDPOINT_NAME"] == "gpu.example.com"
    without_name = _function(operator_vpc, concern)
    assert without_name["SPOTHUB_SERVING_PUBLIC_IP"] == "false"
    assert "SPOTHUB_ENDPOINT_NAME" not in without_name
    assert "SPOTHUB_HOSTED_ZONE_ID" not in without_name


def test_the_capacity_handler_knows_the_zone(reference: Synthesized) -> None:
    assert _function(reference, "capacity_handler")["SPOTHUB_HOSTED_ZONE_ID"] == "Z0123456789ABCDEFGHIJ"


def test_the_capacity_handler_may_change_only_the_endpoint_names_a_records(
    reference: Synthesized, operator_vpc: Synthesized
) -> None:
    statements = [
        statement
        for logical_id, policy in reference.resources("spothub-hub", "AWS::IAM::Policy").items()
        if logical_id.startswith("SpotProvisioningCapacityHandler")
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    (route53,) = [s for s in statements if any(a.startswith("route53:") for a in _as_list(s["Action"]))]
    # UPSERT (a replica serves) and DELETE (it stopped) are the same action; nothing else is called.
    assert route53["Action"] == "route53:ChangeResourceRecordSets"
    assert route53["Resource"] == "arn:aws:route53:::hostedzone/Z0123456789ABCDEFGHIJ"
    assert route53["Condition"] == {
        "ForAllValues:StringEquals": {
            "route53:ChangeResourceRecordSetsNormalizedRecordNames": ["gpu.example.com"],
            "route53:ChangeResourceRecordSetsRecordTypes": ["A"],
            "route53:ChangeResourceRecordSetsActions": ["UPSERT", "DELETE"],
        }
    }
    hub = json.dumps(operator_vpc.templates[operator_vpc.config.hub_stack_name()])
    assert "route53:" not in hub

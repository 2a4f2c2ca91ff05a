"""The model deployments' context keys (stacks/config_deployments.py): defaults, both context forms, what the
functions are handed, and one clear line per bad value."""

from __future__ import annotations

import json

import pytest

from spothub.sandbox.ecs_placement import registered_resources
from spothub_core.models.deployment_api import DeploymentRequest
from spothub_core.settings import DeploymentSettings, load_settings
from stacks import config_deployments
from stacks.config import ConfigError, SpothubConfig, context_keys
from stacks.serving_presets import PRESETS, ServingPreset

ONE_CLASS = {"a100": {"gpus": 8, "instanceTypes": ["p4d.24xlarge"], "maxNodes": 1}}


def _classes(config: SpothubConfig) -> dict[str, tuple[int, list[str], int]]:
    return {name: (c.gpus, c.instance_types, c.max_nodes) for name, c in config.deployment_node_classes.items()}


def test_the_keys_are_context_keys() -> None:
    assert {
        "deploymentNodeClasses",
        "deploymentTenantQuotas",
        "deploymentDefaultTenantQuota",
        "deploymentImage",
    } <= set(context_keys())


def test_defaults_one_and_four_gpu_nodes_no_named_tenant_and_the_pinned_vllm_image() -> None:
    config = SpothubConfig.from_context({})
    assert _classes(config) == {
        "1gpu": (1, ["g5.xlarge", "g6.xlarge"], 4),
        "4gpu": (4, ["g5.12xlarge", "g6.12xlarge"], 2),
    }
    assert config.deployment_tenant_quotas == {}
    assert config.deployment_default_tenant_quota == 16
    assert config.deployment_image == PRESETS[ServingPreset.VLLM].image


def test_every_default_type_registers_exactly_its_class_gpus_in_the_sandbox() -> None:
    """The sandbox's ECS placement reads the same EC2 data: a node of the class registers the class's GPUs."""
    for node_class in config_deployments.default_node_classes().values():
        for instance_type in node_class.instance_types:
            resources = registered_resources(instance_type, {"ECS_ENABLE_GPU_SUPPORT": "true"})
            assert resources.gpus == node_class.gpus, instance_type


def test_command_line_strings_and_cdk_json_values_mean_the_same() -> None:
    from_cli = SpothubConfig.from_context(
        {
            "deploymentNodeClasses": json.dumps(ONE_CLASS),
            "deploymentTenantQuotas": '{"team-a": 8, "team-b": 0}',
            "deploymentDefaultTenantQuota": "4",
            "deploymentImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/vllm:0.9",
        }
    )
    from_json = SpothubConfig.from_context(
        {
            "deploymentNodeClasses": ONE_CLASS,
            "deploymentTenantQuotas": {"team-a": 8, "team-b": 0},
            "deploymentDefaultTenantQuota": 4,
            "deploymentImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/vllm:0.9",
        }
    )
    assert from_cli == from_json
    assert _classes(from_cli) == {"a100": (8, ["p4d.24xlarge"], 1)}
    assert from_cli.deployment_tenant_quotas == {"team-a": 8, "team-b": 0}


def test_the_functions_read_what_the_stack_hands_them() -> None:
    config = SpothubConfig.from_context(
        {"deploymentNodeClasses": ONE_CLASS, "deploymentTenantQuotas": {"team-a": 8}, "deploymentImage": "x/y:1"}
    )
    environment = config_deployments.environment(
        config.deployment_node_classes,
        config.deployment_tenant_quotas,
        config.deployment_default_tenant_quota,
        config.deployment_image,
    )
    settings = load_settings(
        DeploymentSettings,
        {
            **environment,
            "SPOTHUB_PREFIX": "spothub",
            "SPOTHUB_VERSION": "1",
            "POWERTOOLS_SERVICE_NAME": "spothub-deployments-api",
            "SPOTHUB_HUB_REGION": "us-east-1",
            "SPOTHUB_WORKER_REGIONS": "us-west-2",
            "SPOTHUB_STATE_TABLE": "spothub-state",
            "SPOTHUB_CAPACITY_FALLBACK": "on-demand",
            "SPOTHUB_DEPLOYMENTS_TABLE": "spothub-deployments",
            "SPOTHUB_HUB_BUS": "spothub-hub",
        },
    )
    (node_class,) = settings.node_classes.values()
    assert (node_class.gpus, node_class.instance_types, node_class.max_nodes) == (8, ["p4d.24xlarge"], 1)
    assert settings.quota_of("team-a") == 8
    assert settings.quota_of("anyone") == 16
    assert settings.default_image == "x/y:1"


def test_the_defaults_are_what_the_api_accepts() -> None:
    """A default image or a tenant the API would refuse could never be used."""
    config = SpothubConfig.from_context({"deploymentTenantQuotas": {"team-a": 1}})
    DeploymentRequest(model="m", tenant="team-a", image=config.deployment_image)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (
            {"deploymentNodeClasses": {"x": {"gpus": 1, "instanceTypes": ["g5.12xlarge"], "maxNodes": 2}}},
            "context key 'deploymentNodeClasses': node class 'x': 'g5.12xlarge' has 4 GPUs, not 1",
        ),
        (
            {"deploymentNodeClasses": {"x": {"gpus": 4, "instanceTypes": ["g5.12xlarge", "g5.xlarge"], "maxNodes": 2}}},
            "'g5.xlarge' has 1 GPUs, not 4",
        ),
        (
            {"deploymentNodeClasses": {"x": {"gpus": 1, "instanceTypes": ["m5.xlarge"], "maxNodes": 2}}},
            "node class 'x': 'm5.xlarge' has no GPU",
        ),
        (
            {"deploymentNodeClasses": {"x": {"gpus": 1, "instanceTypes": ["zz9.xlarge"], "maxNodes": 2}}},
            "node class 'x': 'zz9.xlarge' is not an EC2 instance type",
        ),
        (
            {"deploymentNodeClasses": {"x": {"gpus": 1, "instanceTypes": ["g5 xlarge"], "maxNodes": 2}}},
            "'g5 xlarge' is not an EC2 instance type name",
        ),
        (
            {"deploymentNodeClasses": {"x": {"gpus": 1, "instanceTypes": ["g5g.xlarge"], "maxNodes": 2}}},
            "'g5g.xlarge' is arm64; the ECS-optimized GPU AMI the nodes boot is x86_64",
        ),
        (
            {"deploymentNodeClasses": {"x": {"gpus": 1, "instanceTypes": ["g5.xlarge", "g5.xlarge"], "maxNodes": 2}}},
            "node class 'x' lists g5.xlarge more than once",
        ),
        (
            {"deploymentNodeClasses": {"Big": {"gpus": 1, "instanceTypes": ["g5.xlarge"], "maxNodes": 2}}},
            "'Big' is not a node class name",
        ),
        ({"deploymentNodeClasses": {}}, "names no node class"),
        ({"deploymentNodeClasses": "{not json"}, "context key 'deploymentNodeClasses': is not valid JSON"),
        (
            {"deploymentNodeClasses": {"x": {"gpus": 1, "instanceTypes": ["g5.xlarge"], "maxNodes": -1}}},
            "context key 'deploymentNodeClasses.x.maxNodes': Input should be greater than or equal to 0",
        ),
        (
            {"deploymentNodeClasses": {"x": {"gpus": 1, "instanceTypes": [], "maxNodes": 1}}},
            "context key 'deploymentNodeClasses.x.instanceTypes'",
        ),
        (
            {"deploymentNodeClasses": {"x": {"gpus": 1, "instanceTypes": ["g5.xlarge"], "maxNodes": 1, "spot": 1}}},
            "unknown key 'deploymentNodeClasses.x.spot'",
        ),
        ({"deploymentTenantQuotas": {"Team A": 4}}, "'Team A' is not a tenant the API takes"),
        ({"deploymentTenantQuotas": {"team-a": -4}}, "the quota of 'team-a' is -4"),
        ({"deploymentTenantQuotas": "[1, 2]"}, "context key 'deploymentTenantQuotas'"),
        ({"deploymentDefaultTenantQuota": "-1"}, "context key 'deploymentDefaultTenantQuota'"),
        ({"deploymentImage": "vllm/vllm openai"}, "is not an image reference the API takes"),
        ({"deploymentImage": "x" * 129}, "is not an image reference the API takes"),
    ],
)
def test_a_bad_value_is_refused_with_what_to_fix(context: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        SpothubConfig.from_context(context)
    assert message in str(raised.value)


def test_a_class_without_nodes_in_a_region_is_allowed() -> None:
    """maxNodes 0: the class exists (deployments may name its GPUs) but no node is ever asked."""
    config = SpothubConfig.from_context(
        {"deploymentNodeClasses": {"x": {"gpus": 1, "instanceTypes": ["g6e.xlarge"], "maxNodes": 0}}}
    )
    assert _classes(config) == {"x": (1, ["g6e.xlarge"], 0)}

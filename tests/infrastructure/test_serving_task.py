"""The serving task as synthesized: placeable on every configured instance type, and kept away from the
instance role (it runs with host networking, which the IMDS hop limit does not stop)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from spothub.sandbox.ecs_placement import ecs_config, registered_resources, shortfall, task_requirements
from stacks.constructs.serving_task import SERVING_UID
from tests.infrastructure.synth import Synthesized


def _one(synthesized: Synthesized, region: str, resource_type: str) -> tuple[str, dict[str, Any]]:
    resources = synthesized.resources(synthesized.config.worker_stack_name(region), resource_type).items()
    if resource_type == "AWS::EC2::LaunchTemplate":  # the serving instances', not the batch workers'
        resources = [(k, t) for k, t in resources if t["Properties"]["LaunchTemplateName"].endswith("-gpu")]
    (found,) = resources
    return found


def _user_data(synthesized: Synthesized, region: str) -> str:
    """The launch template's user data, its tokens (cluster name, file system id, ...) as `<token>`."""
    _, template = _one(synthesized, region, "AWS::EC2::LaunchTemplate")
    joined = template["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]
    if isinstance(joined, str):
        return joined
    return "".join(part if isinstance(part, str) else "<token>" for part in joined["Fn::Join"][1])


def _deployments(*synthesized: Synthesized) -> list[tuple[Synthesized, str]]:
    """Every worker of these deployments."""
    return [(s, r) for s in synthesized for r in s.config.deployed_worker_regions]


def test_the_serving_task_fits_what_ecs_registers_on_every_configured_instance_type(
    reference: Synthesized, hub_as_worker: Synthesized, operator_vpc: Synthesized
) -> None:
    # The default instance types; p4d/p5; a model on 4 GPUs of g5.12xlarge and g6e.12xlarge.
    for synthesized, region in _deployments(reference, hub_as_worker, operator_vpc):
        config = ecs_config(_user_data(synthesized, region))
        _, definition = _one(synthesized, region, "AWS::ECS::TaskDefinition")
        properties = definition["Properties"]
        needs = task_requirements(properties["ContainerDefinitions"], properties.get("Cpu"), properties.get("Memory"))
        assert needs.gpus == synthesized.config.serving_gpus
        assert needs.memory_mib > 0, "a task with no memory reservation would be placed anywhere"
        for instance_type in synthesized.config.instance_types:
            registered = registered_resources(instance_type, config)
            assert shortfall(registered, needs) is None, (
                f"{instance_type} registers {registered} with ECS; the serving task needs {needs}"
            )


def test_a_16_gib_reservation_does_not_fit_a_16_gib_instance(reference: Synthesized) -> None:
    config = ecs_config(_user_data(reference, "us-west-2"))
    needs = task_requirements(
        [{"memoryReservation": 16 * 1024, "resourceRequirements": [{"type": "GPU", "value": "1"}]}]
    )
    for instance_type in ("g5.xlarge", "g6.xlarge", "g4dn.xlarge"):
        assert shortfall(registered_resources(instance_type, config), needs) == "RESOURCE:MEMORY"


@pytest.mark.parametrize("region", ["us-west-2", "eu-west-1"])
def test_the_serving_task_has_its_own_role_with_no_permission(reference: Synthesized, region: str) -> None:
    stack_name = reference.config.worker_stack_name(region)
    _, definition = _one(reference, region, "AWS::ECS::TaskDefinition")
    task_role = definition["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    role = reference.templates[stack_name]["Resources"][task_role]
    assert role["Type"] == "AWS::IAM::Role"
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert set(trust["Condition"]) == {"ArnLike", "StringEquals"}, "confused deputy: only this account's ECS"
    assert "aws:SourceAccount" in trust["Condition"]["StringEquals"]
    assert not role["Properties"].get("ManagedPolicyArns")
    assert not role["Properties"].get("Policies")
    attached = [
        logical_id
        for logical_id, policy in reference.resources(stack_name, "AWS::IAM::Policy").items()
        if {"Ref": task_role} in policy["Properties"].get("Roles", [])
    ]
    assert attached == [], "the model server calls no AWS API"
    instance_profile_roles = [
        role_ref
        for profile in reference.resources(stack_name, "AWS::IAM::InstanceProfile").values()
        for role_ref in profile["Properties"]["Roles"]
    ]
    assert {"Ref": task_role} not in instance_profile_roles


@pytest.mark.parametrize("region", ["us-west-2", "eu-west-1"])
def test_the_serving_container_runs_unprivileged_as_the_user_the_instance_keeps_from_imds(
    reference: Synthesized, region: str
) -> None:
    _, definition = _one(reference, region, "AWS::ECS::TaskDefinition")
    assert definition["Properties"]["NetworkMode"] == "host"
    (container,) = definition["Properties"]["ContainerDefinitions"]
    assert container["User"] == f"{SERVING_UID}:{SERVING_UID}"
    assert SERVING_UID != 0
    assert "no-new-privileges" in container["DockerSecurityOptions"]
    assert not container.get("Privileged")
    assert not container.get("LinuxParameters", {}).get("Capabilities", {}).get("Add")


@pytest.mark.parametrize("region", ["us-west-2", "eu-west-1"])
def test_user_data_delivers_the_task_role_and_drops_the_serving_users_traffic_to_imds(
    reference: Synthesized, region: str
) -> None:
    user_data = _user_data(reference, region)
    config = ecs_config(user_data)
    assert config["ECS_ENABLE_TASK_IAM_ROLE"] == "true"
    assert config["ECS_ENABLE_TASK_IAM_ROLE_NETWORK_HOST"] == "true"
    drop = f"--destination 169.254.169.254/32 -m owner --uid-owner {SERVING_UID} --jump DROP"
    assert f"iptables --insert OUTPUT 1 {drop}" in user_data
    # At every boot (cloud-init per-boot script), and now, before the ECS agent starts any task.
    script = re.search(r"cat >(/var/lib/cloud/scripts/per-boot/\S+) <<'IMDS'", user_data)
    assert script, "the rule is installed by a per-boot script"
    assert re.search(rf"^{re.escape(script.group(1))}$", user_data, re.MULTILINE), "and run by the user data"
    # The weights cache is writable by the serving user.
    assert f"install -d -o {SERVING_UID} -g {SERVING_UID} /mnt/model-cache/huggingface" in user_data
    _, definition = _one(reference, region, "AWS::ECS::TaskDefinition")
    (container,) = definition["Properties"]["ContainerDefinitions"]
    environment = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert environment["HF_HOME"] == "/model-cache/huggingface"
    assert json.dumps(definition["Properties"]["Volumes"]).count("/mnt/model-cache") == 1


def test_every_serving_configuration_keeps_the_hardening(serving: Synthesized, operator_vpc: Synthesized) -> None:
    """Another preset, secrets, several GPUs: the same user, no-new-privileges and an empty task role."""
    for synthesized, region in _deployments(serving, operator_vpc):
        stack_name = synthesized.config.worker_stack_name(region)
        _, definition = _one(synthesized, region, "AWS::ECS::TaskDefinition")
        (container,) = definition["Properties"]["ContainerDefinitions"]
        assert container["User"] == f"{SERVING_UID}:{SERVING_UID}"
        assert "no-new-privileges" in container["DockerSecurityOptions"]
        assert not container.get("Privileged")
        assert not container.get("LinuxParameters", {}).get("Capabilities", {}).get("Add")
        task_role = definition["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
        assert task_role != definition["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0]
        role = synthesized.templates[stack_name]["Resources"][task_role]
        assert not role["Properties"].get("ManagedPolicyArns")
        assert not role["Properties"].get("Policies")
        attached = [
            logical_id
            for logical_id, policy in synthesized.resources(stack_name, "AWS::IAM::Policy").items()
            if {"Ref": task_role} in policy["Properties"].get("Roles", [])
        ]
        assert attached == [], "the model server calls no AWS API, and reads no secret itself"

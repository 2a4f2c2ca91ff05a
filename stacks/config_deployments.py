"""The model deployments' context keys (read into SpothubConfig like every other key; stacks/config.py names the
fields, this module their types, defaults and checks):

  deploymentNodeClasses         {"<class>": {"gpus", "instanceTypes", "maxNodes"}}: one node group per class in each
                                worker region (`<prefix>-nodes-<class>`); every type of a class has exactly `gpus`
                                NVIDIA GPUs and runs the ECS-optimized GPU AMI (x86_64), per EC2's own instance
                                type data (the copy the pinned moto ships, as the sandbox's ECS placement reads it)
  deploymentTenantQuotas        {"<tenant>": GPUs}: what a tenant's deployments may reserve
  deploymentDefaultTenantQuota  the quota of a tenant not named there
  deploymentImage               the inference server of a deployment that names none (the pinned vLLM image)

The deployment functions read them as DeploymentSettings (lambdas/spothub_core/settings.py): `environment()`.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from spothub_core.models.api import INSTANCE_TYPE_PATTERN
from spothub_core.models.deployment_api import DeploymentRequest
from stacks.serving_presets import PRESETS, ServingPreset

# Part of the node group's name (`<prefix>-nodes-<class>`), of construct ids and of the grants' name patterns.
NODE_CLASS_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")
# What the API takes as a tenant and as an image (POST /deployments): a quota or default it could never match is a
# mistake.
_REQUEST_SCHEMA = DeploymentRequest.model_json_schema()
TENANT_PATTERN = re.compile(_REQUEST_SCHEMA["properties"]["tenant"]["pattern"])
IMAGE_PATTERN = re.compile(
    next(s["pattern"] for s in _REQUEST_SCHEMA["properties"]["image"]["anyOf"] if s.get("type") == "string")
)
IMAGE_MAX_LENGTH = 128
# The ECS-optimized GPU AMI the node groups launch (instance_template.gpu_launch_template) is built for x86_64.
NODE_ARCHITECTURE = "x86_64"
# ECS schedules NVIDIA GPUs only (ECS_ENABLE_GPU_SUPPORT).
GPU_MANUFACTURER = "NVIDIA"
MAX_NODES_PER_GROUP = 1000
DEFAULT_TENANT_QUOTA = 16
DEFAULT_IMAGE = PRESETS[ServingPreset.VLLM].image


class NodeClassConfig(BaseModel):
    """One node class as the context gives it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    gpus: Annotated[int, Field(ge=1, le=16)]
    instance_types: list[str] = Field(alias="instanceTypes", min_length=1)
    max_nodes: Annotated[int, Field(ge=0, le=MAX_NODES_PER_GROUP, alias="maxNodes")]


def default_node_classes() -> dict[str, NodeClassConfig]:
    """One GPU (A10G, L4) and four (4 x A10G, 4 x L4): two types each, for two spot pools per zone."""
    return {
        "1gpu": NodeClassConfig(gpus=1, instance_types=["g5.xlarge", "g6.xlarge"], max_nodes=4),
        "4gpu": NodeClassConfig(gpus=4, instance_types=["g5.12xlarge", "g6.12xlarge"], max_nodes=2),
    }


@cache
def _ec2_instance_types() -> dict[str, Any]:
    from moto.ec2.models.instance_types import INSTANCE_TYPES  # noqa: PLC0415 (a large table: read when needed)

    return dict(INSTANCE_TYPES)


def _gpus(data: dict[str, Any]) -> tuple[int, set[str]]:
    gpus = data.get("GpuInfo", {}).get("Gpus", [])
    return sum(int(g.get("Count", 0)) for g in gpus), {str(g.get("Manufacturer", "")) for g in gpus}


def _json(value: Any) -> Any:
    """A JSON object from the command line's string (`-c deploymentNodeClasses='{...}'`), or cdk.json's object."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON ({exc.msg})") from exc
    return value


def _check_instance_type(node_class: str, gpus: int, instance_type: str) -> None:
    where = f"node class '{node_class}'"
    if not INSTANCE_TYPE_PATTERN.match(instance_type):
        raise ValueError(f"{where}: '{instance_type}' is not an EC2 instance type name (like g5.xlarge)")
    data = _ec2_instance_types().get(instance_type)
    if data is None:
        raise ValueError(f"{where}: '{instance_type}' is not an EC2 instance type")
    count, makers = _gpus(data)
    if count == 0:
        raise ValueError(f"{where}: '{instance_type}' has no GPU")
    if makers != {GPU_MANUFACTURER}:
        raise ValueError(
            f"{where}: the GPUs of '{instance_type}' are {', '.join(sorted(makers))}'s; ECS schedules "
            f"{GPU_MANUFACTURER} GPUs only"
        )
    if count != gpus:
        raise ValueError(
            f"{where}: '{instance_type}' has {count} GPUs, not {gpus}: every type of a class has exactly its "
            "`gpus` (a node registers all its GPUs; a smaller one could never take the class's deployments)"
        )
    architectures = data.get("ProcessorInfo", {}).get("SupportedArchitectures", [])
    if NODE_ARCHITECTURE not in architectures:
        raise ValueError(
            f"{where}: '{instance_type}' is {', '.join(architectures)}; the ECS-optimized GPU AMI the nodes boot "
            f"is {NODE_ARCHITECTURE}"
        )


def _check_node_classes(value: dict[str, NodeClassConfig]) -> dict[str, NodeClassConfig]:
    if not value:
        raise ValueError("names no node class: deployments need at least one (the default has 1gpu and 4gpu)")
    for name, node_class in value.items():
        if not NODE_CLASS_PATTERN.match(name):
            raise ValueError(
                f"'{name}' is not a node class name: 1-20 lower-case letters, digits and '-', not first a '-' "
                "(it is part of the node group's name)"
            )
        duplicates = sorted({t for t in node_class.instance_types if node_class.instance_types.count(t) > 1})
        if duplicates:
            raise ValueError(f"node class '{name}' lists {', '.join(duplicates)} more than once")
        for instance_type in node_class.instance_types:
            _check_instance_type(name, node_class.gpus, instance_type)
    return value


def _check_tenant_quotas(value: dict[str, int]) -> dict[str, int]:
    for tenant, gpus in value.items():
        if not TENANT_PATTERN.match(tenant):
            raise ValueError(
                f"'{tenant}' is not a tenant the API takes: 1-63 lower-case letters, digits and '-', not first a '-'"
            )
        if gpus < 0:
            raise ValueError(f"the quota of '{tenant}' is {gpus}: a number of GPUs, 0 or more")
    return value


def _check_image(value: str) -> str:
    if len(value) > IMAGE_MAX_LENGTH or not IMAGE_PATTERN.match(value):
        raise ValueError(
            f"'{value}' is not an image reference the API takes (up to {IMAGE_MAX_LENGTH} of letters, digits and "
            "._:/@-, like vllm/vllm-openai:v0.8.5)"
        )
    return value


NodeClasses = Annotated[dict[str, NodeClassConfig], BeforeValidator(_json), AfterValidator(_check_node_classes)]
TenantQuotas = Annotated[dict[str, int], BeforeValidator(_json), AfterValidator(_check_tenant_quotas)]
TenantQuota = Annotated[int, Field(ge=0)]
DeploymentImage = Annotated[str, AfterValidator(_check_image)]


def environment(
    node_classes: dict[str, NodeClassConfig], tenant_quotas: dict[str, int], default_quota: int, image: str
) -> dict[str, str]:
    """What DeploymentSettings reads of these keys (its NodeClass in snake case), besides the table and the bus."""
    classes = {
        name: {"gpus": c.gpus, "instance_types": list(c.instance_types), "max_nodes": c.max_nodes}
        for name, c in sorted(node_classes.items())
    }
    return {
        "SPOTHUB_NODE_CLASSES": json.dumps(classes, separators=(",", ":")),
        "SPOTHUB_TENANT_QUOTAS": json.dumps(dict(sorted(tenant_quotas.items())), separators=(",", ":")),
        "SPOTHUB_DEFAULT_TENANT_QUOTA": str(default_quota),
        "SPOTHUB_DEPLOYMENT_IMAGE": image,
    }

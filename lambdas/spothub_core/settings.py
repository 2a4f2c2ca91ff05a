"""Environment variables as pydantic models, validated once at cold start.

A function whose environment is wrong fails its first invocation with the list of what is
missing, instead of a KeyError deep inside a request.
"""

from __future__ import annotations

import json
import os
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

SettingsT = TypeVar("SettingsT", bound=BaseModel)


class BaseSettings(BaseModel):
    """What every spothub function is given by `SpothubFunction`."""

    # defer_build: a function validates one of these models, at cold start (`load_settings`); the others stay
    # unbuilt instead of costing every cold start the schema of every function's settings.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, defer_build=True)

    prefix: str = Field(alias="SPOTHUB_PREFIX", min_length=1)
    version: str = Field(alias="SPOTHUB_VERSION", min_length=1)
    service: str = Field(alias="POWERTOOLS_SERVICE_NAME", min_length=1)


class HubSettings(BaseSettings):
    """Functions of the hub stack, which all know the deployment's shape and its state table."""

    hub_region: str = Field(alias="SPOTHUB_HUB_REGION", min_length=1)
    worker_regions: list[str] = Field(alias="SPOTHUB_WORKER_REGIONS")
    state_table_name: str = Field(alias="SPOTHUB_STATE_TABLE", min_length=1)
    capacity_fallback: str = Field(alias="SPOTHUB_CAPACITY_FALLBACK", min_length=1)


class SearchSettings(HubSettings):
    """The hub's search functions (search_api, search_tasks, search_monitor): the volume, its region and table, the
    launcher, the router in the search region and the instance's service."""

    search_table_name: str = Field(alias="SPOTHUB_SEARCH_TABLE", min_length=1)
    search_region: str = Field(alias="SPOTHUB_SEARCH_REGION", min_length=1)
    volume_id: str = Field(alias="SPOTHUB_SEARCH_VOLUME_ID", pattern=r"^vol-[0-9a-f]{8,17}$")
    launcher_arn: str = Field(alias="SPOTHUB_SEARCH_LAUNCHER_ARN", min_length=1)
    router_arn: str = Field(alias="SPOTHUB_SEARCH_ROUTER_ARN", min_length=1)
    host_parameter: str = Field(alias="SPOTHUB_SEARCH_HOST_PARAMETER", min_length=1)
    port: int = Field(alias="SPOTHUB_SEARCH_PORT", ge=1, le=65535)
    health_path: str = Field("/health", alias="SPOTHUB_SEARCH_HEALTH_PATH")
    instance_type: str = Field(alias="SPOTHUB_SEARCH_INSTANCE_TYPE", min_length=1)
    use_spot: bool = Field(True, alias="SPOTHUB_SEARCH_USE_SPOT")
    spot_max_price: str = Field("", alias="SPOTHUB_SEARCH_SPOT_MAX_PRICE")  # "": up to the on-demand price
    idle_timeout_s: int = Field(alias="SPOTHUB_SEARCH_IDLE_TIMEOUT", ge=60)
    max_runtime_s: int = Field(alias="SPOTHUB_SEARCH_MAX_RUNTIME", ge=0)  # 0: no limit
    health_interval_s: int = Field(alias="SPOTHUB_SEARCH_HEALTH_INTERVAL", ge=60)


class NodeClass(BaseModel):
    """A class of GPU nodes: every instance type of its node group has the same number of GPUs
    (`deploymentNodeClasses` in the CDK context; stacks/config.py checks the types against EC2's data)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    gpus: int = Field(ge=1, le=16)
    instance_types: list[str] = Field(min_length=1)
    max_nodes: int = Field(ge=0, le=1000, description="the node group's maximum size in each worker region")


class DeploymentSettings(HubSettings):
    """The hub's deployment functions (deployments_api, deployment_controller): the table, the node classes and
    quotas, the default image, the hub bus (the API's nudge to the controller)."""

    deployments_table_name: str = Field(alias="SPOTHUB_DEPLOYMENTS_TABLE", min_length=1)
    # JSON {"<class>": NodeClass}: the smallest class with enough GPUs per node takes a deployment.
    node_classes: dict[str, NodeClass] = Field(alias="SPOTHUB_NODE_CLASSES", min_length=1)
    # JSON {"<tenant>": GPUs}: what a tenant's deployments may reserve (gpus x replicas, up to max_replicas when
    # autoscaled); a tenant not named gets the default.
    tenant_quotas: dict[str, int] = Field(default_factory=dict, alias="SPOTHUB_TENANT_QUOTAS")
    default_tenant_quota: int = Field(alias="SPOTHUB_DEFAULT_TENANT_QUOTA", ge=0)
    default_image: str = Field(alias="SPOTHUB_DEPLOYMENT_IMAGE", min_length=1)
    hub_bus_name: str = Field(alias="SPOTHUB_HUB_BUS", min_length=1)

    @field_validator("node_classes", "tenant_quotas", mode="before")
    @classmethod
    def _json(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value

    def quota_of(self, tenant: str) -> int:
        return self.tenant_quotas.get(tenant, self.default_tenant_quota)


def load_settings(model: type[SettingsT], environ: dict[str, str] | None = None) -> SettingsT:
    """Read `model` from the process environment; list values are comma-separated strings."""
    source = dict(os.environ if environ is None else environ)
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key in source and _is_list(field.annotation):
            source[key] = [item for item in source[key].split(",") if item]  # type: ignore[assignment]
    return model.model_validate(source)


def _is_list(annotation: object) -> bool:
    return getattr(annotation, "__origin__", None) is list

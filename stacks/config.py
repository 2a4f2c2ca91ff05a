"""Deployment configuration: CDK context parsed and validated once, defaults in this one place.

`cdk synth -c key=value` hands every value over as a string, while `cdk.json` may hold lists,
booleans and objects; the validators below accept both forms. A bad value raises `ConfigError`
with one line per problem, which `app.py` prints instead of a stack trace.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
import shlex
from decimal import Decimal
from typing import Annotated, Any, Literal

from aws_cdk.region_info import RegionInfo
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# The shape the API checks in POST /spot-provisioning too.
from spothub_core.models.api import INSTANCE_TYPE_PATTERN
from spothub_core.timings import (
    MINUTE_SECONDS,
    SEARCH_HEALTH_INTERVAL_SECONDS,
    SEARCH_IDLE_TIMEOUT_SECONDS,
    SEARCH_MAX_RUNTIME_SECONDS,
    SERVING_HEALTH_START_PERIOD_SECONDS,
    WORKER_POLL_SECONDS,
)
from stacks.config_deployments import (
    DEFAULT_IMAGE,
    DEFAULT_TENANT_QUOTA,
    DeploymentImage,
    NodeClasses,
    TenantQuota,
    TenantQuotas,
    default_node_classes,
)
from stacks.serving_presets import API_KEY_ENV, GPU_COUNTS, PRESETS, ServingPreset, preset_command

KNOWN_REGIONS: frozenset[str] = frozenset(r.name for r in RegionInfo.regions)

PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,18}[a-z0-9]$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
HOSTED_ZONE_PATTERN = re.compile(r"^Z[A-Z0-9]{1,32}$")
DNS_NAME_PATTERN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\.?$")
VPC_ID_PATTERN = re.compile(r"^vpc-[0-9a-f]{8,17}$")
SUBNET_ID_PATTERN = re.compile(r"^subnet-[0-9a-f]{8,17}$")
ACCOUNT_PATTERN = re.compile(r"^[0-9]{12}$")
PREFIX_LIST_PATTERN = re.compile(r"^pl-[0-9a-f]{8,17}$")
SECURITY_GROUP_PATTERN = re.compile(r"^sg-[0-9a-f]{8,17}$")
VOLUME_ID_PATTERN = re.compile(r"^vol-[0-9a-f]{8,17}$")
# S3's rules for a general purpose bucket's name: 3-63 of a-z0-9.-, a letter or digit at each end, no "..",
# not an IP address.
BUCKET_NAME_PATTERN = re.compile(r"^(?!\d+\.\d+\.\d+\.\d+$)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# What a POSIX shell (and so a container's environment) accepts as a variable's name.
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_NAME_PATTERN = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
SECRET_ARN_PATTERN = re.compile(
    r"^arn:aws[a-z-]*:secretsmanager:(?P<region>[a-z0-9-]+):[0-9]{12}:secret:(?P<name>[A-Za-z0-9/_+=.@-]{1,512})$"
)
# A complete secret ARN ends with the six characters Secrets Manager appends to the name.
COMPLETE_SECRET_ARN_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")
# A URL path that the health check's shell command holds without quoting.
HEALTH_PATH_PATTERN = re.compile(r"^/[A-Za-z0-9._~/%-]*(\?[A-Za-z0-9._~=&%-]*)?$")
NO_WHITESPACE_PATTERN = re.compile(r"^\S+$")
# Words of an environment variable's name that say it holds a credential, which belongs in servingSecrets.
CREDENTIAL_NAME_WORDS = frozenset({"TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "APIKEY", "CREDENTIALS"})
# ECS accepts a container health check's start period up to this (HealthCheck.StartPeriod).
ECS_HEALTH_START_PERIOD_MAX_SECONDS = 300

# The retention periods CloudWatch Logs accepts, in days.
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)

CONTEXT_PREFIXES_OWNED_BY_CDK = ("@aws-cdk", "aws:", "aws-cdk:", "cdk", "@")
# Context keys the CDK CLI itself writes into cdk.context.json (e.g. by `cdk acknowledge`).
CONTEXT_KEYS_OWNED_BY_CDK = frozenset({"acknowledged-issue-numbers"})
RESERVED_NAME_PREFIXES = ("aws", "ecs", "fargate")


class ConfigError(Exception):
    """The CDK context cannot describe a deployment; the message says what to fix."""


def _list(value: Any) -> Any:
    """A list from a JSON list, a comma list (the command line's form), or a list already."""
    if isinstance(value, str) and value.strip().startswith("["):
        return _json_object(value)
    return _split_list(value)


def _argv(value: Any) -> Any:
    """A command line from a JSON list of strings, or a string split as a shell would split it."""
    if isinstance(value, str):
        if value.strip().startswith("["):
            return _json_object(value)
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split into arguments ({exc})") from exc
    return value


def _lists_by_region(value: Any) -> Any:
    value = _json_object(value)
    if isinstance(value, dict):
        return {region: _list(ids) for region, ids in value.items()}
    return value


def _check_secret_reference(value: str) -> str:
    arn = SECRET_ARN_PATTERN.match(value)
    if value.startswith("arn:"):
        if not arn:
            raise ValueError(
                f"'{value}' is not a Secrets Manager secret ARN "
                "(arn:aws:secretsmanager:<region>:<account>:secret:<name>)"
            )
        _check_region(arn.group("region"))
    elif not SECRET_NAME_PATTERN.match(value):
        raise ValueError(f"'{value}' is not a Secrets Manager secret name (letters, digits and /_+=.@-)")
    return value


def _check_env_name(name: str) -> None:
    if not ENV_NAME_PATTERN.match(name):
        raise ValueError(f"'{name}' is not an environment variable name (letters, digits and _, not first a digit)")


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _json_object(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON ({exc.msg})") from exc
    return value


class ExistingVpc(BaseModel):
    """A VPC the operator already has in one worker region. Subnets are named because
    looking them up would need AWS credentials at synth time."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    vpc_id: str = Field(alias="vpcId")
    subnet_ids: list[str] = Field(alias="subnetIds", min_length=1)

    @field_validator("vpc_id")
    @classmethod
    def _vpc_id(cls, value: str) -> str:
        if not VPC_ID_PATTERN.match(value):
            raise ValueError(f"'{value}' is not a VPC id (vpc-0123abcd…)")
        return value

    @field_validator("subnet_ids")
    @classmethod
    def _subnet_ids(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if not SUBNET_ID_PATTERN.match(s)]
        if bad:
            raise ValueError(f"not subnet ids: {', '.join(bad)} (subnet-0123abcd…)")
        return value


class SpothubConfig(BaseModel):
    """Everything a deployment can be told, with its default. Field aliases are the context keys."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    prefix: str = "spothub"
    hub_region: str = Field("us-east-1", alias="hubRegion")
    worker_regions: list[str] = Field(default_factory=lambda: ["us-east-2", "us-west-2"], alias="workerRegions")
    hub_as_worker: bool = Field(False, alias="hubAsWorker")
    # Several types of similar size diversify the spot pools the Auto Scaling group can draw from.
    # A10G, L4 and L40S (Ampere, Ada): bf16, which the default model is served in. No g4dn: a T4 has no bf16.
    instance_types: list[str] = Field(
        default_factory=lambda: ["g5.xlarge", "g6.xlarge", "g6e.xlarge"], alias="instanceTypes", min_length=1
    )
    capacity_fallback: Literal["on-demand", "none"] = Field("on-demand", alias="capacityFallback")
    account: str | None = None
    vpcs: dict[str, ExistingVpc] = Field(default_factory=dict)
    alert_email: str | None = Field(None, alias="alertEmail")
    hosted_zone_id: str | None = Field(None, alias="hostedZoneId")
    endpoint_name: str | None = Field(None, alias="endpointName")
    # CloudFormation picks zones with Fn::GetAZs at deploy time; a region with fewer zones needs a lower value.
    max_azs: Annotated[int, Field(ge=1, le=6, alias="maxAzs")] = 3
    # One serving replica plus its make-before-break replacement.
    max_instances_per_region: Annotated[int, Field(ge=1, le=100, alias="maxInstancesPerRegion")] = 2
    root_volume_gib: Annotated[int, Field(ge=30, le=16384, alias="rootVolumeGiB")] = 200
    log_retention_days: int = Field(30, alias="logRetentionDays")
    # The serving replica: an OpenAI-compatible server (a preset's, or the operator's image and command) on
    # servingGpus GPUs, weights cached on EFS. Image, port and health path default to the preset's (see
    # _preset_defaults); the model fits one 24 GB GPU of the default instance types in bf16.
    serving_preset: ServingPreset = Field(ServingPreset.VLLM, alias="servingPreset")
    serving_model: str = Field("Qwen/Qwen2.5-7B-Instruct", alias="servingModel", min_length=1)
    serving_image: str = Field(PRESETS[ServingPreset.VLLM].image, alias="servingImage", min_length=3)
    serving_command: list[str] | None = Field(None, alias="servingCommand", min_length=1)
    serving_args: list[str] = Field(default_factory=list, alias="servingArgs")
    serving_env: dict[str, str] = Field(default_factory=dict, alias="servingEnv")
    serving_secrets: dict[str, str] = Field(default_factory=dict, alias="servingSecrets")
    serving_gpus: Annotated[int, Field(ge=1, le=8, alias="servingGpus")] = 1
    serving_health_path: str = Field(PRESETS[ServingPreset.VLLM].health_path, alias="servingHealthPath")
    serving_start_period: Annotated[
        int, Field(ge=0, le=ECS_HEALTH_START_PERIOD_MAX_SECONDS, alias="servingStartPeriod")
    ] = SERVING_HEALTH_START_PERIOD_SECONDS
    serving_port: Annotated[int, Field(ge=1024, le=65535, alias="servingPort")] = PRESETS[ServingPreset.VLLM].port
    # Who may reach servingPort: nothing unless named here.
    serving_ingress_cidrs: list[str] = Field(default_factory=list, alias="servingIngressCidrs")
    serving_ingress_prefix_lists: dict[str, list[str]] = Field(default_factory=dict, alias="servingIngressPrefixLists")
    serving_ingress_security_groups: dict[str, list[str]] = Field(
        default_factory=dict, alias="servingIngressSecurityGroups"
    )
    # The new VPC has public subnets and no NAT gateway: without a public address an instance pulls no image.
    serving_public_ip: bool = Field(True, alias="servingPublicIp")
    serving_api_key_secret: str | None = Field(None, alias="servingApiKeySecret")
    # How often the worker state machines look at the group and the task (simulated time in the sandbox). Not
    # below 10 s: each poll's call adds to its wait, and the launch's budgets nest only while that share is small.
    poll_seconds: Annotated[int, Field(ge=10, le=600, alias="pollSeconds")] = WORKER_POLL_SECONDS
    # Batch jobs read from and write to these buckets only (the roles are granted on them and nothing else);
    # with none named, every job is refused with a 400 that says to set them.
    batch_input_buckets: list[str] = Field(default_factory=list, alias="batchInputBuckets")
    batch_output_buckets: list[str] = Field(default_factory=list, alias="batchOutputBuckets")
    # The batch workers' instance types where a job names none (default: instanceTypes).
    batch_instance_types: list[str] | None = Field(None, alias="batchInstanceTypes", min_length=1)
    # The most workers of one job in one region: the maximum size of each job's group.
    batch_max_workers_per_region: Annotated[int, Field(ge=1, le=500, alias="batchMaxWorkersPerRegion")] = 20
    # Subscribed to the jobs topic: told of every job's end.
    jobs_notify_email: str | None = Field(None, alias="jobsNotifyEmail")
    # A verified SES identity in the hub region (the address, or its domain) that job ends are also e-mailed from.
    jobs_ses_sender: str | None = Field(None, alias="jobsSesSender")
    # The search instance: one GPU instance bound to the EBS volume searchVolumeId, in that volume's region
    # (searchRegion, a worker region; default the first one). Without searchVolumeId no search part is deployed.
    search_volume_id: str | None = Field(None, alias="searchVolumeId")
    search_region_name: str | None = Field(None, alias="searchRegion")
    search_instance_type: str = Field("g5.xlarge", alias="searchInstanceType")
    search_use_spot: bool = Field(True, alias="searchUseSpot")
    # The most an hour of spot may cost (USD); none: up to the on-demand price.
    search_spot_max_price: float | None = Field(None, alias="searchSpotMaxPrice", gt=0)
    search_idle_timeout: Annotated[int, Field(ge=60, alias="searchIdleTimeout")] = SEARCH_IDLE_TIMEOUT_SECONDS
    search_max_runtime: Annotated[int, Field(ge=0, alias="searchMaxRuntime")] = SEARCH_MAX_RUNTIME_SECONDS
    # The monitor's schedule: EventBridge rates are whole minutes.
    search_health_interval: Annotated[int, Field(ge=60, le=24 * 3600, alias="searchHealthInterval")] = (
        SEARCH_HEALTH_INTERVAL_SECONDS
    )
    search_port: Annotated[int, Field(ge=1024, le=65535, alias="searchPort")] = 8000
    search_image: str | None = Field(None, alias="searchImage", min_length=3)
    search_health_path: str = Field("/health", alias="searchHealthPath")
    # Model deployments (stacks/config_deployments.py): node classes, tenants' quotas, the default image.
    deployment_node_classes: NodeClasses = Field(
        default_factory=default_node_classes, alias="deploymentNodeClasses", validate_default=True
    )
    deployment_tenant_quotas: TenantQuotas = Field(default_factory=dict, alias="deploymentTenantQuotas")
    deployment_default_tenant_quota: TenantQuota = Field(DEFAULT_TENANT_QUOTA, alias="deploymentDefaultTenantQuota")
    deployment_image: DeploymentImage = Field(DEFAULT_IMAGE, alias="deploymentImage", validate_default=True)

    @field_validator("worker_regions", "instance_types", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("batch_instance_types", mode="before")
    @classmethod
    def _batch_types_list(cls, value: Any) -> Any:
        value = _list(value)
        return None if value == [] else value  # `-c batchInstanceTypes=`: instanceTypes

    @field_validator("vpcs", "serving_env", "serving_secrets", mode="before")
    @classmethod
    def _vpcs_json(cls, value: Any) -> Any:
        return _json_object(value)

    @field_validator("serving_command", "serving_args", mode="before")
    @classmethod
    def _command_line(cls, value: Any) -> Any:
        return _argv(value)

    @field_validator("serving_ingress_cidrs", "batch_input_buckets", "batch_output_buckets", mode="before")
    @classmethod
    def _comma_or_json_list(cls, value: Any) -> Any:
        return _list(value)

    @field_validator("serving_ingress_prefix_lists", "serving_ingress_security_groups", mode="before")
    @classmethod
    def _ids_by_region(cls, value: Any) -> Any:
        return _lists_by_region(value)

    @field_validator("serving_preset", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() not in {p.value for p in ServingPreset}:
            raise ValueError(f"unknown preset '{value}'; one of {', '.join(p.value for p in ServingPreset)}")
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, data: Any) -> Any:
        """The preset's image, port and health path where the context names none."""
        if not isinstance(data, dict):
            return data
        name = str(data.get("servingPreset", data.get("serving_preset", ServingPreset.VLLM))).strip().lower()
        if name not in {p.value for p in ServingPreset}:
            return data  # the field's validator names the unknown preset
        preset = PRESETS[ServingPreset(name)]
        defaults = {
            ("servingImage", "serving_image"): preset.image,
            ("servingPort", "serving_port"): preset.port,
            ("servingHealthPath", "serving_health_path"): preset.health_path,
        }
        filled = dict(data)
        for (alias, name_), value in defaults.items():
            if alias not in filled and name_ not in filled:
                filled[alias] = value
        return filled

    @field_validator("hub_as_worker", "serving_public_ip", "search_use_spot", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.strip().lower() in {"true", "1", "yes"}
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not PREFIX_PATTERN.match(value):
            raise ValueError(
                f"'{value}' must be 3-20 characters of lower-case letters, digits and '-', "
                "starting with a letter (it is part of resource names)"
            )
        if value.startswith(RESERVED_NAME_PREFIXES):
            # ECS refuses capacity provider names starting with these.
            raise ValueError(f"'{value}' must not start with {', '.join(RESERVED_NAME_PREFIXES)}")
        return value

    @field_validator("hub_region")
    @classmethod
    def _hub_region(cls, value: str) -> str:
        _check_region(value)
        return value

    @field_validator("worker_regions")
    @classmethod
    def _worker_regions(cls, value: list[str]) -> list[str]:
        for region in value:
            _check_region(region)
        duplicates = sorted({r for r in value if value.count(r) > 1})
        if duplicates:
            raise ValueError(f"lists {', '.join(duplicates)} more than once")
        return value

    @field_validator("instance_types")
    @classmethod
    def _instance_types(cls, value: list[str]) -> list[str]:
        return _check_instance_types(value)

    @field_validator("batch_instance_types")
    @classmethod
    def _batch_instance_types(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_instance_types(value)

    @field_validator("batch_input_buckets", "batch_output_buckets")
    @classmethod
    def _buckets(cls, value: list[str]) -> list[str]:
        bad = [b for b in value if not BUCKET_NAME_PATTERN.match(b)]
        if bad:
            raise ValueError(
                f"{', '.join(repr(b) for b in bad)} is not an S3 bucket name (3-63 of a-z, 0-9, '.' and '-')"
            )
        _refuse_duplicates(value)
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(
                f"{value} is not a CloudWatch Logs retention; one of {', '.join(map(str, LOG_RETENTION_DAYS))}"
            )
        return value

    @field_validator("account")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        if value is not None and not ACCOUNT_PATTERN.match(value):
            raise ValueError(f"'{value}' is not a 12-digit AWS account id")
        return value

    @field_validator("alert_email", "jobs_notify_email", "jobs_ses_sender")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not EMAIL_PATTERN.match(value):
            raise ValueError(f"'{value}' is not an e-mail address")
        return value

    @field_validator("hosted_zone_id")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None and not HOSTED_ZONE_PATTERN.match(value):
            raise ValueError(f"'{value}' is not a Route 53 hosted zone id (Z0123456789ABC)")
        return value

    @field_validator("endpoint_name")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not DNS_NAME_PATTERN.match(value):
            raise ValueError(f"'{value}' is not a lower-case DNS name (gpu.example.com)")
        return value

    @field_validator("serving_model", "serving_image", "search_image")
    @classmethod
    def _one_word(cls, value: str | None) -> str | None:
        if value is not None and not NO_WHITESPACE_PATTERN.match(value):
            raise ValueError(f"'{value}' must not contain spaces")
        return value

    @field_validator("search_volume_id", "search_region_name", "search_image", "search_spot_max_price", mode="before")
    @classmethod
    def _unset(cls, value: Any) -> Any:
        """`-c searchVolumeId=` (an empty value) unsets an optional key, as leaving it out does."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("search_volume_id")
    @classmethod
    def _volume_id(cls, value: str | None) -> str | None:
        if value is not None and not VOLUME_ID_PATTERN.match(value):
            raise ValueError(f"'{value}' is not an EBS volume id (vol-0123456789abcdef0)")
        return value

    @field_validator("search_region_name")
    @classmethod
    def _search_region(cls, value: str | None) -> str | None:
        if value is not None:
            _check_region(value)
        return value

    @field_validator("search_instance_type")
    @classmethod
    def _search_instance_type(cls, value: str) -> str:
        if not INSTANCE_TYPE_PATTERN.match(value):
            raise ValueError(f"'{value}' is not an EC2 instance type name (like g5.xlarge)")
        return value

    @field_validator("search_spot_max_price")
    @classmethod
    def _max_price(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{value} is not a price in USD per hour (like 0.45)")
        return value

    @field_validator("search_health_interval")
    @classmethod
    def _whole_minutes(cls, value: int) -> int:
        if value % MINUTE_SECONDS:
            raise ValueError(
                f"{value} is not whole minutes: the health checks run on an EventBridge schedule, whose rate is "
                f"in minutes (60, 120, ...)"
            )
        return value

    @field_validator("serving_health_path", "search_health_path")
    @classmethod
    def _health_path(cls, value: str) -> str:
        if not HEALTH_PATH_PATTERN.match(value):
            raise ValueError(f"'{value}' is not a URL path (/health): '/' then letters, digits and ._~/%-")
        return value

    @field_validator("serving_env")
    @classmethod
    def _plain_environment(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            _check_env_name(name)
            if CREDENTIAL_NAME_WORDS & set(name.upper().split("_")):
                raise ValueError(
                    f"'{name}' looks like a credential: plain environment is in the task definition for anyone "
                    "who can describe it; put the value in Secrets Manager and name it in servingSecrets"
                )
        return value

    @field_validator("serving_secrets")
    @classmethod
    def _secret_environment(cls, value: dict[str, str]) -> dict[str, str]:
        for name, reference in value.items():
            _check_env_name(name)
            _check_secret_reference(reference)
        return value

    @field_validator("serving_api_key_secret")
    @classmethod
    def _api_key_secret(cls, value: str | None) -> str | None:
        return None if value is None else _check_secret_reference(value)

    @field_validator("serving_ingress_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        networks = []
        for cidr in value:
            try:
                network = ipaddress.ip_network(cidr, strict=True) if "/" in cidr else None
            except ValueError as exc:
                raise ValueError(f"'{cidr}' is not a CIDR range ({exc})") from None
            if network is None:
                raise ValueError(
                    f"'{cidr}' is not a CIDR range: name the prefix length (203.0.113.0/24, 2001:db8::/32)"
                )
            networks.append(str(network))
        return networks

    @field_validator("serving_ingress_prefix_lists")
    @classmethod
    def _prefix_lists(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for ids in value.values():
            bad = [i for i in ids if not PREFIX_LIST_PATTERN.match(i)]
            if bad:
                raise ValueError(f"not prefix list ids: {', '.join(bad)} (pl-0123abcd…)")
        return value

    @field_validator("serving_ingress_security_groups")
    @classmethod
    def _security_groups(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for ids in value.values():
            bad = [i for i in ids if not SECURITY_GROUP_PATTERN.match(i)]
            if bad:
                raise ValueError(f"not security group ids: {', '.join(bad)} (sg-0123abcd…)")
        return value

    @model_validator(mode="after")
    def _deployment_shape(self) -> SpothubConfig:
        if self.hub_region in self.worker_regions:
            raise ValueError(
                f"hubRegion {self.hub_region} is also in workerRegions: "
                "drop it from workerRegions and set hubAsWorker=true instead"
            )
        if not self.worker_regions and not self.hub_as_worker:
            raise ValueError("workerRegions is empty and hubAsWorker is false: name at least one worker region")
        partitions = {RegionInfo.get(r).partition for r in self.all_regions}
        if len(partitions) > 1:
            raise ValueError(
                f"regions span partitions {', '.join(sorted(str(p) for p in partitions))}: "
                "EventBridge cannot route events between them"
            )
        stray_vpcs = sorted(set(self.vpcs) - set(self.deployed_worker_regions))
        if stray_vpcs:
            raise ValueError(f"vpcs names {', '.join(stray_vpcs)}, which is not a worker region")
        if (self.hosted_zone_id is None) != (self.endpoint_name is None):
            raise ValueError("hostedZoneId and endpointName go together: set both or neither")
        self._check_serving()
        self._check_search()
        return self

    def _check_search(self) -> None:
        region = self.search_region_name
        if region is not None and region not in self.deployed_worker_regions:
            raise ValueError(
                f"searchRegion {region} is not a worker region (worker regions: "
                f"{', '.join(self.deployed_worker_regions)}): name the region of searchVolumeId, and deploy a "
                "worker there (workerRegions, or hubAsWorker for the hub region)"
            )
        if self.search_volume_id is not None and self.search_image is None:
            raise ValueError(
                "searchImage is required with searchVolumeId: the search service's container image "
                "(it serves GET searchHealthPath and POST /search on searchPort)"
            )

    def _check_serving(self) -> None:
        for key, by_region in (
            ("servingIngressPrefixLists", self.serving_ingress_prefix_lists),
            ("servingIngressSecurityGroups", self.serving_ingress_security_groups),
        ):
            stray = sorted(set(by_region) - set(self.deployed_worker_regions))
            if stray:
                raise ValueError(
                    f"{key} names {', '.join(stray)}, which is not a worker region "
                    f"(worker regions: {', '.join(self.deployed_worker_regions)})"
                )
        if not self.serving_public_ip:
            without_vpc = [r for r in self.deployed_worker_regions if r not in self.vpcs]
            if without_vpc:
                raise ValueError(
                    f"servingPublicIp=false needs vpcs for every worker region; none for {', '.join(without_vpc)}: "
                    "the VPC spothub creates has public subnets and no NAT gateway, so an instance without a "
                    "public address could pull no image and reach no AWS API"
                )
        if self.serving_gpus > 1:
            unknown = [t for t in self.instance_types if t not in GPU_COUNTS]
            if unknown:
                raise ValueError(
                    f"servingGpus={self.serving_gpus} but the GPU count of {', '.join(unknown)} is not known to "
                    "spothub (stacks/serving_presets.py GPU_COUNTS): name instance types it knows, or add them there"
                )
            short = [f"{t} has {GPU_COUNTS[t]}" for t in self.instance_types if GPU_COUNTS[t] < self.serving_gpus]
            if short:
                raise ValueError(
                    f"servingGpus={self.serving_gpus} does not fit every instance type: {', '.join(short)} "
                    f"(every type in instanceTypes needs at least {self.serving_gpus} GPUs)"
                )
        reserved = set(self.serving_api_key_environment)
        for key, names in (("servingEnv", self.serving_env), ("servingSecrets", self.serving_secrets)):
            clash = sorted(reserved & set(names))
            if clash:
                raise ValueError(f"{key} sets {', '.join(clash)}, which holds the model API key (servingApiKeySecret)")
        both = sorted(set(self.serving_env) & set(self.serving_secrets))
        if both:
            raise ValueError(f"{', '.join(both)} is in both servingEnv and servingSecrets: name it once")

    @property
    def serving_command_line(self) -> list[str]:
        """The serving container's command: servingCommand, or the preset's, then servingArgs."""
        base = (
            self.serving_command
            if self.serving_command is not None
            else preset_command(
                self.serving_preset, model=self.serving_model, port=self.serving_port, gpus=self.serving_gpus
            )
        )
        return [*base, *self.serving_args]

    @property
    def serving_api_key_environment(self) -> tuple[str, ...]:
        """The container's variables that hold the model API key (container secrets, never plain environment)."""
        return (API_KEY_ENV, *PRESETS[self.serving_preset].api_key_environment)

    @property
    def generates_api_key(self) -> bool:
        return self.serving_api_key_secret is None

    @property
    def api_key_secret_name(self) -> str:
        """The Secrets Manager secret holding the model API key (a name, or the ARN the operator gave)."""
        return self.serving_api_key_secret or f"spothub/{self.prefix}/model-api-key"

    @property
    def serving_health_url(self) -> str:
        """Where the agent on the instance asks the server whether it is healthy."""
        return f"http://127.0.0.1:{self.serving_port}{self.serving_health_path}"

    @property
    def batch_worker_instance_types(self) -> list[str]:
        """The batch workers' instance types where a job names none: batchInstanceTypes, else instanceTypes."""
        return list(self.batch_instance_types or self.instance_types)

    @property
    def jobs_ses_identities(self) -> list[str]:
        """The SES identities jobsSesSender may be verified as: the address itself, or its domain."""
        if self.jobs_ses_sender is None:
            return []
        return [self.jobs_ses_sender, self.jobs_ses_sender.rsplit("@", 1)[1]]

    @property
    def search_enabled(self) -> bool:
        """The search part is deployed (hub and search region) only for a named volume."""
        return self.search_volume_id is not None

    @property
    def search_region(self) -> str:
        """Where the search volume, and so the search instance, is: searchRegion, or the first worker region."""
        return self.search_region_name or self.deployed_worker_regions[0]

    @property
    def search_spot_max_price_text(self) -> str:
        """searchSpotMaxPrice as EC2 takes it (a decimal string); "" for none."""
        if self.search_spot_max_price is None:
            return ""
        return format(Decimal(str(self.search_spot_max_price)).normalize(), "f")

    @property
    def search_table_name(self) -> str:
        return f"{self.prefix}-search"

    @property
    def search_launcher_name(self) -> str:
        return f"{self.prefix}-search-launcher"

    @property
    def search_host_parameter(self) -> str:
        """What the search region publishes for the hub's search functions (SearchHost)."""
        return f"{self.ssm_prefix}/search-host"

    @property
    def search_config_parameter(self) -> str:
        """What the agent on the search instance reads (SearchAgentConfig)."""
        return f"{self.ssm_prefix}/search-config"

    @property
    def search_api_key_secret_name(self) -> str:
        return f"{self.prefix}/search/api-key"

    @property
    def search_instance_role_name(self) -> str:
        """Named: the hub's launcher passes it (iam:PassRole) from another region."""
        return f"{self.prefix}-search-instance"

    @property
    def deployed_worker_regions(self) -> list[str]:
        """Regions that get a WorkerStack, the hub region first when it is also a worker."""
        return ([self.hub_region] if self.hub_as_worker else []) + list(self.worker_regions)

    @property
    def all_regions(self) -> list[str]:
        return [self.hub_region, *self.worker_regions]

    @property
    def ssm_prefix(self) -> str:
        return f"/spothub/{self.prefix}"

    @property
    def hub_bus_name(self) -> str:
        return f"{self.prefix}-hub"

    @property
    def worker_bus_name(self) -> str:
        return f"{self.prefix}-worker"

    def hub_stack_name(self) -> str:
        return f"{self.prefix}-hub"

    def worker_stack_name(self, region: str) -> str:
        return f"{self.prefix}-worker-{region}"

    @classmethod
    def from_context(cls, context: dict[str, Any]) -> SpothubConfig:
        """Build from CDK context; keys CDK itself owns (feature flags, `aws:` keys) are ignored."""
        ours = {
            k: v
            for k, v in context.items()
            if not k.startswith(CONTEXT_PREFIXES_OWNED_BY_CDK) and k not in CONTEXT_KEYS_OWNED_BY_CDK
        }
        known = {field.alias or name for name, field in cls.model_fields.items()}
        problems = []
        for key in sorted(set(ours) - known):
            hint = difflib.get_close_matches(key, sorted(known), n=1)
            problems.append(f"unknown context key '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        if problems:
            raise ConfigError("; ".join(problems))
        try:
            return cls.model_validate(ours)
        except ValidationError as exc:
            raise ConfigError("; ".join(_describe(error) for error in exc.errors())) from None


def _check_instance_types(value: list[str]) -> list[str]:
    bad = [t for t in value if not INSTANCE_TYPE_PATTERN.match(t)]
    if bad:
        raise ValueError(f"{', '.join(repr(t) for t in bad)} is not an EC2 instance type name (like g5.xlarge)")
    _refuse_duplicates(value)
    return value


def _refuse_duplicates(value: list[str]) -> None:
    duplicates = sorted({v for v in value if value.count(v) > 1})
    if duplicates:
        raise ValueError(f"lists {', '.join(duplicates)} more than once")


def _check_region(region: str) -> None:
    if region not in KNOWN_REGIONS:
        hint = difflib.get_close_matches(region, sorted(KNOWN_REGIONS), n=1)
        raise ValueError(f"unknown region '{region}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))


def _describe(error: Any) -> str:
    location = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown key '{location}'"
    if not location:
        return message
    if error["type"] == "literal_error":
        return f"context key '{location}': got '{error['input']}', {message[0].lower()}{message[1:]}"
    return f"context key '{location}': {message}"


def cdk_json_context() -> dict[str, Any]:
    """The context `cdk.json` gives every `cdk` command (feature flags), for runs of the app without the CLI."""
    from stacks.paths import REPO_ROOT  # noqa: PLC0415

    return json.loads((REPO_ROOT / "cdk.json").read_text()).get("context", {})


def context_keys() -> list[str]:
    """The context keys spothub reads, for documentation and error messages."""
    return [field.alias or name for name, field in SpothubConfig.model_fields.items()]

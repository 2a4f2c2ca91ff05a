"""Deployment configuration: CDK context parsed and validated once, defaults in this one place.

`cdk synth -c key=value` hands every value over as a string, while `cdk.json` may hold lists,
booleans and objects; the validators below accept both forms. A bad value raises `ConfigError`
with one line per problem, which `app.py` prints instead of a stack trace.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Annotated, Any, Literal

from aws_cdk.region_info import RegionInfo
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# The shape the API checks in POST /spot-provisioning too.
from spothub_core.models.api import INSTANCE_TYPE_PATTERN
from spothub_core.timings import WORKER_POLL_SECONDS

KNOWN_REGIONS: frozenset[str] = frozenset(r.name for r in RegionInfo.regions)

PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,18}[a-z0-9]$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
HOSTED_ZONE_PATTERN = re.compile(r"^Z[A-Z0-9]{1,32}$")
DNS_NAME_PATTERN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\.?$")
VPC_ID_PATTERN = re.compile(r"^vpc-[0-9a-f]{8,17}$")
SUBNET_ID_PATTERN = re.compile(r"^subnet-[0-9a-f]{8,17}$")
ACCOUNT_PATTERN = re.compile(r"^[0-9]{12}$")

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
    # The serving replica: an OpenAI-compatible server (SGLang by default) on one GPU, weights cached on EFS.
    serving_image: str = Field("lmsysorg/sglang:v0.4.6.post1-cu124", alias="servingImage", min_length=3)
    serving_model: str = Field("Qwen/Qwen2.5-7B-Instruct", alias="servingModel", min_length=1)
    serving_port: Annotated[int, Field(ge=1024, le=65535, alias="servingPort")] = 30000
    # How often the worker state machines look at the group and the task (simulated time in the sandbox). Not
    # below 10 s: each poll's call adds to its wait, and the launch's budgets nest only while that share is small.
    poll_seconds: Annotated[int, Field(ge=10, le=600, alias="pollSeconds")] = WORKER_POLL_SECONDS

    @field_validator("worker_regions", "instance_types", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("vpcs", mode="before")
    @classmethod
    def _vpcs_json(cls, value: Any) -> Any:
        return _json_object(value)

    @field_validator("hub_as_worker", mode="before")
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
        bad = [t for t in value if not INSTANCE_TYPE_PATTERN.match(t)]
        if bad:
            raise ValueError(f"{', '.join(repr(t) for t in bad)} is not an EC2 instance type name (like g5.xlarge)")
        duplicates = sorted({t for t in value if value.count(t) > 1})
        if duplicates:
            raise ValueError(f"lists {', '.join(duplicates)} more than once")
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

    @field_validator("alert_email")
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
        return self

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

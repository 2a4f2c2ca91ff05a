"""The agent's configuration, read at start from IMDS and the instance's tags; nothing is baked in."""

from __future__ import annotations

from dataclasses import dataclass

from spothub_agent.imds import Imds

PREFIX_TAG = "spothub:prefix"
HUB_REGION_TAG = "spothub:hub-region"
LIFECYCLE_HOOK_TAG = "spothub:lifecycle-hook"
MODEL_CACHE_TAG = "spothub:model-cache"
GROUP_TAG = "aws:autoscaling:groupName"
# Set by the worker region on the instance it claims for a launch (read again at notice time).
REPLICA_TAG = "spothub:replica"
LAUNCH_TAG = "spothub:launch-id"
CAPACITY_TYPES = ("spot", "on-demand")


class ConfigError(RuntimeError):
    pass


@dataclass(frozen=True)
class AgentConfig:
    instance_id: str
    region: str
    availability_zone: str
    instance_type: str
    prefix: str
    hub_region: str
    auto_scaling_group: str
    lifecycle_hook: str
    model_cache: str
    account_id: str = ""
    capacity_type: str = ""  # spot or on-demand (IMDS instance-life-cycle); "" when IMDS does not say

    @property
    def ssm_prefix(self) -> str:
        return f"/spothub/{self.prefix}"


def load_config(imds: Imds) -> AgentConfig:
    """Identity, tags and purchase option from IMDS; raises ConfigError naming what is missing."""
    identity = imds.identity()
    tags = imds.tags()
    life_cycle = (imds.get("instance-life-cycle") or "").strip()
    missing = [tag for tag in (PREFIX_TAG, HUB_REGION_TAG, GROUP_TAG, LIFECYCLE_HOOK_TAG) if not tags.get(tag)]
    if missing:
        raise ConfigError(
            f"instance tags {', '.join(missing)} are missing: is instance metadata tagging enabled "
            "and was this instance launched by a spothub group?"
        )
    return AgentConfig(
        instance_id=identity["instanceId"],
        region=identity["region"],
        availability_zone=identity["availabilityZone"],
        instance_type=identity["instanceType"],
        prefix=tags[PREFIX_TAG],
        hub_region=tags[HUB_REGION_TAG],
        auto_scaling_group=tags[GROUP_TAG],
        lifecycle_hook=tags[LIFECYCLE_HOOK_TAG],
        model_cache=tags.get(MODEL_CACHE_TAG, ""),
        account_id=str(identity.get("accountId", "")),
        capacity_type=life_cycle if life_cycle in CAPACITY_TYPES else "",
    )


def describe(config: AgentConfig) -> dict[str, str]:
    return {key: str(value) for key, value in config.__dict__.items()}

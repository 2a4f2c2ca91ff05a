"""The agent's configuration, read at start from IMDS and the instance's tags; nothing is baked in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from spothub_agent.imds import Imds
from spothub_core.contracts import GROUP_TAG, MODEL_NODE_SERVICE, SEARCH_SERVICE, CapacityType, InstanceTag, SearchTag

# The tags the group sets at launch that the agent cannot run without.
REQUIRED_TAGS = (InstanceTag.PREFIX, InstanceTag.HUB_REGION, GROUP_TAG, InstanceTag.LIFECYCLE_HOOK)
# A batch job's group has no lifecycle hook (the worker registers itself) and the worker leaves by its own
# instance id: the job's tag is what it needs, and what puts the agent in batch mode.
BATCH_REQUIRED_TAGS = (InstanceTag.PREFIX, InstanceTag.HUB_REGION, InstanceTag.JOB)
# The search instance (tagged Service=semantic-search by its launch) is in no group either; it needs the volume it
# is bound to, whose device it mounts.
SEARCH_REQUIRED_TAGS = (InstanceTag.PREFIX, InstanceTag.HUB_REGION, SearchTag.VOLUME)
# A deployment node (tagged Service=model-node by its node group) runs no workload of its own and its group has no
# lifecycle hook: the prefix and the hub region are all it needs (its group's name, when IMDS shows it, is reported).
NODE_REQUIRED_TAGS = (InstanceTag.PREFIX, InstanceTag.HUB_REGION)
CAPACITY_TYPES: tuple[str, ...] = get_args(CapacityType)


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
    job_id: str = ""  # the spothub:job-id tag: a batch job's worker
    service: str = ""  # the Service tag: semantic-search on the search instance, model-node on a deployment node
    volume_id: str = ""  # the EBSVolumeId tag: the search index's volume

    @property
    def ssm_prefix(self) -> str:
        return f"/spothub/{self.prefix}"

    @property
    def batch_mode(self) -> bool:
        return bool(self.job_id)

    @property
    def search_mode(self) -> bool:
        return not self.batch_mode and self.service == SEARCH_SERVICE

    @property
    def node_mode(self) -> bool:
        return not self.batch_mode and self.service == MODEL_NODE_SERVICE


def load_config(imds: Imds) -> AgentConfig:
    """Identity, tags and purchase option from IMDS; raises ConfigError naming what is missing. The tag
    spothub:job-id puts the agent in batch mode (see batch.py); Service=semantic-search in search mode (search.py);
    Service=model-node in node mode (node.py)."""
    identity = imds.identity()
    tags = imds.tags()
    life_cycle = (imds.get("instance-life-cycle") or "").strip()
    job_id = tags.get(InstanceTag.JOB, "")
    service = tags.get(SearchTag.SERVICE, "")
    required = REQUIRED_TAGS
    if job_id:
        required = BATCH_REQUIRED_TAGS
    elif service == SEARCH_SERVICE:
        required = SEARCH_REQUIRED_TAGS
    elif service == MODEL_NODE_SERVICE:
        required = NODE_REQUIRED_TAGS
    missing = [str(tag) for tag in required if not tags.get(tag)]
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
        prefix=tags[InstanceTag.PREFIX],
        hub_region=tags[InstanceTag.HUB_REGION],
        auto_scaling_group=tags.get(GROUP_TAG, ""),
        lifecycle_hook=tags.get(InstanceTag.LIFECYCLE_HOOK, ""),
        model_cache=tags.get(InstanceTag.MODEL_CACHE, ""),
        account_id=str(identity.get("accountId", "")),
        capacity_type=life_cycle if life_cycle in CAPACITY_TYPES else "",
        job_id=job_id,
        service=service,
        volume_id=tags.get(SearchTag.VOLUME, ""),
    )


def describe(config: AgentConfig) -> dict[str, str]:
    return {key: str(value) for key, value in config.__dict__.items()}

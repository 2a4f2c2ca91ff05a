"""EC2's view of the search instances in the search region (called across regions from the hub): find them by
their tags, describe and terminate them. Launch and attach are in dal/search_placement.py."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.contracts import MANAGED_BY, SEARCH_SERVICE, InstanceFacts, SearchTag
from spothub_core.dal.ec2_instances import tags_of
from spothub_core.dal.state_table import reason_of
from spothub_core.errors import DependencyUnavailable

# Instances in these states still hold (or will hold) the volume's slot.
ALIVE_STATES = ("pending", "running", "stopping", "stopped")


def facts_of(instance: dict[str, Any]) -> InstanceFacts:
    launched = instance.get("LaunchTime")
    return InstanceFacts(
        instance_id=instance["InstanceId"],
        instance_type=instance.get("InstanceType", ""),
        availability_zone=instance.get("Placement", {}).get("AvailabilityZone", ""),
        capacity_type="spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand",
        private_ip=instance.get("PrivateIpAddress"),
        public_ip=instance.get("PublicIpAddress"),
        launched_at=launched.isoformat() if hasattr(launched, "isoformat") else launched,
    )


class SearchInstances:
    def __init__(self, ec2: Any) -> None:
        self._ec2 = ec2

    def states(self, instance_ids: list[str]) -> dict[str, str]:
        """EC2 state per instance; an instance EC2 no longer knows is left out (gone)."""
        if not instance_ids:
            return {}
        try:
            reservations = self._ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
        except ClientError as exc:
            if "InvalidInstanceID" in exc.response["Error"].get("Code", ""):
                # One unknown id fails the whole call: ask for each, so the known ones are still answered.
                if len(instance_ids) > 1:
                    return {k: v for i in instance_ids for k, v in self.states([i]).items()}
                return {}
            raise DependencyUnavailable(f"could not describe the search instances: {reason_of(exc)}") from exc
        except BotoCoreError as exc:
            raise DependencyUnavailable(f"could not describe the search instances: {reason_of(exc)}") from exc
        return {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}

    def tagged(self, volume_id: str) -> list[tuple[InstanceFacts, dict[str, str]]]:
        """Alive instances tagged as this volume's search instance (Service, ManagedBy, EBSVolumeId), with their
        tags: what the reconciliation adopts, and what a DELETE may terminate."""
        filters = [
            {"Name": f"tag:{SearchTag.SERVICE}", "Values": [SEARCH_SERVICE]},
            {"Name": f"tag:{SearchTag.MANAGED_BY}", "Values": [MANAGED_BY]},
            {"Name": f"tag:{SearchTag.VOLUME}", "Values": [volume_id]},
            {"Name": "instance-state-name", "Values": list(ALIVE_STATES)},
        ]
        try:
            pages = self._ec2.get_paginator("describe_instances").paginate(Filters=filters)
            instances = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
        except (ClientError, BotoCoreError) as exc:
            raise DependencyUnavailable(f"could not list the search instances: {reason_of(exc)}") from exc
        return [(facts_of(i), tags_of(i)) for i in instances]

    def terminate(self, instance_ids: list[str]) -> None:
        """Terminate; an instance already gone is fine (terminating twice is what a retry does)."""
        if not instance_ids:
            return
        try:
            self._ec2.terminate_instances(InstanceIds=instance_ids)
        except ClientError as exc:
            if "InvalidInstanceID" in exc.response["Error"].get("Code", ""):
                if len(instance_ids) > 1:
                    for instance_id in instance_ids:
                        self.terminate([instance_id])
                return
            raise DependencyUnavailable(f"could not terminate {', '.join(instance_ids)}: {reason_of(exc)}") from exc
        except BotoCoreError as exc:
            raise DependencyUnavailable(f"could not terminate {', '.join(instance_ids)}: {reason_of(exc)}") from exc

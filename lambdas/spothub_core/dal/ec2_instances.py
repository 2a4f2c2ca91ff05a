"""EC2's view of a worker region's instances: their descriptions, states and tags."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.dal.task_errors import aws_call
from spothub_core.errors import TransientError


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    """An instance's tags (as EC2 describes them) by key."""
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


class Ec2Instances:
    def __init__(self, ec2: Any) -> None:
        self._ec2 = ec2

    def describe(self, instance_ids: list[str]) -> dict[str, dict[str, Any]]:
        """EC2's descriptions by instance id."""
        if not instance_ids:
            return {}
        reservations = aws_call("describe instances", self._ec2.describe_instances, InstanceIds=instance_ids)[
            "Reservations"
        ]
        return {i["InstanceId"]: i for r in reservations for i in r["Instances"]}

    def states(self, instance_ids: list[str]) -> dict[str, str]:
        """State per instance; instances EC2 no longer knows are left out (they are gone)."""
        try:
            reservations = self._ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
        except ClientError as exc:
            if "InvalidInstanceID" in exc.response["Error"].get("Code", ""):
                return {}
            raise TransientError(f"describe instances: {reason_of(exc)}") from exc
        return {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}

    def tag(self, instance_id: str, tags: dict[str, str]) -> None:
        aws_call(
            "tag the instance",
            self._ec2.create_tags,
            Resources=[instance_id],
            Tags=[{"Key": str(key), "Value": value} for key, value in tags.items()],
        )

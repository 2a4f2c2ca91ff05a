"""Batch jobs' Auto Scaling groups in a worker region (`<prefix>-job-...`, contracts.job_group_name).

One group per job, created on the hub's first request from the region's batch launch template (version $Latest),
with the job's instance types as the mixed instances policy's overrides, all spot or all on-demand, min 0, max the
region's batch maximum, no lifecycle hook, no capacity rebalancing (an interrupted worker's batch goes back to
the queue; nothing is replaced make before break), and tags the instances inherit (the agent reads the job from
them). Its desired capacity only ever grows by the hub's hand; members leave terminated with the desired capacity
decremented (by their agent, or here when the hub releases them); the hub's release deletes the group.

AWS errors become the classes the tasks catch (dal/task_errors.py): TransientError for what a redelivery may fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from spothub_core.contracts import CapacityType
from spothub_core.dal.auto_scaling_group import AutoScalingGroup
from spothub_core.dal.task_errors import aws_call, classified

# The group's own tag (not propagated): the `requested_at` of the latest hub request applied to it.
FLEET_REQUESTED_AT_TAG = "spothub:fleet-requested-at"
FAILED_ACTIVITY = ("Failed", "Cancelled")
FINISHED_ACTIVITY = ("Successful", *FAILED_ACTIVITY)
# What Auto Scaling says (ValidationError) of a group that does not exist.
NO_SUCH_GROUP = "not found"
SPOT_ALLOCATION = "price-capacity-optimized"
ALL_ON_DEMAND = 100  # OnDemandPercentageAboveBaseCapacity of an on-demand group (spot: 0)


@dataclass(frozen=True)
class GroupTemplate:
    """How the region builds a job's group: its batch launch template, subnets and maximum size."""

    launch_template_id: str
    subnets: tuple[str, ...]
    max_size: int


@dataclass(frozen=True)
class JobGroup:
    """A job's group as described."""

    name: str
    desired: int
    max_size: int
    instance_ids: tuple[str, ...]  # members not leaving (not Terminating)
    in_service: int
    capacity_type: CapacityType
    instance_types: tuple[str, ...]
    applied_at: float  # FLEET_REQUESTED_AT_TAG; 0 before the first request was applied


@dataclass(frozen=True)
class FailedActivity:
    message: str
    at: float  # when the activity started, epoch seconds


class JobGroups:
    def __init__(self, autoscaling: Any, template: GroupTemplate, region: str) -> None:
        self._autoscaling = autoscaling
        self._template = template
        self.region = region

    def describe(self, name: str) -> JobGroup | None:
        """The group; None when it does not exist (never created, or deleted)."""
        groups = aws_call(
            "describe the job's group", self._autoscaling.describe_auto_scaling_groups, AutoScalingGroupNames=[name]
        )["AutoScalingGroups"]
        if not groups or groups[0].get("Status") == "Delete in progress":
            return None
        group = groups[0]
        members = [m for m in group.get("Instances", []) if not str(m.get("LifecycleState")).startswith("Terminat")]
        policy = group.get("MixedInstancesPolicy") or {}
        distribution = policy.get("InstancesDistribution") or {}
        overrides = (policy.get("LaunchTemplate") or {}).get("Overrides") or []
        tags = {t["Key"]: t.get("Value", "") for t in group.get("Tags", [])}
        return JobGroup(
            name=name,
            desired=int(group.get("DesiredCapacity", 0)),
            max_size=int(group.get("MaxSize", 0)),
            instance_ids=tuple(m["InstanceId"] for m in members),
            in_service=sum(1 for m in members if m.get("LifecycleState") == "InService"),
            capacity_type=_capacity_type(distribution),
            instance_types=tuple(o["InstanceType"] for o in overrides if "InstanceType" in o),
            applied_at=_as_time(tags.get(FLEET_REQUESTED_AT_TAG)),
        )

    def create(
        self,
        name: str,
        *,
        desired: int,
        capacity_type: CapacityType,
        instance_types: list[str],
        tags: dict[str, str],
    ) -> bool:
        """Create the group; False when it exists already (a redelivered request, or two at once): its launch
        settings are then updated to these, and its size is left to `raise_desired`."""
        try:
            self._autoscaling.create_auto_scaling_group(
                AutoScalingGroupName=name,
                MinSize=0,
                MaxSize=self._template.max_size,
                DesiredCapacity=min(desired, self._template.max_size),
                VPCZoneIdentifier=",".join(self._template.subnets),
                MixedInstancesPolicy=self._policy(capacity_type, instance_types),
                CapacityRebalance=False,
                Tags=[
                    {
                        "ResourceId": name,
                        "ResourceType": "auto-scaling-group",
                        "Key": key,
                        "Value": value,
                        "PropagateAtLaunch": True,
                    }
                    for key, value in tags.items()
                ],
            )
        except ClientError as exc:
            if exc.response["Error"].get("Code") == "AlreadyExists":
                self.set_launch(name, capacity_type=capacity_type, instance_types=instance_types)
                return False
            raise classified(f"create the job's group {name}", exc) from exc
        return True

    def set_launch(self, name: str, *, capacity_type: CapacityType, instance_types: list[str]) -> None:
        """What the group launches from now on (members already running stay as they are)."""
        aws_call(
            "update the job's group",
            self._autoscaling.update_auto_scaling_group,
            AutoScalingGroupName=name,
            MaxSize=self._template.max_size,
            MixedInstancesPolicy=self._policy(capacity_type, instance_types),
        )

    def raise_desired(self, group: JobGroup, desired: int) -> int:
        """The desired capacity to max(current, `desired`), within the group's maximum; the one it has now."""
        wanted = min(max(group.desired, desired), group.max_size)
        if wanted != group.desired:
            AutoScalingGroup(self._autoscaling, group.name, self.region).set_desired_capacity(wanted)
        return wanted

    def terminate(self, name: str, instance_id: str) -> None:
        """Terminate a member with the group's capacity decremented; done as well when it left meanwhile."""
        AutoScalingGroup(self._autoscaling, name, self.region).terminate(instance_id, decrement=True)

    def delete(self, name: str) -> None:
        """Delete the group and terminate its members (ForceDelete); done as well when it does not exist."""
        try:
            self._autoscaling.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
        except ClientError as exc:
            error = exc.response["Error"]
            if error.get("Code") == "ValidationError" and NO_SUCH_GROUP in str(error.get("Message", "")).lower():
                return
            raise classified(f"delete the job's group {name}", exc) from exc

    def mark_applied(self, name: str, requested_at: float) -> None:
        aws_call(
            "tag the job's group",
            self._autoscaling.create_or_update_tags,
            Tags=[
                {
                    "ResourceId": name,
                    "ResourceType": "auto-scaling-group",
                    "Key": FLEET_REQUESTED_AT_TAG,
                    "Value": repr(float(requested_at)),
                    "PropagateAtLaunch": False,
                }
            ],
        )

    def last_failure(self, name: str) -> FailedActivity | None:
        """The newest finished scaling activity when it failed (Auto Scaling's StatusMessage); None when the
        newest one succeeded (the failure before it is over) or there is none."""
        activities = aws_call(
            "read the job's group's scaling activities",
            self._autoscaling.describe_scaling_activities,
            AutoScalingGroupName=name,
            MaxRecords=20,
        ).get("Activities", [])
        finished = [a for a in activities if a.get("StatusCode") in FINISHED_ACTIVITY]
        if not finished:
            return None
        newest = max(finished, key=lambda a: _epoch(a.get("StartTime")))
        if newest.get("StatusCode") not in FAILED_ACTIVITY:
            return None
        message = str(newest.get("StatusMessage") or newest.get("Description") or "")
        return FailedActivity(message=message[:1000], at=_epoch(newest.get("StartTime")))

    def _policy(self, capacity_type: CapacityType, instance_types: list[str]) -> dict[str, Any]:
        return {
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {
                    "LaunchTemplateId": self._template.launch_template_id,
                    "Version": "$Latest",
                },
                "Overrides": [{"InstanceType": t} for t in instance_types],
            },
            "InstancesDistribution": {
                "OnDemandBaseCapacity": 0,
                "OnDemandPercentageAboveBaseCapacity": ALL_ON_DEMAND if capacity_type == "on-demand" else 0,
                "SpotAllocationStrategy": SPOT_ALLOCATION,
            },
        }


def _capacity_type(distribution: dict[str, Any]) -> CapacityType:
    return "on-demand" if int(distribution.get("OnDemandPercentageAboveBaseCapacity", 0)) >= ALL_ON_DEMAND else "spot"


def _as_time(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def _epoch(moment: Any) -> float:
    """An AWS timestamp (a datetime from boto3) as epoch seconds."""
    return float(moment.timestamp()) if hasattr(moment, "timestamp") else 0.0

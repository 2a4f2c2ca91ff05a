"""A worker region's Auto Scaling group: its description and members, its size, and the instances it gives
back. Errors become the classes the state machines catch (dal/task_errors.py)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.dal.task_errors import aws_call, classified
from spothub_core.errors import FatalError, TransientError

# What Auto Scaling says (ValidationError) when terminating an instance that is not, or no longer, in the group.
NOT_IN_GROUP = ("instance id not found", "no managed instance found", "is not part of auto scaling group")
BETWEEN_STATES = "is not in inservice or standby"


class AutoScalingGroup:
    def __init__(self, autoscaling: Any, name: str, region: str) -> None:
        self._autoscaling = autoscaling
        self.name = name
        self.region = region

    def describe(self) -> dict[str, Any]:
        """The group as Auto Scaling describes it (members under `Instances`); FatalError when it is gone."""
        groups = aws_call(
            "describe the group", self._autoscaling.describe_auto_scaling_groups, AutoScalingGroupNames=[self.name]
        )["AutoScalingGroups"]
        if not groups:
            raise FatalError(f"Auto Scaling group {self.name} does not exist in {self.region}")
        return dict(groups[0])

    def member(self, instance_id: str) -> dict[str, Any] | None:
        """The instance as a member of this group (LifecycleState and all); None when it is not one."""
        members = aws_call(
            "describe the instance's group",
            self._autoscaling.describe_auto_scaling_instances,
            InstanceIds=[instance_id],
        ).get("AutoScalingInstances", [])
        return next((m for m in members if m.get("AutoScalingGroupName") == self.name), None)

    def set_on_demand_base(self, policy: dict[str, Any], on_demand: int) -> None:
        """Update the mixed instances policy `policy` (as described) to this on-demand base. The whole policy is
        sent back: an update replaces it, overrides included. Describe names the launch template by id and by
        name; an update must name it one way only."""
        template = policy["LaunchTemplate"]
        spec = {k: v for k, v in template["LaunchTemplateSpecification"].items() if k != "LaunchTemplateName"}
        updated = {
            **policy,
            "LaunchTemplate": {**template, "LaunchTemplateSpecification": spec},
            "InstancesDistribution": {**policy.get("InstancesDistribution", {}), "OnDemandBaseCapacity": on_demand},
        }
        aws_call(
            "set the on-demand base",
            self._autoscaling.update_auto_scaling_group,
            AutoScalingGroupName=self.name,
            MixedInstancesPolicy=updated,
        )

    def set_desired_capacity(self, desired: int) -> None:
        aws_call(
            "set the desired capacity",
            self._autoscaling.set_desired_capacity,
            AutoScalingGroupName=self.name,
            DesiredCapacity=desired,
            HonorCooldown=False,
        )

    def terminate(self, instance_id: str, *, decrement: bool) -> None:
        """Terminate a member; done as well when it left the group meanwhile. TransientError while it is between
        lifecycle states; any other refusal (the group's min size, say) leaves it running, and raises."""
        try:
            self._autoscaling.terminate_instance_in_auto_scaling_group(
                InstanceId=instance_id, ShouldDecrementDesiredCapacity=decrement
            )
        except ClientError as exc:
            message = exc.response["Error"].get("Message", "").lower()
            if exc.response["Error"].get("Code") == "ValidationError" and any(m in message for m in NOT_IN_GROUP):
                return
            if BETWEEN_STATES in message:
                # Pending (a lifecycle state Auto Scaling cannot terminate from): the retry looks again.
                raise TransientError(f"terminate {instance_id}: {reason_of(exc)}") from exc
            raise classified(f"terminate {instance_id}", exc) from exc

    def enter_standby(self, instance_id: str) -> None:
        """Out of the group's count (decrementing the desired capacity), so the group does not replace it."""
        aws_call(
            "put the instance in standby",
            self._autoscaling.enter_standby,
            AutoScalingGroupName=self.name,
            InstanceIds=[instance_id],
            ShouldDecrementDesiredCapacity=True,
        )

    def recent_activities(self) -> list[dict[str, Any]]:
        """The group's latest scaling activities, newest first."""
        return list(
            aws_call(
                "read scaling activities",
                self._autoscaling.describe_scaling_activities,
                AutoScalingGroupName=self.name,
                MaxRecords=20,
            ).get("Activities", [])
        )

"""The node groups of one worker region (`<prefix>-nodes-<class>`, one Auto Scaling group per node class), for the
deployment controller (NodeGroups in logic/deployment_context.py): their size and members, their latest failed
launch, their purchase option, and the release of one member.

The on-demand base capacity and the termination are made as for the serving group (dal/auto_scaling_group.py).
Failures of Auto Scaling become that module's errors or DependencyUnavailable; the controller leaves the step to its
next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from spothub_core.contracts import node_group_name
from spothub_core.dal.auto_scaling_group import AutoScalingGroup
from spothub_core.dal.state_table import call
from spothub_core.dal.task_errors import aws_call
from spothub_core.models.deployment_ecs import NodeGroupState
from spothub_core.timings import NODE_BOOT_SECONDS

# A scaling activity that ended in one of these is a failure to launch (or to terminate) a member.
FAILED_ACTIVITY = ("Failed", "Cancelled")
# Failed activities older than this are not the group's "last failure": they say nothing of an ask made now.
RECENT_FAILURE_SECONDS = NODE_BOOT_SECONDS


class RegionNodeGroups:
    """NodeGroups over one region's Auto Scaling client."""

    def __init__(self, autoscaling: Any, *, region: str, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self.autoscaling = autoscaling
        self.region = region
        self.prefix = prefix
        self._clock = clock

    def _group(self, node_class: str) -> AutoScalingGroup:
        return AutoScalingGroup(self.autoscaling, node_group_name(self.prefix, node_class), self.region)

    def _described(self, node_class: str) -> dict[str, Any] | None:
        groups = call(
            "describe the node group",
            self.autoscaling.describe_auto_scaling_groups,
            AutoScalingGroupNames=[node_group_name(self.prefix, node_class)],
        ).get("AutoScalingGroups", [])
        return dict(groups[0]) if groups else None

    def describe(self, node_class: str) -> NodeGroupState | None:
        """The group, None when this region has none for the class. Its last failure: the status message of its
        newest scaling activity that failed, unless one succeeded since or it is older than RECENT_FAILURE_SECONDS."""
        group = self._described(node_class)
        if group is None:
            return None
        max_size = int(group.get("MaxSize", 0))
        distribution = group.get("MixedInstancesPolicy", {}).get("InstancesDistribution", {})
        base = int(distribution.get("OnDemandBaseCapacity", 0) or 0)
        return NodeGroupState(
            name=group["AutoScalingGroupName"],
            region=self.region,
            node_class=node_class,
            desired=int(group.get("DesiredCapacity", 0)),
            max_size=max_size,
            instance_ids=[m["InstanceId"] for m in group.get("Instances", [])],
            on_demand=base > 0 and base >= max_size,
            last_failure=self._last_failure(group["AutoScalingGroupName"]),
        )

    def _last_failure(self, name: str) -> str | None:
        activities = call(
            "read the node group's scaling activities",
            self.autoscaling.describe_scaling_activities,
            AutoScalingGroupName=name,
            MaxRecords=20,
        ).get("Activities", [])
        since = self._clock() - RECENT_FAILURE_SECONDS
        for activity in activities:  # newest first
            if activity.get("StatusCode") == "Successful":
                return None  # a launch went through since
            if activity.get("StatusCode") not in FAILED_ACTIVITY:
                continue  # still under way
            at = activity.get("EndTime") or activity.get("StartTime")
            if isinstance(at, datetime) and at.timestamp() < since:
                return None
            return str(activity.get("StatusMessage") or activity.get("Description") or activity.get("StatusCode"))
        return None

    def set_desired(self, node_class: str, desired: int) -> None:
        """The group's desired capacity, within its minimum and maximum size."""
        group = self._described(node_class)
        if group is None:
            raise LookupError(f"no node group {node_group_name(self.prefix, node_class)} in {self.region}")
        bounded = max(int(group.get("MinSize", 0)), min(desired, int(group.get("MaxSize", 0))))
        if bounded != int(group.get("DesiredCapacity", 0)):
            self._group(node_class).set_desired_capacity(bounded)

    def set_on_demand(self, node_class: str, on_demand: bool) -> None:
        """On: the on-demand base capacity covers the whole group (its maximum size); off: spot only."""
        group = self._described(node_class)
        if group is None:
            raise LookupError(f"no node group {node_group_name(self.prefix, node_class)} in {self.region}")
        policy = group.get("MixedInstancesPolicy")
        if not policy:
            raise LookupError(f"node group {group['AutoScalingGroupName']} has no mixed instances policy")
        base = int(group.get("MaxSize", 0)) if on_demand else 0
        if int(policy.get("InstancesDistribution", {}).get("OnDemandBaseCapacity", 0) or 0) != base:
            # The distribution only: an update leaves the policy's launch template and overrides as they are, and
            # one that names no launch template asks no launch template permissions of the hub (ec2:RunInstances
            # with it, iam:PassRole of the nodes' role: both in another stack and region).
            aws_call(
                "set the node group's on-demand base",
                self.autoscaling.update_auto_scaling_group,
                AutoScalingGroupName=group["AutoScalingGroupName"],
                MixedInstancesPolicy={"InstancesDistribution": {"OnDemandBaseCapacity": base}},
            )

    def release(self, node_class: str, instance_id: str) -> None:
        """Terminate the member, its group's desired capacity decremented; nothing when it is not (or no longer) a
        member of this class's group: a node release never terminates an instance of another group."""
        group = self._group(node_class)
        if group.member(instance_id) is None:
            return
        group.terminate(instance_id, decrement=True)

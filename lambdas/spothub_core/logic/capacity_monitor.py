"""The task of the worker's `capacity_monitor` state machine: is a noticed instance one of ours?"""

from __future__ import annotations

from typing import Any

from spothub_core.logic.worker_region import (
    LAUNCH_TAG,
    REPLICA_TAG,
    WorkerRegion,
    aws_call,
    group_member,
    instances,
    tags_of,
)


def identify(worker: WorkerRegion, instance_id: str, kind: str) -> dict[str, Any]:
    """Is this instance one of ours? On an interruption warning, also take it out of the group's count
    (Standby, decrementing), so the group does not replace it: the hub does, possibly elsewhere."""
    member = group_member(worker, instance_id)
    if member is None:
        return {"ours": False}
    tags = tags_of(instances(worker, [instance_id]).get(instance_id, {}))
    if kind == "interruption" and member.get("LifecycleState") == "InService":
        aws_call(
            "put the instance in standby",
            worker.autoscaling.enter_standby,
            AutoScalingGroupName=worker.group_name,
            InstanceIds=[instance_id],
            ShouldDecrementDesiredCapacity=True,
        )
    return {"ours": True, "replica_id": tags.get(REPLICA_TAG), "launch_id": tags.get(LAUNCH_TAG), "kind": kind}

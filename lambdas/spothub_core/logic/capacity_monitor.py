"""The task of the worker's `capacity_monitor` state machine: is a noticed instance one of ours?"""

from __future__ import annotations

from spothub_core.contracts import InstanceTag, NoticeKind
from spothub_core.dal.ec2_instances import tags_of
from spothub_core.logic.worker_region import WorkerRegion
from spothub_core.models.worker_tasks import Identify, NotOurs, Ours, Owner


def identify(worker: WorkerRegion, task: Identify) -> Owner:
    """Is this instance one of ours? On an interruption warning, also take it out of the group's count
    (Standby, decrementing), so the group does not replace it: the hub does, possibly elsewhere."""
    member = worker.group.member(task.instance_id)
    if member is None:
        return NotOurs()
    tags = tags_of(worker.instances.describe([task.instance_id]).get(task.instance_id, {}))
    if task.kind == NoticeKind.INTERRUPTION and member.get("LifecycleState") == "InService":
        worker.group.enter_standby(task.instance_id)
    return Ours(replica_id=tags.get(InstanceTag.REPLICA), launch_id=tags.get(InstanceTag.LAUNCH), kind=task.kind)

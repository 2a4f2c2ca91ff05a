"""The payloads of spothub's own events (detail of each detail-type in `contracts`), as pydantic models.

One model per detail-type, each with the contract version; the hub's capacity handler, the worker
function, the state machines' tests and the sandbox all build and read events through these.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from spothub_core.contracts import CONTRACT_VERSION, HubCommand, WorkerReport

CapacityType = Literal["spot", "on-demand"]
ErrorClass = Literal["capacity", "quota", "transient", "fatal"]


class _Detail(BaseModel):
    # Extra fields are tolerated: a newer sender may add some; a reader must not break on them.
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: str = CONTRACT_VERSION


class LaunchRequested(_Detail):
    launch_id: str = Field(min_length=1, max_length=80)
    replica_id: str = Field(min_length=1, max_length=40)
    region: str
    capacity_type: CapacityType = "spot"


class TeardownRequested(_Detail):
    teardown_id: str = Field(min_length=1, max_length=80)
    region: str
    # One instance (after a replacement), one launch (cancelled), or everything spothub runs in the region.
    instance_id: str | None = None
    launch_id: str | None = None
    reason: str = ""


class InstanceFacts(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    instance_id: str
    instance_type: str = ""
    availability_zone: str = ""
    capacity_type: CapacityType = "spot"
    private_ip: str | None = None
    public_ip: str | None = None
    launched_at: str | None = None
    task_arn: str | None = None


class LaunchProgress(_Detail):
    launch_id: str
    region: str
    step: str


class LaunchSucceeded(_Detail):
    launch_id: str
    region: str
    instance: InstanceFacts


class LaunchFailed(_Detail):
    launch_id: str
    region: str
    error_class: ErrorClass
    code: str = ""
    message: str = ""


class TeardownCompleted(_Detail):
    teardown_id: str
    region: str
    instance_id: str | None = None


class CapacityNotice(_Detail):
    """A rebalance recommendation or interruption warning for an instance spothub owns."""

    region: str
    instance_id: str
    kind: Literal["rebalance", "interruption"]
    notice_id: str
    replica_id: str | None = None
    launch_id: str | None = None


class DrainCompleted(_Detail):
    """The agent's account of draining an instance after an interruption warning."""

    region: str
    instance_id: str
    notice_id: str
    outcome: Literal["drained", "timed_out", "failed"]
    exit_code: int | None = None
    last_lines: list[str] = Field(default_factory=list)
    seconds: float | None = None


class InstanceUnhealthy(_Detail):
    """A worker region's remediation: an alarm on one of spothub's instances (silent agent, GPU errors)."""

    region: str
    instance_id: str
    notice_id: str  # the alarm and the time it fired: one remediation per firing
    reason: str
    alarm_name: str = ""
    replica_id: str | None = None
    launch_id: str | None = None


COMMAND_MODELS: dict[HubCommand, type[_Detail]] = {
    HubCommand.LAUNCH_REQUESTED: LaunchRequested,
    HubCommand.TEARDOWN_REQUESTED: TeardownRequested,
}

REPORT_MODELS: dict[WorkerReport, type[_Detail]] = {
    WorkerReport.LAUNCH_PROGRESS: LaunchProgress,
    WorkerReport.LAUNCH_SUCCEEDED: LaunchSucceeded,
    WorkerReport.LAUNCH_FAILED: LaunchFailed,
    WorkerReport.TEARDOWN_COMPLETED: TeardownCompleted,
    WorkerReport.CAPACITY_NOTICE: CapacityNotice,
    WorkerReport.DRAIN_COMPLETED: DrainCompleted,
    WorkerReport.INSTANCE_UNHEALTHY: InstanceUnhealthy,
}

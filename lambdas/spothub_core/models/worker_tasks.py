"""What each task of a worker region's state machines (statemachines/launch_instance, teardown_instance,
capacity_monitor .asl.json) gives the worker_tasks function and gets back from it, one model per action.

A task's payload is `{"action": <name>, ...fields}`; the fields are the action's input model, and unknown
fields are refused, so a renamed field in the ASL fails at its first call instead of reading as missing.
What the function returns is the action's result model, dumped as JSON; the ASL reads it through
`$.Payload` (its ResultSelector), so a field it reads is a field of the result.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from spothub_core.contracts import CapacityType, ErrorClass, InstanceFacts, NoticeKind
from spothub_core.models.base import Model


class _Task(Model):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Result(Model):
    model_config = ConfigDict(frozen=True)


class ClaimStatus(StrEnum):
    """claim_instance's answer, which the launch's `InstanceReady` choice branches on."""

    READY = "ready"  # the launch holds its instance
    WAITING = "waiting"  # no instance to claim yet: poll again
    FAILED = "failed"  # the group's scaling activity failed since the scale-out


class WorkloadState(StrEnum):
    """workload_status's answer, which the launch's `WorkloadHealthy` choice branches on."""

    HEALTHY = "healthy"  # the task runs healthy and the instance is in service
    STARTING = "starting"  # not yet: poll again
    FAILED = "failed"  # the task stopped, or the instance went away


class Failure(_Result):
    """A launch's failure in the class the hub acts on (contracts.LaunchFailed)."""

    error_class: ErrorClass
    code: str
    message: str


# --- launch_instance -------------------------------------------------------------------------------------


class ScaleOut(_Task):
    launch_id: str = Field(min_length=1)
    capacity_type: CapacityType = "spot"


class ScaledOut(_Result):
    started_at: str = Field(description="when the group was asked, ISO 8601 UTC: claim_instance's `since`")
    desired: int
    on_demand_base: int


class ClaimInstance(_Task):
    launch_id: str = Field(min_length=1)
    replica_id: str = Field(min_length=1)
    since: str = Field(description="ISO 8601 UTC: a scaling activity failed before it is not this launch's")


class InstanceClaimed(_Result):
    status: Literal[ClaimStatus.READY] = ClaimStatus.READY
    instance: InstanceFacts


class ClaimWaiting(_Result):
    status: Literal[ClaimStatus.WAITING] = ClaimStatus.WAITING
    pending: list[str] = Field(description="the group's unclaimed instances, not claimable yet")


class ClaimFailed(Failure):
    status: Literal[ClaimStatus.FAILED] = ClaimStatus.FAILED


Claim = Annotated[InstanceClaimed | ClaimWaiting | ClaimFailed, Field(discriminator="status")]


class StartWorkload(_Task):
    launch_id: str = Field(min_length=1)
    instance_id: str = Field(min_length=1)


class WorkloadStarted(_Result):
    task_arn: str


class WorkloadStatus(_Task):
    task_arn: str = Field(min_length=1)
    instance_id: str = Field(min_length=1)


class WorkloadHealthy(_Result):
    status: Literal[WorkloadState.HEALTHY] = WorkloadState.HEALTHY
    instance: InstanceFacts


class WorkloadStarting(_Result):
    status: Literal[WorkloadState.STARTING] = WorkloadState.STARTING
    last_status: str | None = Field(description="the task's ECS lastStatus")
    health: str | None = Field(description="the task's ECS healthStatus, or the instance's lifecycle state")


class WorkloadFailed(Failure):
    status: Literal[WorkloadState.FAILED] = WorkloadState.FAILED


Workload = Annotated[WorkloadHealthy | WorkloadStarting | WorkloadFailed, Field(discriminator="status")]


class WatchInstance(_Task):
    instance_id: str = Field(min_length=1)


class InstanceWatched(_Result):
    watched: str


class CaughtError(Model):
    """An error a state machine caught (a Catch's ResultPath, or a Pass state naming a task's failure)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    error: str = Field("", alias="Error")
    cause: str | None = Field("", alias="Cause")


class DescribeFailure(_Task):
    error: CaughtError | None = None


class Cleanup(_Task):
    launch_id: str = Field(min_length=1)


class LaunchReleased(_Result):
    released: str


# --- teardown_instance -----------------------------------------------------------------------------------


class Teardown(_Task):
    """One instance, one launch, or (neither) everything spothub runs in the region: contracts.TeardownRequested."""

    instance_id: str | None = None
    launch_id: str | None = None


class TeardownStarted(_Result):
    waiting_for: list[str] = Field(description="instances whose end the teardown waits for")


class TeardownStatus(_Task):
    waiting_for: list[str] = Field(default_factory=list)


class TeardownProgress(_Result):
    done: bool
    remaining: list[str]


# --- capacity_monitor ------------------------------------------------------------------------------------


class CapacityMonitorInput(_Task):
    """The capacity monitor's execution input: the worker stack's spot-notice rule fills it from the AWS event
    (an input transformer: instance-id from the detail, the kind per rule)."""

    instance_id: str
    kind: NoticeKind


class Identify(_Task):
    instance_id: str = Field(min_length=1)
    kind: NoticeKind


class NotOurs(_Result):
    ours: Literal[False] = False


class Ours(_Result):
    ours: Literal[True] = True
    replica_id: str | None
    launch_id: str | None
    kind: NoticeKind


Owner = NotOurs | Ours

"""What the spot orchestrator (statemachines/spot_orchestrator.asl.json) passes its Lambda tasks and reads back.

One input and one output model per capacity handler action, field for field what the task's `Payload`
passes and what its `ResultSelector` reads (tests/unit/test_orchestrator_task_models.py holds them to the
ASL); the spot finder's request and answer; and the orchestrator's own input, which every execution
start builds. Inputs forbid unknown fields, so a renamed field in the ASL fails loudly, naming it.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field, field_validator

from spothub_core.contracts import CapacityType, InstanceFacts
from spothub_core.models.base import Model
from spothub_core.models.records import ReplicaStatus


class _Input(Model):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Output(Model):
    model_config = ConfigDict(frozen=True)


class Replacing(Model):
    """The instance a replacement replaces (make before break): retired once the new one serves."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    instance_id: str
    region: str
    notice: str | None = None  # why: rebalance, interruption, unhealthy, return-to-spot (none: new settings)


class Placement(Model):
    """Where the orchestrator launches (FindRegion's result, the spot finder's answer in short)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    best: str | None
    on_demand_region: str | None
    reason: str


class OrchestratorInput(Model):
    """The orchestrator's input: every field its ASL reads, with the defaults of a first placement.

    `spot_only`: launch spot or nothing (a return to spot); `watch_spot`: start by watching for spot, for
    a replica already serving on on-demand; `looks`: the spot watch's looks in this execution; `placement`: the
    first attempt's ranking, done by the starter (a replacement: the capacity handler ranks in-process, so no
    spot finder invocation stands between a notice and the launch), which skips FindRegion once. Other
    fields of the execution's state (what its steps added) are dropped."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    replica_id: str
    generation: int
    attempt: int = 0
    prefer_region: str | None = None
    replacing: Replacing | None = None
    spot_only: bool = False
    watch_spot: bool = False
    looks: int = 0
    placement: Placement | None = None


# --- dispatch_launch (Launch, waitForTaskToken: the worker's report answers, not this output) ---------


class DispatchLaunchInput(_Input):
    token: str
    replica_id: str
    generation: int
    region: str
    capacity_type: CapacityType = "spot"
    launch_id: str


class DispatchLaunchOutput(_Output):
    launch_id: str


# --- dispatch_teardown (Retire, waitForTaskToken) -----------------------------------------------------


class DispatchTeardownInput(_Input):
    token: str
    teardown_id: str
    region: str
    instance_id: str | None = None
    reason: str = ""


class DispatchTeardownOutput(_Output):
    teardown_id: str


# --- abandon_launch (AbandonLaunch) ---------------------------------------------------------------------


class AbandonLaunchInput(_Input):
    launch_id: str
    region: str
    cause: str = ""


class AbandonLaunchOutput(_Output):
    abandoned: bool


# --- record_instance (RecordInstance) -------------------------------------------------------------------


class RecordInstanceInput(_Input):
    replica_id: str
    generation: int
    launch_id: str
    region: str
    capacity_type: CapacityType = "spot"
    instance: InstanceFacts  # the worker's LaunchSucceeded.instance
    replacing: Replacing | None = None
    reason: str | None = None  # the ranking's reason for the region


class Retire(Model):
    model_config = ConfigDict(frozen=True)

    instance_id: str
    region: str


class RecordInstanceOutput(_Output):
    retire: Retire | None  # the instance to tear down: the one replaced, or the new one when superseded
    superseded: bool


# --- replica_failed (MarkFailed) --------------------------------------------------------------------------


class TaskFailure(Model):
    """A caught error as Step Functions puts it at the Catch's ResultPath."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    error: str = Field("error", alias="Error")
    cause: str = Field("", alias="Cause")


class ReplicaFailedInput(_Input):
    replica_id: str
    error: TaskFailure = Field(default_factory=TaskFailure)


class ReplicaFailedOutput(_Output):
    replica_id: str
    status: ReplicaStatus


# --- continue_as_new (ContinueAsNew, ContinueSpotWatch) -----------------------------------------------------


class ContinueAsNewInput(_Input):
    replica_id: str
    generation: int
    state: OrchestratorInput  # the fresh execution's input, its attempt reset
    execution: str | None = None  # a spot watch's own execution: it goes on only while it still watches


class ContinueAsNewOutput(_Output):
    continued_as: str | None


# --- return_to_spot (ReturnToSpot) ---------------------------------------------------------------------------


class ReturnToSpotInput(_Input):
    replica_id: str
    generation: int
    execution: str
    looked_at: str | None = None  # when the look began (ISO 8601, $$.State.EnteredTime): names the replacement


class ReturnToSpotOutput(_Output):
    started: bool
    outcome: str


# --- keep_on_demand (SpotGone) -------------------------------------------------------------------------------


class KeepOnDemandInput(_Input):
    replica_id: str
    generation: int
    execution: str
    replacing: Replacing


class KeepOnDemandOutput(_Output):
    kept: bool
    watch: str | None


# --- the spot finder (FindRegion, LookForSpot) --------------------------------------------------------------


class FindRequest(Model):
    """What the orchestrator asks; everything optional, defaults from the deployment and the switch."""

    model_config = ConfigDict(extra="forbid")

    instance_types: list[str] | None = Field(None, min_length=1)
    target_capacity: int = Field(1, ge=1, le=1000)
    allowed_regions: list[str] | None = None
    denied_regions: list[str] = Field(default_factory=list)
    # The replica being placed: regions holding the other replicas are left out.
    replica_id: str | None = None
    # A replacement's current region, kept when it scores as well as the best.
    prefer_region: str | None = None
    # Spot or nothing (a replica on on-demand looking for spot again): no on-demand region is offered.
    spot_only: bool = False
    # A batch job's workers run in their own groups beside the serving replicas: no region is left out for
    # holding a replica.
    share_regions: bool = False
    # An operator's look (GET /regions): the answer also carries `regions`, every worker region with what was
    # observed and what stands against it, ranked or not. Not a read-only mode: every find only reads (the
    # switch, the replicas, the reservations, the exclusions, EC2's spot data); reserving a region and
    # excluding one are the orchestrator's steps, after it chose.
    survey: bool = False

    @field_validator("instance_types", "allowed_regions", "denied_regions")
    @classmethod
    def _no_blanks(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not item.strip() for item in value):
            raise ValueError("must not contain empty names")
        return value


class RankedRegionView(Model):
    region: str
    rank: int
    placement_score: int | None
    spot_price: float | None
    reason: str


class LeftOutKind(StrEnum):
    """Why the ranking left a region out, for callers that act on the kind (the reason says it for people)."""

    DENIED = "denied"  # the operator's deny list
    NOT_ALLOWED = "not-allowed"  # outside the operator's allow list
    OCCUPIED = "occupied"  # holds another replica
    EXCLUDED = "excluded"  # a spot exclusion after a failure, until it expires
    UNKNOWN_REGION = "unknown-region"  # not a worker region of this deployment


class LeftOutView(Model):
    region: str
    reason: str
    kind: LeftOutKind


class ExclusionView(Model):
    """An exclusion standing after a failed launch."""

    until: float  # epoch seconds
    kind: str  # the failure's class: capacity, quota, transient, timeout ("" when recorded without one)
    reason: str  # as recorded: "<class>: <code> <message>", or the launch that timed out


class SurveyedRegion(Model):
    """One worker region in a survey: what was observed, where it ranks, and everything that stands against
    it (an exclusion shows even when the operator's lists left the region out first)."""

    region: str
    rank: int | None  # None: left out
    placement_score: int | None
    spot_price: float | None  # the cheapest current spot price, USD an hour, over the zones and instance types
    spot_zone: str | None  # where that price is
    spot_instance_type: str | None
    reason: str  # the ranking's why: its facts when ranked, what left it out otherwise
    left_out: LeftOutKind | None
    exclusion: ExclusionView | None
    denied: bool  # on the operator's deny list
    allowed: bool  # false: outside the operator's allow list
    replicas: list[str]  # the replicas holding it: serving there, launching there or having reserved it


class FindAnswer(_Output):
    """The ranking, best first, and every region left out with why."""

    best: str | None
    reason: str
    on_demand_region: str | None  # where an on-demand launch would go when no spot region is left
    ranked: list[RankedRegionView]
    left_out: list[LeftOutView]
    instance_types: list[str]
    target_capacity: int
    observed_at: float
    regions: list[SurveyedRegion] | None = None  # with `survey` only: every worker region, ranked ones first

"""What the state table stores for the warm standby (spothub_core.logic.standby_watch): the deployment's capacity
signals, the zones' placement score samples, each replica's standby, and the standbys that ended (for GET /events).

Read and written by spothub_core.dal.standby, which keeps the keys and the DynamoDB number types. Times are epoch
seconds. Unknown attributes are ignored, so an item written by a newer version still reads.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict

from spothub_core.contracts import CapacityType
from spothub_core.models.base import Model


class SignalKind(StrEnum):
    """A sign that spot capacity went or is going: what a replica's own instances and launches report."""

    INTERRUPTION = "interruption"  # an interruption warning: the instance ends two minutes later
    REBALANCE = "rebalance"  # a rebalance recommendation: its pool is at elevated risk
    CAPACITY_ERROR = "capacity-error"  # a spot launch refused for capacity (InsufficientInstanceCapacity)


# The partition of the replicas' standbys in the state table (the hub stack pins its delete grant to it).
STANDBY = "STANDBY"
# The partition of the standbys that ended (promoted, released, failed), kept a week for the operator's timeline.
STANDBY_ENDED = "STANDBY_ENDED"


class StandbyStatus(StrEnum):
    LAUNCHING = "launching"  # its launch is dispatched; no report yet
    READY = "ready"  # its launch succeeded: healthy and warm, a warning of the serving instance promotes it


class StandbyOutcome(StrEnum):
    PROMOTED = "promoted"  # it serves in place of the replica's warned instance
    RELEASED = "released"  # torn down unused: the risk fell, it was warned itself, switched off, never reported
    FAILED = "failed"  # its launch failed (or never reported while it was to replace the serving instance)


class _Record(Model):
    model_config = ConfigDict(extra="ignore", use_enum_values=False)


class CapacitySignalRecord(_Record):
    """SIGNAL / <region>#<signal_id>: an interruption warning, rebalance recommendation or capacity error of the
    deployment's own instances and launches. `signal_id` names its source (the notice's instance and kind, the
    failed launch), so that a notice delivered twice is one signal."""

    signal_id: str
    kind: SignalKind
    region: str
    zone: str | None = None  # None: a capacity error of a launch into the whole region
    at: float
    standby: bool = False  # of a standby instance or launch
    instance_id: str | None = None
    launch_id: str | None = None


class ZoneScoreRecord(_Record):
    """SCORE / <zone>#<at>: one zone's spot placement score (GetSpotPlacementScores, SingleAvailabilityZone), and
    its region's spot price as the spot finder saw them together: what a standby's zone is chosen by."""

    region: str
    zone: str
    score: int
    at: float
    spot_price: float | None = None


class StandbyRecord(_Record):
    """STANDBY / <replica_id>: the replica's warm standby, from its launch's dispatch until it is promoted or
    released. `adopted_for`: the serving instance it replaces, when a notice came while it was still launching
    (it becomes the replacement; its launch's success promotes it)."""

    replica_id: str
    launch_id: str
    region: str
    zone: str | None = None  # where it landed, once its launch reported (the region's group picks it)
    capacity_type: CapacityType = "spot"
    status: StandbyStatus = StandbyStatus.LAUNCHING
    launched_at: float
    instance_id: str | None = None  # known once its launch succeeded
    public_ip: str | None = None
    private_ip: str | None = None
    ready_at: float | None = None
    adopted_for: str | None = None
    reasons: tuple[str, ...] = ()  # the risk rules that fired when it was started

    @property
    def ready(self) -> bool:
        return self.status == StandbyStatus.READY


class EndedStandby(StandbyRecord):
    """STANDBY_ENDED / <launch_id>: a standby as it was when it went, with how and why; expires after a week."""

    ended_at: float
    outcome: StandbyOutcome
    why: str = ""

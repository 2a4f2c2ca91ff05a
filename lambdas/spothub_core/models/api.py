"""What the API takes and answers: one model per request body and per response, so the routes validate
against them and the OpenAPI document describes them. Every time in a response is ISO 8601 UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from typing_extensions import TypedDict

from spothub_core.models.base import Model
from spothub_core.models.records import CapacityType, InstanceStatus, ProvisioningStatus, ReplicaStatus
from spothub_core.models.standby_records import StandbyStatus

# --- times -----------------------------------------------------------------------------------------


def iso_utc(moment: float | str | datetime) -> str:
    """A moment as ISO 8601 UTC to the second, "2026-11-27T16:00:00Z": epoch seconds (as the state table
    stores times), a datetime, or an ISO 8601 text with any offset (none: UTC)."""
    if isinstance(moment, bool):
        raise ValueError("a moment is epoch seconds or an ISO 8601 text, not a boolean")
    if isinstance(moment, int | float):
        when = datetime.fromtimestamp(moment, UTC)
    elif isinstance(moment, datetime):
        when = moment
    else:
        when = datetime.fromisoformat(moment)  # ValueError when it is no ISO 8601 text
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# A time in a response: given as epoch seconds or any ISO 8601 text, always answered as ISO 8601 UTC.
UtcTime = Annotated[str, BeforeValidator(iso_utc)]

# --- POST /spot-provisioning -------------------------------------------------------------------

MAX_REPLICAS = 10
# family (letters, a generation digit, attribute letters) "." size, e.g. p4d.24xlarge, g6e.xlarge,
# u-6tb1.metal, c7gn.metal-48xl. Lower case only: EC2 rejects "P3.2XLARGE".
INSTANCE_TYPE_PATTERN = re.compile(
    r"^[a-z][a-z0-9-]*[0-9][a-z0-9-]*\."
    r"(nano|micro|small|medium|large|[0-9]*xlarge|metal(-[0-9]+xl)?)$"
)
# The longest EC2 instance type names are about 20 characters (u7inh-32tb.480xlarge).
MAX_INSTANCE_TYPE_LENGTH = 32


class ToggleRequest(Model):
    """The body of POST /spot-provisioning."""

    # Strict: "teardown": "yes" is a 400, not a teardown of every region.
    model_config = ConfigDict(extra="forbid", strict=True)

    action: Literal["enable", "disable"] = Field(description="enable or disable spot provisioning")
    # Default true: an operator who disables expects the GPUs to stop billing; keeping them is the explicit choice.
    teardown: bool = Field(
        True,
        description=(
            "with disable: stop the tasks, scale every worker group to 0 and terminate the instances (default "
            "true); false keeps the instances running, serving and billing until a disable with teardown"
        ),
    )
    replicas: int | None = Field(None, ge=1, le=MAX_REPLICAS, description="serving replicas to keep (default 1)")
    instance_types: list[str] | None = Field(None, min_length=1, max_length=20)
    allowed_regions: list[str] | None = Field(None, min_length=1)
    denied_regions: list[str] | None = None
    warm_standby: bool | None = Field(
        None,
        description=(
            "keep a warm spot standby in another zone while a replica's risk of preemption is high, promoted at "
            "once on a warning (default: as it is; off until switched on)"
        ),
    )

    @field_validator("instance_types", "allowed_regions", "denied_regions")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not item or item != item.strip() for item in value):
            raise ValueError("must not contain empty names or surrounding spaces")
        return value

    @field_validator("instance_types")
    @classmethod
    def _instance_type_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if len(name) > MAX_INSTANCE_TYPE_LENGTH:
                raise ValueError(
                    f"{name[:20]!r}... is {len(name)} characters long; at most {MAX_INSTANCE_TYPE_LENGTH}"
                    " for an EC2 instance type name"
                )
            if not INSTANCE_TYPE_PATTERN.match(name):
                raise ValueError(f"{name!r} is not an EC2 instance type name (family.size, like g5.xlarge)")
        return value

    @model_validator(mode="after")
    def _teardown_disables(self) -> ToggleRequest:
        # Only an explicit `"teardown": true` with enable is refused: the default is disable's.
        if self.action == "enable" and "teardown" in self.model_fields_set and self.teardown:
            raise ValueError("teardown applies to disable only")
        return self


class ToggleAnswer(TypedDict):
    """The JSON of a ToggleResponse: the fields a disable without teardown adds are absent otherwise, not null."""

    message: str
    instances_running: NotRequired[
        Annotated[
            int, Field(ge=0, description="with disable without teardown: instances that keep running and billing")
        ]
    ]
    hint: NotRequired[Annotated[str, Field(description="with disable without teardown: how to stop those instances")]]


class ToggleResponse(Model):
    """The answer of POST /spot-provisioning."""

    message: str
    instances_running: int | None = Field(None, ge=0)
    hint: str | None = None

    # Its JSON (and the OpenAPI document) leaves out what is None: enable's answer is still just its message.
    @model_serializer(mode="wrap", return_type=ToggleAnswer)
    def _without_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


# --- GET /status -----------------------------------------------------------------------------------


class ControlPlaneStatus(Model):
    """GET /status: the deployment's shape, and that its state table answers (else the route is a 503)."""

    prefix: str
    version: str
    hub_region: str
    worker_regions: list[str]
    capacity_fallback: str
    state_table: Literal["reachable"]


# --- GET /regions ----------------------------------------------------------------------------------


class RegionState(StrEnum):
    """What the finder makes of a region now, the first that applies: the operator's deny list, outside
    the operator's allow list, an exclusion after a failed launch, else ranked."""

    OK = "ok"
    EXCLUDED = "excluded"
    DENIED = "denied"
    NOT_ALLOWED = "not-allowed"


class RegionExclusion(Model):
    until: UtcTime = Field(description="when the exclusion ends, ISO 8601 UTC")
    kind: str = Field(
        description=(
            "the failed launch's class: capacity (15 min), quota (6 h, the operator alerted), transient (5 min) "
            "or timeout (10 min); empty when it was recorded without one"
        )
    )
    error: str = Field(description="what failed: the error code and message, or the launch that timed out")


class RegionView(Model):
    region: str
    rank: int | None = Field(description="the finder's rank, 1 the best; None when the region is left out")
    state: RegionState
    placement_score: int | None = Field(description="EC2's spot placement score, 1-10; None when not scored")
    spot_price: float | None = Field(
        description="the cheapest current spot price over the zones and instance types, USD an hour"
    )
    spot_zone: str | None = Field(description="the zone of that price")
    spot_instance_type: str | None = Field(description="the instance type of that price")
    on_demand_price: float | None = Field(
        description="the on-demand price, USD an hour, when the finder knows it (today it does not: null)"
    )
    excluded: RegionExclusion | None = Field(
        description="the exclusion standing after a failed launch, even when the operator's lists leave it out too"
    )
    denied: bool = Field(description="on the operator's deny list")
    allowed: bool = Field(description="false when the operator's allow list leaves it out")
    replicas: list[str] = Field(description="the replicas holding it: serving there, launching there or reserved")
    reason: str = Field(description="the finder's why: score and price when ranked, what left it out otherwise")


class RegionsView(Model):
    """GET /regions: the spot finder's ranking now, asked without changing anything. Every worker region is
    ranked on its own merits (a region holding a replica is not left out for it: `replicas` says who holds
    it), with the operator's lists and instance types as the switch has them."""

    at: UtcTime = Field(description="when the finder observed the market, ISO 8601 UTC")
    best: str | None = Field(description="where a spot launch would go now; None when every region is left out")
    reason: str = Field(description="why the best region, or why none")
    instance_types: list[str] = Field(description="the instance types the scores and prices are for")
    regions: list[RegionView] = Field(description="ranked regions by rank, then the regions left out by name")


# --- GET /spot-instances -----------------------------------------------------------------------------


class ProvisioningState(StrEnum):
    """The whole deployment in one word: the most urgent of its replicas' states; when no replica is placed
    or serving, `left-running` if instances it placed still run (disabled without teardown), else `idle`
    (provisioning off, or on with no replica)."""

    FAILED = "failed"
    REPLACING = "replacing"
    PLACING = "placing"
    SERVING = "serving"
    LEFT_RUNNING = "left-running"
    IDLE = "idle"


class ReplicaView(Model):
    replica_id: str
    status: ReplicaStatus
    region: str | None = Field(description="where the replica's instance runs; None while it has none")
    instance_id: str | None = Field(description="the replica's instance; None before it has one and once it is gone")
    capacity_type: CapacityType | None
    reason: str | None = Field(description="why the replica is where it is: score, price, exclusions")
    target_region: str | None = Field(description="where its launch in flight goes, if any")
    error: str | None
    placed_at: UtcTime | None = Field(description="when its instance entered service, ISO 8601 UTC")
    endpoint: str | None = Field(
        description="its instance's model server, http://<address>:<port>; None while it has no instance or address"
    )


class InstanceView(Model):
    instance_id: str
    region: str | None
    replica_id: str | None
    status: InstanceStatus
    public_ip: str | None
    private_ip: str | None
    capacity_type: CapacityType
    availability_zone: str
    instance_type: str
    launched_at: UtcTime | None = Field(description="when EC2 launched it, ISO 8601 UTC")
    last_seen: UtcTime | None = Field(description="the agent's last heartbeat, ISO 8601 UTC; None before any")
    ready: bool | None = Field(description="whether the workload answers its health check, as the agent last said")
    gpu: dict[str, Any] | None = Field(description="the GPUs' health, as the agent last said")
    endpoint: str | None = Field(
        description=(
            "its model server, http://<public ip, or private ip when servingPublicIp is false>:<servingPort>; "
            "None while it has no such address"
        )
    )
    billing: bool = Field(description="whether EC2 bills it: true until it is terminated")


class ProvisioningSettings(Model):
    replicas: int | None
    instance_types: list[str] | None
    allowed_regions: list[str] | None
    denied_regions: list[str] | None
    warm_standby: bool = Field(False, description="whether a warm standby is kept while a replica's risk is high")


class RemediationView(Model):
    instance_id: str
    region: str
    reason: str
    alarm_name: str
    at: UtcTime = Field(description="when the alarm's firing was recorded, ISO 8601 UTC")


class StandbyView(Model):
    replica_id: str
    status: StandbyStatus = Field(
        description="launching (dispatched, not reported yet) or ready (healthy and warm: a notice promotes it)"
    )
    region: str
    zone: str | None = Field(
        description="the zone it landed in, once its launch reported; None before (the region's group picks it)"
    )
    capacity_type: CapacityType
    launch_id: str
    instance_id: str | None = Field(description="its instance, once its launch succeeded")
    launched_at: UtcTime = Field(description="when its launch was dispatched, ISO 8601 UTC")
    ready_at: UtcTime | None = Field(description="when it became ready, ISO 8601 UTC")
    replaces: str | None = Field(
        description="the serving instance it replaces, when a notice came while it was still launching"
    )


class SpotInstances(Model):
    """GET /spot-instances: the switch, the replicas, the instances they run on, recent remediations."""

    provisioning: ProvisioningStatus
    state: ProvisioningState
    region: str | None = Field(description="the first serving replica's region (each replica says its own)")
    endpoint: str | None = Field(
        description=(
            "where clients reach the model: http://<endpointName>:<port> when the deployment has an endpoint name "
            "(a DNS record that follows the replicas), else the first serving replica's endpoint"
        )
    )
    replicas: list[ReplicaView]
    instances: list[InstanceView] = Field(description="every instance not terminated, serving ones first")
    settings: ProvisioningSettings
    remediations: list[RemediationView] = Field(description="the most recent remediations, oldest first")
    standbys: list[StandbyView] = Field(
        default_factory=list, description="the replicas' warm standbys held now (warm_standby on, the risk high)"
    )


# --- GET /events: what happened recently ------------------------------------------------------------


class EventKind(StrEnum):
    LAUNCH_REQUESTED = "launch-requested"  # the hub asked a worker region for an instance
    LAUNCHED = "launched"  # the launch's instance is serving
    LAUNCH_FAILED = "launch-failed"  # the region could not (capacity, quota, a fatal error): failover follows
    LAUNCH_CANCELLED = "launch-cancelled"
    TEARDOWN = "teardown"  # an instance asked to go (replaced, disabled, unhealthy)
    TEARDOWN_DONE = "teardown-done"
    NOTICE = "notice"  # a rebalance recommendation, an interruption warning or an unhealthy verdict on an instance
    REMEDIATION = "remediation"  # an instance alarm fired and was acted on
    EXCLUSION = "exclusion"  # a region left out of the ranking (until when, why)
    STANDBY_STARTED = "standby-started"  # a warm standby's launch (which risk rules fired)
    STANDBY_READY = "standby-ready"  # the standby is warm: a warning of the serving instance promotes it
    STANDBY_PROMOTED = "standby-promoted"  # it serves in place of the warned instance
    STANDBY_RELEASED = "standby-released"  # torn down unused (the risk fell, it was warned itself, switched off)
    STANDBY_FAILED = "standby-failed"  # its launch failed or never reported


class EventView(Model):
    at: UtcTime
    kind: EventKind
    region: str | None = None
    replica_id: str | None = None
    instance_id: str | None = None
    summary: str = Field(description="one line for people")


class EventsView(Model):
    """GET /events: newest first, from the records the control plane keeps (launches, teardowns, instances,
    remediations, exclusions, warm standbys) while they are kept."""

    events: list[EventView]

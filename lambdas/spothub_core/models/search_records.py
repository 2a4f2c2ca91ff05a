"""What the search table stores for the search-instance launcher, one model per item kind, with status enums;
and what the search region publishes for the hub and the search agent reads.

Key layout (the dal owns keys and condition expressions; dal/search_store.py):
  pk=SEARCH  sk=SLOT                 the one slot of the volume (SearchSlot): which launch holds it
  pk=SEARCH  sk=LAUNCH#<launch_id>   one launch and the instance it brought up (SearchInstance)

One instance per volume: a launch exists only while it holds the slot (claimed with a conditional write), or
after it gave the slot up (terminating, terminated, failed), until the record expires. Times are epoch seconds,
as stored; the API shows ISO 8601.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from spothub_core.contracts import CapacityType
from spothub_core.models.base import Model


class SearchStatus(StrEnum):
    """An instance's lifecycle: LAUNCHING -> STARTING -> READY/BUSY/IDLE -> FAILED -> TERMINATING -> TERMINATED."""

    LAUNCHING = "launching"  # the slot is claimed; placement and RunInstances (no instance id before it)
    STARTING = "starting"  # the instance runs: volume attaching, the agent mounts it and starts the service
    READY = "ready"  # its health check passed; no query since
    BUSY = "busy"  # queries in flight (current_requests > 0)
    IDLE = "idle"  # healthy, no query in flight; idle since last_used
    FAILED = "failed"  # three missed health checks, or the launch failed: never routed to again
    TERMINATING = "terminating"  # termination asked (idle, max runtime, scale-down, interruption, failure)
    TERMINATED = "terminated"  # gone; the record stays until it expires

    @property
    def routable(self) -> bool:
        """Queries may be sent to it."""
        return self in (SearchStatus.READY, SearchStatus.BUSY, SearchStatus.IDLE)

    @property
    def launching(self) -> bool:
        """A launch in progress: the 409 "launch already in progress" of a scale-up."""
        return self in (SearchStatus.LAUNCHING, SearchStatus.STARTING)

    @property
    def live(self) -> bool:
        """Counted in `total_instances`: anything not gone."""
        return self != SearchStatus.TERMINATED


class EndReason(StrEnum):
    """Why an instance was terminated or failed (SearchInstance.reason, the timeline, the logs)."""

    SCALE_DOWN = "scale-down"  # POST /search/scale-down
    DELETED = "deleted"  # DELETE /search/instances/{id}
    IDLE = "idle"  # no query for searchIdleTimeout
    MAX_RUNTIME = "max-runtime"  # running for searchMaxRuntime
    UNHEALTHY = "unhealthy"  # three consecutive missed health checks
    INTERRUPTED = "interrupted"  # a spot interruption warning
    LAUNCH_FAILED = "launch-failed"  # the launcher gave up (no capacity, attach failed, never healthy)
    GONE = "gone"  # the instance no longer exists (terminated outside spothub); found by the reconciliation


class _Record(Model):
    model_config = ConfigDict(extra="ignore", use_enum_values=False)


class SearchSlot(_Record):
    """SEARCH / SLOT: the launch that holds the volume's one slot; launch_id None while free."""

    launch_id: str | None = None
    claimed_at: float | None = None


class SearchInstance(_Record):
    """SEARCH / LAUNCH#<launch_id>: one launch and its instance."""

    launch_id: str
    status: SearchStatus = SearchStatus.LAUNCHING
    volume_id: str
    instance_id: str | None = None  # known once RunInstances answered
    instance_type: str = ""
    capacity_type: CapacityType | None = None
    availability_zone: str = ""
    subnet_id: str = ""
    private_ip: str | None = None
    public_ip: str | None = None
    created_at: float
    started_at: float | None = None  # RunInstances answered (max runtime counts from here)
    ready_at: float | None = None
    last_used: float | None = None  # the end of the last query (idle counts from here, or from ready_at)
    current_requests: int = 0
    health_failures: int = 0  # consecutive missed health checks
    last_health_at: float | None = None
    reason: EndReason | None = None
    error: str | None = None  # what failed, for the operator (launch error, last health check error)
    execution_arn: str | None = None  # the launcher's execution
    replaces: str | None = None  # the launch this one replaces (failure, interruption)
    adopted: bool = False  # found running by the reconciliation, not launched by spothub
    ended_at: float | None = None
    updated_at: float | None = None


class SearchHost(Model):
    """What the search region publishes (SSM `/spothub/<prefix>/search-host` in that region) for the hub's
    search functions: where and how to launch the search instance."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    region: str
    launch_template_id: str
    security_group_id: str  # the instance's: the service port open to the router's group only
    subnet_ids: list[str] = Field(min_length=1)


class SearchAgentConfig(Model):
    """What the agent on the search instance reads (SSM `/spothub/<prefix>/search-config`, in the search region)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    image: str
    port: int = Field(8000, ge=1, le=65535)
    health_path: str = "/health"
    mount_path: str = "/mnt/search-index"
    # Secrets Manager secret (its name, in the search region) with the service's embedding API key, given to the
    # container as SEARCH_API_KEY; None: the service needs none.
    api_key_secret_name: str | None = None

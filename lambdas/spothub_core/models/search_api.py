"""The search API's requests and answers (POST /search/query, GET /search/status, POST /search/scale-up and
/search/scale-down, DELETE /search/instances/{instance_id}), in the response shapes of the classic search
orchestrator, and the contract of the search service on the instance (what its container must serve)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from spothub_core.models.base import Model
from spothub_core.models.search_records import SearchStatus

MAX_QUERY_CHARS = 4000
MAX_TOP_K = 100
MAX_WAIT_SECONDS = 60
INSTANCE_ID_PATTERN = r"^i-[0-9a-f]{8,17}$"


class _Request(Model):
    # Strict, as the document says: "wait_s": false is a 400, not a query that starts a launch and waits 0 s.
    model_config = ConfigDict(extra="forbid", strict=True)


class _Answer(Model):
    model_config = ConfigDict(extra="ignore")


class SearchQuery(_Request):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    top_k: int = Field(10, ge=1, le=MAX_TOP_K)
    # Wait up to this long for an instance to become ready (a launch from zero is started either way); 0: answer
    # 503 with Retry-After at once.
    wait_s: int = Field(0, ge=0, le=MAX_WAIT_SECONDS)


class SearchInstanceView(_Answer):
    instance_id: str | None  # None while the launch has not created it yet
    launch_id: str
    public_ip: str | None = None
    private_ip: str | None = None
    status: SearchStatus
    created_at: str  # ISO 8601 UTC
    last_used: str | None = None
    current_requests: int = 0
    capacity_type: str | None = None
    instance_type: str = ""
    availability_zone: str = ""
    health_failures: int = 0


class SearchStatusView(_Answer):
    total_instances: int
    ready_instances: int  # routable: ready, busy or idle
    busy_instances: int
    launching_instances: int  # launching or starting
    instances: list[SearchInstanceView]


class ScaleUpAnswer(_Answer):
    message: str = "Instance launched successfully"
    launched_instances: list[SearchInstanceView]
    total_instances: int


class ScaleUpConflict(_Answer):
    """409 of a scale-up: an instance is there already (existing_instances), or a launch is in progress
    (launching_instances and all_instances)."""

    error: str
    existing_instances: list[SearchInstanceView] | None = None
    launching_instances: list[SearchInstanceView] | None = None
    all_instances: list[SearchInstanceView] | None = None
    total_instances: int


class ScaleDownAnswer(_Answer):
    message: str = "Service shut down"
    terminated_instances: list[str]  # instance ids
    total_instances: int = 0


class BusyConflict(_Answer):
    """409 of a scale-down or a delete while queries are in flight."""

    error: str = "Cannot terminate: instance is busy"
    total_instances: int


class TerminateAnswer(_Answer):
    message: str = "Instance termination started"
    instance_id: str
    status: SearchStatus


class SearchUnavailable(_Answer):
    """503 of a query with no ready instance (Retry-After says when to come back); `status` is the instance's
    status, "launching" when this query started the launch."""

    error: str
    status: str


# --- the search service on the instance (the container's contract) ---------------------------------------


class SearchHit(_Answer):
    id: str
    score: float
    title: str = ""
    snippet: str = ""


class ServiceAnswer(_Answer):
    """POST /search on the instance's service: {"query", "top_k"} -> this."""

    results: list[SearchHit]
    total_documents: int | None = None
    timings: dict[str, float] = Field(default_factory=dict)  # the service's own, e.g. {"search_ms": 3.1}


class QueryTimings(_Answer):
    service_ms: float | None = None  # what the service says it took
    routing_ms: float  # the router's round trip to the instance
    total_ms: float  # this API function, end to end


class QueryAnswer(_Answer):
    query: str
    results: list[SearchHit]
    total_documents: int | None = None
    instance_id: str
    timings: QueryTimings
    extra: dict[str, Any] | None = None  # anything else the service answered, untouched

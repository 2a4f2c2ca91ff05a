"""The search API's decisions: route a query to the volume's instance (launching one from zero), show the instances,
scale up to the one instance a volume allows, scale down, terminate one instance.

The slot (dal/search_store.py) says which launch holds the volume; its record says whether queries may go to it.
A query is counted in (busy) and out (idle, last_used) around the router's call, so a scale-down or the idle rule
never terminates an instance while it answers. The answers other than a route's own (the issue's 409 and 503
shapes, a 4xx of the search service) are raised as SearchRefusal, which the handler turns into the response.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ValidationError

from spothub_core.dal.search_instances import SearchInstances
from spothub_core.dal.search_router import SearchRouter
from spothub_core.dal.search_store import SearchStore
from spothub_core.errors import DependencyUnavailable, InvalidRequest, NotFound
from spothub_core.logic.search_launches import Launcher, start_launch
from spothub_core.models.api import iso_utc
from spothub_core.models.search_api import (
    BusyConflict,
    QueryAnswer,
    QueryTimings,
    ScaleDownAnswer,
    ScaleUpAnswer,
    ScaleUpConflict,
    SearchInstanceView,
    SearchQuery,
    SearchStatusView,
    SearchUnavailable,
    ServiceAnswer,
    TerminateAnswer,
)
from spothub_core.models.search_records import EndReason, SearchInstance, SearchStatus
from spothub_core.timings import (
    SEARCH_QUERY_TIMEOUT_SECONDS,
    SEARCH_RETRY_AFTER_SECONDS,
    SEARCH_WAIT_BUDGET_SECONDS,
    SEARCH_WAIT_POLL_SECONDS,
)

ONE_PER_VOLUME = "count: one instance per volume, so count must be 1"
ALREADY_THERE = "Cannot scale up: already have an instance"
LAUNCH_IN_PROGRESS = "Cannot scale up: instance launch already in progress"
NOT_READY = "No search instance is ready yet"
# The service's refusals that are about the query, passed on with their status.
CALLERS_FAULT = frozenset(
    {HTTPStatus.BAD_REQUEST, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, HTTPStatus.UNPROCESSABLE_ENTITY}
)
# What the service's own answer keeps in QueryAnswer's fields; anything else it says goes to `extra`, untouched.
SERVICE_FIELDS = frozenset(ServiceAnswer.model_fields)
# Records that still hold (or are about to give up) the volume: a scale-down terminates these.
STOPPABLE = (
    SearchStatus.LAUNCHING,
    SearchStatus.STARTING,
    SearchStatus.READY,
    SearchStatus.BUSY,
    SearchStatus.IDLE,
    SearchStatus.FAILED,
)


@dataclass(frozen=True)
class SearchApi:
    """What the search API works with: the search table, the launcher, the router and EC2 of the search region."""

    store: SearchStore
    launcher: Launcher
    router: SearchRouter
    instances: SearchInstances
    port: int
    # A query's clock and its pause between looks while it waits for readiness.
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


class SearchRefusal(Exception):
    """An answer in a shape of its own (the 409s and the 503 of the issue, a 4xx of the search service): the handler
    answers `body` with `status` and `headers`. `launched`: the launch this request started anyway (a query from
    zero), for the logs."""

    def __init__(
        self,
        status: HTTPStatus,
        body: BaseModel | dict[str, Any],
        headers: dict[str, str] | None = None,
        launched: str | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.launched = launched
        super().__init__(f"{status.value}: {self.payload()}")

    def payload(self) -> dict[str, Any]:
        if isinstance(self.body, BaseModel):
            # Only the shape's own fields: a 409 lists existing_instances or launching_instances, not both (an
            # instance's view inside keeps its nulls, as every answer shows it).
            return {k: v for k, v in self.body.model_dump(mode="json").items() if v is not None}
        return self.body


# --- views --------------------------------------------------------------------------------------------------


def view(record: SearchInstance) -> SearchInstanceView:
    return SearchInstanceView(
        instance_id=record.instance_id,
        launch_id=record.launch_id,
        public_ip=record.public_ip,
        private_ip=record.private_ip,
        status=record.status,
        created_at=iso_utc(record.created_at),
        last_used=iso_utc(record.last_used) if record.last_used is not None else None,
        current_requests=record.current_requests,
        capacity_type=record.capacity_type,
        instance_type=record.instance_type,
        availability_zone=record.availability_zone,
        health_failures=record.health_failures,
    )


def status_view(records: list[SearchInstance]) -> SearchStatusView:
    live = [record for record in records if record.status.live]
    return SearchStatusView(
        total_instances=len(live),
        ready_instances=sum(record.status.routable for record in live),
        busy_instances=sum(record.status == SearchStatus.BUSY for record in live),
        launching_instances=sum(record.status.launching for record in live),
        instances=[view(record) for record in live],
    )


def status(api: SearchApi) -> SearchStatusView:
    return status_view(api.store.all())


def check_count(count: int) -> None:
    if count != 1:
        raise InvalidRequest(f"{ONE_PER_VOLUME} (asked for {count})")


# --- POST /search/scale-up ----------------------------------------------------------------------------------


def scale_up(api: SearchApi, count: int, *, now: float) -> ScaleUpAnswer:
    check_count(count)
    launched = start_launch(api.launcher, now)
    if launched is not None:
        return ScaleUpAnswer(launched_instances=[view(launched)], total_instances=len(api.store.live()))
    # The slot is held: by a launch still in progress, or by an instance that is there (routable, or failed and
    # about to be replaced by the monitor).
    live = api.store.live()
    holder = _holder_record(api)
    views = [view(record) for record in live]
    if holder is None or holder.status.launching:
        raise SearchRefusal(
            HTTPStatus.CONFLICT,
            ScaleUpConflict(
                error=LAUNCH_IN_PROGRESS,
                launching_instances=[view(record) for record in live if record.status.launching],
                all_instances=views,
                total_instances=len(live),
            ),
        )
    raise SearchRefusal(
        HTTPStatus.CONFLICT,
        ScaleUpConflict(error=ALREADY_THERE, existing_instances=views, total_instances=len(live)),
    )


def _holder_record(api: SearchApi) -> SearchInstance | None:
    """The record of the launch holding the slot; None when the slot is free, or claimed by a launch whose record
    is not written yet (start_launch claims first)."""
    launch_id = api.store.slot().launch_id
    return api.store.get(launch_id) if launch_id else None


# --- POST /search/scale-down, DELETE /search/instances/{instance_id} ----------------------------------------


def scale_down(api: SearchApi, count: int, *, now: float) -> ScaleDownAnswer:
    check_count(count)
    live = api.store.live()
    running = [record for record in live if record.status in STOPPABLE]
    if any(record.current_requests > 0 for record in running):
        raise SearchRefusal(HTTPStatus.CONFLICT, BusyConflict(total_instances=len(live)))
    terminated: list[str] = []
    for record in running:
        ended = _terminate(api, record, EndReason.SCALE_DOWN, now=now, total=len(live))
        if ended.instance_id:
            terminated.append(ended.instance_id)
    return ScaleDownAnswer(terminated_instances=terminated)


def terminate_instance(api: SearchApi, instance_id: str, *, now: float) -> TerminateAnswer:
    record = api.store.by_instance(instance_id)
    if record is None:
        # No record knows it (a manual launch, a restored table): ours only if it carries the volume's tags.
        if not any(facts.instance_id == instance_id for facts, _ in api.instances.tagged(api.launcher.volume_id)):
            raise NotFound(f"no search instance {instance_id} of volume {api.launcher.volume_id}")
        api.instances.terminate([instance_id])
        return TerminateAnswer(instance_id=instance_id, status=SearchStatus.TERMINATING)
    if record.status == SearchStatus.TERMINATED:
        return TerminateAnswer(instance_id=instance_id, status=record.status)
    if record.status == SearchStatus.TERMINATING:
        # Asked before; terminating again is harmless and covers a termination call that failed after the record.
        api.instances.terminate([instance_id])
        return TerminateAnswer(instance_id=instance_id, status=record.status)
    if record.current_requests > 0:
        raise SearchRefusal(HTTPStatus.CONFLICT, BusyConflict(total_instances=len(api.store.live())))
    ended = _terminate(api, record, EndReason.DELETED, now=now, total=None)
    return TerminateAnswer(instance_id=instance_id, status=ended.status)


def _terminate(
    api: SearchApi, record: SearchInstance, reason: EndReason, *, now: float, total: int | None
) -> SearchInstance:
    """Move the record to terminating (only while no query is in flight), terminate its instance and give the slot
    back. A query that began since the record was read: 409 busy."""
    ended = api.store.terminate_if_quiet(record.launch_id, reason, now)
    if ended is None:
        current = api.store.get(record.launch_id) or record
        if current.current_requests > 0:
            raise SearchRefusal(
                HTTPStatus.CONFLICT,
                BusyConflict(total_instances=total if total is not None else len(api.store.live())),
            )
        ended = current  # ended by someone else meanwhile (the monitor, another scale-down)
        if ended.status != SearchStatus.TERMINATING:
            return ended
    if ended.instance_id:
        api.instances.terminate([ended.instance_id])
    api.store.release_slot(ended.launch_id)
    return ended


# --- POST /search/query ---------------------------------------------------------------------------------------


def query(api: SearchApi, request: SearchQuery) -> QueryAnswer:
    """Send the query to the instance holding the slot. None ready: a launch is started if the slot is free (the
    slot's conditional claim lets one of many concurrent queries start it); with wait_s, the record is looked at
    again every SEARCH_WAIT_POLL_SECONDS until it is routable, within min(wait_s, SEARCH_WAIT_BUDGET_SECONDS);
    else 503 with Retry-After."""
    clock = api.clock
    started = clock()
    deadline = started + min(request.wait_s, SEARCH_WAIT_BUDGET_SECONDS)
    launched: str | None = None
    while True:
        record, started_now = _serving_record(api, now=clock())
        if started_now is not None:
            launched = started_now
        if record is not None and record.status.routable and record.private_ip:
            counted = api.store.begin_request(record.launch_id, clock())
            if counted is not None:
                return _route(api, counted, record.private_ip, request, started=started, clock=clock)
            continue  # it stopped being routable between the read and the count: look again
        if clock() + SEARCH_WAIT_POLL_SECONDS > deadline:
            status = str(record.status) if record is not None else str(SearchStatus.LAUNCHING)
            raise _unavailable(NOT_READY, status, launched=launched)
        api.sleep(SEARCH_WAIT_POLL_SECONDS)


def _serving_record(api: SearchApi, *, now: float) -> tuple[SearchInstance | None, str | None]:
    """The record holding the slot, and the launch id when this call started the launch (the slot was free). A
    holder already terminated (its slot left behind) gives the slot back first; the release is conditional on
    that holder, so it frees nobody else's."""
    launch_id = api.store.slot().launch_id
    record = api.store.get(launch_id) if launch_id else None
    if record is not None and record.status == SearchStatus.TERMINATED:
        api.store.release_slot(record.launch_id)
        launch_id = None
    if launch_id is None:
        launched = start_launch(api.launcher, now)
        if launched is not None:
            return launched, launched.launch_id
        launch_id = api.store.slot().launch_id
        record = api.store.get(launch_id) if launch_id else None
    return record, None


def _route(
    api: SearchApi,
    record: SearchInstance,
    address: str,
    request: SearchQuery,
    *,
    started: float,
    clock: Callable[[], float],
) -> QueryAnswer:
    """The router's call to the instance, counted in (by the caller) and out (here, whatever the router says)."""
    body = {"query": request.query, "top_k": request.top_k}
    try:
        response = api.router.query(address, api.port, body, SEARCH_QUERY_TIMEOUT_SECONDS)
    except DependencyUnavailable as exc:
        after = api.store.end_request(record.launch_id, clock()) or record
        raise _unavailable(f"the search router failed: {exc}", str(after.status)) from exc
    after = api.store.end_request(record.launch_id, clock()) or record
    if not response.ok:
        refused = _client_error(response.status_code)
        if refused is not None:
            raise SearchRefusal(refused, _service_refusal(refused, response.body))
        problem = response.error or f"HTTP {response.status_code}"
        raise _unavailable(f"the search service did not answer: {problem}", str(after.status))
    try:
        answer = ServiceAnswer.model_validate(response.body)
    except ValidationError as exc:
        raise SearchRefusal(
            HTTPStatus.BAD_GATEWAY,
            {
                "error": HTTPStatus.BAD_GATEWAY.phrase,
                "message": f"the search service answered no search results: {_short(response.body)}",
            },
        ) from exc
    extra = {k: v for k, v in response.body.items() if k not in SERVICE_FIELDS}
    return QueryAnswer(
        query=request.query,
        results=answer.results,
        total_documents=answer.total_documents,
        instance_id=record.instance_id or "",
        timings=QueryTimings(
            service_ms=answer.timings.get("search_ms"),
            routing_ms=response.elapsed_ms,
            total_ms=round((clock() - started) * 1000, 1),
        ),
        extra=extra or None,
    )


def _client_error(code: int | None) -> HTTPStatus | None:
    """The status to answer for a service's refusal of the query itself (malformed, too large, unprocessable); None
    for anything else. Another 4xx (401, 403, 404: the service or its key is misconfigured) is not the caller's
    fault: it is answered as a bad gateway."""
    if code in CALLERS_FAULT:
        return HTTPStatus(code)
    if code is not None and HTTPStatus.BAD_REQUEST <= code < HTTPStatus.INTERNAL_SERVER_ERROR:
        return HTTPStatus.BAD_GATEWAY
    return None


def _service_refusal(status: HTTPStatus, body: Any) -> dict[str, Any]:
    """A 4xx of the service (a query it cannot take), passed on with its status and what it said."""
    return {"error": status.phrase, "message": f"the search service refused the query: {_short(body)}"}


def _short(body: Any, limit: int = 500) -> str:
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text[:limit]


def _unavailable(error: str, status: str, *, launched: str | None = None) -> SearchRefusal:
    return SearchRefusal(
        HTTPStatus.SERVICE_UNAVAILABLE,
        SearchUnavailable(error=error, status=status),
        headers={"Retry-After": str(SEARCH_RETRY_AFTER_SECONDS)},
        launched=launched,
    )

"""The search API's pure decisions: an instance's view (ISO 8601 times), the status counts, the one-per-volume
count, the refusals' bodies and which service answers are passed on as the caller's error."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from spothub_core.errors import InvalidRequest
from spothub_core.logic.search_api import SearchRefusal, _client_error, check_count, status_view, view
from spothub_core.models.search_api import ScaleUpConflict, SearchUnavailable
from spothub_core.models.search_records import SearchInstance, SearchStatus

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def _record(launch_id: str, status: SearchStatus, **fields: object) -> SearchInstance:
    return SearchInstance(launch_id=launch_id, status=status, volume_id="vol-0abc", created_at=NOW, **fields)


def test_a_view_shows_times_as_iso_8601_utc() -> None:
    shown = view(
        _record("l-1", SearchStatus.IDLE, instance_id="i-0abc12345", last_used=NOW + 61.7, capacity_type="spot")
    )
    assert (shown.created_at, shown.last_used) == ("2027-01-15T08:00:00Z", "2027-01-15T08:01:01Z")
    assert (shown.instance_id, shown.status, shown.capacity_type) == ("i-0abc12345", SearchStatus.IDLE, "spot")
    assert view(_record("l-2", SearchStatus.LAUNCHING)).last_used is None


def test_the_status_counts_the_live_records_only() -> None:
    records = [
        _record("l-1", SearchStatus.TERMINATED),
        _record("l-2", SearchStatus.FAILED),
        _record("l-3", SearchStatus.BUSY, current_requests=2),
        _record("l-4", SearchStatus.IDLE),
        _record("l-5", SearchStatus.STARTING),
        _record("l-6", SearchStatus.TERMINATING),
    ]
    shown = status_view(records)
    assert (shown.total_instances, shown.ready_instances, shown.busy_instances, shown.launching_instances) == (
        5,
        2,
        1,
        1,
    )
    assert [instance.launch_id for instance in shown.instances] == ["l-2", "l-3", "l-4", "l-5", "l-6"]


@pytest.mark.parametrize("count", [0, 2, -1, 10])
def test_one_instance_per_volume(count: int) -> None:
    check_count(1)
    with pytest.raises(InvalidRequest, match="one instance per volume"):
        check_count(count)


def test_a_refusal_answers_its_shape_without_the_fields_it_does_not_use() -> None:
    conflict = SearchRefusal(
        HTTPStatus.CONFLICT,
        ScaleUpConflict(error="x", existing_instances=[view(_record("l-1", SearchStatus.READY))], total_instances=1),
    )
    body = conflict.payload()
    assert set(body) == {"error", "existing_instances", "total_instances"}
    assert body["existing_instances"][0]["instance_id"] is None  # the view keeps its own nulls
    unavailable = SearchRefusal(HTTPStatus.SERVICE_UNAVAILABLE, SearchUnavailable(error="e", status="launching"))
    assert unavailable.payload() == {"error": "e", "status": "launching"}
    assert SearchRefusal(HTTPStatus.BAD_GATEWAY, {"error": "Bad Gateway"}).payload() == {"error": "Bad Gateway"}


@pytest.mark.parametrize(
    ("code", "answered"),
    [
        (400, HTTPStatus.BAD_REQUEST),
        (413, HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
        (422, HTTPStatus.UNPROCESSABLE_ENTITY),
        (401, HTTPStatus.BAD_GATEWAY),
        (404, HTTPStatus.BAD_GATEWAY),
        (499, HTTPStatus.BAD_GATEWAY),
        (500, None),
        (503, None),
        (None, None),
        (200, None),
    ],
)
def test_only_the_services_refusal_of_the_query_is_the_callers_error(
    code: int | None, answered: HTTPStatus | None
) -> None:
    assert _client_error(code) == answered

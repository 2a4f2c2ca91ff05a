"""The search workload end to end in the sandbox, one test per claim of the issue: the deployed hub functions (API,
launcher, monitor) against the emulated search region, the real agent in search mode on the simulated instance and
the stand-in BM25 service over the volume's corpus. Every AWS call they make is checked against the synthesized
policies (conftest's autouse fixture fails a test on any denial).

Time: everything follows the sandbox clock (the hub's functions, the agent, the launcher's Wait states, the monitor's
schedule), which runs at the search pace (search_driver.SEARCH_SPEED) here, so a launch takes seconds; the schedule
then sweeps on its own every few seconds too, so each test fires the sweep itself, waits for its effect, and
tolerates the schedule's. The idle timeout (searchIdleTimeout=60) is passed by advancing the clock.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from threading import Barrier
from typing import Any

import pytest
import requests

from spothub.sandbox import search_driver as drive
from spothub.sandbox.sandbox import SEARCH_IDLE_TIMEOUT_SECONDS, Sandbox
from spothub.sandbox.search_volume import CORPUS
from spothub_core.contracts import MANAGED_BY, SEARCH_SERVICE, SearchTag
from spothub_core.models.search_records import EndReason, SearchInstance, SearchStatus
from spothub_core.timings import SEARCH_HEALTH_MISSES, SEARCH_RETRY_AFTER_SECONDS

QUERY = "the two-minute spot interruption notice"
TOP_HIT = "spot-interruption-notice"  # what the corpus (spothub/sandbox/search_corpus.jsonl) is about
VOLUME_ZONE = "us-west-2a"
LAUNCH_S = 60.0  # real seconds a launch may take: a few at the search pace (about 12 at the clock's own speed)
IN_PROGRESS = "Cannot scale up: instance launch already in progress"
ALREADY_THERE = "Cannot scale up: already have an instance"
BUSY = "Cannot terminate: instance is busy"


@pytest.fixture
def search(fresh_sandbox: Sandbox) -> Iterator[Sandbox]:
    """The fresh sandbox; after the test, nothing the search functions ran asynchronously failed (a rule's delivery
    to the monitor, an asynchronous invocation)."""
    if fresh_sandbox.search_volume_id is None:
        pytest.skip("the sandbox's deployment has no search part")
    with drive.search_pace(fresh_sandbox):
        yield fresh_sandbox
    failures = [e.summary for e in fresh_sandbox.timeline if e.kind == "failure"]
    assert not failures, failures


def _launched(sandbox: Sandbox) -> SearchInstance:
    """Scale up from zero and wait until the instance serves."""
    answer = drive.scale_up(sandbox)
    assert answer.status_code == 200, answer.text
    launch_id = answer.json()["launched_instances"][0]["launch_id"]
    return drive.wait_until_serving(sandbox, launch_id=launch_id, timeout_s=LAUNCH_S)


def _answers_from(sandbox: Sandbox, instance_id: str) -> dict[str, Any]:
    answer = drive.query(sandbox, QUERY)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["instance_id"] == instance_id
    assert body["results"] and body["results"][0]["id"] == TOP_HIT, body["results"]
    return body


def _gone(sandbox: Sandbox, instance_id: str) -> bool:
    return drive.instance_state(sandbox, instance_id) in ("shutting-down", "terminated")


def _timeline_index(sandbox: Sandbox, kind: str, text: str) -> int:
    return next(i for i, e in enumerate(list(sandbox.timeline)) if e.kind == kind and text in e.summary)


# --- 1. from zero ------------------------------------------------------------------------------------------------


def test_a_query_from_zero_answers_503_and_launches_one_spot_instance_in_the_volume_zone_that_then_answers(
    search: Sandbox,
) -> None:
    sandbox = search
    asked_at = time.time()
    answer = drive.query(sandbox, QUERY)
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == str(SEARCH_RETRY_AFTER_SECONDS)
    assert set(answer.json()) == {"error", "status"}
    assert answer.json()["status"] == SearchStatus.LAUNCHING
    launching = drive.holder(sandbox)
    assert launching is not None and launching.status.launching
    assert [e["name"] for e in drive.launches(sandbox)] == [launching.launch_id]
    again = drive.query(sandbox, QUERY)  # while it launches: 503 again, and no second launch
    assert again.status_code == 503, again.text
    assert again.json()["status"] in (SearchStatus.LAUNCHING, SearchStatus.STARTING)
    assert [e["name"] for e in drive.launches(sandbox)] == [launching.launch_id]

    ready = drive.wait_until_serving(sandbox, launch_id=launching.launch_id, timeout_s=LAUNCH_S)
    assert ready.instance_id is not None
    instance = drive.instance(sandbox, ready.instance_id)
    assert drive.volume(sandbox)["AvailabilityZone"] == VOLUME_ZONE
    assert instance["Placement"]["AvailabilityZone"] == VOLUME_ZONE == ready.availability_zone
    assert instance.get("InstanceLifecycle") == "spot" and ready.capacity_type == "spot"
    tags = drive.tags(sandbox, ready.instance_id)
    assert re.fullmatch(r"semantic-search-\d{8}-\d{6}", tags[SearchTag.NAME]), tags
    named_at = datetime.strptime(tags[SearchTag.NAME], "semantic-search-%Y%m%d-%H%M%S").replace(tzinfo=UTC)
    assert asked_at - 1 <= named_at.timestamp() <= time.time()
    assert tags[SearchTag.SERVICE] == SEARCH_SERVICE
    assert tags[SearchTag.MANAGED_BY] == MANAGED_BY
    assert tags[SearchTag.VOLUME] == sandbox.search_volume_id
    assert drive.volume_holder(sandbox) == ready.instance_id
    assert drive.search_instance_ids(sandbox) == [ready.instance_id]

    sent_at = time.time()
    body = _answers_from(sandbox, ready.instance_id)
    ranked = [hit["id"] for hit in body["results"]]
    assert ranked == drive.expected_ranking(QUERY, 5)  # the service's BM25 over the volume's documents
    scores = [hit["score"] for hit in body["results"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    assert body["total_documents"] == len(CORPUS.read_text(encoding="utf-8").splitlines())
    assert body["timings"]["routing_ms"] > 0 and body["timings"]["service_ms"] is not None

    used = drive.record(sandbox, ready.launch_id)
    assert used is not None
    assert used.status == SearchStatus.IDLE and used.current_requests == 0
    assert used.last_used is not None and sent_at <= used.last_used <= time.time()
    view = drive.status(sandbox)
    assert (view["total_instances"], view["ready_instances"], view["busy_instances"]) == (1, 1, 0)
    (shown,) = view["instances"]
    assert (shown["instance_id"], shown["status"], shown["capacity_type"]) == (ready.instance_id, "idle", "spot")
    assert shown["last_used"] is not None
    assert len(drive.launches(sandbox)) == 1 and len(drive.records(sandbox)) == 1


# --- 2. the lock -------------------------------------------------------------------------------------------------


def test_twenty_concurrent_scale_ups_from_zero_launch_exactly_one_instance(search: Sandbox) -> None:
    sandbox = search
    start = Barrier(20)

    def scale_up() -> requests.Response:
        start.wait()
        return drive.scale_up(sandbox)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: scale_up(), range(20)))

    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [409] * 19, [(a.status_code, a.text) for a in answers]
    (won,) = [a.json() for a in answers if a.status_code == 200]
    assert won["message"] == "Instance launched successfully" and len(won["launched_instances"]) == 1
    launch_id = won["launched_instances"][0]["launch_id"]
    for conflict in (a.json() for a in answers if a.status_code == 409):
        if conflict["error"] == IN_PROGRESS:
            assert set(conflict) == {"error", "launching_instances", "all_instances", "total_instances"}, conflict
            assert [i["launch_id"] for i in conflict["launching_instances"]] == [launch_id]
        else:
            assert conflict["error"] == ALREADY_THERE, conflict
            assert set(conflict) == {"error", "existing_instances", "total_instances"}, conflict
        assert conflict["total_instances"] == 1

    ready = drive.wait_until_serving(sandbox, launch_id=launch_id, timeout_s=LAUNCH_S)
    assert [e["name"] for e in drive.launches(sandbox)] == [launch_id]
    assert [r.launch_id for r in drive.records(sandbox)] == [launch_id]
    assert drive.search_instance_ids(sandbox) == [ready.instance_id]
    there = drive.scale_up(sandbox)  # with the instance up: the other 409
    assert there.status_code == 409 and there.json()["error"] == ALREADY_THERE
    assert [i["instance_id"] for i in there.json()["existing_instances"]] == [ready.instance_id]


def test_twenty_concurrent_queries_from_zero_answer_503_and_start_exactly_one_launch(search: Sandbox) -> None:
    sandbox = search
    start = Barrier(20)

    def ask() -> requests.Response:
        start.wait()
        return drive.query(sandbox, QUERY)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: ask(), range(20)))

    assert [a.status_code for a in answers] == [503] * 20, [(a.status_code, a.text) for a in answers]
    assert {a.headers["Retry-After"] for a in answers} == {str(SEARCH_RETRY_AFTER_SECONDS)}
    launching = drive.holder(sandbox)
    assert launching is not None
    assert [e["name"] for e in drive.launches(sandbox)] == [launching.launch_id]
    assert [r.launch_id for r in drive.records(sandbox)] == [launching.launch_id]
    ready = drive.wait_until_serving(sandbox, launch_id=launching.launch_id, timeout_s=LAUNCH_S)
    assert drive.search_instance_ids(sandbox) == [ready.instance_id]


# --- 3. three missed health checks ---------------------------------------------------------------------------------


def test_three_failed_health_checks_fail_the_instance_and_a_replacement_serves(search: Sandbox) -> None:
    sandbox = search
    old = _launched(sandbox)
    assert old.instance_id is not None
    sandbox.search_health(old.instance_id, healthy=False)

    current = old
    for sweeps in range(1, SEARCH_HEALTH_MISSES + 1):
        drive.sweep(sandbox)
        current = drive.record(sandbox, old.launch_id) or current
        if not current.status.routable:
            break
        # Still routed to until the third miss (the schedule's own sweep may have counted one more).
        assert sweeps <= current.health_failures < SEARCH_HEALTH_MISSES, current
    # Failed, then (in the same sweep, once its replacement holds the slot) terminating: the reason and the misses
    # stay on the record. The sweep that failed it may be the schedule's, still starting the replacement when the
    # test's own sweep (which lost the move to failed) returned: wait for it to end the record.
    assert current.reason == EndReason.UNHEALTHY, current
    current = drive.wait_for_record(
        sandbox,
        lambda r: r.status in (SearchStatus.TERMINATING, SearchStatus.TERMINATED),
        launch_id=old.launch_id,
        timeout_s=20,
    )
    assert current.reason == EndReason.UNHEALTHY, current
    assert current.health_failures == SEARCH_HEALTH_MISSES

    replacement = drive.holder(sandbox)
    assert replacement is not None and replacement.replaces == old.launch_id
    new = drive.wait_until_serving(sandbox, launch_id=replacement.launch_id, timeout_s=LAUNCH_S)
    assert new.instance_id not in (None, old.instance_id)
    assert sandbox.wait_for(lambda: _gone(sandbox, old.instance_id), timeout_s=10)
    assert drive.volume_holder(sandbox) == new.instance_id
    _answers_from(sandbox, new.instance_id)

    drive.sweep(sandbox)  # the old instance is terminated in EC2: its record too
    ended = drive.wait_for_record(sandbox, lambda r: r.status == SearchStatus.TERMINATED, launch_id=old.launch_id)
    assert ended.reason == EndReason.UNHEALTHY
    assert drive.search_instance_ids(sandbox) == [new.instance_id]
    assert [e["name"] for e in drive.launches(sandbox)] == [old.launch_id, new.launch_id]


# --- 4. idleness ---------------------------------------------------------------------------------------------------


def test_an_instance_idle_for_the_idle_timeout_is_retired_by_the_next_sweep(search: Sandbox) -> None:
    sandbox = search
    assert int(drive.settings(sandbox)["SPOTHUB_SEARCH_IDLE_TIMEOUT"]) == SEARCH_IDLE_TIMEOUT_SECONDS
    ready = _launched(sandbox)
    assert ready.instance_id is not None
    _answers_from(sandbox, ready.instance_id)
    used = drive.record(sandbox, ready.launch_id)
    assert used is not None and used.last_used is not None

    drive.sweep(sandbox)  # used a moment ago: kept
    kept = drive.record(sandbox, ready.launch_id)
    assert kept is not None and kept.status == SearchStatus.IDLE, kept

    sandbox.clock.advance(max(0.0, used.last_used + SEARCH_IDLE_TIMEOUT_SECONDS - sandbox.clock.now()) + 1)
    drive.sweep(sandbox)
    retired = drive.wait_for_record(
        sandbox,
        lambda r: not r.status.live or r.status == SearchStatus.TERMINATING,
        launch_id=ready.launch_id,
        timeout_s=10,
    )
    assert retired.reason == EndReason.IDLE, retired
    assert retired.ended_at is not None and retired.ended_at - used.last_used >= SEARCH_IDLE_TIMEOUT_SECONDS
    assert sandbox.wait_for(lambda: _gone(sandbox, ready.instance_id), timeout_s=10)
    assert sandbox.wait_for(lambda: drive.volume(sandbox)["State"] == "available", timeout_s=10)
    assert drive.slot(sandbox).launch_id is None
    # Shutting down until a sweep sees it terminated: the schedule's own sweeps, which the advance fired too, may have.
    shown = [(i["instance_id"], i["status"]) for i in drive.status(sandbox)["instances"]]
    assert shown in ([(ready.instance_id, SearchStatus.TERMINATING)], []), shown

    drive.sweep(sandbox)
    drive.wait_for_record(sandbox, lambda r: r.status == SearchStatus.TERMINATED, launch_id=ready.launch_id)
    view = drive.status(sandbox)
    assert (view["total_instances"], view["instances"]) == (0, [])
    assert len(drive.launches(sandbox)) == 1  # retired, not replaced: the next query launches


# --- 5. interruption -----------------------------------------------------------------------------------------------


def test_an_interruption_warning_replaces_the_instance_and_the_replacement_takes_the_volume(search: Sandbox) -> None:
    sandbox = search
    old = _launched(sandbox)
    assert old.instance_id is not None and old.capacity_type == "spot"
    warned = requests.post(f"{sandbox.control_url}instances/{old.instance_id}/interrupt", timeout=10)
    assert warned.status_code == 200, warned.text
    fleet_instance = sandbox.fleet.instances[old.instance_id]  # type: ignore[union-attr]
    reclaimed_at = fleet_instance.terminate_at
    assert reclaimed_at is not None

    interrupted = drive.wait_for_record(
        sandbox, lambda r: r.reason == EndReason.INTERRUPTED, launch_id=old.launch_id, timeout_s=15
    )
    assert interrupted.status in (SearchStatus.TERMINATING, SearchStatus.TERMINATED)
    replacement = drive.holder(sandbox)
    assert replacement is not None and replacement.replaces == old.launch_id
    # The monitor terminated the warned instance, before the two minutes of the warning were up.
    assert sandbox.wait_for(lambda: _gone(sandbox, old.instance_id), timeout_s=10)
    assert sandbox.clock.now() < reclaimed_at
    assert fleet_instance.state == "terminated"

    new = drive.wait_until_serving(sandbox, launch_id=replacement.launch_id, timeout_s=LAUNCH_S)
    assert new.instance_id not in (None, old.instance_id)
    assert new.availability_zone == VOLUME_ZONE
    assert drive.volume_holder(sandbox) == new.instance_id
    # Attached to the replacement once the warned instance had let it go.
    assert _timeline_index(sandbox, "detached", f"from {old.instance_id}") < _timeline_index(
        sandbox, "attached", f"to {new.instance_id}"
    )
    _answers_from(sandbox, new.instance_id)
    assert drive.search_instance_ids(sandbox) == [new.instance_id]
    drive.sweep(sandbox)  # the warned instance is gone: its record is ended for good, the replacement stays
    ended = drive.wait_for_record(sandbox, lambda r: r.status == SearchStatus.TERMINATED, launch_id=old.launch_id)
    assert ended.reason == EndReason.INTERRUPTED
    still = drive.holder(sandbox)
    assert still is not None and still.launch_id == new.launch_id


# --- 6. no spot capacity -------------------------------------------------------------------------------------------


def test_without_spot_capacity_in_the_volume_zone_the_instance_is_launched_on_demand_there(search: Sandbox) -> None:
    sandbox = search
    set_zone = requests.post(
        f"{sandbox.control_url}market/zone",
        json={"zone": VOLUME_ZONE, "instance_type": drive.instance_type(sandbox), "capacity": 0},
        timeout=10,
    )
    assert set_zone.status_code == 200, set_zone.text

    ready = _launched(sandbox)
    assert ready.instance_id is not None
    assert ready.capacity_type == "on-demand" and ready.availability_zone == VOLUME_ZONE
    instance = drive.instance(sandbox, ready.instance_id)
    assert "InstanceLifecycle" not in instance
    assert instance["Placement"]["AvailabilityZone"] == VOLUME_ZONE
    assert drive.volume_holder(sandbox) == ready.instance_id
    assert drive.search_instance_ids(sandbox) == [ready.instance_id]  # the refused spot launch left nothing
    steps = drive.launch_steps(sandbox, ready.launch_id)
    assert steps[:4] == ["Place", "PurchaseOption", "LaunchSpot", "LaunchOnDemand"], steps
    assert drive.launch_error(sandbox, ready.launch_id, "LaunchSpot") == "CapacityError"
    pools = sandbox.market.pools(sandbox.search_region, [drive.instance_type(sandbox)])  # type: ignore[union-attr]
    assert {p.zone: p.in_use for p in pools} == {VOLUME_ZONE: 0, "us-west-2b": 0, "us-west-2c": 0}
    _answers_from(sandbox, ready.instance_id)


# --- 7. scale-down -------------------------------------------------------------------------------------------------


def test_scale_down_is_refused_while_busy_and_terminates_when_idle_and_an_unknown_instance_is_404(
    search: Sandbox,
) -> None:
    sandbox = search
    ready = _launched(sandbox)
    assert ready.instance_id is not None
    # A query in flight, counted in as the API counts it (the sandbox runs one function invocation at a time: a real
    # query cannot be held open while the scale-down is answered).
    assert drive.begin_query(sandbox, ready.launch_id).status == SearchStatus.BUSY
    for refused in (drive.scale_down(sandbox), drive.terminate(sandbox, ready.instance_id)):
        assert refused.status_code == 409, refused.text
        assert refused.json() == {"error": BUSY, "total_instances": 1}
    busy = drive.record(sandbox, ready.launch_id)
    assert busy is not None and (busy.status, busy.current_requests) == (SearchStatus.BUSY, 1)
    assert drive.instance_state(sandbox, ready.instance_id) == "running"

    assert drive.end_query(sandbox, ready.launch_id).status == SearchStatus.IDLE
    answer = drive.scale_down(sandbox)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "message": "Service shut down",
        "terminated_instances": [ready.instance_id],
        "total_instances": 0,
    }
    ended = drive.record(sandbox, ready.launch_id)
    assert ended is not None and (ended.status, ended.reason) == (SearchStatus.TERMINATING, EndReason.SCALE_DOWN)
    assert sandbox.wait_for(lambda: _gone(sandbox, ready.instance_id), timeout_s=10)
    assert drive.volume(sandbox)["State"] == "available"
    assert drive.slot(sandbox).launch_id is None

    unknown = drive.terminate(sandbox, "i-0123456789abcdef0")
    assert unknown.status_code == 404, unknown.text

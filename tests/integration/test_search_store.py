"""The search table's slot and launch records against moto: one holder of the slot under concurrency, the
conditional status moves, queries counted in and out, health misses counted."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from spothub_core.dal.search_store import SearchStore
from spothub_core.models.search_records import EndReason, SearchInstance, SearchStatus
from tests.integration.batch_fixtures import atomic_items
from tests.integration.search_fixtures import search_table_fixture  # noqa: F401 (registered as search_table)

NOW = 1_800_000_000.0


def _record(launch_id: str = "l-1", status: SearchStatus = SearchStatus.READY) -> SearchInstance:
    return SearchInstance(
        launch_id=launch_id, status=status, volume_id="vol-0abc", instance_id="i-0123456789abcdef0", created_at=NOW
    )


def test_twenty_concurrent_claims_leave_one_holder(search_table: Any) -> None:
    store = SearchStore(search_table)
    with atomic_items(), ThreadPoolExecutor(20) as pool:
        won = list(pool.map(lambda n: store.claim_slot(f"l-{n}", NOW), range(20)))
    assert won.count(True) == 1
    assert store.slot().launch_id == f"l-{won.index(True)}"


def test_release_and_transfer_only_by_the_holder(search_table: Any) -> None:
    store = SearchStore(search_table)
    assert store.claim_slot("l-1", NOW)
    assert not store.release_slot("l-2")
    assert not store.transfer_slot("l-2", "l-3", NOW)
    assert store.transfer_slot("l-1", "l-3", NOW)
    assert store.slot().launch_id == "l-3"
    assert not store.release_slot("l-1")  # a late release of the replaced launch frees nothing
    assert store.release_slot("l-3")
    assert store.slot().launch_id is None
    assert store.claim_slot("l-4", NOW)


def test_create_once_and_conditional_update(search_table: Any) -> None:
    store = SearchStore(search_table)
    assert store.create(_record())
    assert not store.create(_record())
    assert store.update("l-1", {"status": SearchStatus.FAILED}, expected=(SearchStatus.STARTING,)) is None
    moved = store.update("l-1", {"status": SearchStatus.IDLE, "private_ip": "10.0.0.5"}, expected=(SearchStatus.READY,))
    assert moved is not None and moved.status == SearchStatus.IDLE and moved.private_ip == "10.0.0.5"
    assert store.by_instance("i-0123456789abcdef0").launch_id == "l-1"
    assert store.update("l-missing", {"status": SearchStatus.IDLE}) is None


def test_queries_in_flight_make_busy_then_idle_and_block_termination(search_table: Any) -> None:
    store = SearchStore(search_table)
    store.create(_record())
    assert store.begin_request("l-1", NOW).current_requests == 1
    assert store.begin_request("l-1", NOW).status == SearchStatus.BUSY
    assert store.terminate_if_quiet("l-1", EndReason.SCALE_DOWN, NOW) is None
    assert store.end_request("l-1", NOW + 1).status == SearchStatus.BUSY
    done = store.end_request("l-1", NOW + 2)
    assert (done.status, done.current_requests, done.last_used) == (SearchStatus.IDLE, 0, NOW + 2)
    ended = store.terminate_if_quiet("l-1", EndReason.SCALE_DOWN, NOW + 3)
    assert ended.status == SearchStatus.TERMINATING and ended.reason == EndReason.SCALE_DOWN
    assert store.begin_request("l-1", NOW + 4) is None  # never routed to again


def test_health_misses_count_and_a_pass_resets(search_table: Any) -> None:
    store = SearchStore(search_table)
    store.create(_record())
    store.record_health("l-1", False, NOW, "connection refused")
    missed = store.record_health("l-1", False, NOW + 60)
    assert missed.health_failures == 2 and missed.error == "no answer"
    passed = store.record_health("l-1", True, NOW + 120)
    assert passed.health_failures == 0 and passed.error is None
    store.end("l-1", SearchStatus.TERMINATED, EndReason.IDLE, NOW + 130)
    assert store.record_health("l-1", False, NOW + 180) is None
    assert store.live() == []

"""The search instance's state rules (spothub_core.logic.search_rules) as pure functions: idle, maximum runtime,
health misses, a stale launch, an instance gone and a termination done, each at and around its limit."""

from __future__ import annotations

from typing import Any

import pytest

from spothub_core.logic.search_rules import (
    UNKNOWN_GRACE_SECONDS,
    SearchLimits,
    idle_since,
    instance_gone,
    is_idle,
    over_max_runtime,
    stale_launch,
    termination_done,
    unhealthy,
)
from spothub_core.models.search_records import SearchInstance, SearchStatus
from spothub_core.timings import SEARCH_HEALTH_MISSES, SEARCH_STALE_LAUNCH_SECONDS

NOW = 1_800_000_000.0
IDLE = 1800
MAX_RUNTIME = 3600
LIMITS = SearchLimits(idle_timeout_s=IDLE, max_runtime_s=MAX_RUNTIME)


def record(status: SearchStatus = SearchStatus.READY, **fields: Any) -> SearchInstance:
    defaults: dict[str, Any] = {
        "launch_id": "s-1",
        "volume_id": "vol-0dec0de5eadc0ffee",
        "instance_id": "i-0123456789abcdef0",
        "created_at": NOW - 10_000,
        "started_at": NOW - 9_000,
        "ready_at": NOW - 8_000,
    }
    return SearchInstance(status=status, **{**defaults, **fields})


# --- idle -------------------------------------------------------------------------------------------------------


def test_idle_counts_from_the_last_query() -> None:
    used = record(SearchStatus.IDLE, last_used=NOW - IDLE)
    assert idle_since(used) == NOW - IDLE
    assert is_idle(used, NOW, LIMITS)  # exactly at the limit
    assert not is_idle(used, NOW - 1, LIMITS)  # a second before it
    assert is_idle(used, NOW + 1, LIMITS)


def test_a_never_used_instance_is_idle_from_its_readiness() -> None:
    fresh = record(SearchStatus.READY, ready_at=NOW - IDLE, last_used=None)
    assert idle_since(fresh) == NOW - IDLE
    assert is_idle(fresh, NOW, LIMITS)
    assert not is_idle(fresh, NOW - 1, LIMITS)


def test_idle_falls_back_to_the_start_then_the_creation() -> None:
    assert idle_since(record(ready_at=None, last_used=None)) == NOW - 9_000
    assert idle_since(record(ready_at=None, last_used=None, started_at=None)) == NOW - 10_000


@pytest.mark.parametrize(
    ("status", "current_requests"),
    [(SearchStatus.BUSY, 1), (SearchStatus.BUSY, 0), (SearchStatus.IDLE, 2)],
)
def test_a_busy_instance_is_never_idle(status: SearchStatus, current_requests: int) -> None:
    busy = record(status, last_used=NOW - 10 * IDLE, current_requests=current_requests)
    assert not is_idle(busy, NOW, LIMITS)


@pytest.mark.parametrize(
    "status",
    [SearchStatus.LAUNCHING, SearchStatus.STARTING, SearchStatus.FAILED, SearchStatus.TERMINATING],
)
def test_only_a_routable_instance_is_idle(status: SearchStatus) -> None:
    assert not is_idle(record(status, last_used=NOW - 10 * IDLE), NOW, LIMITS)


# --- max runtime -------------------------------------------------------------------------------------------------


def test_max_runtime_counts_from_the_start() -> None:
    running = record(SearchStatus.BUSY, started_at=NOW - MAX_RUNTIME, current_requests=1)
    assert over_max_runtime(running, NOW, LIMITS)  # exactly at the limit; busy or not (the retirement waits)
    assert not over_max_runtime(running, NOW - 1, LIMITS)


def test_a_max_runtime_of_zero_is_no_limit() -> None:
    forever = SearchLimits(idle_timeout_s=IDLE, max_runtime_s=0)
    assert not over_max_runtime(record(started_at=NOW - 365 * 86_400), NOW, forever)


def test_max_runtime_needs_a_start_and_a_routable_instance() -> None:
    assert not over_max_runtime(record(started_at=None), NOW, LIMITS)
    assert not over_max_runtime(record(SearchStatus.STARTING, started_at=NOW - 10 * MAX_RUNTIME), NOW, LIMITS)


# --- health ------------------------------------------------------------------------------------------------------


def test_three_misses_make_an_instance_unhealthy() -> None:
    assert SEARCH_HEALTH_MISSES == 3
    assert not unhealthy(record(health_failures=SEARCH_HEALTH_MISSES - 1), LIMITS)
    assert unhealthy(record(health_failures=SEARCH_HEALTH_MISSES), LIMITS)
    assert unhealthy(record(SearchStatus.BUSY, health_failures=SEARCH_HEALTH_MISSES + 1), LIMITS)


def test_an_instance_already_failed_or_ended_is_not_unhealthy_again() -> None:
    for status in (SearchStatus.FAILED, SearchStatus.TERMINATING, SearchStatus.STARTING):
        assert not unhealthy(record(status, health_failures=5), LIMITS)


# --- stale launches -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [SearchStatus.LAUNCHING, SearchStatus.STARTING])
def test_a_launch_goes_stale_at_the_limit_from_its_creation(status: SearchStatus) -> None:
    launch = record(status, created_at=NOW - SEARCH_STALE_LAUNCH_SECONDS)
    assert stale_launch(launch, NOW, LIMITS)
    assert not stale_launch(launch, NOW - 1, LIMITS)


def test_a_ready_instance_is_never_a_stale_launch() -> None:
    assert not stale_launch(record(SearchStatus.READY, created_at=NOW - 10 * SEARCH_STALE_LAUNCH_SECONDS), NOW, LIMITS)


# --- EC2's view ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "gone"), [("terminated", True), ("shutting-down", True), ("running", False)])
def test_an_instance_is_gone_by_its_state(state: str, gone: bool) -> None:
    assert instance_gone(record(), state, NOW) is gone


def test_an_instance_ec2_does_not_know_is_gone_after_a_grace() -> None:
    launched = record(SearchStatus.STARTING, started_at=NOW - UNKNOWN_GRACE_SECONDS)
    assert instance_gone(launched, None, NOW)
    assert not instance_gone(launched, None, NOW - 1)  # just launched: EC2 may not list it yet
    assert not instance_gone(record(SearchStatus.LAUNCHING, instance_id=None), None, NOW)


def test_a_termination_is_done_when_ec2_says_terminated_or_forgot_it() -> None:
    ending = record(SearchStatus.TERMINATING)
    assert termination_done(ending, "terminated", NOW, LIMITS)
    assert termination_done(ending, None, NOW, LIMITS)
    assert not termination_done(ending, "shutting-down", NOW, LIMITS)
    assert not termination_done(ending, "running", NOW, LIMITS)


def test_a_termination_before_any_instance_waits_for_its_launch_to_be_over() -> None:
    ending = record(SearchStatus.TERMINATING, instance_id=None, created_at=NOW - SEARCH_STALE_LAUNCH_SECONDS)
    assert termination_done(ending, None, NOW, LIMITS)
    assert not termination_done(ending, None, NOW - 1, LIMITS)

"""The restart backoff of a deployment's replica slot (spothub_core.logic.restart_backoff): the first failure restarts
at once, then 30 s doubling up to the cap, the slot gives up after DEPLOYMENT_MAX_RESTARTS restarts in a row, and a
long healthy run starts the count over."""

from __future__ import annotations

import pytest

from spothub_core.logic.restart_backoff import failures_after, gives_up, resets, restart_delay
from spothub_core.timings import (
    DEPLOYMENT_MAX_RESTARTS,
    DEPLOYMENT_RESTART_BASE_SECONDS,
    DEPLOYMENT_RESTART_CAP_SECONDS,
    DEPLOYMENT_RESTART_RESET_SECONDS,
)

NOW = 1_700_000_000.0


def test_the_first_failure_restarts_at_once_then_the_delay_doubles_from_the_base() -> None:
    assert DEPLOYMENT_RESTART_BASE_SECONDS == 30
    assert [restart_delay(n) for n in range(1, 6)] == [0, 30, 60, 120, 240]


def test_the_delay_never_passes_the_cap() -> None:
    delays = [restart_delay(n) for n in range(1, 200)]
    assert max(delays) == DEPLOYMENT_RESTART_CAP_SECONDS
    assert delays == sorted(delays)
    assert restart_delay(7) == min(DEPLOYMENT_RESTART_CAP_SECONDS, 30 * 2**5)
    assert restart_delay(10_000) == DEPLOYMENT_RESTART_CAP_SECONDS


def test_base_and_cap_can_be_given() -> None:
    assert [restart_delay(n, base=10, cap=35) for n in range(1, 6)] == [0, 10, 20, 35, 35]


@pytest.mark.parametrize("failures", [0, -1])
def test_a_failure_is_counted_from_one(failures: int) -> None:
    with pytest.raises(ValueError, match="counted from 1"):
        restart_delay(failures)


def test_the_slot_gives_up_once_its_restarts_in_a_row_are_spent() -> None:
    assert DEPLOYMENT_MAX_RESTARTS == 5
    assert [gives_up(n) for n in range(1, 8)] == [False] * 5 + [True] * 2
    assert not gives_up(2, max_restarts=2)
    assert gives_up(3, max_restarts=2)


def test_a_task_healthy_for_the_reset_period_wipes_its_slots_count() -> None:
    assert not resets(None, NOW)
    assert not resets(NOW - DEPLOYMENT_RESTART_RESET_SECONDS + 1, NOW)
    assert resets(NOW - DEPLOYMENT_RESTART_RESET_SECONDS, NOW)  # the limit is reached at its boundary
    assert resets(NOW - 61, NOW, reset_after=60)


def test_failures_after_counts_one_more_unless_the_task_ran_healthy_long_enough() -> None:
    assert failures_after(0, None, NOW) == 1
    assert failures_after(3, None, NOW) == 4
    assert failures_after(3, NOW - 30, NOW) == 4
    assert failures_after(4, NOW - DEPLOYMENT_RESTART_RESET_SECONDS, NOW) == 1

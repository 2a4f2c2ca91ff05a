"""When a replica slot whose task stopped unexpectedly starts again, and when it gives up: pure rules, no I/O.

A slot counts its consecutive failures (DeploymentTask.failures, carried from a task to its replacement). The n-th
failure in a row restarts the slot after `restart_delay(n)`: the first at once (a crash is most often a one-off),
then DEPLOYMENT_RESTART_BASE_SECONDS doubling (30 s, 60 s, 120 s, ...), at most DEPLOYMENT_RESTART_CAP_SECONDS.
After DEPLOYMENT_MAX_RESTARTS restarts in a row the next failure gives the slot up. A task that has been healthy
for DEPLOYMENT_RESTART_RESET_SECONDS wipes its slot's count: its next failure is a first one again.
"""

from __future__ import annotations

from spothub_core.timings import (
    DEPLOYMENT_MAX_RESTARTS,
    DEPLOYMENT_RESTART_BASE_SECONDS,
    DEPLOYMENT_RESTART_CAP_SECONDS,
    DEPLOYMENT_RESTART_RESET_SECONDS,
)


def gives_up(failures: int, *, max_restarts: int = DEPLOYMENT_MAX_RESTARTS) -> bool:
    """Whether the `failures`-th consecutive failure of a slot gives it up: it has been restarted max_restarts
    times in a row already."""
    return failures > max_restarts


def restart_delay(
    failures: int,
    *,
    base: float = DEPLOYMENT_RESTART_BASE_SECONDS,
    cap: float = DEPLOYMENT_RESTART_CAP_SECONDS,
) -> float:
    """Seconds before the slot's task starts again after its `failures`-th consecutive failure (1: at once)."""
    if failures < 1:
        raise ValueError(f"a failure is counted from 1, not {failures}")
    if failures == 1:
        return 0.0
    # 2**(n-2) grows without bound; beyond 2**30 the cap has long been reached.
    return float(min(cap, base * 2 ** min(failures - 2, 30)))


def resets(healthy_at: float | None, now: float, *, reset_after: float = DEPLOYMENT_RESTART_RESET_SECONDS) -> bool:
    """Whether a task healthy since `healthy_at` (and still healthy) has been so long enough to wipe its slot's
    consecutive failures."""
    return healthy_at is not None and now - healthy_at >= reset_after


def failures_after(
    failures: int, healthy_at: float | None, now: float, *, reset_after: float = DEPLOYMENT_RESTART_RESET_SECONDS
) -> int:
    """The slot's consecutive failures counting one more now, for a task that carried `failures` and was healthy
    since `healthy_at` (None: never) until it failed: a long healthy run starts the count over."""
    return 1 if resets(healthy_at, now, reset_after=reset_after) else failures + 1

"""Exponential backoff with full jitter, capped: after the n-th failure in a row, wait a uniformly random
time in [0, min(cap, base * 2**n)], so a fleet of agents whose API went away does not return in step."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(self, base_s: float, cap_s: float, rand: Callable[[], float] = random.random) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base_s} cap={cap_s}")
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0
        self._rand = rand

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next attempt."""
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.failures, 62))
        self.failures += 1
        return self._rand() * ceiling

    def reset(self) -> None:
        self.failures = 0

"""Ids of deployments, tasks and scaling events: they sort by creation time (the table lists them in id order)."""

from __future__ import annotations

import secrets

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(number: int, width: int) -> str:
    out = ""
    while number:
        number, digit = divmod(number, 36)
        out = _DIGITS[digit] + out
    return out.rjust(width, "0")


def _stamp(now: float) -> str:
    """Milliseconds since the epoch, 9 base-36 digits (good until the year 5188): sorts as time does."""
    return _base36(int(now * 1000), 9)


def new_deployment_id(now: float) -> str:
    """`d-<time><6 random>`: matches models.deployment_api.DEPLOYMENT_ID_PATTERN."""
    return f"d-{_stamp(now)}{_base36(secrets.randbelow(36**6), 6)}"


def new_task_id(now: float) -> str:
    return f"t-{_stamp(now)}{_base36(secrets.randbelow(36**6), 6)}"


def new_event_id(now: float) -> str:
    return f"e-{_stamp(now)}{_base36(secrets.randbelow(36**4), 4)}"

"""The replay's policies, registered by name in the order the reports list them."""

from __future__ import annotations

from spothub.replay.policies import baselines, hedge, production, standby
from spothub.replay.policies.base import POLICIES, Policy, register

__all__ = ["POLICIES", "Policy", "baselines", "hedge", "make_policy", "production", "register", "standby"]


def make_policy(name: str) -> Policy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}") from None

"""A replay policy: a named strategy that decides at every stop of the replay.

The simulator calls `start` once, the `on_*` hooks as instances become ready, are warned and are
preempted, then `decide` at every stop (each tick, each event, each requested wake-up). Hooks note
what happened and may terminate instances; launches belong in `decide`, which follows at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, TypeVar

if TYPE_CHECKING:
    from spothub.replay.simulator import Instance, Simulator


class Policy:
    name: ClassVar[str]

    def start(self, sim: Simulator) -> None:
        """Called once before the first tick."""

    def decide(self, sim: Simulator) -> None:
        raise NotImplementedError

    def on_ready(self, sim: Simulator, instance: Instance) -> None:
        """`instance` finished its cold start."""

    def on_warning(self, sim: Simulator, instance: Instance) -> None:
        """`instance` got its interruption warning; it ends `WARNING_S` from now."""

    def on_preempted(self, sim: Simulator, instance: Instance) -> None:
        """`instance` was taken back by the market."""


POLICIES: dict[str, type[Policy]] = {}
P = TypeVar("P", bound=type[Policy])


def register(cls: P) -> P:
    if cls.name in POLICIES:
        raise ValueError(f"a policy named {cls.name!r} is already registered")
    POLICIES[cls.name] = cls
    return cls

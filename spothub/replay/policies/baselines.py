"""What a user would pick without spothub: on-demand, a spot group in one zone, or a rule of thumb."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spothub.replay.policies.base import Policy, register
from spothub.sandbox.market import region_of

if TYPE_CHECKING:
    from spothub.replay.simulator import Instance, Simulator


@register
class OnDemand(Policy):
    """N on-demand instances for the whole trace: the reference cost."""

    name = "on-demand"

    def decide(self, sim: Simulator) -> None:
        for _ in range(sim.replicas - len(sim.live)):
            sim.launch_on_demand(sim.view.regions[0])


@register
class SingleZoneSpot(Policy):
    """A plain Auto Scaling group in the cheapest zone: relaunch there whenever an instance is gone."""

    name = "single-zone-spot"

    def __init__(self) -> None:
        self.zone: str | None = None

    def start(self, sim: Simulator) -> None:
        self.zone = min(sim.view.zones, key=lambda z: (sim.view.spot_price(region_of(z)), z))

    def decide(self, sim: Simulator) -> None:
        for _ in range(sim.replicas - len(sim.live)):
            if self.zone is None or sim.launch_spot(region_of(self.zone), self.zone) is None:
                return


@register
class RuleOfThumb(Policy):
    """Spot in the region with the highest placement score, cheapest on a tie. It stays there until a
    launch fails (then the next best region) or an instance is preempted (then the best other region);
    it neither acts on interruption warnings nor falls back to on-demand."""

    name = "rule-of-thumb"

    def __init__(self) -> None:
        self.region: str | None = None

    def _ranked(self, sim: Simulator) -> list[str]:
        view = sim.view
        return sorted(view.regions, key=lambda r: (-view.region_score(r, sim.replicas), view.spot_price(r), r))

    def decide(self, sim: Simulator) -> None:
        missing = sim.replicas - len(sim.live)
        if missing <= 0:
            return
        if self.region is None:
            self.region = self._ranked(sim)[0]
        tried: set[str] = set()
        while missing > 0:
            if sim.launch_spot(self.region) is not None:
                missing -= 1
                continue
            tried.add(self.region)
            untried = [r for r in self._ranked(sim) if r not in tried]
            if not untried:
                return  # nothing anywhere: look again at the next tick
            self.region = untried[0]

    def on_preempted(self, sim: Simulator, instance: Instance) -> None:
        others = [r for r in self._ranked(sim) if r != instance.region]
        self.region = others[0] if others else instance.region

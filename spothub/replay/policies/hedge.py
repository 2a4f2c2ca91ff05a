"""SpotHedge, after SkyServe (Mao et al., "SkyServe: Serving AI Models across Regions and Clouds with
Spot Instances", EuroSys 25): spot replicas spread over zones of several regions, a few more than
needed, and on-demand replicas covering whatever spot cannot.

- Dynamic placement: zones are active or preemptive. A preemption (at its warning) or a capacity
  error makes a zone preemptive; a replica becoming ready there makes it active again. New spot
  replicas go to active zones, the region and zone with the fewest replicas first, cheapest on a
  tie; when no zone is active, every zone is active again.
- Dynamic fallback: N + `extra` spot replicas are kept launched; on-demand replicas cover the gap
  between N and the ready spot replicas, and are terminated when spot covers N again.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from spothub.replay.policies.base import Policy, register
from spothub.replay.simulator import ON_DEMAND, SPOT
from spothub.sandbox.market import region_of

if TYPE_CHECKING:
    from spothub.replay.simulator import Instance, Simulator

OVERPROVISION = 1  # SkyServe's default num_overprovision


@register
class Hedge(Policy):
    name = "hedge"

    def __init__(self, extra: int = OVERPROVISION) -> None:
        self.extra = extra
        self.preemptive: set[str] = set()

    def decide(self, sim: Simulator) -> None:
        live = sim.live
        spot = [i for i in live if i.kind == SPOT and not i.at_risk]
        self._launch_spot(sim, spot)
        ready_spot = sum(1 for i in spot if i.ready)
        on_demand = [i for i in live if i.kind == ON_DEMAND]
        needed = max(0, sim.replicas - ready_spot)
        for _ in range(needed - len(on_demand)):
            sim.launch_on_demand(sim.view.regions[0])
        if len(on_demand) > needed:
            # Those still starting go first, then the newest.
            surplus = sorted(on_demand, key=lambda i: (i.ready, -i.launched_at))[: len(on_demand) - needed]
            for instance in surplus:
                sim.terminate(instance)

    def _launch_spot(self, sim: Simulator, spot: list[Instance]) -> None:
        tried: set[str] = set()
        while len(spot) < sim.replicas + self.extra:
            zone = self._next_zone(sim, spot, tried)
            if zone is None:
                return
            instance = sim.launch_spot(region_of(zone), zone)
            if instance is None:
                tried.add(zone)
                self.preemptive.add(zone)
            else:
                spot.append(instance)

    def _next_zone(self, sim: Simulator, spot: list[Instance], tried: set[str]) -> str | None:
        zones = [z for z in sim.view.zones if z not in tried]
        active = [z for z in zones if z not in self.preemptive]
        if not active:
            self.preemptive.clear()
            active = zones
        if not active:
            return None
        per_zone = Counter(i.zone for i in spot)
        per_region = Counter(i.region for i in spot)
        return min(active, key=lambda z: (per_region[region_of(z)], per_zone[z], sim.view.spot_price(region_of(z)), z))

    def on_warning(self, sim: Simulator, instance: Instance) -> None:
        if instance.zone is not None:
            self.preemptive.add(instance.zone)

    def on_ready(self, sim: Simulator, instance: Instance) -> None:
        if instance.zone is not None:
            self.preemptive.discard(instance.zone)

"""The policy production runs, driven by the replay instead of Step Functions.

The ranking is production's own code: `rank_regions` from `spothub_core.logic.ranking` (what the
spot finder Lambda calls), with exclusions that last as long as the capacity handler's
(`spothub_core.timings.EXCLUSION_SECONDS`). Around it, the orchestrator's flow
(statemachines/spot_orchestrator.asl.json) per replica:

- FindRegion ranks the regions (placement score, price; the regions of the other replicas left out,
  excluded regions left out) → Launch spot in the best; a capacity error excludes the region and
  ranks again; with no spot region left, on-demand in the best region ignoring exclusions
  (capacityFallback=on-demand, the default); with none at all, wait and look again.
- An interruption warning for a serving instance starts a replacement that prefers the same region
  when it scores as well as the best; the old instance keeps serving until it is preempted or the
  replacement is ready (make before break), then it is retired.
- A warning for an instance still in its cold start is ignored (its replica is not serving on it
  yet): if the instance goes before it is ready, the launch fails, which excludes the region like a
  capacity error; if it is ready first, it serves until it goes, and then the health remediation
  (heartbeat alarm → replacement) starts a replacement; the alarm's delay is not modelled.
- Return to spot: while a replica serves on on-demand, every `SPOT_RETURN_SECONDS` from the moment
  its on-demand instance is recorded (WaitForSpot → LookForSpot) the regions are ranked again with
  exclusions honoured and no on-demand region offered (`spot_only`). When a spot region ranks, a
  spot-only replacement starts (ReturnToSpot), preferring the on-demand instance's region when it
  scores as well as the best: launch spot make before break, retire the on-demand instance when the
  spot one is ready. A capacity error, or a spot instance lost during its launch, excludes the region
  like any failed launch and the next spot region is tried; with none left the replica stays on its
  on-demand instance and the watch starts over (SpotGone): never a second on-demand launch.
- Rebalance recommendations are not modelled: the traces carry no signal for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from spothub.replay.policies.base import Policy, register
from spothub.replay.simulator import ON_DEMAND
from spothub_core.logic.ranking import RegionObservation, rank_regions
from spothub_core.models.records import Exclusion
from spothub_core.timings import CAPACITY_RETRY_SECONDS, EXCLUSION_SECONDS, SPOT_RETURN_SECONDS

if TYPE_CHECKING:
    from spothub.replay.simulator import Instance, Simulator


@dataclass(eq=False)
class Replica:
    id: str
    serving: Instance | None = None
    launching: Instance | None = None
    placing: bool = True  # an orchestrator execution runs for it (first placement or replacement)
    spot_only: bool = False  # that execution is a return to spot: spot or nothing
    prefer: str | None = None
    wait_until: float = 0.0
    next_look: float | None = None  # serving on on-demand: when the watch looks for spot next


@register
class Spothub(Policy):
    name = "spothub"

    def __init__(self, *, on_demand_fallback: bool = True) -> None:
        self.on_demand_fallback = on_demand_fallback
        self.replicas: list[Replica] = []
        self.exclusions: list[Exclusion] = []
        self._owner: dict[int, Replica] = {}

    def start(self, sim: Simulator) -> None:
        self.replicas = [Replica(f"replica-{n}") for n in range(sim.replicas)]

    def decide(self, sim: Simulator) -> None:
        for replica in self.replicas:
            if replica.placing:
                if replica.launching is None and sim.now >= replica.wait_until:
                    self._place(sim, replica)
            elif replica.next_look is not None and sim.now >= replica.next_look:
                self._look_for_spot(sim, replica)

    def _observations(self, sim: Simulator) -> list[RegionObservation]:
        view = sim.view
        self.exclusions = [e for e in self.exclusions if e.until > sim.now]
        return [RegionObservation(r, view.region_score(r), view.spot_price(r)) for r in view.regions]

    def _place(self, sim: Simulator, replica: Replica) -> None:
        now = sim.now
        observations = self._observations(sim)
        occupied = self._occupied(replica)
        while True:
            ranking = rank_regions(
                observations, now=now, exclusions=self.exclusions, occupied=occupied, prefer=replica.prefer
            )
            if ranking.best is not None:
                instance = sim.launch_spot(ranking.best.region)
                if instance is not None:
                    self._launched(replica, instance)
                    return
                self._capacity_error(sim, ranking.best.region)
                continue
            if replica.spot_only:  # SpotGone: keep the on-demand instance, watch again
                replica.placing, replica.spot_only, replica.prefer = False, False, None
                self._watch(sim, replica)
                return
            if self.on_demand_fallback:
                fallback = rank_regions(observations, now=now, occupied=occupied, prefer=replica.prefer).best
                if fallback is not None:
                    self._launched(replica, sim.launch_on_demand(fallback.region))
                    return
            replica.wait_until = now + CAPACITY_RETRY_SECONDS
            sim.wake_at(replica.wait_until)
            return

    def _watch(self, sim: Simulator, replica: Replica) -> None:
        """WaitForSpot: look for spot again in SPOT_RETURN_SECONDS."""
        replica.next_look = sim.now + SPOT_RETURN_SECONDS
        sim.wake_at(replica.next_look)

    def _look_for_spot(self, sim: Simulator, replica: Replica) -> None:
        """LookForSpot (the spot finder, spot only: no preferred region, exclusions honoured) → ReturnToSpot."""
        ranking = rank_regions(
            self._observations(sim), now=sim.now, exclusions=self.exclusions, occupied=self._occupied(replica)
        )
        if ranking.best is None or replica.serving is None:
            self._watch(sim, replica)
            return
        replica.next_look = None
        # A spot-only replacement of the on-demand instance, preferring its region (start_replacement).
        self._start_replacement(sim, replica, replica.serving, spot_only=True)
        self._place(sim, replica)

    def _occupied(self, replica: Replica) -> dict[str, str]:
        occupied = {}
        for other in self.replicas:
            if other is not replica:
                for instance in (other.serving, other.launching):
                    if instance is not None:
                        occupied[instance.region] = other.id
        return occupied

    def _capacity_error(self, sim: Simulator, region: str) -> None:
        """A spot launch into `region` was refused for capacity: the region is excluded."""
        self._exclude(region, sim.now, "capacity error")

    def _exclude(self, region: str, now: float, reason: str) -> None:
        self.exclusions.append(Exclusion(region=region, until=now + EXCLUSION_SECONDS["capacity"], reason=reason))

    def _launched(self, replica: Replica, instance: Instance) -> None:
        replica.launching = instance
        self._owner[instance.id] = replica

    def on_ready(self, sim: Simulator, instance: Instance) -> None:
        replica = self._owner.get(instance.id)
        if replica is None or instance is not replica.launching:
            return
        old, replica.serving, replica.launching = replica.serving, instance, None
        replica.placing, replica.spot_only, replica.prefer = False, False, None
        if old is not None:
            self._owner.pop(old.id, None)
            sim.terminate(old)  # Retire: make before break
        if instance.kind == ON_DEMAND:  # OnDemandPlaced: watch for spot
            self._watch(sim, replica)
        else:
            replica.next_look = None

    def on_warning(self, sim: Simulator, instance: Instance) -> None:
        replica = self._owner.get(instance.id)
        if replica is not None and instance is replica.serving and not replica.placing:
            self._start_replacement(sim, replica, instance)

    def _start_replacement(
        self, sim: Simulator, replica: Replica, instance: Instance, *, spot_only: bool = False
    ) -> None:
        replica.placing, replica.prefer, replica.wait_until = True, instance.region, sim.now
        replica.spot_only = spot_only

    def on_preempted(self, sim: Simulator, instance: Instance) -> None:
        replica = self._owner.pop(instance.id, None)
        if replica is None:
            return
        if instance is replica.serving:
            replica.serving = None
            if not replica.placing:  # its warning came during the cold start and was ignored
                self._start_replacement(sim, replica, instance)
        elif instance is replica.launching:
            replica.launching = None
            self._exclude(instance.region, sim.now, "instance lost during its launch")

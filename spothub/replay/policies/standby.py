"""Production's policy with a warm standby while the risk is high: `spothub-standby`.

Production runs it when the operator switches warm standbys on (`warm_standby` on the provisioning switch): the
capacity handler's minute check and its report consumers call the same functions of
`spothub_core.logic.standby` through `spothub_core.logic.standby_watch`. Where production differs: it tries one
region per check (a refusal comes back as a report), checks every minute and at each signal rather than at
each tick, and samples zone scores every five minutes.

Everything `spothub` does (production.py: ranking, exclusions, on-demand fallback, return to spot, make before
break) plus the standby decisions of `spothub_core.logic.standby`, called as the hub calls them:

- at every stop, for each replica serving on a ready spot instance and not being replaced, `assess_risk` with
  the replica's serving placement, the capacity signals the deployment's own instances and launches gave
  (interruption warnings, capacity errors) and the zones' placement scores seen so far; `wants_standby` says
  whether a standby is kept;
- a standby wanted and none held: `choose_standby_zone` orders the zones, and a spot launch into the region of
  each is tried in turn, a region once; as production's worker group does, the launch takes the region's zone
  with the most spare capacity, off the serving instance's zone while another has some (a refusal is a signal
  for the whole region, and the region is not excluded for the replica: the standby is an extra, the replica's
  own placement goes on as production's);
- a standby held and not wanted: it is terminated (released);
- a warning for the serving instance: a ready standby is promoted at once (it serves, the warned instance is
  retired); one still in its cold start becomes the replacement (production's make before break takes over);
  none: production's replacement;
- a warning for the standby: it is released at once, and the next stop may start another one elsewhere.

The policy sees what production sees: placement scores from the trace's past (`sim.view`), its launches'
errors, its instances' warnings and readiness; never capacity or a later tick.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from spothub.replay.policies.base import register
from spothub.replay.policies.production import Replica, Spothub
from spothub.replay.simulator import SPOT
from spothub.sandbox.market import region_of
from spothub_core.logic.standby import (
    DEFAULT_RULES,
    Capacity,
    CapacitySignal,
    Placement,
    ScoreSample,
    SignalKind,
    StandbyRules,
    ZoneCandidate,
    assess_risk,
    choose_standby_zone,
    wants_standby,
)

if TYPE_CHECKING:
    from spothub.replay.simulator import Instance, Simulator


@register
class SpothubStandby(Spothub):
    name = "spothub-standby"

    def __init__(self, *, rules: StandbyRules = DEFAULT_RULES) -> None:
        super().__init__()
        self.rules = rules
        self.signals: deque[CapacitySignal] = deque()
        # Per zone, its latest placement score (at, score) and the samples that may still be the window's best:
        # scores strictly falling from the oldest, so the first is the best within the window. `falling_score`
        # reads only a zone's best and latest sample, so these two give its answer without a scan of the window.
        self._latest_score: dict[str, tuple[float, int]] = {}
        self._best_scores: dict[str, deque[tuple[float, int]]] = {}
        self.standby: dict[str, Instance] = {}  # replica id -> its standby
        self._standby_of: dict[int, Replica] = {}
        self._from_standby: set[int] = set()  # standbys promoted while still warming up
        self._scored_tick = -1

    # --- what production records ------------------------------------------------------------------------------

    def _signal(self, kind: SignalKind, region: str, zone: str | None, at: float, *, standby: bool = False) -> None:
        self.signals.append(CapacitySignal(kind, region, zone, at, standby=standby))

    def _observe(self, sim: Simulator) -> None:
        """Forget what the rules no longer read; sample each zone's placement score once a tick."""
        horizon = sim.now - max(self.rules.notice_window_s, self.rules.score_window_s)
        while self.signals and self.signals[0].at < horizon:
            self.signals.popleft()
        view = sim.view
        if view.tick == self._scored_tick:
            return
        self._scored_tick = view.tick
        now, replicas, zone_score = sim.now, sim.replicas, view.zone_score
        latest, best_scores = self._latest_score, self._best_scores
        for zone in view.zones:
            score = zone_score(zone, replicas)
            latest[zone] = (now, score)
            best = best_scores.get(zone)
            if best is None:
                best = best_scores[zone] = deque()
            while best and best[-1][1] <= score:
                best.pop()
            best.append((now, score))

    def _score_samples(self, sim: Simulator, region: str) -> list[ScoreSample]:
        """Of each zone of `region`: its best sample within the score window, and its latest."""
        since = sim.now - self.rules.score_window_s
        found = []
        for zone in sim.view.zones_of(region):
            best = self._best_scores[zone]
            while best and best[0][0] < since:
                best.popleft()
            if best:
                found.append(ScoreSample(region, zone, best[0][1], best[0][0]))
            at, score = self._latest_score[zone]
            found.append(ScoreSample(region, zone, score, at))
        return found

    def _capacity_error(self, sim: Simulator, region: str) -> None:
        self._signal(SignalKind.CAPACITY_ERROR, region, None, sim.now)
        super()._capacity_error(sim, region)

    # --- decisions --------------------------------------------------------------------------------------------

    def decide(self, sim: Simulator) -> None:
        self._observe(sim)
        super().decide(sim)
        for replica in self.replicas:
            self._keep_standby(sim, replica)

    def _keep_standby(self, sim: Simulator, replica: Replica) -> None:
        serving, standby = replica.serving, self.standby.get(replica.id)
        wanted: frozenset[Capacity] = frozenset()
        placement = None
        if serving is not None and serving.kind == SPOT and serving.zone is not None and not replica.placing:
            placement = Placement(serving.region, serving.zone, serving.launched_at)
            risk = assess_risk(
                placement,
                signals=self.signals,
                scores=self._score_samples(sim, serving.region),
                now=sim.now,
                rules=self.rules,
            )
            wanted = wants_standby(risk, self.rules)
        if standby is not None and Capacity(standby.kind) not in wanted:
            self._release(sim, replica)
            standby = None
        if standby is None and wanted and placement is not None:
            self._start_standby(sim, replica, placement, wanted)

    def _start_standby(self, sim: Simulator, replica: Replica, serving: Placement, wanted: frozenset[Capacity]) -> None:
        view = sim.view
        candidates = [
            ZoneCandidate(region_of(z), z, self._latest_score[z][1], view.spot_price(region_of(z))) for z in view.zones
        ]
        others = self._occupied(replica)
        tried: set[str] = set()
        for candidate in choose_standby_zone(
            candidates,
            serving=serving,
            signals=self.signals,
            avoid_regions=others,
            now=sim.now,
            rules=self.rules,
        ):
            if candidate.region in tried:
                continue
            tried.add(candidate.region)
            # Production's launch goes to the region's group, which picks the zone: the most spare capacity, off
            # the serving instance's zone while another has some (its zone balance).
            spread_from = serving.zone if candidate.region == serving.region else None
            instance = sim.launch_spot(candidate.region, spread_from=spread_from)
            if instance is not None:
                self.standby[replica.id] = instance
                self._standby_of[instance.id] = replica
                return
            # The group tried every zone of the region: a refusal of the region.
            self._signal(SignalKind.CAPACITY_ERROR, candidate.region, None, sim.now, standby=True)
        if Capacity.ON_DEMAND in wanted:
            instance = sim.launch_on_demand(serving.region)
            self.standby[replica.id] = instance
            self._standby_of[instance.id] = replica

    def _release(self, sim: Simulator, replica: Replica) -> None:
        instance = self.standby.pop(replica.id)
        self._standby_of.pop(instance.id, None)
        sim.terminate(instance)

    # --- what the market says ----------------------------------------------------------------------------------

    def on_warning(self, sim: Simulator, instance: Instance) -> None:
        self._signal(SignalKind.INTERRUPTION, instance.region, instance.zone, sim.now)
        standby_of = self._standby_of.get(instance.id)
        if standby_of is not None:
            self._release(sim, standby_of)
            return
        replica = self._owner.get(instance.id)
        if replica is None:
            return
        if instance.id in self._from_standby and instance is replica.launching:
            # A standby promoted while warming up, warned before it is ready: the hub knows it (it recorded the
            # standby), so the replacement goes on elsewhere at once rather than wait for the instance to go.
            self._owner.pop(instance.id, None)
            replica.launching = None
            sim.terminate(instance)
            return
        if instance is replica.serving and not replica.placing and replica.id in self.standby:
            self._promote(sim, replica, instance)
            return
        super().on_warning(sim, instance)

    def on_preempted(self, sim: Simulator, instance: Instance) -> None:
        replica = self._owner.get(instance.id)
        if replica is not None and instance is replica.serving and not replica.placing and replica.id in self.standby:
            # Its warning came during its cold start (ignored, as production's): the standby takes over now.
            self._owner.pop(instance.id, None)
            replica.serving = None
            self._promote(sim, replica, instance)
            return
        super().on_preempted(sim, instance)

    def _promote(self, sim: Simulator, replica: Replica, old: Instance) -> None:
        """The standby takes the serving instance's place: at once when it is ready (the old one is retired),
        else as the replacement that production's make before break completes when it is ready."""
        standby = self.standby.pop(replica.id)
        self._standby_of.pop(standby.id, None)
        self._owner[standby.id] = replica
        if standby.ready:
            if replica.serving is old:
                self._owner.pop(old.id, None)
                sim.terminate(old)
            replica.serving = standby
            if standby.kind != SPOT:  # OnDemandPlaced: watch for spot
                self._watch(sim, replica)
        else:
            self._start_replacement(sim, replica, old)
            replica.launching = standby
            self._from_standby.add(standby.id)

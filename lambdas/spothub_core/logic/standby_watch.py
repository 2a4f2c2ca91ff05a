"""The warm standby in production: when a replica on spot gets one, where, when it is released, and how a notice
promotes it. Every decision is spothub_core.logic.standby's (the functions the replay's `spothub-standby` calls);
this module reads what they need from the state table, carries out what they decide through ports, and keeps
the state table's standby records true.

The operator switches warm standbys on (`warm_standby` on the provisioning switch); off, nothing is recorded or
started and what is held is released.

- `assess(replica_id, now)`: the risk check, run every minute and after each signal: `assess_risk` of the
  serving spot instance, `wants_standby`; a standby wanted and none held: `choose_standby_zone` and a launch into
  the region of its first zone, whose group picks the zone (the most spare capacity, off the serving instance's
  zone while another has some); one region per check: a refusal comes back as a report, a signal for the whole
  region, and the next check tries the next region; or an on-demand one in the serving region when no zone is
  left and on-demand is wanted; a standby held of a capacity type no longer wanted: released.
- `on_notice(instance, kind, now)`, before any replacement starts: the notice is recorded as a signal; a warned
  standby is released; a ready standby of the warned serving instance serves at once (the warned instance is
  retired, no launch), but is held through a rebalance recommendation (no replacement either: the warning, if it
  comes, promotes it); a standby still launching becomes the replacement, and its launch's success promotes it.
- `on_launch_succeeded` / `on_launch_failed`: the standby's launch reports (no task token waits on them).

Consumers are idempotent: a notice or a report delivered twice, late or out of order changes nothing more; each
such race is closed by a condition of spothub_core.dal.standby.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.dal.spot_market import SpotDataUnavailable
from spothub_core.dal.standby import SCORE_KEEP_SECONDS, SIGNAL_READ_SECONDS, StandbyStore
from spothub_core.logic.region_reservations import occupied_regions
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
from spothub_core.models.records import InstanceRecord, ProvisioningConfig, Replica, ReplicaStatus
from spothub_core.models.standby_records import (
    CapacitySignalRecord,
    EndedStandby,
    StandbyOutcome,
    StandbyRecord,
    StandbyStatus,
    ZoneScoreRecord,
)
from spothub_core.timings import LAUNCH_TIMEOUT_SECONDS

logger = logging.getLogger(__name__)

# How often the minute's check samples the zones' placement scores while a replica serves on spot (the spot finder
# records samples too, whenever it ranks): six samples in the falling-score window.
SCORE_SAMPLE_SECONDS = 5 * 60
# The zones' placement scores by (region, zone) and the regions' spot prices, as EC2 gives them now.
ZoneObservation = tuple[Mapping[tuple[str, str], int], Mapping[str, float | None]]

# What a notice's kind is as a risk signal (an unhealthy instance is none).
NOTICE_SIGNALS = {"interruption": SignalKind.INTERRUPTION, "rebalance": SignalKind.REBALANCE}


class StandbyAction(StrEnum):
    START = "start"
    RELEASE = "release"
    NONE = "none"


@dataclass(frozen=True)
class StandbyLaunch:
    """A standby's launch: spot pinned to `zone`, or on-demand anywhere in `region` (zone None)."""

    replica_id: str
    launch_id: str
    region: str
    zone: str | None
    capacity_type: str


@dataclass(frozen=True)
class Assessment:
    """What one risk check found and did."""

    replica_id: str
    action: StandbyAction
    wanted: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    standby: bool = False  # whether the replica holds a standby after the check
    launch: StandbyLaunch | None = None  # the standby started
    detail: str = ""


@dataclass(frozen=True)
class _Readings:
    signals: list[CapacitySignal]
    score_records: list[ZoneScoreRecord]

    @property
    def scores(self) -> list[ScoreSample]:
        return [ScoreSample(s.region, s.zone, s.score, s.at) for s in self.score_records]


class StandbyPorts(Protocol):
    """The side effects the watch asks for; the capacity handler gives the hub's (commands to worker regions,
    the endpoint, the orchestrator)."""

    def launch(self, launch: StandbyLaunch) -> None:
        """Dispatch a launch with role `standby` (no orchestrator waits for it)."""

    def teardown(self, *, region: str, instance_id: str | None, launch_id: str | None, reason: str) -> None:
        """Dispatch a teardown of an instance, or the cancellation of a launch."""

    def promote(self, replica: Replica, standby: StandbyRecord, *, replaced: InstanceRecord | None, now: float) -> None:
        """The replica serves on `standby` now (its record says so already): record and publish its instance as
        RecordInstance does, retire `replaced`; an on-demand standby starts the return-to-spot watch."""

    def replace(self, replica_id: str, instance_id: str, region: str, why: str, *, now: float, name: str) -> str:
        """Production's replacement of the serving instance, under the execution name `name`."""


class StandbyWatch:
    def __init__(
        self,
        provisioning: ProvisioningStore,
        standbys: StandbyStore,
        ports: StandbyPorts,
        *,
        rules: StandbyRules = DEFAULT_RULES,
    ) -> None:
        self.provisioning = provisioning
        self.standbys = standbys
        self.ports = ports
        self.rules = rules

    # --- the risk check ------------------------------------------------------------------------------------

    def assess_all(self, now: float, *, observe: Callable[[], ZoneObservation] | None = None) -> list[Assessment]:
        """The check for every replica that serves or holds a standby. `observe`: asks EC2 for the zones' scores,
        called when a replica serves on spot and the latest sample is older than SCORE_SAMPLE_SECONDS."""
        if not self.standbys.switched_on():
            # Switched off: what is held goes; nothing else is read.
            return [
                Assessment(s.replica_id, StandbyAction.RELEASE)
                for s in self.standbys.standbys()
                # An adopted standby is its replica's replacement: its launch completes or fails as such.
                if not s.adopted_for and self._release(s, "warm standbys are switched off", now=now)
            ]
        held = {s.replica_id: s for s in self.standbys.standbys()}
        replicas = {r.replica_id: r for r in self.provisioning.replicas()}
        serving = [r for r in replicas.values() if r.status == ReplicaStatus.SERVING]
        if observe is not None and any(r.capacity_type == "spot" for r in serving) and self._scores_due(now):
            try:
                scores, prices = observe()
            except SpotDataUnavailable:
                pass  # the rules read the samples they have; the next check asks again
            else:
                self.record_scores(scores, prices=prices, now=now)
        readings = self._read(now)
        return [
            self._assess(replica_id, replicas.get(replica_id), held.get(replica_id), readings, now)
            for replica_id in sorted(held.keys() | {r.replica_id for r in serving})
        ]

    def _scores_due(self, now: float) -> bool:
        samples = self.standbys.scores(since=now - SCORE_SAMPLE_SECONDS)
        return not samples

    def _read(self, now: float) -> _Readings:
        """What the rules read for every replica: the recent signals and zone scores."""
        signals = [
            CapacitySignal(s.kind, s.region, s.zone, s.at, standby=s.standby)
            for s in self.standbys.signals(since=now - SIGNAL_READ_SECONDS)
        ]
        return _Readings(signals, self.standbys.scores(since=now - SCORE_KEEP_SECONDS))

    def assess(self, replica_id: str, now: float) -> Assessment:
        """The check for one replica (after a signal); `assess_all` runs it for every replica, reading once."""
        replica = self.provisioning.replica(replica_id)
        standby = self.standbys.standby(replica_id)
        return self._assess(replica_id, replica, standby, self._read(now), now)

    def _assess(
        self,
        replica_id: str,
        replica: Replica | None,
        standby: StandbyRecord | None,
        readings: _Readings,
        now: float,
    ) -> Assessment:
        if standby is not None and standby.adopted_for:
            # It replaces the serving instance; ready: a promotion broke off, finished here; lost: production's
            # replacement takes over.
            if standby.ready:
                done = self._complete(standby, now=now) or ""
            elif _launch_lost(standby, now):
                done = self._give_up_adopted(standby, now=now)
            else:
                done = "the standby replaces the serving instance"
            return Assessment(replica_id, StandbyAction.NONE, standby=not standby.ready, detail=done)
        released = False
        if standby is not None and _launch_lost(standby, now):
            released = self._release(standby, f"standby launch {standby.launch_id} did not report in time", now=now)
            standby = None
        placement = self._serving_placement(replica)
        wanted: frozenset[Capacity] = frozenset()
        reasons: tuple[str, ...] = ()
        if placement is not None:
            risk = assess_risk(placement, signals=readings.signals, scores=readings.scores, now=now, rules=self.rules)
            wanted, reasons = wants_standby(risk, self.rules), risk.reasons
        if standby is not None and Capacity(standby.capacity_type) not in wanted:
            why = "the risk fell" if placement else "the replica no longer serves on spot"
            released = self._release(standby, why, now=now)
            standby = None
        launch = None
        if standby is None and wanted and placement is not None and replica is not None:
            launch = self._start(replica, placement, wanted, reasons, readings, now=now)
        action = StandbyAction.START if launch else StandbyAction.RELEASE if released else StandbyAction.NONE
        return Assessment(
            replica_id,
            action,
            wanted=tuple(sorted(wanted)),
            reasons=reasons,
            standby=standby is not None or launch is not None,
            launch=launch,
            detail="" if launch or standby or not wanted else "no zone to try",
        )

    def _serving_placement(self, replica: Replica | None) -> Placement | None:
        """Where the replica's spot instance serves, and since when; None unless it serves on spot in a known zone."""
        if replica is None or replica.status != ReplicaStatus.SERVING or replica.capacity_type != "spot":
            return None
        if not (replica.instance_id and replica.region):
            return None
        instance = self.provisioning.instance(replica.instance_id)
        if instance is None or not instance.availability_zone:
            return None
        since = _epoch(instance.launched_at) or replica.placed_at or 0.0
        return Placement(replica.region, instance.availability_zone, since)

    def _start(
        self,
        replica: Replica,
        serving: Placement,
        wanted: frozenset[Capacity],
        reasons: tuple[str, ...],
        readings: _Readings,
        *,
        now: float,
    ) -> StandbyLaunch | None:
        config = self.provisioning.config()
        zones = choose_standby_zone(
            _candidates(config, readings.score_records),
            serving=serving,
            signals=readings.signals,
            avoid_regions=occupied_regions(
                replica.replica_id, self.provisioning.replicas(), self.provisioning.reservations()
            ),
            now=now,
            rules=self.rules,
        )
        launch_id = f"{replica.replica_id}-sb-{int(now)}"
        if zones:
            launch = StandbyLaunch(replica.replica_id, launch_id, zones[0].region, zones[0].zone, Capacity.SPOT.value)
        elif Capacity.ON_DEMAND in wanted:
            launch = StandbyLaunch(replica.replica_id, launch_id, serving.region, None, Capacity.ON_DEMAND.value)
        else:
            return None
        record = StandbyRecord(
            replica_id=launch.replica_id,
            launch_id=launch.launch_id,
            region=launch.region,
            zone=None,  # the region's group picks it; the launch's success says which
            capacity_type=launch.capacity_type,  # type: ignore[arg-type]
            launched_at=now,
            reasons=reasons,
        )
        if not self.standbys.claim(record):
            return None  # another check started one meanwhile
        try:
            self.ports.launch(launch)
        except Exception:
            self.standbys.clear(launch.replica_id, launch_id=launch.launch_id)  # the next check tries again
            raise
        return launch

    def _release(self, standby: StandbyRecord, reason: str, *, now: float) -> bool:
        """Tear the standby down (its instance, or its launch while it has none) and forget it; False when
        another call released or promoted it first."""
        cleared = self._forget(standby, StandbyOutcome.RELEASED, reason, now=now)
        if cleared is None:
            return False
        self.ports.teardown(
            region=cleared.region,
            instance_id=cleared.instance_id,
            launch_id=None if cleared.instance_id else cleared.launch_id,
            reason=f"standby of {cleared.replica_id} released: {reason}",
        )
        return True

    def _forget(self, standby: StandbyRecord, outcome: StandbyOutcome, why: str, *, now: float) -> StandbyRecord | None:
        """Clear the standby (it as it was; None when another call cleared it first) and keep it, ended, for GET
        /events. Keeping it never fails the caller: only the call that cleared it writes it, so nothing would
        write it again."""
        cleared = self.standbys.clear(standby.replica_id, launch_id=standby.launch_id)
        if cleared is None:
            return None
        try:
            self.standbys.record_end(
                EndedStandby.model_validate({**cleared.model_dump(), "ended_at": now, "outcome": outcome, "why": why})
            )
        except Exception:
            logger.exception(
                "the end of a standby is missing from the timeline", extra={"launch_id": cleared.launch_id}
            )
        return cleared

    # --- notices ----------------------------------------------------------------------------------------------

    def on_notice(self, instance_id: str, kind: str, *, region: str, now: float) -> str | None:
        """A notice (interruption, rebalance) or a health failure ("unhealthy") of an instance, before any
        replacement starts. What was done, or None: nothing, production's replacement goes on."""
        standby = self.standbys.by_instance(instance_id)
        if standby is None and not self.standbys.switched_on():
            return None
        instance = None if standby else self.provisioning.instance(instance_id)
        signal = NOTICE_SIGNALS.get(kind)
        if signal is not None and (standby or instance):
            zone = standby.zone if standby else (instance.availability_zone if instance else None)
            self.record_signal(
                signal,
                region=(standby.region if standby else instance.region if instance else None) or region,
                zone=zone or None,
                source=f"{kind}#{instance_id}",
                now=now,
                standby=standby is not None,
                instance_id=instance_id,
            )
        if standby is not None:
            released = self._release(standby, f"{kind} of the standby", now=now)
            return "standby released" if released else "ignored: the standby was released already"
        replica = self.provisioning.replica(instance.replica_id) if instance and instance.replica_id else None
        return None if replica is None else self._take_over(replica, instance_id, kind, region=region, now=now)

    def _take_over(self, replica: Replica, instance_id: str, kind: str, *, region: str, now: float) -> str | None:
        """The replica's standby takes over from its noticed instance `instance_id`, if it holds one. A ready
        standby is held through a rebalance recommendation: the instance is at risk, not lost (many are never
        interrupted), and its warning, should it come, promotes the standby at once; promoting now would retire a
        working instance and leave the replica with no standby until a new one is warm."""
        standby = self.standbys.standby(replica.replica_id)
        if standby is None:
            return None
        if standby.adopted_for == instance_id:  # a notice delivered again, or a retry
            return self._complete(standby, now=now) if standby.ready else "ignored: the standby replaces it already"
        if standby.adopted_for or replica.instance_id != instance_id:
            return None
        if standby.ready and kind == "rebalance":
            return f"standby held: {standby.instance_id} serves at {instance_id}'s interruption warning, if it comes"
        if standby.ready:
            adopted = self.standbys.adopt(replica.replica_id, launch_id=standby.launch_id, replacing=instance_id)
            return None if adopted is None else self._complete(adopted, now=now)
        return self._adopt_launching(replica, standby, instance_id, region=region, now=now)

    def _adopt_launching(
        self, replica: Replica, standby: StandbyRecord, instance_id: str, *, region: str, now: float
    ) -> str | None:
        """The standby still launches: it is the replacement (make before break: the warned instance serves until
        the standby is ready or until it goes). The replica is `replacing` under the adoption's name, so no other
        replacement starts; a retry of this notice finds it so and completes the adoption."""
        name = adoption_name(standby.launch_id)
        if not self.provisioning.start_replacing(replica.replica_id, instance_id=instance_id, execution=name, now=now):
            current = self.provisioning.replica(replica.replica_id)
            if not (current and current.status == ReplicaStatus.REPLACING and current.execution == name):
                return None
        if self.standbys.adopt(replica.replica_id, launch_id=standby.launch_id, replacing=instance_id) is None:
            # Released or failed between the read and now: production's replacement takes the replica over.
            return self.ports.replace(replica.replica_id, instance_id, region, "standby gone", now=now, name=name)
        return f"standby adopted: {standby.launch_id} replaces {instance_id}"

    def _complete(self, standby: StandbyRecord, *, now: float) -> str | None:
        """Move the replica onto its ready, adopted standby and retire what it replaces. Safe to run again: a
        retry after any step finds the replica on the standby and does the rest (the ports' effects repeat
        harmlessly)."""
        moved = self.standbys.switch_replica(
            standby.replica_id, standby=standby, adoption=adoption_name(standby.launch_id), now=now
        )
        if moved is None:
            self._release(standby, "its replica moved on before it could take over", now=now)
            return None
        replaced = self.provisioning.instance(standby.adopted_for) if standby.adopted_for else None
        self.ports.promote(moved, standby, replaced=replaced, now=now)
        done = f"standby promoted: {standby.instance_id} serves in place of {standby.adopted_for}"
        self._forget(standby, StandbyOutcome.PROMOTED, f"serves in place of {standby.adopted_for}", now=now)
        return done

    # --- the standby's launch reports ---------------------------------------------------------------------

    def on_launch_succeeded(
        self,
        launch_id: str,
        *,
        instance_id: str,
        zone: str | None,
        public_ip: str | None = None,
        private_ip: str | None = None,
        now: float,
    ) -> str | None:
        """None when `launch_id` is no standby's (any more): the caller's launch path decides (an orphan's
        success is torn down there)."""
        standby = self.standbys.by_launch(launch_id)
        if standby is None:
            return None
        ready = self.standbys.mark_ready(
            standby.replica_id,
            launch_id=launch_id,
            instance_id=instance_id,
            zone=zone,
            public_ip=public_ip,
            private_ip=private_ip,
            now=now,
        )
        if ready is None:
            return "ignored: duplicate" if standby.instance_id == instance_id else None
        if ready.adopted_for:
            return self._complete(ready, now=now) or "standby not wanted: released"
        return "standby ready"

    def _give_up_adopted(self, standby: StandbyRecord, *, now: float) -> str:
        """An adopted standby whose launch never reported: cancelled, and production's replacement takes over."""
        cleared = self._forget(standby, StandbyOutcome.FAILED, "its launch did not report in time", now=now)
        if cleared is None or not cleared.adopted_for:
            return "ignored: the standby was released already"
        self.ports.teardown(
            region=cleared.region,
            instance_id=None,
            launch_id=cleared.launch_id,
            reason=f"standby of {cleared.replica_id} given up: its launch did not report in time",
        )
        return self._hand_over(cleared, "standby launch did not report in time", now=now)

    def _hand_over(self, cleared: StandbyRecord, why: str, *, now: float) -> str:
        """Production's replacement of the instance an adopted standby was to replace, under the adoption's name."""
        replaced = self.provisioning.instance(cleared.adopted_for or "")
        return self.ports.replace(
            cleared.replica_id,
            cleared.adopted_for or "",
            (replaced.region if replaced else None) or cleared.region,
            why,
            now=now,
            name=adoption_name(cleared.launch_id),
        )

    def on_launch_failed(self, launch_id: str, *, error_class: str, now: float) -> str | None:
        """None when `launch_id` is no standby's. A capacity refusal is a signal for its region (of a standby: it
        steers the next region, raises no risk); the next check tries elsewhere. An adopted standby's failure hands
        the replacement to production's orchestrator."""
        standby = self.standbys.by_launch(launch_id)
        if standby is None:
            return None
        if error_class == "capacity":
            self.record_signal(
                SignalKind.CAPACITY_ERROR,
                region=standby.region,
                zone=None,  # the region's group tried each of its zones: the region refused
                source=f"capacity#{launch_id}",
                now=now,
                standby=True,
                launch_id=launch_id,
            )
        cleared = self._forget(standby, StandbyOutcome.FAILED, f"its launch failed ({error_class})", now=now)
        if cleared is None:
            return "ignored: the standby was released already"
        if not cleared.adopted_for:
            return f"standby launch failed ({error_class})"
        outcome = self._hand_over(cleared, f"standby launch failed ({error_class})", now=now)
        return f"standby launch failed ({error_class}); {outcome}"

    # --- what the rules read -----------------------------------------------------------------------------

    def record_signal(
        self,
        kind: SignalKind,
        *,
        region: str,
        zone: str | None,
        source: str,
        now: float,
        standby: bool = False,
        instance_id: str | None = None,
        launch_id: str | None = None,
    ) -> bool:
        return self.standbys.record_signal(
            CapacitySignalRecord(
                signal_id=source,
                kind=kind,
                region=region,
                zone=zone,
                at=now,
                standby=standby,
                instance_id=instance_id,
                launch_id=launch_id,
            )
        )

    def record_scores(
        self, scores: Mapping[tuple[str, str], int], *, prices: Mapping[str, float | None], now: float
    ) -> int:
        """Placement scores of zones, by (region, zone), and the regions' spot prices, as the spot finder got
        them at `now`."""
        return self.standbys.record_scores(
            ZoneScoreRecord(region=region, zone=zone, score=score, at=now, spot_price=prices.get(region))
            for (region, zone), score in scores.items()
        )


def adoption_name(launch_id: str) -> str:
    """The execution name under which a standby adopted while launching holds its replica (`replacing`);
    production's replacement takes this name over if the standby fails."""
    return f"{launch_id}-r"


def _launch_lost(standby: StandbyRecord, now: float) -> bool:
    return standby.status == StandbyStatus.LAUNCHING and now - standby.launched_at > LAUNCH_TIMEOUT_SECONDS


def _epoch(timestamp: str | None) -> float | None:
    return datetime.fromisoformat(timestamp).timestamp() if timestamp else None


def _candidates(config: ProvisioningConfig, samples: list[ZoneScoreRecord]) -> list[ZoneCandidate]:
    """Every zone with a placement score sample, in the regions the operator allows, with its latest score."""
    latest: dict[str, ZoneScoreRecord] = {}
    for sample in samples:
        if sample.zone not in latest or sample.at > latest[sample.zone].at:
            latest[sample.zone] = sample
    allowed = [
        s
        for s in latest.values()
        if s.region not in config.denied_regions
        and (config.allowed_regions is None or s.region in config.allowed_regions)
    ]
    return [ZoneCandidate(s.region, s.zone, s.score, s.spot_price) for s in allowed]

"""How many workers a batch job needs and which worker regions to ask for them: pure decisions, no I/O.

- The target: one worker per batch pending or in flight, never more than the job's max_workers (while listing:
  per batch written so far and not finished).
- The current: the job's active workers, plus those asked of a region and not registered yet, for
  BATCH_WORKER_BOOT_SECONDS after the growth that asked for them (then they count as lost, and are asked again).
- The deficit is asked of the regions in the spot finder's ranking order, leaving out the regions excluded for
  this job (a region whose report said capacity, quota or fatal, for that class's exclusion): the best region's
  group grows by the deficit, up to the region's maximum, the rest going to the next.
- No spot region left: on-demand, where the deployment's capacity fallback allows it; else nothing until a
  region comes back.

A region's group size, as the hub sees it: the group's desired capacity as the region last reported it (its
answer to the latest growth, or later), else what the hub asked. Its members that have not registered as workers
are the group size less the workers registered there and not gone. A growth asks for the region's active workers,
those unregistered and the addition: the region applies max(its desired, asked), after releasing the members
named in the same request (unavailable workers), so workers leaving never make a growth ask too much.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from spothub_core.contracts import BatchCounts, BatchFleetRequested, CapacityType
from spothub_core.models.batch_records import Job, JobStatus, RegionFleet, Worker, WorkerStatus
from spothub_core.models.orchestrator_tasks import FindAnswer, LeftOutKind
from spothub_core.timings import BATCH_WORKER_BOOT_SECONDS, EXCLUSION_SECONDS, QUOTA_EXCLUSION_SECONDS

ON_DEMAND_FALLBACK = "on-demand"
# Failures a region reports that exclude it for the job, for how long: a capacity or quota failure as for serving;
# a fatal one (the launch template refused) for as long as a quota, since retrying cannot help.
JOB_EXCLUSION_SECONDS: dict[str, float] = {
    "capacity": EXCLUSION_SECONDS["capacity"],
    "quota": EXCLUSION_SECONDS["quota"],
    "fatal": QUOTA_EXCLUSION_SECONDS,
}


@dataclass(frozen=True)
class ScalingPolicy:
    max_workers_per_region: int  # each region's group's maximum size (SPOTHUB_BATCH_MAX_WORKERS)
    capacity_fallback: str  # HubSettings.capacity_fallback: "on-demand" allows it when no spot region is left


@dataclass(frozen=True)
class FleetPlan:
    target: int
    current: int
    requests: tuple[BatchFleetRequested, ...]  # at most one per region
    added: int  # workers asked for beyond the current ones
    note: str  # why, in a few words, for the log


# --- how many ------------------------------------------------------------------------------------------------


def target_workers(job: Job, counts: BatchCounts) -> int:
    if job.status == JobStatus.RUNNING:
        work = counts.pending + counts.assigned + counts.processing
    elif job.status == JobStatus.LISTING:
        # Listing: every batch written so far that is not finished (the counts' index lags the writes).
        work = max(job.batches - counts.completed - counts.failed, counts.pending + counts.assigned + counts.processing)
    else:
        return 0
    return max(0, min(job.spec.max_workers, work))


def active_in(workers: Iterable[Worker], region: str | None = None) -> int:
    return sum(1 for w in workers if w.status == WorkerStatus.ACTIVE and region in (None, w.region))


def registered_in(workers: Iterable[Worker], region: str) -> int:
    """Workers registered in the region that are still members of its group (gone ones left it)."""
    return sum(1 for w in workers if w.region == region and w.status != WorkerStatus.GONE)


def excluded(fleet: RegionFleet | None, now: float, capacity_type: CapacityType = "spot") -> bool:
    """Whether the job asks the region for no workers of this capacity type now (after a failure of that type)."""
    if fleet is None:
        return False
    until = fleet.excluded_until if capacity_type == "spot" else fleet.on_demand_excluded_until
    return until is not None and until > now


def group_size(fleet: RegionFleet) -> int:
    """The group's desired capacity as the hub sees it (see the module's docstring)."""
    answered_growth = fleet.reported_for is not None and fleet.reported_for >= (fleet.grown_at or 0)
    if fleet.group_desired is not None and answered_growth:
        return fleet.group_desired
    return fleet.desired


def unregistered(fleet: RegionFleet, workers: Iterable[Worker]) -> int:
    """Members of the region's group that have not registered as workers (booting, or lost)."""
    if fleet.released:
        return 0
    return max(0, group_size(fleet) - registered_in(workers, fleet.region))


def booting(fleet: RegionFleet, workers: Iterable[Worker], now: float) -> int:
    """Workers asked of the region and still expected: within the boot grace of the growth that asked for them,
    in a region not excluded for their capacity type since (its failure says they are not coming)."""
    if fleet.grown_at is None or now >= fleet.grown_at + BATCH_WORKER_BOOT_SECONDS:
        return 0
    if excluded(fleet, now, fleet.capacity_type):
        return 0
    return unregistered(fleet, workers)


def current_workers(workers: list[Worker], fleets: list[RegionFleet], now: float) -> int:
    return active_in(workers) + sum(booting(f, workers, now) for f in fleets)


def workers_needed(job: Job, counts: BatchCounts, workers: list[Worker], fleets: list[RegionFleet], now: float) -> int:
    """The deficit: how many more workers the job should ask for now."""
    return max(0, target_workers(job, counts) - current_workers(workers, fleets, now))


# --- where ---------------------------------------------------------------------------------------------------


def spot_regions(ranking: FindAnswer, fleets: dict[str, RegionFleet], now: float) -> list[str]:
    """The finder's ranking for spot, best first, with the regions excluded for this job left out."""
    candidates = [r.region for r in ranking.ranked]
    return [r for r in _unique(candidates) if not excluded(fleets.get(r), now)]


def on_demand_regions(ranking: FindAnswer, fleets: dict[str, RegionFleet], now: float) -> list[str]:
    """Where on-demand workers may go: the finder's on-demand choice first, then its ranking, then the regions
    excluded for spot only; the regions the job excluded after an on-demand failure are left out."""
    candidates = (
        ([ranking.on_demand_region] if ranking.on_demand_region else [])
        + [r.region for r in ranking.ranked]
        # A spot exclusion says nothing of on-demand capacity: an empty spot pool is not an empty region.
        + _left_out(ranking, LeftOutKind.EXCLUDED)
    )
    return [r for r in _unique(candidates) if not excluded(fleets.get(r), now, "on-demand")]


def room_in(region: str, fleet: RegionFleet | None, workers: list[Worker], policy: ScalingPolicy) -> int:
    """How many more workers the region's group may take (its maximum size less its members)."""
    members = active_in(workers, region) + (unregistered(fleet, workers) if fleet else 0)
    return max(0, policy.max_workers_per_region - members)


def allot(deficit: int, regions: list[str], room: dict[str, int]) -> list[tuple[str, int]]:
    """The deficit to the best region, up to its room, the rest to the next ones in order."""
    allotted = []
    for region in regions:
        if deficit <= 0:
            break
        take = min(deficit, room.get(region, 0))
        if take > 0:
            allotted.append((region, take))
            deficit -= take
    return allotted


def capacity_type_for(spot: list[str], policy: ScalingPolicy) -> CapacityType | None:
    """Spot while a spot region is left; on-demand after that where the deployment allows it; else None."""
    if spot:
        return "spot"
    return "on-demand" if policy.capacity_fallback == ON_DEMAND_FALLBACK else None


def instances_to_release(workers: list[Worker], fleets: list[RegionFleet], now: float) -> dict[str, list[str]]:
    """By region, terminated with the group's capacity decremented: the instances of unavailable workers (they
    missed a deadline), and members the region reported that never registered within the boot grace of the
    last growth (an agent that never started holds a slot of the group, and a later growth would count it)."""
    by_region: dict[str, list[str]] = {}
    for worker in workers:
        if worker.status == WorkerStatus.UNAVAILABLE and worker.region:
            by_region.setdefault(worker.region, []).append(worker.instance_id)
    known = {w.instance_id for w in workers}
    for fleet in fleets:
        if fleet.released or fleet.grown_at is None or now < fleet.grown_at + BATCH_WORKER_BOOT_SECONDS:
            continue
        silent = [i for i in fleet.instance_ids if i not in known]
        if silent:
            by_region.setdefault(fleet.region, []).extend(silent)
    return by_region


def regions_to_watch(fleets: list[RegionFleet], workers: list[Worker], now: float) -> list[str]:
    """Regions still booting workers: asked for a report each run (a look, growing nothing), since a launch
    fails after the growth's own report, and the hub learns of it only from a report."""
    return [f.region for f in fleets if not f.released and booting(f, workers, now) > 0]


# --- the decision ------------------------------------------------------------------------------------------------


def plan(  # noqa: PLR0917 (the decision's inputs, each a plain value)
    job: Job,
    counts: BatchCounts,
    workers: list[Worker],
    fleets: list[RegionFleet],
    ranking: FindAnswer | None,
    now: float,
    policy: ScalingPolicy,
) -> FleetPlan:
    """The requests to send the worker regions for an unfinished job: growth where the deficit goes, a look where
    workers are booting, and the release of unavailable workers' instances."""
    by_region = {f.region: f for f in fleets}
    target = target_workers(job, counts)
    current = current_workers(workers, fleets, now)
    deficit = max(0, target - current)
    growth: dict[str, tuple[int, CapacityType]] = {}
    note = f"{current} of {target} workers"
    if deficit and ranking is None:
        note += f"; {deficit} more wanted, no ranking"
    elif deficit and ranking is not None:
        spot = spot_regions(ranking, by_region, now)
        capacity_type = capacity_type_for(spot, policy)
        regions = spot if capacity_type == "spot" else on_demand_regions(ranking, by_region, now)
        room = {r: room_in(r, by_region.get(r), workers, policy) for r in regions}
        for region, add in allot(deficit, regions if capacity_type else [], room):
            growth[region] = (add, capacity_type or "spot")
        added = sum(add for add, _ in growth.values())
        if capacity_type is None:
            note += f"; {deficit} more wanted: no spot region left, and no on-demand fallback"
        elif added < deficit:
            note += f"; {added} of {deficit} more asked ({capacity_type}): the regions are full or excluded"
        else:
            note += f"; {added} more asked ({capacity_type})"
    releases = instances_to_release(workers, fleets, now)
    watched = set(regions_to_watch(fleets, workers, now))
    requests = []
    for region in sorted(set(growth) | set(releases) | watched):
        request = BatchFleetRequested(
            job_id=job.job_id,
            region=region,
            instance_types=list(job.spec.instance_types),
            release_instances=sorted(releases.get(region, [])),
            requested_at=now,
        )
        if region in growth:
            add, capacity_type = growth[region]
            fleet = by_region.get(region)
            # Members still expected only: a growth that failed (excluded since) is not counted again, or the
            # on-demand request that follows a failed spot growth would ask for both.
            members = active_in(workers, region) + (booting(fleet, workers, now) if fleet else 0)
            request = request.model_copy(update={"desired": members + add, "capacity_type": capacity_type})
        requests.append(request)
    added = sum(add for add, _ in growth.values())
    return FleetPlan(target=target, current=current, requests=tuple(requests), added=added, note=note)


def release_requests(job: Job, fleets: list[RegionFleet], now: float) -> list[BatchFleetRequested]:
    """A finished job: every region's group deleted (asked again each run until the region reports it done)."""
    return [
        BatchFleetRequested(job_id=job.job_id, region=f.region, release=True, requested_at=now)
        for f in fleets
        if not f.released
    ]


def exclusion_after(error_class: str | None, failed_at: float) -> float | None:
    """Until when a region whose report says this failure is excluded for the job; None: not excluded."""
    seconds = JOB_EXCLUSION_SECONDS.get(error_class or "")
    return None if seconds is None else failed_at + seconds


def _left_out(ranking: FindAnswer, kind: LeftOutKind) -> list[str]:
    return [o.region for o in ranking.left_out if o.kind == kind]


def _unique(regions: list[str]) -> list[str]:
    return list(dict.fromkeys(regions))

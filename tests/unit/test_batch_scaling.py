"""The batch scaling decision (spothub_core.logic.batch_scaling) as a pure function: how many workers a job needs,
which regions are asked, exclusions, the on-demand fallback, the boot grace, and the bounds it never crosses."""

from __future__ import annotations

from typing import Any

import pytest

from spothub_core.contracts import BatchCounts
from spothub_core.logic.batch_scaling import (
    FleetPlan,
    ScalingPolicy,
    allot,
    booting,
    current_workers,
    exclusion_after,
    instances_to_release,
    plan,
    release_requests,
    target_workers,
    workers_needed,
)
from spothub_core.logic.ranking import RegionObservation, rank_regions
from spothub_core.models.batch_records import Job, JobSpec, JobStatus, RegionFleet, Worker, WorkerStatus
from spothub_core.models.orchestrator_tasks import FindAnswer, LeftOutKind, LeftOutView, RankedRegionView
from spothub_core.models.records import Exclusion
from spothub_core.timings import (
    BATCH_WORKER_BOOT_SECONDS,
    CAPACITY_EXCLUSION_SECONDS,
    QUOTA_EXCLUSION_SECONDS,
)

NOW = 1_700_000_000.0
BEST, SECOND, THIRD = "us-west-2", "eu-west-1", "us-east-2"
SPOT_ONLY = ScalingPolicy(max_workers_per_region=20, capacity_fallback="none")
ON_DEMAND = ScalingPolicy(max_workers_per_region=20, capacity_fallback="on-demand")


def job(status: JobStatus = JobStatus.RUNNING, *, max_workers: int = 10, batches: int = 100, **spec: Any) -> Job:
    return Job(
        job_id="job-0123456789ab",
        status=status,
        spec=JobSpec(input_bucket="in", output_bucket="out", image="img", max_workers=max_workers, **spec),
        batches=batches,
        created_at=NOW - 3600,
    )


def counts(
    pending: int = 0, assigned: int = 0, processing: int = 0, completed: int = 0, failed: int = 0
) -> BatchCounts:
    return BatchCounts(pending=pending, assigned=assigned, processing=processing, completed=completed, failed=failed)


def workers(n: int, region: str = BEST, status: WorkerStatus = WorkerStatus.ACTIVE, start: int = 0) -> list[Worker]:
    return [
        Worker(
            job_id="job-0123456789ab",
            worker_id=f"job-0123456789ab.i-{start + i:04d}",
            instance_id=f"i-{start + i:04d}",
            region=region,
            status=status,
            registered_at=NOW - 600,
        )
        for i in range(n)
    ]


def fleet(region: str = BEST, **fields: Any) -> RegionFleet:
    return RegionFleet(job_id="job-0123456789ab", region=region, **fields)


def ranking(
    *regions: str, on_demand: str | None = None, left_out: tuple[tuple[str, str, LeftOutKind], ...] = ()
) -> FindAnswer:
    return FindAnswer(
        best=regions[0] if regions else None,
        reason="test",
        on_demand_region=on_demand,
        ranked=[
            RankedRegionView(region=r, rank=i, placement_score=9, spot_price=1.0, reason="")
            for i, r in enumerate(regions, start=1)
        ],
        left_out=[LeftOutView(region=r, reason=why, kind=kind) for r, why, kind in left_out],
        instance_types=["g5.xlarge"],
        target_capacity=1,
        observed_at=NOW,
    )


def grown(result: FleetPlan) -> dict[str, tuple[int, str]]:
    """Each growth request's region: (desired, capacity type)."""
    return {r.region: (r.desired, r.capacity_type) for r in result.requests if r.desired}


# --- how many -------------------------------------------------------------------------------------------------


def test_the_target_is_the_work_left_never_more_than_max_workers() -> None:
    assert target_workers(job(max_workers=10), counts(pending=3, assigned=1, processing=2)) == 6
    assert target_workers(job(max_workers=10), counts(pending=50, processing=5)) == 10
    assert target_workers(job(max_workers=10), counts(completed=100)) == 0


def test_while_listing_the_target_is_the_batches_written_so_far_not_finished() -> None:
    listing = job(JobStatus.LISTING, max_workers=10, batches=4)
    # The counts' index may not show the batches just written yet.
    assert target_workers(listing, counts(pending=1)) == 4
    assert target_workers(listing, counts(completed=3, pending=1)) == 1
    assert target_workers(job(JobStatus.LISTING, batches=40), counts()) == 10


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_a_finished_job_needs_no_worker(status: JobStatus) -> None:
    assert target_workers(job(status), counts(pending=10)) == 0


def test_only_active_workers_count_as_current() -> None:
    team = (
        workers(3)
        + workers(1, status=WorkerStatus.UNAVAILABLE, start=10)
        + workers(1, status=WorkerStatus.SHUTTING_DOWN, start=20)
        + workers(1, status=WorkerStatus.GONE, start=30)
    )
    assert current_workers(team, [], NOW) == 3
    assert workers_needed(job(), counts(pending=10), team, [], NOW) == 7


def test_workers_asked_and_not_registered_count_within_the_boot_grace() -> None:
    asked = fleet(desired=5, grown_at=NOW - 60)
    team = workers(2)
    assert booting(asked, team, NOW) == 3
    assert workers_needed(job(), counts(pending=8), team, [asked], NOW) == 3
    # Past the grace they are lost: asked for again.
    late = NOW + BATCH_WORKER_BOOT_SECONDS
    assert booting(asked, team, late) == 0
    assert workers_needed(job(), counts(pending=8), team, [asked], late) == 6


def test_the_group_size_is_the_regions_report_once_it_answered_the_growth() -> None:
    # The region said its group's desired capacity is 3 (a worker left since the hub asked for 5).
    answered = fleet(desired=5, grown_at=NOW - 60, group_desired=3, reported_for=NOW - 60)
    assert booting(answered, workers(2), NOW) == 1
    # A report of an earlier request says nothing of this growth.
    stale = fleet(desired=5, grown_at=NOW - 60, group_desired=3, reported_for=NOW - 120)
    assert booting(stale, workers(2), NOW) == 3


def test_gone_workers_leave_the_group_but_unavailable_ones_are_members_until_released() -> None:
    asked = fleet(desired=4, grown_at=NOW - 60)
    team = (
        workers(2)
        + workers(1, status=WorkerStatus.UNAVAILABLE, start=10)
        + workers(1, status=WorkerStatus.GONE, start=20)
    )
    assert booting(asked, team, NOW) == 1


# --- where ------------------------------------------------------------------------------------------------------


def test_the_deficit_goes_to_the_best_region() -> None:
    result = plan(job(max_workers=10), counts(pending=4), [], [], ranking(BEST, SECOND), NOW, SPOT_ONLY)
    assert grown(result) == {BEST: (4, "spot")}
    assert result.added == 4 and (result.target, result.current) == (4, 0)
    (request,) = result.requests
    assert request.requested_at == NOW and request.job_id == "job-0123456789ab"
    assert not request.release and request.release_instances == []


def test_never_more_than_max_workers_nor_the_work_left() -> None:
    many = plan(job(max_workers=6), counts(pending=100), workers(2), [], ranking(BEST), NOW, SPOT_ONLY)
    assert many.added == 4 and grown(many) == {BEST: (6, "spot")}
    few = plan(job(max_workers=50), counts(pending=1, processing=2), workers(2), [], ranking(BEST), NOW, SPOT_ONLY)
    assert few.added == 1 and grown(few) == {BEST: (3, "spot")}
    enough = plan(job(max_workers=50), counts(pending=0, processing=2), workers(3), [], ranking(BEST), NOW, SPOT_ONLY)
    assert enough.added == 0 and enough.requests == ()


def test_a_growth_asks_for_the_workers_still_expected_plus_the_addition() -> None:
    # Two registered, three lost (past the grace, never launched): six more are wanted. The lost slots are not
    # counted again: the region raises its group to the larger of its size and the request, so they are filled
    # by this growth, not beside it.
    lost = fleet(desired=5, grown_at=NOW - BATCH_WORKER_BOOT_SECONDS - 1)
    result = plan(job(max_workers=8), counts(pending=20), workers(2), [lost], ranking(BEST), NOW, SPOT_ONLY)
    assert result.added == 6
    assert grown(result) == {BEST: (2 + 6, "spot")}


def test_on_demand_after_a_failed_spot_growth_asks_no_more_than_the_job_needs() -> None:
    # Two spot workers asked of the only region failed (excluded since): on-demand takes their place, not theirs too.
    failed = fleet(BEST, desired=2, grown_at=NOW - 60, excluded_until=NOW + 600)
    result = plan(job(max_workers=2), counts(pending=5), [], [failed], ranking(BEST), NOW, ON_DEMAND)
    assert grown(result) == {BEST: (2, "on-demand")}


def test_members_that_never_registered_are_released_after_the_boot_grace() -> None:
    members = [f"i-{n:017x}" for n in range(3)]
    booted = workers(1)[0].model_copy(update={"instance_id": members[0]})
    region = fleet(BEST, desired=3, grown_at=NOW - 60, instance_ids=members)
    assert instances_to_release([booted], [region], NOW) == {}
    later = NOW - 60 + BATCH_WORKER_BOOT_SECONDS
    assert instances_to_release([booted], [region], later) == {BEST: members[1:]}


def test_a_full_region_passes_the_rest_to_the_next() -> None:
    policy = ScalingPolicy(max_workers_per_region=4, capacity_fallback="none")
    result = plan(job(max_workers=20), counts(pending=7), workers(1), [], ranking(BEST, SECOND, THIRD), NOW, policy)
    assert grown(result) == {BEST: (4, "spot"), SECOND: (3, "spot")}
    assert result.added == 6
    assert allot(5, [BEST, SECOND], {BEST: 0, SECOND: 2}) == [(SECOND, 2)]


def test_regions_excluded_for_the_job_are_skipped_and_their_booting_workers_not_counted() -> None:
    failed = NOW - 60
    excluded = fleet(BEST, desired=3, grown_at=failed, excluded_until=failed + CAPACITY_EXCLUSION_SECONDS)
    result = plan(job(), counts(pending=3), [], [excluded], ranking(BEST, SECOND), NOW, SPOT_ONLY)
    assert grown(result) == {SECOND: (3, "spot")}
    # Its exclusion over (the boot grace of what it was asked is too), the region is the best again.
    later = failed + CAPACITY_EXCLUSION_SECONDS + 1
    assert grown(plan(job(), counts(pending=3), [], [excluded], ranking(BEST, SECOND), later, SPOT_ONLY)) == {
        BEST: (3, "spot")
    }


def test_no_spot_region_left_without_fallback_asks_nothing() -> None:
    fleets = [fleet(r, excluded_until=NOW + 600) for r in (BEST, SECOND)]
    result = plan(job(), counts(pending=3), [], fleets, ranking(BEST, SECOND), NOW, SPOT_ONLY)
    assert result.requests == () and result.added == 0
    assert "no spot region left" in result.note


def test_no_spot_region_left_with_fallback_asks_for_on_demand() -> None:
    fleets = [fleet(r, excluded_until=NOW + 600) for r in (BEST, SECOND)]
    result = plan(job(), counts(pending=3), [], fleets, ranking(BEST, SECOND), NOW, ON_DEMAND)
    assert grown(result) == {BEST: (3, "on-demand")}
    # Those on-demand workers boot in a region excluded for spot: they count, nothing more is asked meanwhile.
    asked = [fleet(BEST, excluded_until=NOW + 600, desired=3, grown_at=NOW, capacity_type="on-demand"), fleets[1]]
    again = plan(job(), counts(pending=3), [], asked, ranking(BEST, SECOND), NOW + 60, ON_DEMAND)
    assert again.current == 3 and grown(again) == {}
    # The finder's own on-demand choice comes first (no spot region at all in its ranking).
    none_ranked = ranking(
        on_demand=THIRD, left_out=((THIRD, "excluded for 600s more: capacity", LeftOutKind.EXCLUDED),)
    )
    result = plan(job(), counts(pending=3), [], [], none_ranked, NOW, ON_DEMAND)
    assert grown(result) == {THIRD: (3, "on-demand")}


def test_a_region_that_failed_on_demand_is_left_out_for_on_demand() -> None:
    fleets = [
        fleet(BEST, excluded_until=NOW + 600, on_demand_excluded_until=NOW + 600),
        fleet(SECOND, excluded_until=NOW + 600),
    ]
    result = plan(job(), counts(pending=2), [], fleets, ranking(BEST, SECOND), NOW, ON_DEMAND)
    assert grown(result) == {SECOND: (2, "on-demand")}


def test_a_region_the_operator_denied_is_used_neither_for_spot_nor_on_demand() -> None:
    answer = ranking(SECOND, left_out=((BEST, "denied by the operator", LeftOutKind.DENIED),))
    fleets = [fleet(SECOND, excluded_until=NOW + 60, on_demand_excluded_until=NOW + 60)]
    assert grown(plan(job(), counts(pending=2), [], fleets, answer, NOW, SPOT_ONLY)) == {}
    assert grown(plan(job(), counts(pending=2), [], fleets, answer, NOW, ON_DEMAND)) == {}


def test_the_kinds_the_decision_reads_are_the_ones_the_ranking_writes() -> None:
    observed = [RegionObservation(r, 5, 1.0) for r in (BEST, SECOND)]
    result = rank_regions(
        observed,
        now=NOW,
        occupied={BEST: "replica-0"},
        exclusions=[Exclusion(region=SECOND, until=NOW + 60, reason="capacity")],
    )
    kinds = {o.region: o.kind for o in result.left_out}
    assert kinds == {BEST: LeftOutKind.OCCUPIED, SECOND: LeftOutKind.EXCLUDED}


def test_no_ranking_asks_for_no_growth() -> None:
    result = plan(job(), counts(pending=3), [], [], None, NOW, SPOT_ONLY)
    assert result.requests == () and "no ranking" in result.note


def test_the_jobs_instance_types_travel_with_the_request() -> None:
    result = plan(job(instance_types=["g6.xlarge"]), counts(pending=1), [], [], ranking(BEST), NOW, SPOT_ONLY)
    assert result.requests[0].instance_types == ["g6.xlarge"]


# --- releases and looks -----------------------------------------------------------------------------------------


def test_unavailable_workers_instances_are_released_with_or_without_growth() -> None:
    team = workers(2) + workers(2, status=WorkerStatus.UNAVAILABLE, start=10)
    team += workers(1, SECOND, status=WorkerStatus.UNAVAILABLE, start=20)
    result = plan(job(), counts(pending=1, processing=2), team, [], ranking(BEST), NOW, SPOT_ONLY)
    by_region = {r.region: r for r in result.requests}
    assert by_region[BEST].release_instances == ["i-0010", "i-0011"]
    assert by_region[BEST].desired == 3  # the two active ones and one more: the released ones leave first
    assert by_region[SECOND].release_instances == ["i-0020"] and by_region[SECOND].desired == 0


def test_a_region_booting_workers_is_asked_for_a_report_each_run() -> None:
    asked = fleet(BEST, desired=3, grown_at=NOW - 60)
    result = plan(job(), counts(pending=3), [], [asked], ranking(BEST), NOW, SPOT_ONLY)
    (look,) = result.requests
    assert (look.region, look.desired, look.release_instances, look.release) == (BEST, 0, [], False)
    assert result.added == 0


def test_a_finished_job_releases_every_region_not_released_yet() -> None:
    fleets = [fleet(BEST), fleet(SECOND, released=True), fleet(THIRD, excluded_until=NOW + 60)]
    requests = release_requests(job(JobStatus.COMPLETED), fleets, NOW)
    assert [(r.region, r.release, r.desired) for r in requests] == [(BEST, True, 0), (THIRD, True, 0)]


def test_exclusions_last_as_long_as_the_failures_class_says() -> None:
    assert exclusion_after("capacity", NOW) == NOW + CAPACITY_EXCLUSION_SECONDS
    assert exclusion_after("quota", NOW) == NOW + QUOTA_EXCLUSION_SECONDS
    assert exclusion_after("fatal", NOW) == NOW + QUOTA_EXCLUSION_SECONDS
    assert exclusion_after("transient", NOW) is None
    assert exclusion_after(None, NOW) is None

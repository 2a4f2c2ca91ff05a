"""Spreading replicas: regions that hold a replica are left out; a replacement may stay where it is."""

from __future__ import annotations

import pytest

from spothub_core.logic.ranking import LeftOut, RegionObservation, rank_regions
from spothub_core.models.orchestrator_tasks import LeftOutKind
from spothub_core.models.records import Exclusion

NOW = 1_000_000.0


def obs(region: str, score: int | None, price: float | None) -> RegionObservation:
    return RegionObservation(region, score, price)


# --- occupied ------------------------------------------------------------------------------------


def test_an_occupied_region_is_left_out_with_the_replica_it_holds() -> None:
    ranking = rank_regions(
        [obs("us-east-1", 9, 0.10), obs("us-west-2", 5, 0.20)], now=NOW, occupied={"us-east-1": "replica-0"}
    )
    assert ranking.regions() == ["us-west-2"]
    assert ranking.left_out == (LeftOut("us-east-1", "holds replica-0", LeftOutKind.OCCUPIED),)


def test_the_other_regions_keep_their_usual_order_around_an_occupied_one() -> None:
    observations = [obs("a-1", 9, 0.9), obs("b-1", 9, 0.1), obs("c-1", 7, 0.1), obs("d-1", 3, 0.1)]
    ranking = rank_regions(observations, now=NOW, occupied={"b-1": "replica-1"})
    assert ranking.regions() == ["a-1", "c-1", "d-1"]
    assert [r.rank for r in ranking.ranked] == [1, 2, 3]


def test_several_occupied_regions_each_say_which_replica_they_hold() -> None:
    observations = [obs("a-1", 9, 0.1), obs("b-1", 8, 0.1), obs("c-1", 7, 0.1)]
    ranking = rank_regions(observations, now=NOW, occupied={"a-1": "replica-0", "c-1": "replica-2"})
    assert ranking.regions() == ["b-1"]
    assert set(ranking.left_out) == {
        LeftOut("a-1", "holds replica-0", LeftOutKind.OCCUPIED),
        LeftOut("c-1", "holds replica-2", LeftOutKind.OCCUPIED),
    }


@pytest.mark.parametrize("occupied", [None, {}])
def test_no_occupied_regions_changes_nothing(occupied: dict[str, str] | None) -> None:
    observations = [obs("a-1", 5, 0.1), obs("b-1", 9, 0.2)]
    ranking = rank_regions(observations, now=NOW, occupied=occupied)
    assert ranking == rank_regions(observations, now=NOW)
    assert ranking.left_out == ()


def test_an_occupied_region_that_was_not_observed_adds_nothing() -> None:
    ranking = rank_regions([obs("a-1", 5, 0.1)], now=NOW, occupied={"z-9": "replica-3"})
    assert ranking.regions() == ["a-1"]
    assert ranking.left_out == ()


def test_every_region_occupied_leaves_nothing_to_rank() -> None:
    ranking = rank_regions(
        [obs("a-1", 9, 0.1), obs("b-1", 8, 0.1)], now=NOW, occupied={"a-1": "replica-0", "b-1": "replica-1"}
    )
    assert ranking.ranked == ()
    assert ranking.best is None
    assert len(ranking.left_out) == 2


def test_an_occupied_region_that_is_also_excluded_is_left_out_once() -> None:
    ranking = rank_regions(
        [obs("a-1", 9, 0.1), obs("b-1", 5, 0.1)],
        now=NOW,
        exclusions=[Exclusion(region="a-1", until=NOW + 600, reason="capacity")],
        occupied={"a-1": "replica-0"},
    )
    assert ranking.regions() == ["b-1"]
    assert [entry.region for entry in ranking.left_out] == ["a-1"]


# --- prefer ----------------------------------------------------------------------------------------


def test_a_preferred_region_that_scores_as_well_as_the_best_ranks_first_even_when_pricier() -> None:
    observations = [obs("us-east-1", 9, 0.30), obs("us-west-2", 9, 0.50), obs("eu-west-1", 4, 0.05)]
    ranking = rank_regions(observations, now=NOW, prefer="us-west-2")
    assert ranking.regions() == ["us-west-2", "us-east-1", "eu-west-1"]
    assert [r.rank for r in ranking.ranked] == [1, 2, 3]


def test_the_kept_region_says_why_it_ranks_first() -> None:
    ranking = rank_regions([obs("us-east-1", 9, 0.30), obs("us-west-2", 9, 0.50)], now=NOW, prefer="us-west-2")
    assert ranking.best is not None
    assert ranking.best.reason.endswith("kept: scores as well as the best")
    assert "kept" not in ranking.ranked[1].reason


def test_the_kept_region_does_not_claim_to_be_the_cheapest() -> None:
    ranking = rank_regions([obs("us-east-1", 9, 0.30), obs("us-west-2", 9, 0.50)], now=NOW, prefer="us-west-2")
    assert ranking.best is not None
    assert "cheapest" not in ranking.best.reason


def test_a_preferred_region_with_a_lower_score_keeps_the_normal_order() -> None:
    observations = [obs("us-east-1", 9, 0.90), obs("us-west-2", 8, 0.01)]
    ranking = rank_regions(observations, now=NOW, prefer="us-west-2")
    assert ranking.regions() == ["us-east-1", "us-west-2"]
    assert all("kept" not in r.reason for r in ranking.ranked)


def test_a_preferred_region_that_is_already_best_stays_first() -> None:
    observations = [obs("us-east-1", 9, 0.10), obs("us-west-2", 9, 0.50)]
    assert rank_regions(observations, now=NOW, prefer="us-east-1").regions() == ["us-east-1", "us-west-2"]


def test_a_preferred_region_that_was_not_observed_changes_nothing() -> None:
    observations = [obs("us-east-1", 9, 0.10), obs("us-west-2", 9, 0.50)]
    assert rank_regions(observations, now=NOW, prefer="ap-south-1") == rank_regions(observations, now=NOW)


def test_a_preferred_region_that_is_excluded_is_not_kept() -> None:
    ranking = rank_regions(
        [obs("us-east-1", 9, 0.10), obs("us-west-2", 9, 0.50)],
        now=NOW,
        exclusions=[Exclusion(region="us-west-2", until=NOW + 600, reason="capacity")],
        prefer="us-west-2",
    )
    assert ranking.regions() == ["us-east-1"]


def test_a_preferred_region_that_is_occupied_is_not_kept() -> None:
    ranking = rank_regions(
        [obs("us-east-1", 9, 0.10), obs("us-west-2", 9, 0.50)],
        now=NOW,
        occupied={"us-west-2": "replica-1"},
        prefer="us-west-2",
    )
    assert ranking.regions() == ["us-east-1"]
    assert ranking.left_out == (LeftOut("us-west-2", "holds replica-1", LeftOutKind.OCCUPIED),)


def test_a_preferred_region_moves_only_itself_the_rest_keep_their_order() -> None:
    observations = [obs("a-1", 9, 0.1), obs("b-1", 9, 0.2), obs("c-1", 9, 0.3), obs("d-1", 2, 0.01)]
    ranking = rank_regions(observations, now=NOW, prefer="c-1")
    assert ranking.regions() == ["c-1", "a-1", "b-1", "d-1"]


def test_prefer_with_nothing_to_rank_is_empty() -> None:
    ranking = rank_regions([], now=NOW, prefer="us-west-2")
    assert ranking.ranked == ()
    assert ranking.best is None

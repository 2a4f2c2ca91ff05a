"""The one ranking of regions: placement score, then price, then name; exclusions and lists always."""

from __future__ import annotations

import pytest

from spothub_core.logic.ranking import RegionObservation, rank_regions
from spothub_core.models.records import Exclusion

NOW = 1_000_000.0


def obs(region: str, score: int | None, price: float | None) -> RegionObservation:
    return RegionObservation(region, score, price)


def test_placement_score_first() -> None:
    ranking = rank_regions([obs("us-east-1", 5, 0.10), obs("us-west-2", 9, 0.90)], now=NOW)
    assert ranking.regions() == ["us-west-2", "us-east-1"]
    assert ranking.best is not None and ranking.best.reason == "score 9, $0.9000/h, best placement score"


def test_price_decides_a_tie_of_the_best_score() -> None:
    ranking = rank_regions([obs("us-east-1", 9, 0.65), obs("us-east-2", 9, 0.42), obs("eu-west-1", 3, 0.1)], now=NOW)
    assert ranking.regions() == ["us-east-2", "us-east-1", "eu-west-1"]
    assert ranking.best is not None and ranking.best.reason.endswith("cheapest of the best-scored")
    assert [r.rank for r in ranking.ranked] == [1, 2, 3]


def test_region_name_breaks_a_full_tie_so_the_order_is_stable() -> None:
    observations = [obs("us-west-2", 7, 0.5), obs("eu-west-1", 7, 0.5), obs("ap-south-1", 7, 0.5)]
    assert rank_regions(observations, now=NOW).regions() == ["ap-south-1", "eu-west-1", "us-west-2"]
    assert rank_regions(list(reversed(observations)), now=NOW).regions() == ["ap-south-1", "eu-west-1", "us-west-2"]


def test_unknown_scores_and_prices_rank_last() -> None:
    ranking = rank_regions([obs("a-1", None, 0.01), obs("b-1", 2, None), obs("c-1", 2, 0.5)], now=NOW)
    assert ranking.regions() == ["c-1", "b-1", "a-1"]


def test_an_active_exclusion_leaves_the_region_out_with_its_reason() -> None:
    exclusions = [Exclusion(region="us-west-2", until=NOW + 600, reason="InsufficientInstanceCapacity")]
    ranking = rank_regions([obs("us-west-2", 9, 0.1), obs("us-east-1", 2, 0.9)], now=NOW, exclusions=exclusions)
    assert ranking.regions() == ["us-east-1"]
    (left_out,) = ranking.left_out
    assert (left_out.region, left_out.reason) == ("us-west-2", "excluded for 600s more: InsufficientInstanceCapacity")


def test_an_expired_exclusion_changes_nothing() -> None:
    exclusions = [Exclusion(region="us-west-2", until=NOW - 1, reason="InsufficientInstanceCapacity")]
    ranking = rank_regions([obs("us-west-2", 9, 0.1), obs("us-east-1", 2, 0.9)], now=NOW, exclusions=exclusions)
    assert ranking.regions() == ["us-west-2", "us-east-1"]
    assert ranking.left_out == ()


def test_the_longest_of_several_exclusions_counts() -> None:
    exclusions = [
        Exclusion(region="us-west-2", until=NOW + 60, reason="first"),
        Exclusion(region="us-west-2", until=NOW + 900, reason="second"),
    ]
    ranking = rank_regions([obs("us-west-2", 9, 0.1)], now=NOW, exclusions=exclusions)
    assert ranking.left_out[0].reason == "excluded for 900s more: second"


@pytest.mark.parametrize(
    ("allowed", "denied", "expected", "reason"),
    [
        (None, ["us-west-2"], ["us-east-1"], "denied by the operator"),
        (["us-east-1"], [], ["us-east-1"], "not in the operator's allowed regions"),
        (["us-west-2", "us-east-1"], ["us-west-2"], ["us-east-1"], "denied by the operator"),
    ],
)
def test_the_operators_lists_always_apply(allowed, denied, expected, reason) -> None:
    ranking = rank_regions(
        [obs("us-west-2", 10, 0.01), obs("us-east-1", 1, 9.0)], now=NOW, allowed=allowed, denied=denied
    )
    assert ranking.regions() == expected
    assert [(out.region, out.reason) for out in ranking.left_out] == [("us-west-2", reason)]


def test_nothing_left_gives_no_best() -> None:
    ranking = rank_regions([obs("us-west-2", 9, 0.1)], now=NOW, denied=["us-west-2"])
    assert ranking.best is None
    assert ranking.ranked == ()

"""Region exclusions in DynamoDB (moto): active ones read back, late reports never shorten one."""

from __future__ import annotations

from typing import Any

from spothub_core.dal.exclusions import ExclusionStore


def test_active_exclusions_are_read_back_and_expired_ones_dropped(table: Any) -> None:
    store = ExclusionStore(table)
    assert store.exclude("us-west-2", 2_000.0, "InsufficientInstanceCapacity")
    assert store.exclude("eu-west-1", 500.0, "MaxSpotInstanceCountExceeded")
    (active,) = store.active(now=1_000.0)
    assert (active.region, active.until, active.reason) == ("us-west-2", 2_000.0, "InsufficientInstanceCapacity")
    item = table.get_item(Key={"pk": "EXCLUSION", "sk": "us-west-2"})["Item"]
    assert int(item["expires_at"]) == 2_000 + 86_400


def test_a_late_report_does_not_shorten_a_newer_exclusion(table: Any) -> None:
    store = ExclusionStore(table)
    assert store.exclude("us-west-2", 2_000.0, "newer")
    assert not store.exclude("us-west-2", 1_500.0, "late")  # arrives after, carries an earlier expiry
    assert not store.exclude("us-west-2", 2_000.0, "duplicate")
    assert store.exclude("us-west-2", 2_500.0, "longer")
    (active,) = store.active(now=1_000.0)
    assert (active.until, active.reason) == (2_500.0, "longer")


def test_exclude_once_says_whether_this_write_began_an_exclusion_of_its_kind(table: Any) -> None:
    store = ExclusionStore(table)
    assert store.exclude("us-west-2", 1_500.0, "capacity")  # a shorter exclusion of another kind
    assert store.exclude_once("us-west-2", 22_600.0, "quota: vCPU limit", kind="quota", now=1_000.0)
    # The same failure again, a little later: it extends the exclusion, but began nothing.
    assert not store.exclude_once("us-west-2", 22_630.0, "quota: vCPU limit", kind="quota", now=1_030.0)
    assert not store.exclude_once("us-west-2", 22_000.0, "quota: late", kind="quota", now=1_040.0)
    (active,) = store.active(now=1_050.0)
    assert (active.until, active.reason) == (22_630.0, "quota: vCPU limit")
    # Once it has ended, the quota reached again is a new exclusion.
    assert store.exclude_once("us-west-2", 45_000.0, "quota: vCPU limit", kind="quota", now=23_000.0)

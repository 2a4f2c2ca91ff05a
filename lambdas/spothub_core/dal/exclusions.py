"""Region exclusions in the state table: a region left out of the ranking until an expiry.

Item: pk=EXCLUSION, sk=<region>, until (epoch seconds), reason, kind (the failure's class, "" when not given),
expires_at (TTL, a day after `until`, so DynamoDB removes stale items; readers still filter on `until`, since
TTL deletion lags).
"""

from __future__ import annotations

from typing import Any

from spothub_core.dal.state_table import (
    PARTITION_KEY,
    SORT_KEY,
    TTL_ATTRIBUTE,
    conditional_write,
    plain_item,
    query_partition,
    to_number,
)
from spothub_core.models.records import Exclusion
from spothub_core.timings import EXCLUSION_RECORD_GRACE_SECONDS

EXCLUSION_PARTITION = "EXCLUSION"


class ExclusionStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def active(self, now: float) -> list[Exclusion]:
        items = query_partition(self._table, EXCLUSION_PARTITION, "read exclusions")
        exclusions = [Exclusion.model_validate({**plain_item(i), "region": i[SORT_KEY]}) for i in items]
        return [e for e in exclusions if e.until > now]

    def exclude(self, region: str, until: float, reason: str, *, kind: str = "") -> bool:
        """Exclude `region` until `until` for a failure of `kind` (what GET /regions shows); False when a longer
        exclusion already stands (kept as is)."""
        return self._write(region, until, reason, kind=kind) is not None

    def exclude_once(self, region: str, until: float, reason: str, *, kind: str, now: float) -> bool:
        """Exclude `region` for a failure of `kind`, as `exclude` does. True only when this write began an
        exclusion of that kind (none stood at `now`): a duplicate or second report of the same failure, or
        one racing it, finds the first one's exclusion, so whatever is done once per exclusion is done once."""
        written = self._write(region, until, reason, kind=kind)
        if written is None:
            return False  # a longer exclusion stands: the report that set it began it
        before = written.get("Attributes") or {}
        return not (before.get("kind") == kind and float(before.get("until", 0)) > now)

    def _write(self, region: str, until: float, reason: str, *, kind: str) -> dict[str, Any] | None:
        until_value = to_number(until)
        return conditional_write(
            f"write the exclusion of {region}",
            self._table.put_item,
            Item={
                PARTITION_KEY: EXCLUSION_PARTITION,
                SORT_KEY: region,
                "until": until_value,
                "reason": reason,
                "kind": kind,
                TTL_ATTRIBUTE: int(until) + EXCLUSION_RECORD_GRACE_SECONDS,
            },
            # A late or duplicate capacity report must not shorten an exclusion a newer one set.
            ConditionExpression="attribute_not_exists(#until) OR #until < :until",
            ExpressionAttributeNames={"#until": "until"},
            ExpressionAttributeValues={":until": until_value},
            # What stood before, read in the same atomic write: tells a new exclusion from an extended one.
            ReturnValues="ALL_OLD",
        )

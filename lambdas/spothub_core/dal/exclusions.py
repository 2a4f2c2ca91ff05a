"""Region exclusions in the state table: a region left out of the ranking until an expiry.

Item: pk=EXCLUSION, sk=<region>, until (epoch seconds), reason, expires_at (TTL, a day after `until`,
so DynamoDB removes stale items; readers still filter on `until`, since TTL deletion lags).
"""

from __future__ import annotations

from typing import Any

from spothub_core.dal.state_table import (
    PARTITION_KEY,
    SORT_KEY,
    TTL_ATTRIBUTE,
    conditional_write,
    query_partition,
    to_number,
)
from spothub_core.logic.ranking import Exclusion

EXCLUSION_PARTITION = "EXCLUSION"
TTL_GRACE_SECONDS = 86400


class ExclusionStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def active(self, now: float) -> list[Exclusion]:
        items = query_partition(self._table, EXCLUSION_PARTITION, "read exclusions")
        exclusions = [Exclusion(str(i[SORT_KEY]), float(i["until"]), str(i.get("reason", ""))) for i in items]
        return [e for e in exclusions if e.until > now]

    def exclude(self, region: str, until: float, reason: str) -> bool:
        """Exclude `region` until `until`; False when a longer exclusion already stands (kept as is)."""
        until_value = to_number(until)
        written = conditional_write(
            f"write the exclusion of {region}",
            self._table.put_item,
            Item={
                PARTITION_KEY: EXCLUSION_PARTITION,
                SORT_KEY: region,
                "until": until_value,
                "reason": reason,
                TTL_ATTRIBUTE: int(until) + TTL_GRACE_SECONDS,
            },
            # A late or duplicate capacity report must not shorten an exclusion a newer one set.
            ConditionExpression="attribute_not_exists(#until) OR #until < :until",
            ExpressionAttributeNames={"#until": "until"},
            ExpressionAttributeValues={":until": until_value},
        )
        return written is not None

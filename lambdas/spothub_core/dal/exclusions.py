"""Region exclusions in the state table: a region left out of the ranking until an expiry.

Item: pk=EXCLUSION, sk=<region>, until (epoch seconds), reason, expires_at (TTL, a day after `until`,
so DynamoDB removes stale items; readers still filter on `until`, since TTL deletion lags).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE, reason_of
from spothub_core.errors import DependencyUnavailable
from spothub_core.logic.ranking import Exclusion

EXCLUSION_PARTITION = "EXCLUSION"
TTL_GRACE_SECONDS = 86400


class ExclusionStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def active(self, now: float) -> list[Exclusion]:
        try:
            items = []
            query: dict[str, Any] = {"KeyConditionExpression": Key(PARTITION_KEY).eq(EXCLUSION_PARTITION)}
            while True:
                page = self._table.query(**query)
                items.extend(page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except (ClientError, BotoCoreError) as exc:
            raise DependencyUnavailable(f"exclusions could not be read: {reason_of(exc)}") from exc
        exclusions = [Exclusion(str(i[SORT_KEY]), float(i["until"]), str(i.get("reason", ""))) for i in items]
        return [e for e in exclusions if e.until > now]

    def exclude(self, region: str, until: float, reason: str) -> bool:
        """Exclude `region` until `until`; False when a longer exclusion already stands (kept as is)."""
        until_value = Decimal(str(round(until, 3)))
        try:
            self._table.put_item(
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
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response["Error"].get("Code") == "ConditionalCheckFailedException":
                return False
            raise DependencyUnavailable(f"exclusion of {region} could not be written: {reason_of(exc)}") from exc
        return True

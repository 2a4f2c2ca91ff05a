"""The state table: one DynamoDB table, items keyed by `pk` and `sk`, expiring by `expires_at`.

Key layout (each item kind lives in its own dal module, with its condition expressions):
  pk=DEPLOYMENT  sk=DEPLOYMENT   the deployment record (written on first use)
  pk=EXCLUSION   sk=<region>     a region excluded from ranking until an expiry (dal/exclusions.py)
  pk=PROVISIONING, REPLICA, LAUNCH, TEARDOWN, INSTANCE, RESERVATION   spot provisioning (dal/provisioning.py)
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.errors import DependencyUnavailable

PARTITION_KEY = "pk"
SORT_KEY = "sk"
TTL_ATTRIBUTE = "expires_at"

DEPLOYMENT_KEY = {PARTITION_KEY: "DEPLOYMENT", SORT_KEY: "DEPLOYMENT"}


class StateTable:
    """Typed access to the state table through a boto3 DynamoDB Table resource."""

    def __init__(self, table: Any) -> None:
        self._table = table

    @property
    def name(self) -> str:
        return str(self._table.name)

    def probe(self) -> None:
        """Prove the table answers and this function may read it; raises DependencyUnavailable."""
        try:
            self._table.get_item(Key=DEPLOYMENT_KEY, ProjectionExpression=PARTITION_KEY)
        except (ClientError, BotoCoreError) as exc:
            raise DependencyUnavailable(f"state table {self.name} did not answer: {reason_of(exc)}") from exc


def reason_of(exc: Exception) -> str:
    """An AWS error as `Code: message`, for error messages that say what went wrong."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return type(exc).__name__


def call(what: str, method: Any, **arguments: Any) -> Any:
    """Call DynamoDB; a failure becomes DependencyUnavailable saying what could not be done."""
    try:
        return method(**arguments)
    except (ClientError, BotoCoreError) as exc:
        raise DependencyUnavailable(f"could not {what}: {reason_of(exc)}") from exc


def conditional_write(what: str, method: Any, **arguments: Any) -> Any | None:
    """Call a conditional put or update; None when its condition failed (the race it guards was lost),
    its response otherwise. Other failures become DependencyUnavailable."""
    try:
        return method(**arguments)
    except (ClientError, BotoCoreError) as exc:
        if isinstance(exc, ClientError) and exc.response["Error"].get("Code") == "ConditionalCheckFailedException":
            return None
        raise DependencyUnavailable(f"could not {what}: {reason_of(exc)}") from exc


def query_all(table: Any, what: str, **query: Any) -> list[dict[str, Any]]:
    """Every item a query finds, page after page."""
    items: list[dict[str, Any]] = []
    while True:
        page = call(what, table.query, **query)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        query = {**query, "ExclusiveStartKey": page["LastEvaluatedKey"]}


def query_partition(table: Any, partition: str, what: str) -> list[dict[str, Any]]:
    """Every item of one partition, page after page."""
    return query_all(table, what, KeyConditionExpression=Key(PARTITION_KEY).eq(partition))


def plain_item(item: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB's Decimals as int/float (nested ones too), keys dropped."""
    return {key: _plain(value) for key, value in item.items() if key not in (PARTITION_KEY, SORT_KEY)}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_item_value(value: Any) -> Any:
    """A JSON-shaped value (floats anywhere inside) as DynamoDB takes it: floats become Decimals."""
    return json.loads(json.dumps(value, default=_decimal_as_json), parse_float=Decimal)


def _decimal_as_json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def to_number(value: float) -> Decimal:
    return Decimal(str(round(value, 3)))


def update_fields(
    table: Any,
    key: dict[str, str],
    fields: dict[str, Any],
    *,
    what: str,
    condition: str | None = None,
    names: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """SET `fields` on one item (under `condition`); the item as it is now, None when the condition failed."""
    field_names = {f"#f{i}": name for i, name in enumerate(fields)}
    arguments: dict[str, Any] = {
        "Key": key,
        "UpdateExpression": "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(fields))),
        "ExpressionAttributeNames": {**field_names, **(names or {})},
        "ExpressionAttributeValues": {**{f":f{i}": v for i, v in enumerate(fields.values())}, **(values or {})},
        "ReturnValues": "ALL_NEW",
    }
    if condition:
        arguments["ConditionExpression"] = condition
    response = conditional_write(what, table.update_item, **arguments)
    return None if response is None else plain_item(response["Attributes"])

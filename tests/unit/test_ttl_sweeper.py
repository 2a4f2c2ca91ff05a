"""DynamoDB TTL by the sandbox clock (spothub/sandbox/ttl_sweeper.py): which items are expired, the table's TTL
setting from its template, and a sweep of a moto table."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spothub.sandbox.clock import SandboxClock
from spothub.sandbox.ttl_sweeper import (
    MAX_EXPIRED_AGE_SECONDS,
    TtlSweeper,
    expired,
    time_to_live_from_template,
    ttl_attribute,
)

NOW = 1_800_000_000.0
ACCOUNT = "123456789012"
REGION = "us-east-1"


@pytest.mark.parametrize(
    ("attribute", "is_expired"),
    [
        ({"N": str(NOW - 1)}, True),
        ({"N": str(int(NOW) - 3600)}, True),
        ({"N": str(NOW + 1)}, False),
        ({"N": str(NOW)}, False),  # expired once now is past it, not at it
        ({"N": str(NOW - MAX_EXPIRED_AGE_SECONDS - 1)}, False),  # over five years back: AWS leaves it
        ({"S": str(NOW - 1)}, False),  # not a number
        ({"NS": [str(NOW - 1)]}, False),
        ({"N": "not a number"}, False),
    ],
)
def test_an_item_expires_only_by_a_number_of_seconds_now_is_past(attribute: dict[str, Any], is_expired: bool) -> None:
    assert expired(attribute, NOW) is is_expired


class _Table:
    ttl: dict[str, str] = {"TimeToLiveStatus": "DISABLED"}  # noqa: RUF012 (moto's default, replaced per instance)


def test_the_templates_time_to_live_specification_is_the_tables_ttl() -> None:
    table = _Table()
    time_to_live_from_template(table, {"TableName": "t"})
    assert ttl_attribute(table) is None
    time_to_live_from_template(table, {"TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True}})
    assert table.ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    assert ttl_attribute(table) == "expires_at"
    time_to_live_from_template(table, {"TimeToLiveSpecification": {"AttributeName": "gone", "Enabled": "false"}})
    assert ttl_attribute(table) is None


@pytest.fixture
def tables() -> Iterator[Any]:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        for name in ("with-ttl", "without-ttl"):
            dynamodb.create_table(
                TableName=name,
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        dynamodb.update_time_to_live(
            TableName="with-ttl", TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )
        yield dynamodb


def _keys(dynamodb: Any, table: str) -> list[str]:
    return sorted(item["sk"]["S"] for item in dynamodb.scan(TableName=table)["Items"])


def test_a_sweep_deletes_what_expired_by_the_clock_and_an_advance_sweeps_at_once(tables: Any) -> None:
    clock = SandboxClock(start=NOW)
    for table in ("with-ttl", "without-ttl"):
        for name, expires_at in (("past", NOW - 10), ("soon", NOW + 60), ("later", NOW + 7200)):
            tables.put_item(
                TableName=table,
                Item={"pk": {"S": "P"}, "sk": {"S": name}, "expires_at": {"N": str(int(expires_at))}},
            )
        tables.put_item(TableName=table, Item={"pk": {"S": "P"}, "sk": {"S": "no-ttl"}})
    errors: list[Exception] = []
    sweeper = TtlSweeper(
        clock, ACCOUNT, lambda: [REGION], items_lock=threading.RLock(), on_error=errors.append, interval_s=3600
    )

    assert sweeper.sweep() == 1
    assert _keys(tables, "with-ttl") == ["later", "no-ttl", "soon"]
    assert _keys(tables, "without-ttl") == ["later", "no-ttl", "past", "soon"], "no TTL on the table: kept"

    clock.advance(120)  # not started: an advance sweeps nothing
    assert _keys(tables, "with-ttl") == ["later", "no-ttl", "soon"]
    sweeper.start()
    try:
        clock.advance(0)
        assert _keys(tables, "with-ttl") == ["later", "no-ttl"]
    finally:
        sweeper.stop()
    assert sweeper.deleted == 2
    assert errors == []

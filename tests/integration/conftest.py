"""Fixtures shared by the integration tests: the state table in moto's DynamoDB."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

STATE_TABLE_KEYS = {
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ],
    "BillingMode": "PAY_PER_REQUEST",
}


@pytest.fixture
def table() -> Iterator[Any]:
    """An empty state table (pk/sk, as the hub stack defines it), as a boto3 Table resource."""
    with mock_aws():
        boto3.client("dynamodb", region_name="us-east-1").create_table(TableName="state", **STATE_TABLE_KEYS)
        yield boto3.resource("dynamodb", region_name="us-east-1").Table("state")

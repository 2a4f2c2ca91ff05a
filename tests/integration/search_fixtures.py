"""The search table in moto's DynamoDB, as the hub stack defines it (pk/sk, TTL on expires_at).

Import the fixture into a test module (it is registered under the name `search_table`):
`from tests.integration.search_fixtures import search_table_fixture  # noqa: F401`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.integration.conftest import STATE_TABLE_KEYS

SEARCH_TABLE = "spothub-search"
SEARCH_TABLE_REGION = "us-east-1"


def create_search_table(name: str = SEARCH_TABLE, region: str = SEARCH_TABLE_REGION) -> Any:
    """Create the search table (inside mock_aws, or against an emulator) and return it as a boto3 Table resource."""
    client = boto3.client("dynamodb", region_name=region)
    client.create_table(TableName=name, **STATE_TABLE_KEYS)
    client.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
    return boto3.resource("dynamodb", region_name=region).Table(name)


@pytest.fixture(name="search_table")
def search_table_fixture() -> Iterator[Any]:
    """An empty search table in moto (us-east-1), as a boto3 Table resource."""
    with mock_aws():
        yield create_search_table()

"""The jobs table in moto's DynamoDB, created as the hub stack defines it (stacks/constructs/batch_jobs.py):
pk/sk, TTL on expires_at, the sparse indexes by_status (INCLUDE deadline, worker_id, attempt) and by_time (ALL).

Import the fixture into a test module: `from tests.integration.batch_fixtures import jobs_table  # noqa: F401`.

`atomic_items()`: moto checks a write's condition and applies the write without a lock, so two threads can both
pass the same condition (two workers both "win" one batch). DynamoDB applies each item write atomically; tests
and benchmarks that call moto from many threads serialize its DynamoDB operations with this, as DynamoDB does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spothub.sandbox.emulator_patches import DYNAMODB_ITEM_OPERATIONS, serialized
from spothub_core.dal.batch_table import BY_STATUS, BY_TIME, CREATED_KEY, LIST_KEY, STATUS_KEY

JOBS_TABLE = "spothub-jobs"
JOBS_REGION = "us-east-1"
BY_STATUS_ATTRIBUTES = ["deadline", "worker_id", "attempt"]


def create_jobs_table(name: str = JOBS_TABLE, region: str = JOBS_REGION) -> Any:
    """Create the jobs table (inside mock_aws, or against an emulator's endpoint) and return it as a boto3
    Table resource."""
    client = boto3.client("dynamodb", region_name=region)
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", STATUS_KEY, LIST_KEY, CREATED_KEY)
        ],
        BillingMode="PAY_PER_REQUEST",
        GlobalSecondaryIndexes=[
            {
                "IndexName": BY_STATUS,
                "KeySchema": [
                    {"AttributeName": STATUS_KEY, "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": BY_STATUS_ATTRIBUTES},
            },
            {
                "IndexName": BY_TIME,
                "KeySchema": [
                    {"AttributeName": LIST_KEY, "KeyType": "HASH"},
                    {"AttributeName": CREATED_KEY, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
    )
    client.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
    return boto3.resource("dynamodb", region_name=region).Table(name)


@pytest.fixture
def jobs_table() -> Iterator[Any]:
    """An empty jobs table in moto (us-east-1), as a boto3 Table resource."""
    with mock_aws():
        yield create_jobs_table()


@contextmanager
def atomic_items() -> Iterator[None]:
    """Run moto's DynamoDB item operations one at a time, in every thread of the process: each request is then
    atomic, as DynamoDB makes each item write (its condition and its change) atomic."""
    from moto.dynamodb.models import DynamoDBBackend  # noqa: PLC0415

    lock = threading.RLock()
    originals = {name: getattr(DynamoDBBackend, name) for name in DYNAMODB_ITEM_OPERATIONS}
    for name, operation in originals.items():
        setattr(DynamoDBBackend, name, serialized(operation, lock))
    try:
        yield
    finally:
        for name, operation in originals.items():
            setattr(DynamoDBBackend, name, operation)

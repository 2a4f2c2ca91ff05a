"""The state table: one DynamoDB table, items keyed by `pk` and `sk`, expiring by `expires_at`.

Key layout (each item kind lives in its own dal module, with its condition expressions):
  pk=DEPLOYMENT  sk=DEPLOYMENT   the deployment record (written on first use)
  pk=EXCLUSION   sk=<region>     a region excluded from ranking until an expiry (dal/exclusions.py)
"""

from __future__ import annotations

from typing import Any

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

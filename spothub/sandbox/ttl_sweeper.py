"""DynamoDB Time to Live by the sandbox clock: moto keeps a table's TTL setting but never deletes an expired item.

An item expires when its table's TTL attribute holds a number of epoch seconds earlier than now (a string, a
set or a missing attribute never expires it; nor does a time more than five years past, as on AWS). The sweeper
deletes expired items every few real seconds and right after each advance of the clock. AWS deletes them within
days, usually minutes, so readers filter expired items themselves (spothub's do); the sandbox deletes them at
once, which such readers cannot tell from a quick AWS.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from spothub.sandbox.clock import SandboxClock, Ticker

# AWS leaves alone an item whose expiry lies more than five years back (it takes the number for something else).
MAX_EXPIRED_AGE_SECONDS = 5 * 365 * 24 * 3600
SWEEP_EVERY_S = 2.0


def expired(attribute: Any, now: float) -> bool:
    """Whether a TTL attribute (moto's DynamoType, or its JSON form {"N": "..."}) makes its item expired at `now`."""
    kind, value = (
        (attribute.type, attribute.value) if hasattr(attribute, "type") else next(iter(dict(attribute).items()))
    )
    if kind != "N":
        return False
    try:
        expires_at = float(value)
    except (TypeError, ValueError):
        return False
    return now - MAX_EXPIRED_AGE_SECONDS <= expires_at < now


def time_to_live_from_template(table: Any, properties: dict[str, Any]) -> None:
    """A table's TimeToLiveSpecification as CloudFormation sets it (moto's CloudFormation drops it)."""
    specification = properties.get("TimeToLiveSpecification") or {}
    if specification.get("AttributeName"):
        enabled = str(specification.get("Enabled")).lower() == "true"
        table.ttl = {
            "TimeToLiveStatus": "ENABLED" if enabled else "DISABLED",
            "AttributeName": specification["AttributeName"],
        }


def ttl_attribute(table: Any) -> str | None:
    ttl = getattr(table, "ttl", None) or {}
    return ttl.get("AttributeName") if ttl.get("TimeToLiveStatus") == "ENABLED" else None


class TtlSweeper:
    """Deletes the expired items of every TTL-enabled table of `account` in `regions()`. `items_lock`: the lock moto's
    item operations run under (emulator_patches), held for a sweep so no write lands between check and delete."""

    def __init__(
        self,
        clock: SandboxClock,
        account: str,
        regions: Callable[[], list[str]],
        *,
        items_lock: AbstractContextManager[Any],
        on_error: Callable[[Exception], None],
        interval_s: float = SWEEP_EVERY_S,
    ) -> None:
        self._clock = clock
        self._account = account
        self._regions = regions
        self._items_lock = items_lock
        self._running = threading.Event()
        self._ticker = Ticker("sandbox-ttl", self.sweep, interval_s, on_error)
        self._on_error = on_error
        self.deleted = 0
        clock.on_advance(self._after_advance)

    def start(self) -> None:
        self._running.set()
        self._ticker.start()

    def stop(self) -> None:
        self._running.clear()
        self._ticker.stop()

    def sweep(self) -> int:
        """Delete what has expired by now; how many items went."""
        now = self._clock.now()
        deleted = 0
        with self._items_lock:
            for table in self._tables():
                attribute = ttl_attribute(table)
                if attribute is None:
                    continue
                for item in table.all_items():
                    value = item.attrs.get(attribute)
                    if value is not None and expired(value, now):
                        table.delete_item(item.hash_key, item.range_key)
                        deleted += 1
        self.deleted += deleted
        return deleted

    def _after_advance(self) -> None:
        if self._running.is_set():
            try:
                self.sweep()
            except Exception as exc:
                self._on_error(exc)

    def _tables(self) -> Iterator[Any]:
        from moto.dynamodb.models import dynamodb_backends  # noqa: PLC0415

        for region in self._regions():
            yield from list(dynamodb_backends[self._account][region].tables.values())

"""The search table (layout: spothub_core/models/search_records.py): the volume's one slot and the launch records.

Every write that races another is conditional, and says which race it closes. Callers get typed records back;
a lost race is `None` (or False), never an exception.
"""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.conditions import Key

from spothub_core.dal.state_table import (
    PARTITION_KEY,
    SORT_KEY,
    TTL_ATTRIBUTE,
    call,
    conditional_write,
    plain_item,
    query_all,
    to_item_value,
    to_number,
    update_fields,
)
from spothub_core.models.search_records import EndReason, SearchInstance, SearchSlot, SearchStatus
from spothub_core.timings import SEARCH_RECORD_TTL_SECONDS

SEARCH_PK = "SEARCH"
SLOT_KEY = {PARTITION_KEY: SEARCH_PK, SORT_KEY: "SLOT"}
LAUNCH_PREFIX = "LAUNCH#"
ROUTABLE = tuple(s for s in SearchStatus if s.routable)
# A record in one of these has given up the slot for good; nothing moves it back.
ENDED = (SearchStatus.TERMINATING, SearchStatus.TERMINATED)


def launch_key(launch_id: str) -> dict[str, str]:
    return {PARTITION_KEY: SEARCH_PK, SORT_KEY: f"{LAUNCH_PREFIX}{launch_id}"}


def _status_values(statuses: tuple[SearchStatus, ...] | list[SearchStatus]) -> tuple[str, dict[str, str]]:
    names = [f":s{i}" for i in range(len(statuses))]
    return "#status IN (" + ", ".join(names) + ")", {name: str(s) for name, s in zip(names, statuses, strict=True)}


def _numbers(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        k: to_number(v) if isinstance(v, float) else (str(v) if isinstance(v, SearchStatus | EndReason) else v)
        for k, v in fields.items()
    }


class SearchStore:
    """Typed access to the search table through a boto3 DynamoDB Table resource."""

    def __init__(self, table: Any) -> None:
        self._table = table

    # --- the slot: one instance per volume ----------------------------------------------------------------

    def slot(self) -> SearchSlot:
        item = call("read the search slot", self._table.get_item, Key=SLOT_KEY, ConsistentRead=True).get("Item")
        return SearchSlot.model_validate(plain_item(item)) if item else SearchSlot()

    def claim_slot(self, launch_id: str, now: float) -> bool:
        """Take the free slot for `launch_id`. Twenty concurrent scale-ups or queries from zero all try; the
        condition (the slot has no holder) lets exactly one of them through."""
        response = conditional_write(
            "claim the search slot",
            self._table.put_item,
            Item={**SLOT_KEY, "launch_id": launch_id, "claimed_at": to_number(now)},
            ConditionExpression="attribute_not_exists(launch_id)",
        )
        return response is not None

    def transfer_slot(self, from_launch: str, to_launch: str, now: float) -> bool:
        """Hand the slot from a launch that is being replaced to its replacement, with no moment free between:
        a query arriving meanwhile cannot start a second launch. The condition (still held by `from_launch`)
        closes the race with a scale-down or a second replacement of the same launch."""
        response = conditional_write(
            "hand the search slot over",
            self._table.update_item,
            Key=SLOT_KEY,
            UpdateExpression="SET launch_id = :to, claimed_at = :now",
            ConditionExpression="launch_id = :from",
            ExpressionAttributeValues={":to": to_launch, ":from": from_launch, ":now": to_number(now)},
        )
        return response is not None

    def release_slot(self, launch_id: str) -> bool:
        """Free the slot if `launch_id` still holds it. The condition keeps a late release (a launch's failure
        step after the monitor already handed the slot to a replacement) from freeing someone else's slot."""
        response = conditional_write(
            "release the search slot",
            self._table.update_item,
            Key=SLOT_KEY,
            UpdateExpression="REMOVE launch_id, claimed_at",
            ConditionExpression="launch_id = :mine",
            ExpressionAttributeValues={":mine": launch_id},
        )
        return response is not None

    # --- launch records -------------------------------------------------------------------------------------

    def create(self, record: SearchInstance) -> bool:
        """Write a new launch record; False when it exists (a retried task or a redelivered request)."""
        item = {**launch_key(record.launch_id), **to_item_value(record.model_dump(mode="json", exclude_none=True))}
        response = conditional_write(
            "record the search launch",
            self._table.put_item,
            Item=item,
            ConditionExpression=f"attribute_not_exists({PARTITION_KEY})",
        )
        return response is not None

    def get(self, launch_id: str) -> SearchInstance | None:
        item = call("read the search launch", self._table.get_item, Key=launch_key(launch_id), ConsistentRead=True).get(
            "Item"
        )
        return SearchInstance.model_validate(plain_item(item)) if item else None

    def all(self) -> list[SearchInstance]:
        """Every launch record, oldest first (launch ids sort by time: see logic.search_launches.new_launch_id)."""
        items = query_all(
            self._table,
            "list the search launches",
            KeyConditionExpression=Key(PARTITION_KEY).eq(SEARCH_PK) & Key(SORT_KEY).begins_with(LAUNCH_PREFIX),
            ConsistentRead=True,
        )
        return [SearchInstance.model_validate(plain_item(item)) for item in items]

    def live(self) -> list[SearchInstance]:
        return [record for record in self.all() if record.status.live]

    def by_instance(self, instance_id: str) -> SearchInstance | None:
        """The newest record of an instance (an adopted one may follow a forgotten one)."""
        matches = [r for r in self.all() if r.instance_id == instance_id]
        return matches[-1] if matches else None

    def update(
        self,
        launch_id: str,
        fields: dict[str, Any],
        *,
        expected: tuple[SearchStatus, ...] | None = None,
        now: float | None = None,
    ) -> SearchInstance | None:
        """SET `fields` (a `status` among them, maybe) if the record is in one of `expected` statuses; the record
        as it is now, None when it is not (the race was lost: another function moved it first)."""
        values = _numbers({**fields, **({"updated_at": now} if now is not None else {})})
        condition = f"attribute_exists({PARTITION_KEY})"
        names: dict[str, str] = {}
        condition_values: dict[str, Any] = {}
        if expected:
            clause, condition_values = _status_values(expected)
            condition += f" AND {clause}"
            names["#status"] = "status"
        item = update_fields(
            self._table,
            launch_key(launch_id),
            values,
            what="update the search launch",
            condition=condition,
            names=names,
            values=condition_values,
        )
        return None if item is None else SearchInstance.model_validate(item)

    def end(
        self,
        launch_id: str,
        status: SearchStatus,
        reason: EndReason,
        now: float,
        error: str | None = None,
        *,
        expected: tuple[SearchStatus, ...] | None = None,
    ) -> SearchInstance | None:
        """Move a record to failed, terminating or terminated with its reason; terminated records expire."""
        fields: dict[str, Any] = {"status": status, "reason": reason, "ended_at": now}
        if error:
            fields["error"] = error[:1000]
        if status == SearchStatus.TERMINATED:
            fields[TTL_ATTRIBUTE] = int(now) + SEARCH_RECORD_TTL_SECONDS
        return self.update(launch_id, fields, expected=expected, now=now)

    def terminate_if_quiet(self, launch_id: str, reason: EndReason, now: float) -> SearchInstance | None:
        """Move a routable or starting record to terminating only while no query is in flight: the condition
        closes the race between a scale-down (or the idle rule) and a query that has just begun."""
        clause, values = _status_values([*ROUTABLE, SearchStatus.LAUNCHING, SearchStatus.STARTING, SearchStatus.FAILED])
        item = update_fields(
            self._table,
            launch_key(launch_id),
            _numbers({"status": SearchStatus.TERMINATING, "reason": reason, "ended_at": now, "updated_at": now}),
            what="terminate the search instance",
            condition=f"{clause} AND (attribute_not_exists(current_requests) OR current_requests <= :zero)",
            names={"#status": "status"},
            values={**values, ":zero": 0},
        )
        return None if item is None else SearchInstance.model_validate(item)

    # --- queries in flight -----------------------------------------------------------------------------------

    def begin_request(self, launch_id: str, now: float) -> SearchInstance | None:
        """Count a query in (busy). The condition (still routable) closes the race with a termination or a
        failure decided meanwhile: such an instance is never sent another query."""
        clause, values = _status_values(list(ROUTABLE))
        response = conditional_write(
            "count the search query in",
            self._table.update_item,
            Key=launch_key(launch_id),
            UpdateExpression="ADD current_requests :one SET #status = :busy, updated_at = :now",
            ConditionExpression=clause,
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={**values, ":one": 1, ":busy": str(SearchStatus.BUSY), ":now": to_number(now)},
            ReturnValues="ALL_NEW",
        )
        return None if response is None else SearchInstance.model_validate(plain_item(response["Attributes"]))

    def end_request(self, launch_id: str, now: float) -> SearchInstance | None:
        """Count a query out and stamp last_used; the last one out turns busy into idle. The second write's
        condition (busy with nothing in flight) closes the race with a query that began in between."""
        response = conditional_write(
            "count the search query out",
            self._table.update_item,
            Key=launch_key(launch_id),
            UpdateExpression="ADD current_requests :minus SET last_used = :now, updated_at = :now",
            ConditionExpression=f"attribute_exists({PARTITION_KEY}) AND current_requests > :zero",
            ExpressionAttributeValues={":minus": -1, ":zero": 0, ":now": to_number(now)},
            ReturnValues="ALL_NEW",
        )
        if response is None:
            return self.get(launch_id)
        record = SearchInstance.model_validate(plain_item(response["Attributes"]))
        if record.current_requests == 0 and record.status == SearchStatus.BUSY:
            idle = update_fields(
                self._table,
                launch_key(launch_id),
                {"status": str(SearchStatus.IDLE)},
                what="mark the search instance idle",
                condition="#status = :busy AND current_requests = :zero",
                names={"#status": "status"},
                values={":busy": str(SearchStatus.BUSY), ":zero": 0},
            )
            if idle is not None:
                return SearchInstance.model_validate(idle)
        return record

    # --- health ---------------------------------------------------------------------------------------------

    def record_health(
        self, launch_id: str, healthy: bool, now: float, error: str | None = None
    ) -> SearchInstance | None:
        """One health check's result: a pass resets the consecutive misses, a miss adds one (ADD is atomic, so two
        overlapping checks both count). Only a routable record is touched: a failed or ended one stays so."""
        clause, values = _status_values(list(ROUTABLE))
        if healthy:
            expression = "SET health_failures = :zero, last_health_at = :now REMOVE #error"
            attribute_values = {**values, ":zero": 0, ":now": to_number(now)}
        else:
            expression = "ADD health_failures :one SET last_health_at = :now, #error = :error"
            attribute_values = {**values, ":one": 1, ":now": to_number(now), ":error": (error or "no answer")[:1000]}
        response = conditional_write(
            "record the search health check",
            self._table.update_item,
            Key=launch_key(launch_id),
            UpdateExpression=expression,
            ConditionExpression=clause,
            ExpressionAttributeNames={"#status": "status", "#error": "error"},
            ExpressionAttributeValues=attribute_values,
            ReturnValues="ALL_NEW",
        )
        return None if response is None else SearchInstance.model_validate(plain_item(response["Attributes"]))

    def forget(self, launch_id: str) -> None:
        call("forget the search launch", self._table.delete_item, Key=launch_key(launch_id))

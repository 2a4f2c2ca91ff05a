"""Batch jobs in the jobs table: pk=JOB#<job_id>, sk=JOB (Job).

A job carries status_key "JOBS#<status>" (the by_status index: the supervisor's unsettled jobs) until it is
settled, and list_key/created_key (the by_time index: GET /jobs, newest first) for good.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.conditions import Key

from spothub_core.dal.batch_table import (
    BY_STATUS,
    BY_TIME,
    CREATED_KEY,
    JOBS_LIST,
    LIST_KEY,
    STATUS_KEY,
    job_key,
    job_pk,
    job_status_key,
)
from spothub_core.dal.state_table import (
    PARTITION_KEY,
    SORT_KEY,
    call,
    conditional_write,
    plain_item,
    query_all,
    to_item_value,
    to_number,
)
from spothub_core.errors import Conflict, DependencyUnavailable
from spothub_core.models.batch_records import Job, JobStatus

BATCH_GET_LIMIT = 100  # keys per BatchGetItem, DynamoDB's limit
BATCH_GET_ATTEMPTS = 5
_TOKEN_KEYS = {PARTITION_KEY, SORT_KEY, LIST_KEY, CREATED_KEY}


def created_key(job: Job) -> str:
    """The by_time sort key: the creation time to the microsecond, then the job id (unique, sorts by time)."""
    created = datetime.fromtimestamp(job.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{created}#{job.job_id}"


def job_item(job: Job) -> dict[str, Any]:
    item = to_item_value(job.model_dump(mode="json", exclude_none=True))
    item.update({**job_key(job.job_id), LIST_KEY: JOBS_LIST, CREATED_KEY: created_key(job)})
    if job.settled_at is None:
        item[STATUS_KEY] = job_status_key(job.status.value)
    return item


class JobStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def create(self, job: Job) -> None:
        # attribute_not_exists(pk) closes: two submissions given the same job id (a retried request) overwriting
        # one another; the second fails loudly instead.
        response = conditional_write(
            f"record job {job.job_id}",
            self._table.put_item,
            Item=job_item(job),
            ConditionExpression="attribute_not_exists(pk)",
        )
        if response is None:
            raise Conflict(f"job {job.job_id} exists already")

    def get(self, job_id: str) -> Job | None:
        item = call(f"read job {job_id}", self._table.get_item, Key=job_key(job_id), ConsistentRead=True).get("Item")
        return None if item is None else Job.model_validate(plain_item(item))

    def page(self, limit: int, next_token: str | None) -> tuple[list[Job], str | None]:
        """Up to `limit` jobs, newest first, and the token of the next page (None on the last). ValueError when
        `next_token` is not a token this store gave."""
        query: dict[str, Any] = {
            "IndexName": BY_TIME,
            "KeyConditionExpression": Key(LIST_KEY).eq(JOBS_LIST),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if next_token:
            query["ExclusiveStartKey"] = decode_token(next_token)
        page = call("list the jobs", self._table.query, **query)
        jobs = [Job.model_validate(plain_item(item)) for item in page.get("Items", [])]
        last = page.get("LastEvaluatedKey")
        return jobs, (encode_token(last) if last else None)

    def unsettled(self) -> list[Job]:
        """Every job the supervisor still has work on (not settled), in any status."""
        keys: list[dict[str, Any]] = []
        for status in JobStatus:
            found = query_all(
                self._table,
                f"list the {status} jobs",
                IndexName=BY_STATUS,
                KeyConditionExpression=Key(STATUS_KEY).eq(job_status_key(status.value)),
                ProjectionExpression=f"{PARTITION_KEY}, {SORT_KEY}",
            )
            keys.extend({PARTITION_KEY: i[PARTITION_KEY], SORT_KEY: i[SORT_KEY]} for i in found)
        return self._get_many(keys)

    def transition(
        self,
        job_id: str,
        to: JobStatus,
        *,
        allowed_from: tuple[JobStatus, ...],
        now: float,
        reason: str | None = None,
        **fields: Any,
    ) -> bool:
        """Move the job to `to` (setting `fields` too) if its status is one of `allowed_from`; False if not (or no
        such job)."""
        sets: dict[str, Any] = {"status": to.value, "updated_at": to_number(now), **fields}
        if reason is not None:
            sets["reason"] = reason
        names = {f"#f{i}": name for i, name in enumerate(sets)}
        values = {f":f{i}": _value(value) for i, value in enumerate(sets.values())}
        allowed = {f":from{i}": status.value for i, status in enumerate(allowed_from)}
        expression = "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(sets)))
        # The index follows the status. Only unfinished jobs move, and a job is settled only once finished.
        expression += ", #sk_status = :status_key"
        response = conditional_write(
            f"move job {job_id} to {to}",
            self._table.update_item,
            Key=job_key(job_id),
            UpdateExpression=expression,
            # Closes: two writers moving the job at once (a cancel against the listing's finish or the
            # supervisor's completion): only the first move from the status it read wins, the other gets False.
            ConditionExpression=f"attribute_exists(pk) AND #status IN ({', '.join(allowed)})",
            ExpressionAttributeNames={**names, "#status": "status", "#sk_status": STATUS_KEY},
            ExpressionAttributeValues={**values, **allowed, ":status_key": job_status_key(to.value)},
        )
        return response is not None

    def add_listed(self, job_id: str, *, files: int, batches: int, now: float) -> None:
        """Count the files and batches one listing step wrote."""
        conditional_write(
            f"count what the listing of {job_id} wrote",
            self._table.update_item,
            Key=job_key(job_id),
            UpdateExpression="ADD files :files, batches :batches SET updated_at = :now",
            # Closes: a listing step still running after its job was deleted by hand recreating a stub item.
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":files": files, ":batches": batches, ":now": to_number(now)},
        )

    def mark_notified(self, job_id: str, now: float) -> bool:
        """Record that the job's end was announced; False when it was already (the caller then says nothing)."""
        response = conditional_write(
            f"mark job {job_id} notified",
            self._table.update_item,
            Key=job_key(job_id),
            UpdateExpression="SET notified_at = :now, updated_at = :now",
            # Closes: two supervisor runs (the schedule and a fleet report) announcing the same end twice.
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(notified_at)",
            ExpressionAttributeValues={":now": to_number(now)},
        )
        return response is not None

    def settle(self, job_id: str, now: float) -> None:
        """The supervisor is done with the job: off the by_status index."""
        conditional_write(
            f"settle job {job_id}",
            self._table.update_item,
            Key=job_key(job_id),
            UpdateExpression="REMOVE #status_key SET settled_at = if_not_exists(settled_at, :now), updated_at = :now",
            # Closes: a supervisor run settling a job deleted by hand meanwhile (no stub item is created).
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames={"#status_key": STATUS_KEY},
            ExpressionAttributeValues={":now": to_number(now)},
        )

    def _get_many(self, keys: list[dict[str, Any]]) -> list[Job]:
        items: list[dict[str, Any]] = []
        client, name = self._table.meta.client, self._table.name
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            request = {name: {"Keys": keys[start : start + BATCH_GET_LIMIT], "ConsistentRead": True}}
            for attempt in range(BATCH_GET_ATTEMPTS):
                answer = call("read the unsettled jobs", client.batch_get_item, RequestItems=request)
                items.extend(answer.get("Responses", {}).get(name, []))
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.05 * 2**attempt)
            if request:
                raise DependencyUnavailable("could not read the unsettled jobs: DynamoDB kept keys unprocessed")
        jobs = [Job.model_validate(plain_item(item)) for item in items]
        return sorted(jobs, key=lambda job: (job.created_at, job.job_id))


def _value(value: Any) -> Any:
    if isinstance(value, float):
        return to_number(value)
    if hasattr(value, "value") and isinstance(value.value, str):  # an enum
        return value.value
    if hasattr(value, "model_dump"):
        return to_item_value(value.model_dump(mode="json"))
    return to_item_value(value)


def encode_token(last_key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(last_key, sort_keys=True).encode()).decode()


def decode_token(token: str) -> dict[str, str]:
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ValueError("not a token of this list") from exc
    if (
        not isinstance(key, dict)
        or set(key) != _TOKEN_KEYS
        or not all(isinstance(v, str) for v in key.values())
        or key[LIST_KEY] != JOBS_LIST
        or not key[PARTITION_KEY].startswith(job_pk(""))
    ):
        raise ValueError("not a token of this list")
    return key

"""The queue of a batch job in the jobs table: pk=JOB#<job_id>, sk=BATCH#<seq:07d> (Batch), and the errors
workers reported, sk=ERROR#<at>#<batch_id> (JobError).

A batch always carries status_key "<job_id>#<status>", so the by_status index holds each job's batches by
status: "next pending batch" is a Query on "<job_id>#pending" (never a Scan), the timeouts a Query on
"#assigned"/"#processing", the counts Select=COUNT on each. The index is eventually consistent: what it shows
is only a candidate, and every change of a batch is a conditional write on the batch item itself, whose
condition says which race it closes. A write whose condition fails answers None: the caller reads the batch
(`get`, strongly consistent) to say what happened instead.

Who holds a batch: `worker_id` is set while it is assigned or processing (and kept once completed); taken back
(to pending, or failed for good) it is removed and `taken_from`/`taken_because` say from whom and why.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import Any

from boto3.dynamodb.conditions import Attr, Key

from spothub_core.contracts import BatchCounts
from spothub_core.dal.batch_table import (
    BATCH_PREFIX,
    BY_STATUS,
    ERROR_PREFIX,
    STATUS_KEY,
    batch_id_of,
    batch_key,
    batch_sk,
    batch_status_key,
    job_pk,
    seq_of,
)
from spothub_core.dal.state_table import (
    PARTITION_KEY,
    SORT_KEY,
    TTL_ATTRIBUTE,
    call,
    conditional_write,
    plain_item,
    to_item_value,
    to_number,
)
from spothub_core.errors import DependencyUnavailable
from spothub_core.models.batch_records import Batch, BatchStatus, JobError
from spothub_core.timings import BATCH_PROCESSING_TIMEOUT_SECONDS, BATCH_RECORD_TTL_SECONDS

IN_FLIGHT = (BatchStatus.ASSIGNED, BatchStatus.PROCESSING)
CLAIM_CANDIDATES = 5  # pending batches read per claim look; tried in random order
CLAIM_ROUNDS = 3  # looks per claim when every candidate was taken by others first
WRITE_BATCH_LIMIT = 25  # items per BatchWriteItem, DynamoDB's limit
WRITE_ATTEMPTS = 8  # BatchWriteItem calls per chunk while DynamoDB leaves items unprocessed
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 2.0
ERRORS_SHOWN = 50

# The names every batch update uses (several are DynamoDB reserved words).
_NAMES = {"#status": "status", "#status_key": STATUS_KEY, "#worker": "worker_id", "#deadline": "deadline"}


def batch_item(batch: Batch) -> dict[str, Any]:
    item = to_item_value(batch.model_dump(mode="json", exclude_none=True))
    item.update(
        {**batch_key(batch.job_id, seq_of(batch.batch_id)), STATUS_KEY: batch_status_key(batch.job_id, batch.status)}
    )
    return item


def error_sk(error: JobError) -> str:
    # Zero-padded epoch seconds sort as numbers: the newest error is the last of the partition's ERROR# items.
    return f"{ERROR_PREFIX}{error.at:017.3f}#{error.batch_id}"


class BatchQueue:
    def __init__(
        self, table: Any, *, rng: random.Random | None = None, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._table = table
        self._rng = rng or random.Random()  # noqa: S311 (spreads the claims over the queue; no secret)
        self._sleep = sleep

    # --- writing the batches (the listing) --------------------------------------------------------------------

    def put_batches(self, job_id: str, batches: list[Batch]) -> None:
        """Write new batches, 25 a request; items DynamoDB leaves unprocessed are sent again with exponential
        backoff, a bounded number of times, then DependencyUnavailable.

        Batches already written are left alone: a listing task retried after it wrote (a timeout, a lost answer)
        writes the same batches again, and workers may have claimed or finished them meanwhile. BatchWriteItem
        takes no condition, so a consistent read of the chunk's keys comes first (one request per 25 batches);
        nothing else writes a batch that does not exist yet, so nothing can slip in between."""
        client, name = self._table.meta.client, self._table.name
        for start in range(0, len(batches), WRITE_BATCH_LIMIT):
            chunk = self._not_written(job_id, batches[start : start + WRITE_BATCH_LIMIT])
            if not chunk:
                continue
            unprocessed: dict[str, Any] = {name: [{"PutRequest": {"Item": batch_item(b)}} for b in chunk]}
            for attempt in range(WRITE_ATTEMPTS):
                answer = call(f"write batches of {job_id}", client.batch_write_item, RequestItems=unprocessed)
                unprocessed = answer.get("UnprocessedItems") or {}
                if not unprocessed:
                    break
                if attempt < WRITE_ATTEMPTS - 1:
                    self._sleep(min(BACKOFF_BASE_SECONDS * 2**attempt, BACKOFF_CAP_SECONDS))
            if unprocessed:
                left = len(unprocessed.get(name, []))
                raise DependencyUnavailable(
                    f"could not write batches of {job_id}: {left} left unprocessed after {WRITE_ATTEMPTS} tries"
                )

    def _not_written(self, job_id: str, chunk: list[Batch]) -> list[Batch]:
        client, name = self._table.meta.client, self._table.name
        keys = {batch.batch_id: batch_key(job_id, seq_of(batch.batch_id)) for batch in chunk}
        wanted: dict[str, Any] = {
            name: {
                "Keys": list(keys.values()),
                "ConsistentRead": True,
                "ProjectionExpression": "sk",
            }
        }
        written: set[str] = set()
        for attempt in range(WRITE_ATTEMPTS):
            answer = call(f"read batches of {job_id}", client.batch_get_item, RequestItems=wanted)
            written.update(item["sk"] for item in answer.get("Responses", {}).get(name, []))
            wanted = answer.get("UnprocessedKeys") or {}
            if not wanted:
                break
            if attempt < WRITE_ATTEMPTS - 1:
                self._sleep(min(BACKOFF_BASE_SECONDS * 2**attempt, BACKOFF_CAP_SECONDS))
        if wanted:
            raise DependencyUnavailable(f"could not read batches of {job_id}: keys left unprocessed")
        return [batch for batch in chunk if keys[batch.batch_id]["sk"] not in written]

    # --- reading ------------------------------------------------------------------------------------------------

    def get(self, job_id: str, batch_id: str) -> Batch | None:
        item = call(
            f"read batch {batch_id} of {job_id}",
            self._table.get_item,
            Key=batch_key(job_id, seq_of(batch_id)),
            ConsistentRead=True,
        ).get("Item")
        return None if item is None else Batch.model_validate(plain_item(item))

    def counts(self, job_id: str) -> BatchCounts:
        """The job's batches in each status (5 Select=COUNT queries on by_status; a moment behind the writes)."""
        return BatchCounts(**{status.value: self._count(job_id, status) for status in BatchStatus})

    def any_in(self, job_id: str, statuses: tuple[BatchStatus, ...]) -> bool:
        """Whether the index shows any batch of the job in one of `statuses` (one small query each, at most)."""
        return any(self._count(job_id, status, limit=1) for status in statuses)

    def overdue(self, job_id: str, now: float) -> list[Batch]:
        """Assigned or processing batches whose deadline passed, as the index shows them: keys, status, worker,
        deadline and attempt only (no file names). The index lags: the take back's condition decides."""
        found: list[Batch] = []
        for status in IN_FLIGHT:
            query: dict[str, Any] = {
                "IndexName": BY_STATUS,
                "KeyConditionExpression": Key(STATUS_KEY).eq(batch_status_key(job_id, status)),
                "FilterExpression": Attr("deadline").lt(to_number(now)),
            }
            while True:
                page = call(f"find overdue batches of {job_id}", self._table.query, **query)
                for item in page.get("Items", []):
                    found.append(
                        Batch(
                            job_id=job_id,
                            batch_id=batch_id_of(int(str(item[SORT_KEY]).removeprefix(BATCH_PREFIX))),
                            file_names=[],
                            status=status,
                            worker_id=item.get("worker_id"),
                            deadline=plain_item(item).get("deadline"),
                            attempt=plain_item(item).get("attempt", 0),
                        )
                    )
                if "LastEvaluatedKey" not in page:
                    break
                query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found

    # --- the worker's calls -----------------------------------------------------------------------------------

    def claim(
        self,
        job_id: str,
        worker_id: str,
        *,
        now: float,
        ack_timeout_s: float,
        processing_timeout_s: float = BATCH_PROCESSING_TIMEOUT_SECONDS,
        batches: int = 0,
    ) -> Batch | None:
        """Assign a pending batch to the worker: a Query for a few pending batches from a random point of the
        queue (`batches`: how many the job has, for that point), then a conditional write on each candidate in
        random order until one is won. None when no pending batch was found or others won every candidate."""
        for _ in range(CLAIM_ROUNDS):
            candidates = self._pending(job_id, batches)
            if not candidates:
                return None
            self._rng.shuffle(candidates)
            for sk in candidates:
                response = conditional_write(
                    f"claim a batch of {job_id}",
                    self._table.update_item,
                    Key={PARTITION_KEY: job_pk(job_id), SORT_KEY: sk},
                    UpdateExpression=(
                        "SET #status = :assigned, #status_key = :assigned_key, #worker = :worker, "
                        "#deadline = :deadline, processing_timeout_s = :processing, updated_at = :now "
                        "ADD attempt :one"
                    ),
                    # Closes: two workers claiming the same batch. The index is eventually consistent, so a
                    # candidate may be taken already: only the write that finds it still pending wins.
                    ConditionExpression="#status_key = :pending_key",
                    ExpressionAttributeNames=_NAMES,
                    ExpressionAttributeValues={
                        ":assigned": BatchStatus.ASSIGNED.value,
                        ":assigned_key": batch_status_key(job_id, BatchStatus.ASSIGNED),
                        ":pending_key": batch_status_key(job_id, BatchStatus.PENDING),
                        ":worker": worker_id,
                        ":deadline": to_number(now + ack_timeout_s),
                        ":processing": to_number(processing_timeout_s),
                        ":now": to_number(now),
                        ":one": 1,
                    },
                    ReturnValues="ALL_NEW",
                )
                if response is not None:
                    return Batch.model_validate(plain_item(response["Attributes"]))
        return None

    def ack(self, job_id: str, batch_id: str, worker_id: str, *, now: float) -> Batch | None:
        """Assigned -> processing, with the processing deadline (the job's processing timeout, kept on the batch
        by the claim). None when the worker does not hold it assigned."""
        return self._update(
            job_id,
            batch_id,
            "SET #status = :processing, #status_key = :processing_key, updated_at = :now, "
            "#deadline = if_not_exists(processing_timeout_s, :processing_timeout) + :now",
            # Closes: an ack after the batch was taken back (ack timeout) and perhaps claimed by another worker,
            # and an ack racing its own timeout: only the worker still holding it assigned moves it on.
            "#status = :assigned AND #worker = :worker",
            {
                ":processing": BatchStatus.PROCESSING.value,
                ":processing_key": batch_status_key(job_id, BatchStatus.PROCESSING),
                ":assigned": BatchStatus.ASSIGNED.value,
                ":processing_timeout": to_number(BATCH_PROCESSING_TIMEOUT_SECONDS),
                ":worker": worker_id,
                ":now": to_number(now),
            },
        )

    def complete(self, job_id: str, batch_id: str, worker_id: str, *, now: float) -> Batch | None:
        """Assigned or processing -> completed. None when the worker does not hold it."""
        return self._update(
            job_id,
            batch_id,
            "SET #status = :completed, #status_key = :completed_key, updated_at = :now, #ttl = :expires "
            "REMOVE #deadline",
            # Closes: a completion arriving after the batch was taken back (timeout, interruption) and perhaps
            # claimed, even completed, by another worker: the batch's outcome is its current holder's.
            "#status IN (:assigned, :processing) AND #worker = :worker",
            {
                ":completed": BatchStatus.COMPLETED.value,
                ":completed_key": batch_status_key(job_id, BatchStatus.COMPLETED),
                ":assigned": BatchStatus.ASSIGNED.value,
                ":processing": BatchStatus.PROCESSING.value,
                ":worker": worker_id,
                ":now": to_number(now),
                ":expires": int(now + BATCH_RECORD_TTL_SECONDS),
            },
            names={"#ttl": TTL_ATTRIBUTE},
        )

    def take_back(
        self,
        job_id: str,
        batch_id: str,
        worker_id: str,
        *,
        now: float,
        reason: str,
        error: str | None = None,
        max_attempts: int | None = None,
        statuses: tuple[BatchStatus, ...] = IN_FLIGHT,
        overdue: bool = False,
    ) -> Batch | None:
        """Take the batch back from the worker holding it (in one of `statuses`): back to pending, or, when this
        counts a failure (`max_attempts` given, `error` the failure) and it is the batch's max_attempts-th,
        failed for good with that error. `overdue`: only if its deadline passed (a timeout). None when the
        worker does not hold it (any more)."""
        values: dict[str, Any] = {
            ":worker": worker_id,
            ":reason": reason,
            ":now": to_number(now),
            **{f":held{i}": status.value for i, status in enumerate(statuses)},
        }
        # Closes: a take back racing the worker's own report or another take back (a timeout against a failure
        # report, an interruption against a completion): only one of them finds the batch still held.
        held = f"#status IN ({', '.join(f':held{i}' for i in range(len(statuses)))}) AND #worker = :worker"
        if overdue:
            # Closes: an ack or a completion that landed after the index showed the batch overdue (the index
            # lags, and the ack moves the deadline on): only a batch still past its deadline times out.
            held += " AND #deadline < :now"
        requeue = (
            "SET #status = :pending, #status_key = :pending_key, taken_from = :worker, taken_because = :reason, "
            "updated_at = :now REMOVE #worker, #deadline"
        )
        values.update({":pending": BatchStatus.PENDING.value, ":pending_key": batch_status_key(job_id, "pending")})
        if max_attempts is None:
            return self._update(job_id, batch_id, requeue, held, values)
        values.update({":error": error or reason, ":one": 1, ":last": max(max_attempts - 1, 0)})
        # Two writes, each under the batch's failure count: the count only changes under the `held` condition,
        # so exactly one of them can succeed.
        requeued = self._update(
            job_id,
            batch_id,
            requeue.replace(" REMOVE", ", last_error = :error REMOVE") + " ADD failures :one",
            # Closes (with `held`): a failure counted twice, or a batch requeued past its last attempt.
            f"{held} AND (attribute_not_exists(failures) OR failures < :last)",
            values,
        )
        if requeued is not None:
            return requeued
        del values[":pending"], values[":pending_key"]
        return self._update(
            job_id,
            batch_id,
            "SET #status = :failed, #status_key = :failed_key, taken_from = :worker, taken_because = :reason, "
            "last_error = :error, updated_at = :now, #ttl = :expires REMOVE #worker, #deadline ADD failures :one",
            # Closes (with `held`): the same as the requeue above; this write is the last attempt's.
            f"{held} AND failures >= :last",
            {
                **values,
                ":failed": BatchStatus.FAILED.value,
                ":failed_key": batch_status_key(job_id, BatchStatus.FAILED),
                ":expires": int(now + BATCH_RECORD_TTL_SECONDS),
            },
            names={"#ttl": TTL_ATTRIBUTE},
        )

    # --- errors -----------------------------------------------------------------------------------------------

    def add_error(self, error: JobError) -> None:
        item = to_item_value(error.model_dump(mode="json"))
        item.update(
            {
                PARTITION_KEY: job_pk(error.job_id),
                SORT_KEY: error_sk(error),
                TTL_ATTRIBUTE: int(error.at + BATCH_RECORD_TTL_SECONDS),
            }
        )
        call(f"record an error of {error.job_id}", self._table.put_item, Item=item)

    def errors(self, job_id: str, limit: int = ERRORS_SHOWN) -> list[JobError]:
        """The job's newest errors, newest first."""
        page = call(
            f"read the errors of {job_id}",
            self._table.query,
            KeyConditionExpression=Key(PARTITION_KEY).eq(job_pk(job_id)) & Key(SORT_KEY).begins_with(ERROR_PREFIX),
            ScanIndexForward=False,
            Limit=limit,
        )
        return [JobError.model_validate(plain_item(item)) for item in page.get("Items", [])]

    # --- helpers ------------------------------------------------------------------------------------------------

    def _pending(self, job_id: str, batches: int) -> list[str]:
        """The sort keys of a few pending batches: from a random point of the queue, else from its start."""
        start = self._rng.randrange(batches) if batches > 1 else 0
        found = self._pending_from(job_id, start)
        if not found and start > 0:
            found = self._pending_from(job_id, 0)
        return found

    def _pending_from(self, job_id: str, seq: int) -> list[str]:
        condition = Key(STATUS_KEY).eq(batch_status_key(job_id, BatchStatus.PENDING))
        if seq > 0:
            condition &= Key(SORT_KEY).gte(batch_sk(seq))
        page = call(
            f"find pending batches of {job_id}",
            self._table.query,
            IndexName=BY_STATUS,
            KeyConditionExpression=condition,
            ProjectionExpression=SORT_KEY,
            Limit=CLAIM_CANDIDATES,
        )
        return [str(item[SORT_KEY]) for item in page.get("Items", [])]

    def _count(self, job_id: str, status: BatchStatus, *, limit: int | None = None) -> int:
        query: dict[str, Any] = {
            "IndexName": BY_STATUS,
            "KeyConditionExpression": Key(STATUS_KEY).eq(batch_status_key(job_id, status)),
            "Select": "COUNT",
        }
        if limit is not None:
            query["Limit"] = limit
        total = 0
        while True:
            page = call(f"count the {status} batches of {job_id}", self._table.query, **query)
            total += int(page.get("Count", 0))
            if limit is not None or "LastEvaluatedKey" not in page:
                return total
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _update(
        self,
        job_id: str,
        batch_id: str,
        expression: str,
        condition: str,
        values: dict[str, Any],
        *,
        names: dict[str, str] | None = None,
    ) -> Batch | None:
        known = {**_NAMES, **(names or {})}
        used = set(re.findall(r"#\w+", f"{expression} {condition}"))
        response = conditional_write(
            f"update batch {batch_id} of {job_id}",
            self._table.update_item,
            Key=batch_key(job_id, seq_of(batch_id)),
            UpdateExpression=expression,
            ConditionExpression=condition,
            ExpressionAttributeNames={name: known[name] for name in used},
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return None if response is None else Batch.model_validate(plain_item(response["Attributes"]))

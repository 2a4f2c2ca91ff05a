"""The workers of batch jobs in the jobs table: pk=JOB#<job_id>, sk=WORKER#<instance_id> (Worker).

A worker's status only moves forward (active -> unavailable -> shutting-down -> gone), whoever writes it (the
worker's own calls, the supervisor's timeouts and fleet reports). Its `batch_id` mirrors the batch it holds, for
the assignment's "the held batch again" and the job view; the batch item (dal/batch_queue.py) is the truth.
"""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.conditions import Key

from spothub_core.dal.batch_jobs import JobStore
from spothub_core.dal.batch_table import WORKER_PREFIX, job_key, job_pk, worker_key
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
)
from spothub_core.models.batch_records import Job, Worker, WorkerStatus
from spothub_core.timings import BATCH_RECORD_TTL_SECONDS

STATUS_ORDER = (WorkerStatus.ACTIVE, WorkerStatus.UNAVAILABLE, WorkerStatus.SHUTTING_DOWN, WorkerStatus.GONE)


def worker_item(worker: Worker) -> dict[str, Any]:
    item = to_item_value(worker.model_dump(mode="json", exclude_none=True))
    item.update(worker_key(worker.job_id, worker.instance_id))
    return item


class WorkerStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def register(self, worker: Worker) -> bool:
        """Record a new worker; False when it is registered already (then nothing is written)."""
        response = conditional_write(
            f"register worker {worker.worker_id}",
            self._table.put_item,
            Item=worker_item(worker),
            # Closes: an agent that restarted registering again, which must not reset what the hub decided of it
            # since (unavailable, shutting down) nor the batch it holds.
            ConditionExpression="attribute_not_exists(pk)",
        )
        return response is not None

    def get(self, job_id: str, instance_id: str) -> Worker | None:
        item = call(
            f"read worker {instance_id} of {job_id}",
            self._table.get_item,
            Key=worker_key(job_id, instance_id),
            ConsistentRead=True,
        ).get("Item")
        return None if item is None else Worker.model_validate(plain_item(item))

    def get_with_job(self, job_id: str, instance_id: str) -> tuple[Job | None, Worker | None]:
        """The job and one of its workers in one request (BatchGetItem, strongly consistent)."""
        name = self._table.name
        request = {name: {"Keys": [job_key(job_id), worker_key(job_id, instance_id)], "ConsistentRead": True}}
        answer = call(
            f"read worker {instance_id} of {job_id}", self._table.meta.client.batch_get_item, RequestItems=request
        )
        if answer.get("UnprocessedKeys"):
            # DynamoDB may leave keys unread under load: read them one by one then.
            return JobStore(self._table).get(job_id), self.get(job_id, instance_id)
        job: Job | None = None
        worker: Worker | None = None
        for item in answer.get("Responses", {}).get(name, []):
            if str(item[SORT_KEY]).startswith(WORKER_PREFIX):
                worker = Worker.model_validate(plain_item(item))
            else:
                job = Job.model_validate(plain_item(item))
        return job, worker

    def list(self, job_id: str) -> list[Worker]:
        items = query_all(
            self._table,
            f"read the workers of {job_id}",
            KeyConditionExpression=Key(PARTITION_KEY).eq(job_pk(job_id)) & Key(SORT_KEY).begins_with(WORKER_PREFIX),
            ConsistentRead=True,
        )
        return [Worker.model_validate(plain_item(item)) for item in items]

    def set_status(
        self,
        job_id: str,
        instance_id: str,
        status: WorkerStatus,
        *,
        now: float,
        reason: str | None = None,
        seen: bool = False,
    ) -> bool:
        """Move the worker forward to `status` (`seen`: the worker itself said so, its last_seen is now too);
        False when it is there or beyond already, or unknown. A worker that is no longer active expires with
        the job's other records."""
        earlier = STATUS_ORDER[: STATUS_ORDER.index(status)]
        if not earlier:
            return False
        sets = {"#status": ":status", "updated_at": ":now", f"#{TTL_ATTRIBUTE}": ":expires"}
        values: dict[str, Any] = {
            ":status": status.value,
            ":now": to_number(now),
            ":expires": int(now + BATCH_RECORD_TTL_SECONDS),
            **{f":from{i}": s.value for i, s in enumerate(earlier)},
        }
        if reason is not None:
            sets["reason"] = ":reason"
            values[":reason"] = reason
        if seen:
            sets["last_seen"] = ":now"
        response = conditional_write(
            f"mark worker {instance_id} of {job_id} {status}",
            self._table.update_item,
            Key=worker_key(job_id, instance_id),
            UpdateExpression="SET " + ", ".join(f"{name} = {value}" for name, value in sets.items()),
            # Closes: writers racing on the worker (its own shutting-down call, the supervisor's timeout, a fleet
            # report saying its instance is gone): the status never moves back, a gone worker stays gone.
            ConditionExpression=f"#status IN ({', '.join(f':from{i}' for i in range(len(earlier)))})",
            ExpressionAttributeNames={"#status": "status", f"#{TTL_ATTRIBUTE}": TTL_ATTRIBUTE},
            ExpressionAttributeValues=values,
        )
        return response is not None

    def hold(self, job_id: str, instance_id: str, batch_id: str, *, now: float) -> bool:
        """Record the batch the worker just claimed; False when the worker is not active any more."""
        response = conditional_write(
            f"give batch {batch_id} to worker {instance_id} of {job_id}",
            self._table.update_item,
            Key=worker_key(job_id, instance_id),
            UpdateExpression="SET batch_id = :batch, last_seen = :now, updated_at = :now",
            # Closes: the supervisor marking the worker unavailable (or a fleet report, gone) between the
            # assignment's read and its claim: the claim is then put back instead of going to a dead worker.
            ConditionExpression="#status = :active",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":batch": batch_id,
                ":now": to_number(now),
                ":active": WorkerStatus.ACTIVE.value,
            },
        )
        return response is not None

    def let_go(self, job_id: str, instance_id: str, batch_id: str, *, now: float, seen: bool = False) -> bool:
        """The worker no longer holds `batch_id` (finished, taken back); False when it holds another or none."""
        response = conditional_write(
            f"take batch {batch_id} off worker {instance_id} of {job_id}",
            self._table.update_item,
            Key=worker_key(job_id, instance_id),
            UpdateExpression="REMOVE batch_id SET updated_at = :now" + (", last_seen = :now" if seen else ""),
            # Closes: a late or duplicate report about a batch the worker no longer holds clearing the batch it
            # holds now.
            ConditionExpression="batch_id = :batch",
            ExpressionAttributeValues={":batch": batch_id, ":now": to_number(now)},
        )
        return response is not None

    def touch(self, job_id: str, instance_id: str, *, now: float) -> bool:
        """The worker called: its last_seen is now. False when there is no such worker."""
        response = conditional_write(
            f"see worker {instance_id} of {job_id}",
            self._table.update_item,
            Key=worker_key(job_id, instance_id),
            UpdateExpression="SET last_seen = :now",
            # Closes: a call of a worker whose item was deleted (its job's records expired) recreating a stub.
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":now": to_number(now)},
        )
        return response is not None

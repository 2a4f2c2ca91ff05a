"""The worker API of batch jobs: what the agent in batch mode sends and what it is answered. Shipped in the
agent's bundle (stacks/agent_bundle.py), so the agent builds its requests and reads its answers with these.

  POST /workers/register               WorkerRegistration  -> WorkerRegistered
  GET  /workers/{worker_id}/assignment                     -> BatchAssignment | WorkerCommand
  POST /workers/{worker_id}/ack        BatchAck            -> BatchUpdate
  POST /workers/{worker_id}/status     BatchStatusReport   -> BatchUpdate

A worker id is "<job_id>.<instance_id>": the route checks that the caller's instance is the worker's.
A late, duplicate or out-of-order call changes nothing: a duplicate is answered 200 with `changed: false`,
a call about a batch the worker no longer holds 409 (the agent drops that batch and asks for work again).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import ConfigDict, Field

from spothub_core.models.base import Model

JOB_ID_PATTERN = r"^job-[0-9a-f]{12}$"
WORKER_ID_PATTERN = r"^job-[0-9a-f]{12}\.i-[0-9a-f]{8,17}$"
BATCH_ID_PATTERN = r"^b-[0-9]{7}$"
_WORKER_ID = re.compile(WORKER_ID_PATTERN)


def worker_id_of(job_id: str, instance_id: str) -> str:
    return f"{job_id}.{instance_id}"


def parse_worker_id(worker_id: str) -> tuple[str, str]:
    """(job_id, instance_id) of a worker id; ValueError when it is not one."""
    if not _WORKER_ID.match(worker_id):
        raise ValueError(f"{worker_id!r} is not a worker id (<job_id>.<instance_id>)")
    job_id, instance_id = worker_id.split(".", 1)
    return job_id, instance_id


class _Body(Model):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkerRegistration(_Body):
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    instance_id: str = Field(pattern=r"^i-[0-9a-f]{8,17}$")
    region: str = Field(min_length=1, max_length=30)
    availability_zone: str = Field("", max_length=40)
    instance_type: str = Field("", max_length=40)
    capacity_type: Literal["spot", "on-demand", ""] = ""
    agent_version: str = Field("", max_length=40)


class WorkerRegistered(Model):
    worker_id: str
    job_id: str
    # Registering twice (an agent restarted) is the same worker: `registered` is false the second time.
    registered: bool = True


class BatchAssignment(Model):
    """A batch to process: download input_prefix + each file name, write results under output_prefix."""

    batch_id: str
    file_names: list[str]
    input_bucket: str
    input_prefix: str
    output_bucket: str
    output_prefix: str
    attempt: int
    image: str
    command: list[str] = Field(default_factory=list)
    ack_timeout_s: int
    processing_timeout_s: int


class WorkerCommand(Model):
    """No batch: `shutdown` (the job is over or does not need this worker) or `wait` and ask again."""

    command: Literal["shutdown", "wait"]
    retry_after_s: int | None = None
    reason: str = ""


class BatchAck(_Body):
    batch_id: str = Field(pattern=BATCH_ID_PATTERN)


WorkerBatchStatus = Literal["processing", "completed", "failed", "shutting-down"]


class BatchStatusReport(_Body):
    # No batch with shutting-down from a worker that holds none.
    batch_id: str | None = Field(None, pattern=BATCH_ID_PATTERN)
    status: WorkerBatchStatus
    error: str | None = Field(None, max_length=4000)


class BatchUpdate(Model):
    """What an ack or a status call did: `changed` false when it was a duplicate (nothing to do)."""

    worker_id: str
    batch_id: str | None = None
    status: str  # the batch's status after the call (the worker's, for a shutting-down without a batch)
    changed: bool
    message: str = ""

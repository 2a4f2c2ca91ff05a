"""The jobs table's keys and indexes (layout: spothub_core/models/batch_records.py), shared by the dal modules
of batch jobs: dal/batch_jobs.py (jobs), dal/batch_queue.py (batches, errors), dal/batch_workers.py (workers)
and dal/batch_fleet.py (capacity by region)."""

from __future__ import annotations

from spothub_core.dal.state_table import PARTITION_KEY, SORT_KEY
from spothub_core.models.batch_records import JOBS_INDEX_KEYS, JobsIndex

JOBS_PK = "JOB#{job_id}"
JOB_SK = "JOB"
BATCH_PREFIX = "BATCH#"
WORKER_PREFIX = "WORKER#"
ERROR_PREFIX = "ERROR#"

BY_STATUS = str(JobsIndex.BY_STATUS)
BY_TIME = str(JobsIndex.BY_TIME)
# by_status partition: "<job_id>#<batch status>" on batches, "JOBS#<status>" on jobs
STATUS_KEY = JOBS_INDEX_KEYS[JobsIndex.BY_STATUS][0]
LIST_KEY = JOBS_INDEX_KEYS[JobsIndex.BY_TIME][0]  # by_time partition: "JOBS" on job items only
CREATED_KEY = JOBS_INDEX_KEYS[JobsIndex.BY_TIME][1]  # by_time sort: "<created ISO 8601>#<job_id>"
JOBS_LIST = "JOBS"

BATCH_ID_PREFIX = "b-"
SEQ_DIGITS = 7


def job_pk(job_id: str) -> str:
    return JOBS_PK.format(job_id=job_id)


def job_key(job_id: str) -> dict[str, str]:
    return {PARTITION_KEY: job_pk(job_id), SORT_KEY: JOB_SK}


def batch_sk(seq: int) -> str:
    return f"{BATCH_PREFIX}{seq:0{SEQ_DIGITS}d}"


def batch_key(job_id: str, seq: int) -> dict[str, str]:
    return {PARTITION_KEY: job_pk(job_id), SORT_KEY: batch_sk(seq)}


def batch_id_of(seq: int) -> str:
    return f"{BATCH_ID_PREFIX}{seq:0{SEQ_DIGITS}d}"


def seq_of(batch_id: str) -> int:
    """The sequence number of "b-<seq:07d>"; ValueError when it is not a batch id."""
    if not batch_id.startswith(BATCH_ID_PREFIX) or not batch_id[len(BATCH_ID_PREFIX) :].isdigit():
        raise ValueError(f"{batch_id!r} is not a batch id (b-<seq>)")
    return int(batch_id[len(BATCH_ID_PREFIX) :])


def batch_status_key(job_id: str, status: str) -> str:
    """by_status partition of a job's batches in one status: "<job_id>#<status>"."""
    return f"{job_id}#{status}"


def job_status_key(status: str) -> str:
    """by_status partition of the unsettled jobs in one status: "JOBS#<status>"."""
    return f"{JOBS_LIST}#{status}"


def worker_key(job_id: str, instance_id: str) -> dict[str, str]:
    return {PARTITION_KEY: job_pk(job_id), SORT_KEY: f"{WORKER_PREFIX}{instance_id}"}

"""What the tasks of the batch listing state machine (statemachines/batch_listing.asl.json) give the
batch_listing function and get back, and what the schedule and the listing give the batch_supervisor.

A task's payload is `{"action": <name>, ...fields}`; unknown fields are refused (a renamed ASL field fails at
its first call naming the field). The ASL reads a result through `$.Payload`.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from spothub_core.models.base import Model


class _Task(Model):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Result(Model):
    model_config = ConfigDict(frozen=True)


# --- batch_listing ---------------------------------------------------------------------------------------


class ListPages(_Task):
    """List up to a time budget's worth of pages from where the last call stopped, partition what was listed
    into batches and write them; files short of a whole batch are carried to the next call."""

    job_id: str
    continuation_token: str | None = None
    next_seq: int = 0  # the sequence number of the next batch written
    carry: list[str] = Field(default_factory=list)  # listed file names not yet in a batch
    files: int = 0  # files listed so far


class PagesListed(_Result):
    job_id: str
    continuation_token: str | None
    next_seq: int
    carry: list[str]
    files: int
    done: bool  # the prefix is listed to its end: FinishListing writes `carry` as the last batch


class FinishListing(_Task):
    job_id: str
    next_seq: int
    carry: list[str] = Field(default_factory=list)
    files: int


class ListingFinished(_Result):
    job_id: str
    status: str  # the job's status after the call: running, or failed (no files), or cancelled meanwhile
    files: int
    batches: int


class FailListing(_Task):
    """The listing failed (caught by the state machine): the job is failed with the reason."""

    job_id: str
    error: str = ""
    cause: str = ""


class ListingFailed(_Result):
    job_id: str
    status: str
    reason: str


LISTING_ACTIONS: dict[str, type[_Task]] = {
    "list_pages": ListPages,
    "finish_listing": FinishListing,
    "fail_listing": FailListing,
}


# --- batch_supervisor ------------------------------------------------------------------------------------


class Supervise(_Task):
    """The schedule (every minute; no job_id: every live job) or the listing's last step (one job, at once):
    time out batches, scale the job's workers, release what is no longer needed, finish jobs."""

    job_id: str | None = None


SUPERVISOR_ACTIONS: dict[str, type[_Task]] = {"supervise": Supervise}


class Supervised(_Result):
    jobs: int
    timed_out: int = 0
    workers_requested: int = 0
    finished: list[str] = Field(default_factory=list)

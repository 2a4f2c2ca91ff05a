"""Batch jobs in the sandbox, as a user drives them: input files in the input bucket, a job through the jobs
API, its view polled, its outputs checked against the stand-in job's transformation (batch_job.py).
Used by the demo's batch chapter and the batch end-to-end tests.

Everything follows the sandbox clock, a job's timeouts (ack_timeout_s, processing_timeout_s) and the
supervisor's schedule (rate(1 minute)) included: `batch_pace` speeds the clock up while a job runs, so give a
job timeouts in seconds of that clock.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spothub.sandbox.batch_job import IMAGE, expected_output, output_name
from spothub.sandbox.buckets import put_files, read_prefix

if TYPE_CHECKING:
    from spothub.sandbox.sandbox import Sandbox

# Simulated seconds per real second while a job runs: the supervisor's minute passes in three real seconds.
BATCH_SPEED = 20.0
FINISHED = ("completed", "failed", "cancelled")


def input_files(count: int, *, tag: str = "file") -> dict[str, bytes]:
    """`count` small text files with distinct contents, some under a sub-path (names relative to the prefix)."""
    files = {}
    for index in range(count):
        name = f"{tag}-{index:05d}.txt" if index % 4 else f"part-{index % 3}/{tag}-{index:05d}.txt"
        digest = hashlib.sha256(f"{tag}:{index}".encode()).hexdigest()
        files[name] = f"line one of {tag} {index}\nchecksum seed {digest[:16]}\n".encode()
    return files


def upload_inputs(sandbox: Sandbox, prefix: str, files: dict[str, bytes]) -> None:
    put_files(sandbox.client("s3", sandbox.hub.region), sandbox.batch_input_bucket, prefix, files)


def job_request(sandbox: Sandbox, input_prefix: str, output_prefix: str, **fields: Any) -> dict[str, Any]:
    """A POST /jobs body for the sandbox's buckets and the stand-in image; `fields` override or add."""
    return {
        "input_bucket": sandbox.batch_input_bucket,
        "input_prefix": input_prefix,
        "output_bucket": sandbox.batch_output_bucket,
        "output_prefix": output_prefix,
        "image": IMAGE,
        **fields,
    }


def submit(sandbox: Sandbox, body: dict[str, Any]) -> str:
    """POST /jobs; the job id (raises with the answer when it is not 202)."""
    answer = sandbox.request("POST", "jobs", body)
    if answer.status_code != 202:  # noqa: PLR2004
        raise AssertionError(f"POST /jobs answered {answer.status_code}: {answer.text}")
    return str(answer.json()["job_id"])


def view(sandbox: Sandbox, job_id: str) -> dict[str, Any]:
    answer = sandbox.request("GET", f"jobs/{job_id}")
    if answer.status_code != 200:  # noqa: PLR2004
        raise AssertionError(f"GET /jobs/{job_id} answered {answer.status_code}: {answer.text}")
    return dict(answer.json())


def wait_for_job(
    sandbox: Sandbox,
    job_id: str,
    check: Callable[[dict[str, Any]], bool] = lambda v: v.get("status") in FINISHED,
    timeout_s: float = 60.0,
    interval_s: float = 0.5,
) -> dict[str, Any]:
    """Poll GET /jobs/{id} (real time) until `check` holds (default: finished); its view then."""
    seen: dict[str, Any] = {}

    def done() -> dict[str, Any] | None:
        seen.update(view(sandbox, job_id))
        return dict(seen) if check(seen) else None

    try:
        return dict(sandbox.wait_for(done, timeout_s=timeout_s, interval_s=interval_s))
    except Exception as exc:
        raise AssertionError(f"{job_id}: not there within {timeout_s}s; last seen: {_brief(seen)}") from exc


def _brief(seen: dict[str, Any]) -> str:
    workers = [(w.get("instance_id"), w.get("status"), w.get("batch_id")) for w in seen.get("workers", [])]
    return f"status={seen.get('status')} reason={seen.get('reason')} batches={seen.get('batches')} workers={workers}"


@dataclass
class OutputCheck:
    """The output prefix against the inputs: each input's output present once and right, nothing else."""

    expected: int
    correct: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return len(self.correct) == self.expected and not (self.missing or self.wrong or self.unexpected)

    def summary(self) -> str:
        return (
            f"{len(self.correct)} of {self.expected} correct, {len(self.missing)} missing, {len(self.wrong)} wrong, "
            f"{len(self.unexpected)} unexpected"
        )


def check_outputs(sandbox: Sandbox, inputs: dict[str, bytes], output_prefix: str) -> OutputCheck:
    outputs = read_prefix(sandbox.client("s3", sandbox.hub.region), sandbox.batch_output_bucket, output_prefix)
    wanted = {output_name(name): expected_output(data) for name, data in inputs.items()}
    check = OutputCheck(expected=len(wanted))
    for name, data in wanted.items():
        if name not in outputs:
            check.missing.append(name)
        elif outputs[name] != data:
            check.wrong.append(name)
        else:
            check.correct.append(name)
    check.unexpected = sorted(set(outputs) - set(wanted))
    return check


@contextlib.contextmanager
def batch_pace(sandbox: Sandbox, speed: float = BATCH_SPEED) -> Iterator[None]:
    """The sandbox clock at `speed` while a job runs, back to what it was after."""
    before = sandbox.clock.speed
    sandbox.clock.set_speed(speed)
    try:
        yield
    finally:
        sandbox.clock.set_speed(before)


def worker_holding_batch(sandbox: Sandbox, job_id: str, *, exclude: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """A worker of the job (from its view) that holds a batch now, whose instance runs; None when none does."""
    running = {i.instance_id for i in sandbox.job_workers(job_id)}
    for worker in view(sandbox, job_id).get("workers", []):
        if worker.get("batch_id") and worker["instance_id"] in running and worker["instance_id"] not in exclude:
            return dict(worker)
    return None

"""Batch jobs end to end in the sandbox: the jobs API, the listing state machine, the supervisor on its
schedule, the fleet function's job groups in the worker regions, simulated spot instances running the real
agent in batch mode with the stand-in job (spothub/sandbox/batch_job.py), S3 under IAM.

Jobs are small and their timeouts short; the sandbox clock runs at BATCH_SPEED while a job runs (the
supervisor's rate(1 minute) fires every few real seconds). A job's own timeouts are seconds of that clock too (the hub's
functions read it).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests

from spothub.sandbox.batch_driver import (
    batch_pace,
    check_outputs,
    input_files,
    job_request,
    submit,
    upload_inputs,
    view,
    wait_for_job,
    worker_holding_batch,
)
from spothub.sandbox.sandbox import Sandbox
from spothub_core.contracts import job_group_name

# Slow enough that a batch is still running when a test interrupts its worker or kills its agent.
SLOW = ["transform", "--seconds-per-file", "0.4"]


def _prefixes() -> tuple[str, str]:
    run = uuid.uuid4().hex[:8]
    return f"in/{run}/", f"out/{run}/"


def _no_worker_left(sandbox: Sandbox, job_id: str, timeout_s: float = 30) -> None:
    sandbox.wait_for(lambda: not sandbox.job_groups() and not sandbox.job_workers(job_id), timeout_s=timeout_s)


def _job_finished_events(sandbox: Sandbox, job_id: str) -> list[Any]:
    return [
        e
        for e in sandbox.events(detail_type="Spothub Job Finished")
        if e.details["event"]["detail"].get("job_id") == job_id
    ]


def test_a_job_processes_every_file_exactly_once_and_tells_its_end(fresh_sandbox: Sandbox) -> None:
    sandbox = fresh_sandbox
    inputs_prefix, outputs_prefix = _prefixes()
    files = input_files(24)
    upload_inputs(sandbox, inputs_prefix, files)
    with batch_pace(sandbox):
        job_id = submit(sandbox, job_request(sandbox, inputs_prefix, outputs_prefix, batch_size=4, max_workers=2))
        finished = wait_for_job(sandbox, job_id, timeout_s=90)
        assert finished["status"] == "completed", finished
        assert finished["files"] == 24
        assert finished["batches"]["completed"] == 6 and finished["batches"]["failed"] == 0
        outputs = check_outputs(sandbox, files, outputs_prefix)
        assert outputs.ok, outputs.summary()
        launched = {i["instance_id"] for i in sandbox.fleet.describe() if i["job_id"] == job_id}
        assert 1 <= len(launched) <= 2
        _no_worker_left(sandbox, job_id)
        # The supervisor publishes to the topic, then puts the event: wait for both (another thread's work).
        sandbox.wait_for(
            lambda: sandbox.job_notifications(job_id) and _job_finished_events(sandbox, job_id), timeout_s=30
        )
    (notification,) = sandbox.job_notifications(job_id)
    assert job_id in (notification["subject"] or "") and "completed" in notification["message"]
    (event,) = _job_finished_events(sandbox, job_id)
    assert event.details["event"]["detail"]["status"] == "completed"
    listed = sandbox.request("GET", "jobs").json()["jobs"]
    assert [j["job_id"] for j in listed][:1] == [job_id]


def test_an_interrupted_worker_hands_its_batch_back_at_once(fresh_sandbox: Sandbox) -> None:
    sandbox = fresh_sandbox
    inputs_prefix, outputs_prefix = _prefixes()
    files = input_files(20)
    upload_inputs(sandbox, inputs_prefix, files)
    with batch_pace(sandbox):
        body = job_request(sandbox, inputs_prefix, outputs_prefix, batch_size=5, max_workers=2, command=SLOW)
        job_id = submit(sandbox, body)
        holding = sandbox.wait_for(lambda: worker_holding_batch(sandbox, job_id), timeout_s=60, interval_s=0.2)
        sandbox.fleet.send_interruption_warning(holding["instance_id"])
        finished = wait_for_job(sandbox, job_id, timeout_s=90)
        assert finished["status"] == "completed", finished
        # Handed back, not failed: an interruption is not the batch's fault.
        assert finished["batches"] == {**finished["batches"], "completed": 4, "failed": 0}
        assert not [e for e in finished["errors"] if e["batch_id"] == holding["batch_id"]]
        interrupted = next(w for w in finished["workers"] if w["instance_id"] == holding["instance_id"])
        assert interrupted["status"] in ("shutting-down", "gone"), interrupted
        outputs = check_outputs(sandbox, files, outputs_prefix)
        assert outputs.ok, outputs.summary()
        _no_worker_left(sandbox, job_id)


def test_a_silent_worker_loses_its_batch_at_the_processing_timeout(fresh_sandbox: Sandbox) -> None:
    sandbox = fresh_sandbox
    inputs_prefix, outputs_prefix = _prefixes()
    files = input_files(15)
    upload_inputs(sandbox, inputs_prefix, files)
    with batch_pace(sandbox):
        body = job_request(
            sandbox, inputs_prefix, outputs_prefix, batch_size=5, max_workers=2, processing_timeout_s=300, command=SLOW
        )
        job_id = submit(sandbox, body)
        holding = sandbox.wait_for(lambda: worker_holding_batch(sandbox, job_id), timeout_s=60, interval_s=0.2)
        sandbox.fleet.kill_agent(holding["instance_id"])
        finished = wait_for_job(sandbox, job_id, timeout_s=120)
        assert finished["status"] == "completed", finished
        timeouts = [e for e in finished["errors"] if e["batch_id"] == holding["batch_id"]]
        assert timeouts and "processing timeout" in timeouts[0]["error"], finished["errors"]
        silent = next(w for w in finished["workers"] if w["instance_id"] == holding["instance_id"])
        assert silent["status"] in ("unavailable", "gone"), silent
        outputs = check_outputs(sandbox, files, outputs_prefix)
        assert outputs.ok, outputs.summary()
        _no_worker_left(sandbox, job_id)


def test_without_spot_capacity_the_job_runs_on_demand_within_its_max_workers(fresh_sandbox: Sandbox) -> None:
    sandbox = fresh_sandbox
    for pool in sandbox.market.pools():  # the next reset gives the capacity back
        sandbox.market.set_zone(pool.zone, pool.instance_type, capacity=0)
    inputs_prefix, outputs_prefix = _prefixes()
    files = input_files(8)
    upload_inputs(sandbox, inputs_prefix, files)
    with batch_pace(sandbox):
        job_id = submit(sandbox, job_request(sandbox, inputs_prefix, outputs_prefix, batch_size=4, max_workers=2))
        finished = wait_for_job(sandbox, job_id, timeout_s=90)
        assert finished["status"] == "completed", finished
        launched = [i for i in sandbox.fleet.describe() if i["job_id"] == job_id]
        assert launched and {i["capacity_type"] for i in launched} == {"on-demand"}, launched
        assert len(launched) <= 2, f"max_workers is 2, {len(launched)} launched: {finished['fleet']}"
        # Each region's failed spot launch, as Auto Scaling's scaling activities tell it to the fleet function.
        failed = [
            a
            for region in {f["region"] for f in finished["fleet"]}
            for a in sandbox.fleet.scaling_activities(region, job_group_name(sandbox.prefix, job_id))
            if a["StatusCode"] == "Failed"
        ]
        assert failed and "InsufficientInstanceCapacity" in failed[0]["StatusMessage"], failed
        assert any(f["excluded_until"] for f in finished["fleet"]), finished["fleet"]
        outputs = check_outputs(sandbox, files, outputs_prefix)
        assert outputs.ok, outputs.summary()
        _no_worker_left(sandbox, job_id)


def test_a_cancelled_job_stops_its_workers_and_releases_its_groups(fresh_sandbox: Sandbox) -> None:
    sandbox = fresh_sandbox
    inputs_prefix, outputs_prefix = _prefixes()
    upload_inputs(sandbox, inputs_prefix, input_files(40))
    with batch_pace(sandbox):
        body = job_request(sandbox, inputs_prefix, outputs_prefix, batch_size=5, max_workers=2, command=SLOW)
        job_id = submit(sandbox, body)
        sandbox.wait_for(lambda: worker_holding_batch(sandbox, job_id), timeout_s=60, interval_s=0.2)
        cancelled = sandbox.request("DELETE", f"jobs/{job_id}")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        _no_worker_left(sandbox, job_id, timeout_s=60)
        again = sandbox.request("DELETE", f"jobs/{job_id}")
        assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert view(sandbox, job_id)["batches"]["completed"] < 8


def test_an_empty_prefix_fails_the_job_with_the_reason(fresh_sandbox: Sandbox) -> None:
    sandbox = fresh_sandbox
    inputs_prefix, outputs_prefix = _prefixes()
    with batch_pace(sandbox):
        job_id = submit(sandbox, job_request(sandbox, inputs_prefix, outputs_prefix))
        failed = wait_for_job(sandbox, job_id, timeout_s=30)
    assert failed["status"] == "failed"
    assert f"no files under s3://{sandbox.batch_input_bucket}/{inputs_prefix}" in failed["reason"]
    assert not sandbox.job_groups()
    # The supervisor's schedule, fired by hand through the control surface: one rule.
    fired = requests.post(sandbox.control_url + "schedules/fire", json={"rule": "SuperviseSchedule"}, timeout=30)
    assert fired.json() == {"fired": 1}


@pytest.mark.parametrize(
    ("field", "context_key"), [("input_bucket", "batchInputBuckets"), ("output_bucket", "batchOutputBuckets")]
)
def test_a_bucket_outside_the_allowed_list_is_refused(fresh_sandbox: Sandbox, field: str, context_key: str) -> None:
    sandbox = fresh_sandbox
    body = job_request(sandbox, "in/", "out/", **{field: "someone-elses-bucket"})
    answer = sandbox.request("POST", "jobs", body)
    assert answer.status_code == 400, answer.text
    assert "someone-elses-bucket" in answer.text and context_key in answer.text


def test_an_allowed_bucket_that_does_not_exist_fails_the_job(fresh_sandbox: Sandbox) -> None:
    sandbox = fresh_sandbox
    s3 = sandbox.client("s3")
    s3.delete_bucket(Bucket=sandbox.batch_input_bucket)  # the next reset creates it again
    with batch_pace(sandbox):
        job_id = submit(sandbox, job_request(sandbox, "in/", "out/"))
        failed = wait_for_job(sandbox, job_id, timeout_s=30)
    assert failed["status"] == "failed"
    assert "NoSuchBucket" in failed["reason"] and sandbox.batch_input_bucket in failed["reason"]


@pytest.mark.access_denied_expected
def test_an_allowed_bucket_whose_policy_denies_fails_the_job(fresh_sandbox: Sandbox) -> None:
    sandbox = fresh_sandbox
    bucket = sandbox.batch_input_bucket
    inputs_prefix, outputs_prefix = _prefixes()
    upload_inputs(sandbox, inputs_prefix, input_files(3))
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"}
        ],
    }
    sandbox.client("s3").put_bucket_policy(Bucket=bucket, Policy=json.dumps(deny))  # the next reset removes it
    with batch_pace(sandbox):
        job_id = submit(sandbox, job_request(sandbox, inputs_prefix, outputs_prefix))
        failed = wait_for_job(sandbox, job_id, timeout_s=30)
    assert failed["status"] == "failed"
    assert "AccessDenied" in failed["reason"] and f"s3://{bucket}/{inputs_prefix}" in failed["reason"]
    refused = [d for d in sandbox.iam.denials if d.action == "s3:ListBucket"]
    assert refused and "explicit deny in the resource policy" in refused[0].reason


def test_an_image_that_cannot_be_pulled_fails_its_batches_and_the_job(fresh_sandbox: Sandbox) -> None:
    sandbox = fresh_sandbox
    inputs_prefix, outputs_prefix = _prefixes()
    upload_inputs(sandbox, inputs_prefix, input_files(4))
    with batch_pace(sandbox):
        body = job_request(
            sandbox,
            inputs_prefix,
            outputs_prefix,
            image="spothub/no-such-image:1",
            batch_size=2,
            max_workers=2,
            max_attempts=2,
        )
        job_id = submit(sandbox, body)
        failed = wait_for_job(sandbox, job_id, timeout_s=120)
        assert failed["status"] == "failed", failed
        assert failed["batches"]["failed"] == 2 and failed["batches"]["completed"] == 0
        assert "2 of 2 batches failed" in (failed["reason"] or "")
        assert any("pull access denied" in e["error"] for e in failed["errors"]), failed["errors"]
        _no_worker_left(sandbox, job_id, timeout_s=60)
        sandbox.wait_for(lambda: sandbox.job_notifications(job_id), timeout_s=30)
    assert not check_outputs(sandbox, {}, outputs_prefix).unexpected

"""The API commands as an operator runs them: `spothub [options] COMMAND [options]` against a stand-in API
that checks every signature. Tables for people, one JSON object with --json, errors as one line on stderr,
exit 1 on an error or a failure waited for, 2 on a usage error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from spothub.cli import main
from tests.unit.fake_spothub_api import (
    STATUS,
    FakeApi,
    closed_port_url,
    instance,
    job_view,
    replica,
    spot_instances,
)
from tests.unit.test_api_client import write_state

JOB = "job-0123456789ab"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str) -> str:
    assert err.count("\n") == 1, err
    return err.strip()


# --- status, instances: where the options go, what is shown ------------------------------------------


def test_status_as_a_table_and_as_json(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.on("GET", "/status", (200, STATUS))
    code, out, err = run(capsys, "status", "--url", api.url)
    assert (code, err) == (0, "")
    for text in ("prefix", "spothub", "hub region", "us-east-1", "us-west-2, eu-west-1", "reachable", api.url):
        assert text in out
    code, out, _ = run(capsys, "status", "--url", api.url, "--json")
    assert code == 0
    assert out.count("\n") == 1
    assert json.loads(out) == STATUS


@pytest.mark.parametrize(
    "argv",
    [
        ["--url", "{url}", "--json", "status"],
        ["--url", "{url}", "status", "--json"],
        ["status", "--url", "{url}", "--json"],
        ["--url", "http://127.0.0.1:9/v1/", "status", "--url", "{url}", "--json"],  # the command's own win
    ],
)
def test_connection_options_go_before_or_after_the_command(
    api: FakeApi, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    api.on("GET", "/status", (200, STATUS))
    code, out, _ = run(capsys, *(a.format(url=api.url) for a in argv))
    assert code == 0
    assert json.loads(out) == STATUS


def test_the_url_from_the_environment(api: FakeApi, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    api.on("GET", "/status", (200, STATUS))
    monkeypatch.setenv("SPOTHUB_API_URL", api.url)
    code, out, _ = run(capsys, "status", "--json")
    assert (code, json.loads(out)) == (0, STATUS)


def test_sandbox_signs_with_its_own_credentials_even_beside_an_environment_url(
    api: FakeApi, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.on("GET", "/status", (200, STATUS))
    monkeypatch.setenv("SPOTHUB_API_URL", "http://127.0.0.1:9/v1/")
    write_state(tmp_path, api.url)
    code, out, _ = run(capsys, "--sandbox", "--state-dir", str(tmp_path), "status", "--json")
    assert (code, json.loads(out)) == (0, STATUS)
    assert api.seen[-1].caller == "AKIASANDBOXEXAMPLE"


def test_sandbox_with_a_region_is_a_usage_error(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "status", "--sandbox", "--region", "eu-west-1", "--state-dir", str(tmp_path))
    assert code == 2
    assert "leave out --profile/--region" in err


def test_no_running_sandbox_says_how_to_start_one(tmp_path: Path, capsys) -> None:
    code, out, err = run(capsys, "--sandbox", "--state-dir", str(tmp_path), "instances")
    assert (code, out) == (1, "")
    assert one_line(err).startswith(f"spothub instances: no running sandbox ({tmp_path / 'sandbox.json'}")
    assert "`spothub sandbox up`" in err


@mock_aws
def test_the_url_from_the_hubs_ssm_parameter(api: FakeApi, capsys) -> None:
    api.on("GET", "/status", (200, STATUS))
    # mock_aws puts its own fake credentials in the environment: those sign the request.
    api.keys[os.environ["AWS_ACCESS_KEY_ID"]] = os.environ["AWS_SECRET_ACCESS_KEY"]
    boto3.client("ssm", region_name="eu-west-1").put_parameter(
        Name="/spothub/blue/api-url", Value=api.url, Type="String"
    )
    code, out, err = run(capsys, "--region", "eu-west-1", "--prefix", "blue", "status", "--json")
    # The fake API checks the signature's region: the hub's, eu-west-1 here, is refused by a us-east-1 API.
    assert code == 1
    assert "Credential should be scoped to a valid region, not 'eu-west-1'" in err
    api.region = "eu-west-1"
    code, out, err = run(capsys, "--region", "eu-west-1", "--prefix", "blue", "status", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == STATUS
    code, out, err = run(capsys, "--region", "eu-west-1", "status")
    assert (code, out) == (1, "")
    assert "no spothub hub with prefix 'spothub' in eu-west-1" in one_line(err)


def test_missing_credentials_say_what_to_do(capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, out, err = run(capsys, "jobs", "list")
    assert (code, out) == (1, "")
    assert one_line(err).startswith("spothub jobs list: no AWS credentials found: pass --profile NAME")


def test_instances_shows_replicas_instances_and_remediations(api: FakeApi, capsys) -> None:
    answer = spot_instances(
        "serving",
        [replica("serving", region="us-west-2", instance_id="i-0abc", capacity_type="spot", reason="score 9, $0.41/h")],
        [instance()],
        endpoint="http://model.example.internal:8000",
        remediations=[
            {
                "instance_id": "i-0old",
                "region": "eu-west-1",
                "reason": "heartbeat missing",
                "alarm_name": "spothub-heartbeat-i-0old",
                "at": "2026-11-27T15:00:00Z",
            }
        ],
    )
    api.on("GET", "/spot-instances", (200, answer))
    code, out, _ = run(capsys, "instances", "--url", api.url)
    assert code == 0
    assert "provisioning enabled, state serving, endpoint http://model.example.internal:8000" in out
    for text in ("replicas (1)", "r-0", "score 9, $0.41/h", "instances (1)", "i-0abc", "g5.xlarge", "us-west-2a"):
        assert text in out
    assert "heartbeat missing" in out
    assert "remediations (1, oldest first)" in out
    code, out, _ = run(capsys, "instances", "--url", api.url, "--json")
    assert json.loads(out) == answer


def test_instances_shows_a_warm_standby_and_the_switch(api: FakeApi, capsys) -> None:
    answer = spot_instances(
        "serving",
        [replica("serving", region="us-west-2", instance_id="i-0abc", capacity_type="spot")],
        [instance()],
    )
    answer["settings"]["warm_standby"] = True
    answer["standbys"] = [
        {
            "replica_id": "r-0",
            "status": "ready",
            "region": "eu-west-1",
            "zone": "eu-west-1b",
            "capacity_type": "spot",
            "launch_id": "r-0-sb-1795000000",
            "instance_id": "i-0standby",
            "launched_at": "2026-11-27T15:00:00Z",
            "ready_at": "2026-11-27T15:05:00Z",
            "replaces": None,
        }
    ]
    api.on("GET", "/spot-instances", (200, answer))
    code, out, _ = run(capsys, "instances", "--url", api.url)
    assert code == 0
    assert "warm standby on" in out
    for text in ("warm standbys (1)", "i-0standby", "eu-west-1b", "2026-11-27T15:05:00Z"):
        assert text in out


def test_data_is_never_read_as_markup(api: FakeApi, capsys) -> None:
    answer = spot_instances("failed", [replica("failed", error="[bold]quota[/bold] exceeded")], [])
    api.on("GET", "/spot-instances", (200, answer))
    _, out, _ = run(capsys, "instances", "--url", api.url)
    assert "[bold]quota[/bold] exceeded" in out


# --- enable, disable ------------------------------------------------------------------------------------


def test_enable_sends_what_was_asked(api: FakeApi, capsys) -> None:
    api.on("POST", "/spot-provisioning", (200, {"message": "Spot provisioning enabled successfully"}))
    code, out, _ = run(capsys, "enable", "--url", api.url)
    assert (code, out) == (0, "Spot provisioning enabled successfully\n")
    assert api.seen[-1].body == {"action": "enable"}
    code, out, _ = run(
        capsys,
        *("enable", "--url", api.url, "--replicas", "2", "--instance-types", "g5.xlarge,g6.xlarge"),
        *("--allow", "us-west-2", "--allow", "eu-west-1", "--deny", "us-east-1", "--warm-standby", "--json"),
    )
    assert json.loads(out) == {"message": "Spot provisioning enabled successfully"}
    assert api.seen[-1].body == {
        "action": "enable",
        "replicas": 2,
        "instance_types": ["g5.xlarge", "g6.xlarge"],
        "allowed_regions": ["us-west-2", "eu-west-1"],
        "denied_regions": ["us-east-1"],
        "warm_standby": True,
    }
    run(capsys, "enable", "--url", api.url, "--no-warm-standby")
    assert api.seen[-1].body == {"action": "enable", "warm_standby": False}


def test_a_refused_enable_is_one_line_naming_the_fields(api: FakeApi, capsys) -> None:
    api.on(
        "POST",
        "/spot-provisioning",
        (
            400,
            {
                "error": "Bad Request",
                "message": "the request is not valid",
                "details": [{"field": "replicas", "problem": "Input should be less than or equal to 10"}],
            },
        ),
    )
    code, out, err = run(capsys, "enable", "--url", api.url, "--replicas", "11")
    assert (code, out) == (1, "")
    assert one_line(err) == (
        "spothub enable: 400 Bad Request: the request is not valid (replicas: Input should be less than or equal to 10)"
    )


def test_enable_wait_shows_placing_launching_healthy(api: FakeApi, capsys) -> None:
    api.on("POST", "/spot-provisioning", (200, {"message": "Spot provisioning enabled successfully"}))
    serving = replica("serving", region="us-west-2", instance_id="i-0abc", capacity_type="spot")
    api.on(
        "GET",
        "/spot-instances",
        (200, spot_instances("idle", [], [])),
        (200, spot_instances("placing", [replica("placing")], [])),
        (200, spot_instances("placing", [replica("placing", target_region="us-west-2")], [])),
        (503, {"error": "Service Unavailable", "message": "the state table does not answer"}),  # ridden out
        (200, spot_instances("placing", [replica("placing", target_region="us-west-2", instance_id="i-0abc")], [])),
        (200, spot_instances("serving", [serving], [instance()])),
    )
    code, out, err = run(capsys, "enable", "--url", api.url, "--wait", "--interval", "0")
    assert code == 0, err
    assert out.startswith("Spot provisioning enabled successfully\n")
    assert "i-0abc" in out  # the final view
    assert err.splitlines() == [
        "idle: no replica yet",
        "placing: r-0 placing",
        "placing: r-0 launching in us-west-2",
        "(retrying: 503 Service Unavailable: the state table does not answer)",
        "placing: r-0 launching in us-west-2 (i-0abc), waiting for it to be healthy",
        "serving: r-0 healthy in us-west-2 (i-0abc, spot)",
    ]


def test_enable_wait_exits_1_when_a_replica_fails(api: FakeApi, capsys) -> None:
    api.on("POST", "/spot-provisioning", (200, {"message": "Spot provisioning enabled successfully"}))
    failed = replica("failed", error="no capacity in any allowed region")
    api.on("GET", "/spot-instances", (200, spot_instances("failed", [failed], [])))
    code, out, err = run(capsys, "enable", "--url", api.url, "--wait", "--interval", "0", "--json")
    assert code == 1
    assert json.loads(out)["state"] == "failed"
    assert "failed: no capacity in any allowed region" in err
    assert err.splitlines()[-1] == "spothub enable: 1 replica(s) failed to place"


def test_enable_wait_gives_up_after_its_timeout(api: FakeApi, capsys) -> None:
    api.on("POST", "/spot-provisioning", (200, {"message": "ok"}))
    api.on("GET", "/spot-instances", (200, spot_instances("placing", [replica("placing")], [])))
    code, _, err = run(capsys, "enable", "--url", api.url, "--wait", "--interval", "0.01", "--timeout", "0.05")
    assert code == 1
    assert err.splitlines()[-1].startswith("spothub enable: gave up waiting after 0.05s: placing: r-0 placing")


def test_disable_tears_down_unless_told_to_keep_the_instances(api: FakeApi, capsys) -> None:
    api.on("POST", "/spot-provisioning", (200, {"message": "Spot provisioning disabled successfully"}))
    code, out, _ = run(capsys, "disable", "--url", api.url)
    assert (code, out) == (0, "Spot provisioning disabled successfully\n")
    assert api.seen[-1].body == {"action": "disable", "teardown": True}
    kept = {"message": "Spot provisioning disabled successfully", "instances_running": 2, "hint": "disable again"}
    api.on("POST", "/spot-provisioning", (200, kept))
    code, out, _ = run(capsys, "disable", "--url", api.url, "--keep-instances")
    assert api.seen[-1].body == {"action": "disable", "teardown": False}
    assert "2 instance(s) keep running, serving and billing: `spothub disable` (without --keep-instances)" in out


def test_disable_wait_until_no_instance_runs(api: FakeApi, capsys) -> None:
    api.on("POST", "/spot-provisioning", (200, {"message": "Spot provisioning disabled successfully"}))
    api.on(
        "GET",
        "/spot-instances",
        (200, spot_instances("idle", [], [instance(status="terminating")], provisioning="disabled")),
        (200, spot_instances("idle", [], [], provisioning="disabled")),
    )
    code, out, err = run(capsys, "disable", "--url", api.url, "--wait", "--interval", "0")
    assert code == 0
    assert out.splitlines() == ["Spot provisioning disabled successfully", "no instance left running"]
    assert err.splitlines() == ["idle: 1 instance(s) still running", "idle: 0 instance(s) still running"]


# --- jobs ------------------------------------------------------------------------------------------------


def test_submit_sends_the_jobs_fields(api: FakeApi, capsys) -> None:
    api.on("POST", "/jobs", (202, {"job_id": JOB, "status": "listing"}))
    code, out, _ = run(
        capsys,
        *("jobs", "submit", "--url", api.url, "--input", "s3://in-bucket/data/2026/", "--output", "s3://out-bucket"),
        *("--image", "spothub/batch-transform:latest", "--command", "python /app/run.py --mode 'fast path'"),
        *("--batch-size", "5", "--max-workers", "3", "--max-attempts", "2", "--ack-timeout", "60"),
        *("--processing-timeout", "900", "--instance-type", "g5.xlarge", "--instance-type", "g6.xlarge,g4dn.xlarge"),
        *(
            "--notify",
            "ops@example.com",
        ),
    )
    assert code == 0
    assert out == f"{JOB} listing: follow it with `spothub jobs show {JOB} --watch`\n"
    assert api.seen[-1].body == {
        "input_bucket": "in-bucket",
        "input_prefix": "data/2026/",
        "output_bucket": "out-bucket",
        "output_prefix": "",
        "image": "spothub/batch-transform:latest",
        "command": ["python", "/app/run.py", "--mode", "fast path"],
        "batch_size": 5,
        "max_workers": 3,
        "max_attempts": 2,
        "ack_timeout_s": 60,
        "processing_timeout_s": 900,
        "instance_types": ["g5.xlarge", "g6.xlarge", "g4dn.xlarge"],
        "notify_email": "ops@example.com",
    }


def test_submit_with_a_config_file_and_a_json_command(api: FakeApi, capsys) -> None:
    api.on("POST", "/jobs", (202, {"job_id": JOB, "status": "listing"}))
    code, out, _ = run(
        capsys,
        *("--url", api.url, "--json", "jobs", "submit", "--config", "s3://in-bucket/configuration/config.json"),
        *("--command", '["sh", "-c", "run $INPUT"]'),
    )
    assert code == 0
    assert json.loads(out) == {"job_id": JOB, "status": "listing"}
    assert api.seen[-1].body == {
        "config_uri": "s3://in-bucket/configuration/config.json",
        "command": ["sh", "-c", "run $INPUT"],
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--image", "x"], "--input, --output required (or --config naming a config file)"),
        (["--input", "bucket/prefix", "--output", "s3://o", "--image", "x"], "expected s3://bucket/prefix"),
        (["--input", "s3:///prefix", "--output", "s3://o", "--image", "x"], "expected s3://bucket/prefix"),
        (["--config", "s3://b/c.json", "--command", "[1, 2]"], "a JSON list of strings"),
        (["--config", "s3://b/c.json", "--command", "'unclosed"], "not a command line or a JSON list"),
        (["--config", "s3://b/c.json", "--batch-size", "ten"], "'ten' is not a valid integer"),
    ],
)
def test_submit_usage_errors_exit_2_before_any_request(api: FakeApi, capsys, argv: list[str], message: str) -> None:
    code, out, err = run(capsys, "jobs", "submit", "--url", api.url, *argv)
    assert (code, out) == (2, "")
    assert message in err
    assert api.seen == []


def test_a_refused_submit_names_the_fields(api: FakeApi, capsys) -> None:
    api.on(
        "POST",
        "/jobs",
        (
            400,
            {
                "error": "Bad Request",
                "message": "bucket not-allowed is not among the deployment's batch input buckets",
                "details": [{"field": "input_bucket", "problem": "not in batchInputBuckets"}],
            },
        ),
    )
    code, out, err = run(
        capsys,
        "jobs",
        "submit",
        "--url",
        api.url,
        "--input",
        "s3://not-allowed/x",
        "--output",
        "s3://o/",
        "--image",
        "i",
    )
    assert (code, out) == (1, "")
    assert one_line(err) == (
        "spothub jobs submit: 400 Bad Request: bucket not-allowed is not among the deployment's batch input buckets "
        "(input_bucket: not in batchInputBuckets)"
    )


def job_sequence() -> list[tuple[int, dict]]:
    worker = {"worker_id": f"{JOB}.i-1", "instance_id": "i-1", "region": "us-west-2", "status": "active"}
    return [
        (200, job_view("listing", files=0)),
        (200, job_view("running", pending=20, workers=[worker])),
        (200, job_view("running", pending=20, workers=[worker])),  # unchanged: no new line
        (200, job_view("running", completed=12, pending=6, workers=[worker, worker | {"worker_id": "w2"}])),
    ]


def test_submit_wait_follows_the_job_to_completion(api: FakeApi, capsys) -> None:
    api.on("POST", "/jobs", (202, {"job_id": JOB, "status": "listing"}))
    done = job_view("completed", completed=20, finished_at="2026-11-27T16:10:00Z")
    api.on("GET", f"/jobs/{JOB}", *job_sequence(), (200, done))
    code, out, err = run(
        capsys,
        *("jobs", "submit", "--url", api.url, "--input", "s3://in-bucket/data/", "--output", "s3://out-bucket/r/"),
        *("--image", "spothub/batch-transform:latest", "--wait", "--interval", "0"),
    )
    assert code == 0, err
    assert err.splitlines() == [
        f"{JOB} listing: 0 files, batches 0/0 completed, 0 workers",
        f"{JOB} running: 200 files, batches 0/20 completed, 1 worker",
        f"{JOB} running: 200 files, batches 12/18 completed, 2 workers",
        f"{JOB} completed: 200 files, batches 20/20 completed, 0 workers",
    ]
    assert out.startswith(f"{JOB} listing\n")
    for text in ("completed", "s3://in-bucket/data/", "s3://out-bucket/results/", "20: 0 pending", "2026-11-27T16:10"):
        assert text in out


def test_submit_wait_exits_1_when_the_job_fails(api: FakeApi, capsys) -> None:
    api.on("POST", "/jobs", (202, {"job_id": JOB, "status": "listing"}))
    failed = job_view(
        "failed",
        completed=18,
        failed=2,
        reason="2 batches failed",
        errors=[{"batch_id": "b-0000007", "worker_id": "w1", "error": "exit 3: bad input", "at": "2026-11-27T16:09Z"}],
    )
    api.on("GET", f"/jobs/{JOB}", (200, job_view("running", pending=20)), (200, failed))
    code, out, err = run(
        capsys,
        *("jobs", "submit", "--url", api.url, "--input", "s3://i/", "--output", "s3://o/", "--image", "x"),
        *("--wait", "--interval", "0", "--json"),
    )
    assert code == 1
    assert out.count("\n") == 1  # --json: the final view alone on stdout
    assert json.loads(out)["status"] == "failed"
    lines = err.splitlines()
    assert lines[-2] == f"{JOB} failed: 200 files, batches 18/20 completed (2 failed), 0 workers; 2 batches failed"
    assert lines[-1] == f"spothub jobs submit: job {JOB} failed: 2 batches failed"


def test_jobs_list_a_page_or_all_of_them(api: FakeApi, capsys) -> None:
    def summary(n: int, status: str = "completed") -> dict:
        return {
            "job_id": f"job-00000000000{n}",
            "status": status,
            "files": n * 10,
            "image": "img:1",
            "created_at": f"2026-11-2{n}T00:00:00Z",
            "finished_at": None,
        }

    def pages(seen) -> tuple[int, dict]:
        if seen.query.get("next_token") == ["t/2="]:
            return 200, {"jobs": [summary(1)], "next_token": None}
        return 200, {"jobs": [summary(3, "running"), summary(2)], "next_token": "t/2="}

    api.answers[("GET", "/jobs")] = pages
    code, out, err = run(capsys, "jobs", "list", "--url", api.url, "--limit", "2")
    assert code == 0
    assert "job-000000000003" in out and "running" in out and "job-000000000001" not in out
    assert "more: spothub jobs list --all" in err
    assert api.seen[-1].query == {"limit": ["2"]}
    code, out, _ = run(capsys, "jobs", "list", "--url", api.url, "--all", "--json")
    assert [j["job_id"] for j in json.loads(out)["jobs"]] == [
        "job-000000000003",
        "job-000000000002",
        "job-000000000001",
    ]
    assert json.loads(out)["next_token"] is None


def test_jobs_list_when_there_are_none(api: FakeApi, capsys) -> None:
    api.on("GET", "/jobs", (200, {"jobs": []}))
    assert run(capsys, "jobs", "list", "--url", api.url) == (0, "no jobs\n", "")


def test_jobs_show_the_whole_view(api: FakeApi, capsys) -> None:
    view = job_view(
        "running",
        completed=5,
        pending=15,
        workers=[
            {
                "worker_id": f"{JOB}.i-1",
                "instance_id": "i-1",
                "region": "us-west-2",
                "status": "active",
                "batch_id": "b-0000006",
                "last_seen": "2026-11-27T16:01:00Z",
                "capacity_type": "spot",
                "instance_type": "g5.xlarge",
            }
        ],
        fleet=[
            {
                "region": "us-west-2",
                "desired": 3,
                "in_service": 1,
                "capacity_type": "spot",
                "error": "InsufficientInstanceCapacity",
                "excluded_until": None,
            }
        ],
        errors=[{"batch_id": "b-0000002", "worker_id": None, "error": "ack timeout", "at": "2026-11-27T16:02:00Z"}],
    )
    api.on("GET", f"/jobs/{JOB}", (200, view))
    code, out, _ = run(capsys, "jobs", "show", JOB, "--url", api.url)
    assert code == 0
    for text in (
        "workers (1)",
        "b-0000006",
        "capacity by region",
        "InsufficientInstanceCapacity",
        "errors (1, newest first)",
        "ack timeout",
        "1 active (at most 3)",
    ):
        assert text in out
    code, out, _ = run(capsys, "jobs", "show", JOB, "--url", api.url, "--json")
    assert json.loads(out) == view


def test_jobs_show_an_unknown_job_is_a_404_line(api: FakeApi, capsys) -> None:
    api.on("GET", "/jobs/job-ffffffffffff", (404, {"error": "Not Found", "message": "no job job-ffffffffffff"}))
    code, out, err = run(capsys, "jobs", "show", "job-ffffffffffff", "--url", api.url)
    assert (code, out) == (1, "")
    assert one_line(err) == "spothub jobs show: 404 Not Found: no job job-ffffffffffff"


def test_jobs_show_watch_until_finished(api: FakeApi, capsys) -> None:
    api.on("GET", f"/jobs/{JOB}", (200, job_view("running", pending=2)), (200, job_view("cancelled", pending=2)))
    code, _, err = run(capsys, "jobs", "show", JOB, "--watch", "--interval", "0", "--url", api.url)
    assert code == 1  # followed to an end other than completed
    assert err.splitlines()[-1] == f"spothub jobs show: job {JOB} cancelled"
    api.on("GET", f"/jobs/{JOB}", (200, job_view("completed", completed=2)))
    assert run(capsys, "jobs", "show", JOB, "--watch", "--url", api.url)[0] == 0


def test_jobs_cancel(api: FakeApi, capsys) -> None:
    api.on("DELETE", f"/jobs/{JOB}", (200, job_view("cancelled")))
    code, out, _ = run(capsys, "jobs", "cancel", JOB, "--url", api.url)
    assert code == 0
    assert out.startswith(f"{JOB} cancelled: its workers shut down")
    api.on("DELETE", f"/jobs/{JOB}", (200, job_view("completed")))
    assert (
        run(capsys, "jobs", "cancel", JOB, "--url", api.url)[1] == f"{JOB} had already completed: nothing to cancel\n"
    )


# --- failures of every command --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("status", []),
        ("instances", []),
        ("enable", []),
        ("disable", []),
        ("jobs list", []),
        ("jobs show", [JOB]),
        ("jobs cancel", [JOB]),
        ("jobs submit", ["--config", "s3://b/c.json"]),
    ],
)
def test_every_command_answers_a_500_with_one_line_and_exit_1(
    api: FakeApi, capsys, command: str, args: list[str]
) -> None:
    def broken(_seen) -> tuple[int, dict]:
        return 500, {"error": "Internal Server Error", "message": "internal error, request id 7f3c"}

    routes = ["GET /status", "GET /spot-instances", "POST /spot-provisioning", "GET /jobs", f"GET /jobs/{JOB}"]
    for route in [*routes, f"DELETE /jobs/{JOB}", "POST /jobs"]:
        api.answers[tuple(route.split())] = broken
    code, out, err = run(capsys, *command.split(), *args, "--url", api.url)
    assert (code, out) == (1, "")
    assert one_line(err) == f"spothub {command}: 500 Internal Server Error: internal error, request id 7f3c"


def test_an_api_that_does_not_answer(capsys) -> None:
    url = closed_port_url()
    code, out, err = run(capsys, "--url", url, "jobs", "show", JOB)
    assert (code, out) == (1, "")
    assert (
        one_line(err) == f"spothub jobs show: GET /jobs/{JOB}: could not reach {url} (connection refused); check --url"
    )


def test_a_route_the_deployment_lacks(api: FakeApi, capsys) -> None:
    code, _, err = run(capsys, "jobs", "list", "--url", api.url)
    assert code == 1
    assert "the API has no such route (a deployment older than this command?)" in one_line(err)


# --- the ported commands keep their behaviour --------------------------------------------------------------


def test_help_and_version(capsys) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("api-key", "disable", "enable", "instances", "jobs", "replay", "sandbox", "status", "summary"):
        assert command in out
    assert run(capsys, "--version")[:2] == (0, "spothub 0.1.0\n")
    code, out, _ = run(capsys, "jobs", "--help")
    assert code == 0
    assert all(command in out for command in ("submit", "list", "show", "cancel"))


def test_api_key_takes_the_roots_sandbox_option(tmp_path: Path, capsys) -> None:
    code, out, err = run(capsys, "--sandbox", "api-key", "--state-dir", str(tmp_path))
    assert (code, out) == (1, "")
    assert "spothub api-key: no running sandbox" in err
    code, _, err = run(capsys, "api-key", "--sandbox", "--region", "us-east-1")
    assert code == 2
    assert "--region cannot be used with --sandbox" in err

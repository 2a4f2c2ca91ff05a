"""The agent in batch mode as the service runs it (`python -m spothub_agent` on an instance tagged
spothub:job-id), against a local IMDS, the fake worker API, S3 and SSM in moto's server and a fake Auto
Scaling endpoint: killed (SIGKILL) mid-batch and restarted, it stops what its predecessor left running and
processes the held batch again, each output written once; told to shut down, it leaves its group and exits 0;
started again by systemd, it only terminates itself again."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from spothub.sandbox.imds import InstanceMetadataServer
from spothub.sandbox.ports import free_port
from stacks.paths import LAMBDAS_DIR, WORKER_AGENT_DIR
from tests.agent.conftest import API_URL_PARAMETER, HUB_REGION, IDENTITY, INSTANCE_ID, METADATA, wait_for
from tests.agent.test_agent_process import FakeAutoScalingEndpoint, alive
from tests.agent.test_batch_worker import (
    BATCH_TAGS,
    INPUT_BUCKET,
    INPUT_PREFIX,
    INPUTS,
    OUTPUT_BUCKET,
    OUTPUT_PREFIX,
    FakeWorkerApi,
    batch,
)

GATED_JOB = """
import os, pathlib, time
inputs = pathlib.Path(os.environ["SPOTHUB_BATCH_INPUT_DIR"])
outputs = pathlib.Path(os.environ["SPOTHUB_BATCH_OUTPUT_DIR"])
if os.environ["SPOTHUB_BATCH_IMAGE"] == "gated":
    print("waiting for the gate", flush=True)
    while not pathlib.Path(os.environ["JOB_GATE"]).exists():
        time.sleep(0.05)
for path in sorted(p for p in inputs.rglob("*") if p.is_file()):
    target = outputs / (str(path.relative_to(inputs)) + ".out")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(path.read_text().upper())
"""


@dataclass
class World:
    api: FakeWorkerApi
    autoscaling: FakeAutoScalingEndpoint
    aws_endpoint: str
    environment: dict[str, str]
    state_dir: Path
    logs: Path
    gate: Path

    def start_agent(self, run: int) -> subprocess.Popen[bytes]:
        with (self.logs / f"agent-{run}.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "spothub_agent"],
                cwd=WORKER_AGENT_DIR,
                env=self.environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log_events(self, run: int) -> list[str]:
        lines = (self.logs / f"agent-{run}.log").read_text().splitlines()
        return [json.loads(line)["event"] for line in lines if line.startswith("{")]

    def state(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "state.json").read_text())

    def batch_log(self) -> str:
        path = self.state_dir / "batch.log"
        return path.read_text() if path.exists() else ""

    def outputs(self) -> dict[str, str]:
        s3 = boto3.client("s3", region_name=HUB_REGION, endpoint_url=self.aws_endpoint)
        listed = s3.list_objects_v2(Bucket=OUTPUT_BUCKET).get("Contents", [])
        return {o["Key"]: s3.get_object(Bucket=OUTPUT_BUCKET, Key=o["Key"])["Body"].read().decode() for o in listed}

    def terminations(self) -> list[dict[str, str]]:
        return [c for c in self.autoscaling.calls if c["Action"] == "TerminateInstanceInAutoScalingGroup"]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    from moto.moto_api._internal.models import moto_api_backend  # noqa: PLC0415
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    credentials = {"AWS_ACCESS_KEY_ID": "AKIDAGENTTEST", "AWS_SECRET_ACCESS_KEY": "secret"}
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    moto_api_backend.reset()
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    aws_endpoint = f"http://127.0.0.1:{port}"
    api = FakeWorkerApi()
    autoscaling = FakeAutoScalingEndpoint()
    script = tmp_path / "job.py"
    script.write_text(GATED_JOB)
    state_dir = tmp_path / "state"
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        s3 = boto3.client("s3", region_name=HUB_REGION, endpoint_url=aws_endpoint)
        for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
            s3.create_bucket(Bucket=bucket)
        for name, text in INPUTS.items():
            s3.put_object(Bucket=INPUT_BUCKET, Key=INPUT_PREFIX + name, Body=text.encode())
        boto3.client("ssm", region_name=HUB_REGION, endpoint_url=aws_endpoint).put_parameter(
            Name=API_URL_PARAMETER, Value=api.url, Type="String"
        )
        with InstanceMetadataServer(dict(METADATA), dict(BATCH_TAGS), dict(IDENTITY)) as imds:
            environment = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOTHUB_"))},
                **credentials,
                "PYTHONPATH": os.pathsep.join([str(WORKER_AGENT_DIR), str(LAMBDAS_DIR)]),
                "PYTHONUNBUFFERED": "1",
                "AWS_ENDPOINT_URL": aws_endpoint,
                "AWS_ENDPOINT_URL_AUTO_SCALING": autoscaling.url,
                "AWS_EC2_METADATA_DISABLED": "true",
                "SPOTHUB_IMDS_ENDPOINT": imds.endpoint,
                "SPOTHUB_AGENT_STATE_DIR": str(state_dir),
                "SPOTHUB_AGENT_POLL_SECONDS": "0.1",
                "SPOTHUB_AGENT_BACKOFF_BASE_SECONDS": "0.05",
                "SPOTHUB_AGENT_BACKOFF_CAP_SECONDS": "0.5",
                "SPOTHUB_AGENT_BATCH_RUNNER": "process",
                "SPOTHUB_AGENT_BATCH_COMMAND": json.dumps([sys.executable, str(script)]),
                "SPOTHUB_AGENT_BATCH_POLL_SECONDS": "0.1",
                "JOB_GATE": str(tmp_path / "gate"),
            }
            yield World(api, autoscaling, aws_endpoint, environment, state_dir, logs, tmp_path / "gate")
    finally:
        api.stop()
        autoscaling.stop()
        moto.stop()
        record = state_dir / "state.json"
        if record.exists():  # a job a failed test left behind
            pid = ((json.loads(record.read_text()).get("batch") or {}).get("run") or {}).get("pid")
            if pid and alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_killed_mid_batch_the_agent_processes_the_held_batch_again_then_leaves_its_group(world: World) -> None:
    world.api.pending = [batch(1, "a.txt", "sub/c.txt", image="gated"), batch(2, "b.txt")]
    agents: list[subprocess.Popen[bytes]] = []
    try:
        # Mid-batch: the job runs, the agent is killed; the job outlives it.
        agents.append(world.start_agent(1))
        wait_for(lambda: "waiting for the gate" in world.batch_log(), timeout=30)
        leftover = world.state()["batch"]["run"]["pid"]
        agents[0].send_signal(signal.SIGKILL)
        agents[0].wait(10)
        assert alive(leftover)
        # Restarted: it stops the leftover, asks again, is answered the held batch, and processes it again.
        agents.append(world.start_agent(2))
        wait_for(lambda: not alive(leftover), timeout=30)
        wait_for(lambda: world.api.actions().count("ack") == 2, timeout=30)
        world.gate.write_text("open")
        assert agents[1].wait(60) == 0
        assert [(r["batch_id"], r["status"]) for r in world.api.reports()] == [
            ("b-0000001", "completed"),
            ("b-0000002", "completed"),
            (None, "shutting-down"),
        ]
        assert world.outputs() == {
            OUTPUT_PREFIX + "a.txt.out": "ALPHA",
            OUTPUT_PREFIX + "sub/c.txt.out": "CHARLIE",
            OUTPUT_PREFIX + "b.txt.out": "BRAVO",
        }
        (termination,) = world.terminations()
        assert termination["InstanceId"] == INSTANCE_ID
        assert termination["ShouldDecrementDesiredCapacity"] == "true"
        events = world.log_events(2)
        assert "batch_leftover_stopped" in events
        assert "batch_resumed" in events
        assert events[-2:] == ["worker_left", "stopped"]
        # systemd starts it again (Restart=always): it only terminates itself again, then waits for the end.
        calls = len(world.api.calls)
        agents.append(world.start_agent(3))
        wait_for(lambda: len(world.terminations()) == 2, timeout=30)
        assert len(world.api.calls) == calls
        agents[2].send_signal(signal.SIGTERM)
        assert agents[2].wait(10) == 0
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait(10)

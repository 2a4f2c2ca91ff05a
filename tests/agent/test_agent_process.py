"""The agent as the service runs it (`python -m spothub_agent`, configured by IMDS, SSM and the
environment) against a local IMDS, a local control plane API, AWS in moto's server and a fake Auto
Scaling endpoint; its workload a local HTTP server. Killed (SIGKILL) and restarted, twice: its state
file brings it back without a second event, a second lifecycle completion, or a second workload."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from spothub.sandbox.imds import InstanceMetadataServer
from spothub.sandbox.ports import free_port
from stacks.paths import LAMBDAS_DIR, WORKER_AGENT_DIR
from tests.agent.conftest import (
    API_URL_PARAMETER,
    HUB_REGION,
    IDENTITY,
    INSTANCE_ID,
    METADATA,
    TAGS,
    FakeControlPlane,
    create_hub,
    wait_for,
)

WORKLOAD_SERVER = """
import signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Health(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()
def on_term(*_):
    print("SIGTERM: finishing requests, exiting", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Health)
print("serving on", sys.argv[1], flush=True)
server.serve_forever()
"""


@dataclass
class FakeAutoScalingEndpoint:
    """CompleteLifecycleAction and RecordLifecycleActionHeartbeat over AWS's query protocol, as Auto
    Scaling answers them (moto's server does not implement either)."""

    calls: list[dict[str, str]] = field(default_factory=list)
    active: bool = True

    def __post_init__(self) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_POST(self) -> None:
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                params = {key: values[0] for key, values in form.items()}
                status, body = endpoint.answer(params)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, params: dict[str, str]) -> tuple[int, str]:
        action = params.get("Action", "")
        self.calls.append(params)
        namespace = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
        if not self.active:
            return 400, (
                f'<ErrorResponse xmlns="{namespace}"><Error><Type>Sender</Type><Code>ValidationError</Code>'
                f"<Message>No active Lifecycle Action found with instance ID {params.get('InstanceId')}</Message>"
                "</Error><RequestId>r</RequestId></ErrorResponse>"
            )
        if action == "CompleteLifecycleAction":
            self.active = False
        return 200, (
            f'<{action}Response xmlns="{namespace}"><{action}Result/>'
            f"<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></{action}Response>"
        )

    def completions(self) -> list[dict[str, str]]:
        """Every CompleteLifecycleAction call, answered or refused."""
        return [c for c in self.calls if c["Action"] == "CompleteLifecycleAction"]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class World:
    imds: InstanceMetadataServer
    api: FakeControlPlane
    autoscaling: FakeAutoScalingEndpoint
    aws_endpoint: str
    queue_url: str
    environment: dict[str, str]
    state_dir: Path
    logs: Path
    received: list[dict[str, Any]] = field(default_factory=list)

    def events(self, detail_type: str) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs", region_name=HUB_REGION, endpoint_url=self.aws_endpoint)
        while messages := sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages"):
            for message in messages:
                self.received.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return [e for e in self.received if e["detail-type"] == detail_type]

    def start_agent(self, run: int) -> subprocess.Popen[bytes]:
        with (self.logs / f"agent-{run}.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "spothub_agent"],
                cwd=WORKER_AGENT_DIR,
                env=self.environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log_events(self, run: int) -> list[dict[str, Any]]:
        lines = (self.logs / f"agent-{run}.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def state(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "state.json").read_text())


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
    api = FakeControlPlane()
    autoscaling = FakeAutoScalingEndpoint()
    workload_port = free_port()
    script = tmp_path / "workload_server.py"
    script.write_text(WORKLOAD_SERVER)
    state_dir = tmp_path / "state"
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        queue_url = create_hub(endpoint_url=aws_endpoint)
        boto3.client("ssm", region_name=HUB_REGION, endpoint_url=aws_endpoint).put_parameter(
            Name=API_URL_PARAMETER, Value=api.url, Type="String"
        )
        with InstanceMetadataServer(dict(METADATA), dict(TAGS), dict(IDENTITY)) as imds:
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
                "SPOTHUB_AGENT_HEARTBEAT_SECONDS": "0.2",
                "SPOTHUB_AGENT_LIFECYCLE_HEARTBEAT_SECONDS": "0.3",
                "SPOTHUB_AGENT_BACKOFF_BASE_SECONDS": "0.05",
                "SPOTHUB_AGENT_BACKOFF_CAP_SECONDS": "0.5",
                "SPOTHUB_AGENT_HEALTH_URL": f"http://127.0.0.1:{workload_port}/health",
                "SPOTHUB_AGENT_HEALTHY_WITHIN_SECONDS": "30",
                "SPOTHUB_AGENT_GRACE_SECONDS": "5",
                "SPOTHUB_AGENT_WORKLOAD_COMMAND": json.dumps([sys.executable, str(script), str(workload_port)]),
            }
            yield World(imds, api, autoscaling, aws_endpoint, queue_url, environment, state_dir, logs)
    finally:
        api.stop()
        autoscaling.stop()
        moto.stop()
        record = state_dir / "state.json"
        if record.exists():  # a workload a failed test left behind
            pid = (json.loads(record.read_text()).get("workload") or {}).get("pid")
            if pid:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)


def kill(agent: subprocess.Popen[bytes]) -> None:
    agent.send_signal(signal.SIGKILL)
    agent.wait(10)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def test_killed_and_restarted_the_agent_neither_loses_nor_repeats_work(world: World) -> None:
    agents: list[subprocess.Popen[bytes]] = []
    try:
        pid = enters_service_and_publishes_a_rebalance(world, agents)
        restarted_repeats_nothing(world, agents, pid)
        drains_on_an_interruption(world, pid)
        restarted_after_the_drain_stays_drained(world, agents, pid)
        # SIGTERM: a clean stop.
        agents[-1].send_signal(signal.SIGTERM)
        assert agents[-1].wait(10) == 0
        assert world.log_events(3)[-1]["event"] == "stopped"
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait(10)


def enters_service_and_publishes_a_rebalance(world: World, agents: list[subprocess.Popen[bytes]]) -> int:
    """Started: the workload runs and answers its health check, so the launch is completed, once."""
    agents.append(world.start_agent(1))
    wait_for(world.autoscaling.completions, timeout=20)
    completion = world.autoscaling.completions()[0]
    assert completion["LifecycleActionResult"] == "CONTINUE"
    assert completion["LifecycleHookName"] == "spothub-workload-healthy"
    assert completion["InstanceId"] == INSTANCE_ID
    wait_for(lambda: any(c.action == "heartbeat" and c.body["ready"] for c in world.api.calls))
    pid = int(world.state()["workload"]["pid"])
    assert alive(pid)
    world.imds.metadata["events/recommendations/rebalance"] = json.dumps({"noticeTime": "2026-01-01T10:00:00Z"})
    wait_for(lambda: world.events("Spothub Capacity Notice"))
    return pid


def restarted_repeats_nothing(world: World, agents: list[subprocess.Popen[bytes]], pid: int) -> None:
    """Killed, restarted: it adopts the workload, registers again, and repeats nothing."""
    kill(agents[-1])
    assert alive(pid)  # the workload outlives the agent
    registrations = world.api.actions().count("register")
    agents.append(world.start_agent(2))
    wait_for(lambda: world.api.actions().count("register") > registrations)
    calls = len(world.api.calls)
    wait_for(lambda: any(c.action == "heartbeat" and c.body["ready"] for c in world.api.calls[calls:]))
    time.sleep(0.5)  # several polls of the same rebalance notice
    assert len(world.events("Spothub Capacity Notice")) == 1
    assert len(world.autoscaling.completions()) == 1  # not even tried again
    events = [e["event"] for e in world.log_events(2)]
    assert "workload_adopted" in events
    assert "lifecycle_already_done" in events
    assert world.state()["workload"]["pid"] == pid


def drains_on_an_interruption(world: World, pid: int) -> None:
    """An interruption: one more notice, the drain (SIGTERM to the workload), its outcome."""
    action_time = datetime.now(UTC) + timedelta(minutes=2)
    world.imds.metadata["spot/instance-action"] = json.dumps(
        {"action": "terminate", "time": action_time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    )
    drained = wait_for(lambda: world.events("Spothub Drain Completed"), timeout=20)[0]["detail"]
    assert drained["outcome"] == "drained"
    assert drained["exit_code"] is None  # adopted, not its child: the exit code is not known
    assert drained["last_lines"][-1] == "SIGTERM: finishing requests, exiting"
    assert not alive(pid)
    kinds = sorted(e["detail"]["kind"] for e in world.events("Spothub Capacity Notice"))
    assert kinds == ["interruption", "rebalance"]


def restarted_after_the_drain_stays_drained(world: World, agents: list[subprocess.Popen[bytes]], pid: int) -> None:
    """Killed and restarted after the drain: drained, nothing published or started again."""
    kill(agents[-1])
    calls = len(world.api.calls)
    agents.append(world.start_agent(3))
    beat = wait_for(lambda: next((c for c in world.api.calls[calls:] if c.action == "heartbeat"), None), timeout=20)
    assert beat.body["drained"] is True
    assert beat.body["ready"] is False
    assert beat.body["workload"]["state"] == "stopped"
    time.sleep(0.5)
    assert len(world.events("Spothub Capacity Notice")) == 2
    assert len(world.events("Spothub Drain Completed")) == 1
    assert world.state()["workload"]["pid"] == pid
    assert "workload_started" not in [e["event"] for e in world.log_events(3)]

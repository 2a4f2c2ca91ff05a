"""Fixtures of the agent's tests: a local IMDS (the sandbox's), a local control plane API and a workload
health endpoint (threading http.server), AWS in moto, and a fake Auto Scaling client (moto does not
implement CompleteLifecycleAction or RecordLifecycleActionHeartbeat)."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from spothub.sandbox.imds import InstanceMetadataServer
from spothub_agent.agent import Agent
from spothub_agent.aws import AwsClients
from spothub_agent.config import AgentConfig, load_config
from spothub_agent.gpu import GpuMonitor
from spothub_agent.imds import Imds
from spothub_agent.settings import Settings, WorkloadSpec
from spothub_agent.workload import StopResult, Workload, WorkloadStatus

INSTANCE_ID = "i-0abc1234def567890"
ACCOUNT = "123456789012"
HUB_REGION = "us-east-1"
REGION = "us-west-2"
PREFIX = "spothub"
IDENTITY = {
    "instanceId": INSTANCE_ID,
    "region": REGION,
    "availabilityZone": "us-west-2b",
    "instanceType": "g5.xlarge",
    "accountId": ACCOUNT,
}
TAGS = {
    "spothub:prefix": PREFIX,
    "spothub:hub-region": HUB_REGION,
    "spothub:lifecycle-hook": "spothub-workload-healthy",
    "aws:autoscaling:groupName": "spothub-gpu",
}
METADATA = {"instance-id": INSTANCE_ID, "instance-life-cycle": "spot"}
BUS_NAME = f"{PREFIX}-hub"
API_URL_PARAMETER = f"/spothub/{PREFIX}/api-url"


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll until predicate() is truthy; returns its value, or fails the test after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout}s: {getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)


def fast_settings(state_dir: Path, **changes: Any) -> Settings:
    """Settings with intervals small enough for tests that run in a second or two."""
    base = Settings(
        health_url="",
        healthy_within_s=30.0,
        grace_s=2.0,
        heartbeat_s=0.1,
        poll_s=0.05,
        lifecycle_heartbeat_s=0.1,
        backoff_base_s=0.02,
        backoff_cap_s=0.1,
        state_dir=state_dir,
        workload=WorkloadSpec(runner="process", command=("sleep", "60")),
    )
    return replace(base, **changes)


# --- IMDS --------------------------------------------------------------------------------------


@pytest.fixture
def imds_server() -> Iterator[InstanceMetadataServer]:
    server = InstanceMetadataServer(dict(METADATA), dict(TAGS), dict(IDENTITY))
    http_server = getattr(server, "_server", None)
    if http_server is None:  # the sandbox's server changed shape: its own start and stop, only slower
        with server:
            yield server
        return
    # Served with a short poll interval: stopping it then takes milliseconds, not half a second.
    threading.Thread(target=http_server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def imds(imds_server: InstanceMetadataServer) -> Imds:
    return Imds(imds_server.endpoint)


@pytest.fixture
def config(imds: Imds) -> AgentConfig:
    return load_config(imds)


# --- the control plane API ---------------------------------------------------------------------


@dataclass
class ApiCall:
    instance_id: str
    action: str  # register | heartbeat
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeControlPlane:
    """POST {base}agents/{id}/register|heartbeat, as the hub's agent API answers them."""

    base_path: str = "/v1/"
    calls: list[ApiCall] = field(default_factory=list)
    known: set[str] = field(default_factory=set)
    assignment: dict[str, Any] | None = None
    fail_with: int | None = None  # answer every call with this status

    def __post_init__(self) -> None:
        plane = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                status, answer = plane.answer(self.path, dict(self.headers.items()), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{self.base_path}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        parts = path.removeprefix(self.base_path).split("/")
        if not path.startswith(self.base_path) or len(parts) != 3 or parts[0] != "agents":
            return 403, {"message": "Missing Authentication Token"}
        instance_id, action = parts[1], parts[2]
        self.calls.append(ApiCall(instance_id, action, body, headers))
        if self.fail_with:
            return self.fail_with, {"message": "unavailable"}
        if action == "register":
            self.known.add(instance_id)
            return 200, {"instance_id": instance_id, "assignment": self.assignment}
        if action == "heartbeat":
            if instance_id not in self.known:
                return 404, {"message": f"instance {instance_id} is not registered: register first"}
            return 200, {"instance_id": instance_id, "last_seen": int(time.time())}
        return 404, {"message": "no such route"}

    def actions(self) -> list[str]:
        return [call.action for call in self.calls]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def api() -> Iterator[FakeControlPlane]:
    plane = FakeControlPlane()
    yield plane
    plane.stop()


# --- the workload's health endpoint ------------------------------------------------------------


class HealthServer:
    def __init__(self) -> None:
        self.status = 503
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests += 1
                self.send_response(server.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/health"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def health() -> Iterator[HealthServer]:
    server = HealthServer()
    yield server
    server.stop()


# --- AWS -------------------------------------------------------------------------------------


class FakeAutoScaling:
    """CompleteLifecycleAction and RecordLifecycleActionHeartbeat as AWS answers them: once completed
    (or when there is no action), "No active Lifecycle Action found"."""

    def __init__(self) -> None:
        self.completed: list[dict[str, str]] = []
        self.heartbeats: list[dict[str, str]] = []
        self.active = True
        self.fail_next: list[ClientError] = []

    def _check(self, operation: str) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)
        if not self.active:
            raise ClientError(
                {"Error": {"Code": "ValidationError", "Message": "No active Lifecycle Action found with instance ID"}},
                operation,
            )

    def complete_lifecycle_action(self, **kwargs: str) -> dict[str, Any]:
        self._check("CompleteLifecycleAction")
        self.completed.append(kwargs)
        self.active = False
        return {}

    def record_lifecycle_action_heartbeat(self, **kwargs: str) -> dict[str, Any]:
        self._check("RecordLifecycleActionHeartbeat")
        self.heartbeats.append(kwargs)
        return {}


class TestClients(AwsClients):
    """The agent's clients (moto), with the fake Auto Scaling client."""

    __test__ = False

    def __init__(self, autoscaling: FakeAutoScaling) -> None:
        super().__init__(REGION, HUB_REGION)
        self.fake_autoscaling = autoscaling

    @property
    def autoscaling(self) -> Any:
        return self.fake_autoscaling


@dataclass
class Aws:
    clients: TestClients
    queue_url: str
    received: list[dict[str, Any]] = field(default_factory=list)

    def events(self, detail_type: str | None = None) -> list[dict[str, Any]]:
        """Every event the hub bus took so far (through a rule to an SQS queue)."""
        sqs = boto3.client("sqs", region_name=HUB_REGION)
        while True:
            messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                break
            for message in messages:
                self.received.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return [e for e in self.received if detail_type is None or e["detail-type"] == detail_type]

    def set_api_url(self, url: str) -> None:
        boto3.client("ssm", region_name=HUB_REGION).put_parameter(
            Name=API_URL_PARAMETER, Value=url, Type="String", Overwrite=True
        )


def create_hub(queue_name: str = "hub-events", endpoint_url: str | None = None) -> str:
    """The hub bus with a rule sending the agent's events to a queue; returns the queue URL."""
    events = boto3.client("events", region_name=HUB_REGION, endpoint_url=endpoint_url)
    sqs = boto3.client("sqs", region_name=HUB_REGION, endpoint_url=endpoint_url)
    events.create_event_bus(Name=BUS_NAME)
    queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="agent", EventBusName=BUS_NAME, EventPattern=json.dumps({"source": ["spothub.agent"]}))
    events.put_targets(Rule="agent", EventBusName=BUS_NAME, Targets=[{"Id": "queue", "Arn": queue_arn}])
    return queue_url


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIDAGENTTEST",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def autoscaling() -> FakeAutoScaling:
    return FakeAutoScaling()


@pytest.fixture
def aws(aws_credentials: None, autoscaling: FakeAutoScaling, api: FakeControlPlane) -> Iterator[Aws]:
    with mock_aws():
        queue_url = create_hub()
        hub = Aws(TestClients(autoscaling), queue_url)
        hub.set_api_url(api.url)
        yield hub


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "state"
    directory.mkdir()
    return directory


@pytest.fixture(autouse=True)
def _no_real_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests decide what NVML looks like; a machine's real pynvml must not leak into them."""
    monkeypatch.setitem(sys.modules, "pynvml", None)  # type: ignore[arg-type]


WORKLOAD_SCRIPT = """
import signal, sys, time
ignore_term = sys.argv[1] == "ignore-term"
def on_term(*_):
    if ignore_term:
        print("ignoring SIGTERM", flush=True)
        return
    print("SIGTERM received, draining", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
for n in range(int(sys.argv[2])):
    print(f"line {n}", flush=True)
print("serving", flush=True)
while True:
    time.sleep(0.05)
"""


def workload_command(tmp_path: Path, *, ignore_term: bool = False, lines: int = 3) -> tuple[str, ...]:
    """A process workload that prints some lines, then serves until SIGTERM (exit 0), or ignores it."""
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD_SCRIPT)
    return (sys.executable, str(script), "ignore-term" if ignore_term else "exit-on-term", str(lines))


class FakeWorkload(Workload):
    """A workload whose health and state the test sets."""

    def __init__(self) -> None:
        super().__init__(health_url="", last_lines=20)
        self.is_healthy = False
        self.state = "running"
        self.exit_code: int | None = None
        self.stops: list[float] = []

    def start(self, launch: bool = True) -> None:
        pass

    def status(self) -> WorkloadStatus:
        return WorkloadStatus(self.state, self.exit_code, ("last line",))

    def stop(self, grace_s: float) -> StopResult:
        self.stops.append(grace_s)
        self.state, self.exit_code = "stopped", 0
        return StopResult(0, forced=False)

    def healthy(self) -> bool:
        return self.is_healthy


MakeAgent = Callable[..., Agent]


@pytest.fixture
def make_agent(aws: Aws, imds: Imds, config: AgentConfig, state_dir: Path) -> Iterator[MakeAgent]:
    """An agent wired to the local IMDS, API and moto, not started; stopped after the test."""
    started: list[tuple[Agent, threading.Event]] = []

    def make(use: Workload | None = None, gpu: GpuMonitor | None = None, **changes: Any) -> Agent:
        """`use`: the workload object (else one from the settings); `changes`: settings."""
        agent = Agent(config, fast_settings(state_dir, **changes), imds, aws.clients, workload=use, gpu=gpu)
        original_start = agent.start

        def start(stop: threading.Event) -> None:
            started.append((agent, stop))
            original_start(stop)

        agent.start = start  # type: ignore[method-assign]
        return agent

    yield make
    for agent, stop in started:
        stop.set()
        agent.shutdown()

"""The agent in batch mode (spothub_agent.batch.BatchWorker) against a fake worker API (a local HTTP server
answering as the hub's batch_workers_api does), S3 in moto, a local IMDS and a fake Auto Scaling client; the
job's container a local process (the process runner) that upper-cases each input file."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from spothub.sandbox.imds import InstanceMetadataServer
from spothub_agent.aws import AwsClients
from spothub_agent.batch import BatchWorker
from spothub_agent.config import AgentConfig, load_config
from spothub_agent.imds import Imds
from spothub_agent.process_runner import boot_id, process_start_ticks
from spothub_agent.settings import Settings
from spothub_agent.state import AgentState
from spothub_core.models.batch_workers import BatchAssignment, BatchStatusReport, WorkerRegistration
from tests.agent.conftest import (
    API_URL_PARAMETER,
    HUB_REGION,
    IDENTITY,
    INSTANCE_ID,
    METADATA,
    PREFIX,
    REGION,
    wait_for,
)

JOB_ID = "job-0123456789ab"
WORKER_ID = f"{JOB_ID}.{INSTANCE_ID}"
BATCH_TAGS = {
    "spothub:prefix": PREFIX,
    "spothub:hub-region": HUB_REGION,
    "spothub:job-id": JOB_ID,
    "aws:autoscaling:groupName": f"{PREFIX}-{JOB_ID}",
}
INPUT_BUCKET = "spothub-test-input"
OUTPUT_BUCKET = "spothub-test-output"
INPUT_PREFIX = "data/in/"
OUTPUT_PREFIX = "data/out/"
INPUTS = {"a.txt": "alpha", "b.txt": "bravo", "sub/c.txt": "charlie", "d.txt": "delta"}

# The job's container, as a process: each input file upper-cased into <name>.out. The image says how it behaves.
JOB_SCRIPT = """
import os, pathlib, sys, time
inputs = pathlib.Path(os.environ["SPOTHUB_BATCH_INPUT_DIR"])
outputs = pathlib.Path(os.environ["SPOTHUB_BATCH_OUTPUT_DIR"])
image = os.environ["SPOTHUB_BATCH_IMAGE"]
if image.startswith("missing/"):
    print(f"docker: Error response from daemon: pull access denied for {image}, repository does not exist", flush=True)
    sys.exit(125)
if image == "slow":
    print("started, slowly", flush=True)
    time.sleep(60)
for path in sorted(p for p in inputs.rglob("*") if p.is_file()):
    target = outputs / (str(path.relative_to(inputs)) + ".out")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(path.read_text().upper())
    print("wrote", target.relative_to(outputs), flush=True)
if image == "failing":
    print("boom: the model would not load", flush=True)
    sys.exit(3)
"""


def batch(seq: int, *names: str, image: str = "spothub/transform:1", **changes: Any) -> dict[str, Any]:
    """A BatchAssignment as the worker API answers it."""
    body = {
        "batch_id": f"b-{seq:07d}",
        "file_names": list(names),
        "input_bucket": INPUT_BUCKET,
        "input_prefix": INPUT_PREFIX,
        "output_bucket": OUTPUT_BUCKET,
        "output_prefix": OUTPUT_PREFIX,
        "attempt": 1,
        "image": image,
        "command": ["python", "transform.py", "--upper"],
        "ack_timeout_s": 300,
        "processing_timeout_s": 3600,
    }
    return BatchAssignment.model_validate({**body, **changes}).model_dump(mode="json")


@dataclass
class Call:
    method: str
    action: str  # register | assignment | ack | status
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeWorkerApi:
    """The worker API: pending batches handed out in order, the held batch answered again until it is
    reported (or taken back), `shutdown` once nothing is pending."""

    pending: list[dict[str, Any]] = field(default_factory=list)
    held: dict[str, Any] | None = None
    waits: int = 0  # `wait` answers before the first batch
    conflicts: set[tuple[str, str]] = field(default_factory=set)  # (ack|status, batch_id) answered 409
    unavailable: int = 0  # the next calls answered 503
    registered: bool = False
    calls: list[Call] = field(default_factory=list)
    base_path: str = "/v1/"

    def __post_init__(self) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def _serve(self, method: str) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                status, answer = api.answer(method, self.path, dict(self.headers.items()), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{self.base_path}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, method: str, path: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
        parts = path.removeprefix(self.base_path).split("/")
        with self._lock:
            if parts == ["workers", "register"] and method == "POST":
                return self._register(headers, body)
            if len(parts) != 3 or parts[0] != "workers" or parts[1] != WORKER_ID:
                return 403, {"message": f"not this worker's route: {path}"}
            action = parts[2]
            self.calls.append(Call(method, action, body, headers))
            if self.unavailable:
                self.unavailable -= 1
                return 503, {"message": "Service Unavailable"}
            if not self.registered:
                return 404, {"message": f"worker {WORKER_ID} is not registered"}
            return self._route(method, action, body)

    def _route(self, method: str, action: str, body: dict[str, Any]) -> tuple[int, Any]:
        if action == "assignment" and method == "GET":
            return self._assignment()
        if action in ("ack", "status") and method == "POST":
            return self._update(action, body)
        return 404, {"message": "no such route"}

    def _register(self, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
        self.calls.append(Call("POST", "register", body, headers))
        if self.unavailable:
            self.unavailable -= 1
            return 503, {"message": "Service Unavailable"}
        WorkerRegistration.model_validate(body)
        new = not self.registered
        self.registered = True
        return 200, {"worker_id": WORKER_ID, "job_id": body["job_id"], "registered": new}

    def _assignment(self) -> tuple[int, Any]:
        if self.held is not None:
            return 200, self.held
        if self.waits:
            self.waits -= 1
            return 200, {"command": "wait", "retry_after_s": 0}
        if self.pending:
            self.held = self.pending.pop(0)
            return 200, self.held
        return 200, {"command": "shutdown", "reason": "the job is complete"}

    def _update(self, action: str, body: dict[str, Any]) -> tuple[int, Any]:
        batch_id = body.get("batch_id")
        if (action, batch_id) in self.conflicts:
            self.held = None  # taken back (and claimed by another worker)
            return 409, {"message": f"batch {batch_id} is not held by {WORKER_ID}"}
        if action == "status":
            BatchStatusReport.model_validate(body)
            if self.held is not None and self.held["batch_id"] == batch_id:
                self.held = None
            status = body["status"]
        else:
            status = "processing"
        return 200, {"worker_id": WORKER_ID, "batch_id": batch_id, "status": status, "changed": True}

    def actions(self) -> list[str]:
        return [call.action for call in self.calls]

    def reports(self) -> list[dict[str, Any]]:
        return [call.body for call in self.calls if call.action == "status"]

    def forget(self) -> None:
        """The hub lost the worker's record: 404 until it registers again."""
        with self._lock:
            self.registered = False

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeGroup:
    """TerminateInstanceInAutoScalingGroup, as Auto Scaling answers it."""

    def __init__(self) -> None:
        self.terminated: list[dict[str, Any]] = []
        self.fail_next: list[ClientError] = []

    def terminate_instance_in_auto_scaling_group(self, **kwargs: Any) -> dict[str, Any]:
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.terminated.append(kwargs)
        return {"Activity": {"ActivityId": "a-1", "StatusCode": "InProgress"}}


class WorkerClients(AwsClients):
    """The agent's clients (moto), with the fake group's Auto Scaling client."""

    __test__ = False

    def __init__(self, group: FakeGroup) -> None:
        super().__init__(REGION, HUB_REGION)
        self.group = group

    @property
    def autoscaling(self) -> Any:
        return self.group


@dataclass
class World:
    api: FakeWorkerApi
    group: FakeGroup
    imds: InstanceMetadataServer
    config: AgentConfig
    clients: WorkerClients
    state_dir: Path
    job_script: Path
    imds_client: Imds

    def settings(self, **changes: Any) -> Settings:
        base = Settings(
            poll_s=0.05,
            backoff_base_s=0.02,
            backoff_cap_s=0.1,
            state_dir=self.state_dir,
            batch_runner="process",
            batch_command=(sys.executable, str(self.job_script)),
            batch_poll_s=0.05,
        )
        return replace(base, **changes)

    def worker(self, **changes: Any) -> BatchWorker:
        return BatchWorker(self.config, self.settings(**changes), self.imds_client, self.clients)

    def outputs(self) -> dict[str, str]:
        s3 = boto3.client("s3", region_name=HUB_REGION)
        listed = s3.list_objects_v2(Bucket=OUTPUT_BUCKET).get("Contents", [])
        return {o["Key"]: s3.get_object(Bucket=OUTPUT_BUCKET, Key=o["Key"])["Body"].read().decode() for o in listed}

    def interrupt(self) -> None:
        action_time = (datetime.now(UTC) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.imds.metadata["spot/instance-action"] = json.dumps({"action": "terminate", "time": action_time})

    def state(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "state.json").read_text())

    def batch_log(self) -> str:
        path = self.state_dir / "batch.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def world(aws_credentials: None, tmp_path: Path) -> Iterator[World]:
    imds = InstanceMetadataServer(dict(METADATA), dict(BATCH_TAGS), dict(IDENTITY))
    threading.Thread(target=imds._server.serve_forever, args=(0.02,), daemon=True).start()
    api = FakeWorkerApi()
    script = tmp_path / "job.py"
    script.write_text(JOB_SCRIPT)
    state_dir = tmp_path / "state"
    try:
        with mock_aws():
            s3 = boto3.client("s3", region_name=HUB_REGION)
            for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
                s3.create_bucket(Bucket=bucket)
            for name, text in INPUTS.items():
                s3.put_object(Bucket=INPUT_BUCKET, Key=INPUT_PREFIX + name, Body=text.encode())
            boto3.client("ssm", region_name=HUB_REGION).put_parameter(
                Name=API_URL_PARAMETER, Value=api.url, Type="String"
            )
            imds_client = Imds(imds.endpoint)
            group = FakeGroup()
            yield World(
                api, group, imds, load_config(imds_client), WorkerClients(group), state_dir, script, imds_client
            )
    finally:
        api.stop()
        imds.stop()
        record = state_dir / "state.json"
        if record.exists():  # a job process a failed test left behind
            pid = ((json.loads(record.read_text()).get("batch") or {}).get("run") or {}).get("pid")
            if pid:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)


class Running:
    """A worker's run(stop) on a thread."""

    def __init__(self, worker: BatchWorker) -> None:
        self.worker = worker
        self.stop = threading.Event()
        self.thread = threading.Thread(target=worker.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def finished(self, timeout: float = 20.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not finish"

    def halt(self) -> None:
        self.stop.set()
        self.finished()


@pytest.fixture
def running() -> Iterator[Callable[[BatchWorker], Running]]:
    started: list[Running] = []

    def start(worker: BatchWorker) -> Running:
        started.append(Running(worker))
        return started[-1]

    yield start
    for run in started:
        run.stop.set()
        run.thread.join(20)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def upper(name: str) -> tuple[str, str]:
    return OUTPUT_PREFIX + name + ".out", INPUTS[name].upper()


# --- the job, batch by batch ---------------------------------------------------------------------------


def test_a_job_is_processed_batch_by_batch_then_the_worker_leaves_its_group(world: World, running: Any) -> None:
    world.api.pending = [batch(1, "a.txt", "sub/c.txt"), batch(2, "b.txt")]
    run = running(world.worker())
    run.finished()
    assert world.api.actions() == [
        "register",
        "assignment",
        "ack",
        "status",
        "assignment",
        "ack",
        "status",
        "assignment",
        "status",
    ]
    assert world.outputs() == dict(upper(name) for name in ("a.txt", "sub/c.txt", "b.txt"))
    reports = world.api.reports()
    assert reports[:2] == [
        {"batch_id": "b-0000001", "status": "completed", "error": None},
        {"batch_id": "b-0000002", "status": "completed", "error": None},
    ]
    assert reports[2] == {"batch_id": None, "status": "shutting-down", "error": None}  # told to: not an error
    # Left its group, the group's desired count decremented: nothing replaces it.
    assert world.group.terminated == [{"InstanceId": INSTANCE_ID, "ShouldDecrementDesiredCapacity": True}]
    assert world.state()["batch"]["left"]["reason"] == "the job is complete"
    # Registered as the worker API validates it, every call signed for execute-api in the hub region.
    registration = WorkerRegistration.model_validate(world.api.calls[0].body)
    assert registration.job_id == JOB_ID
    assert registration.instance_id == INSTANCE_ID
    assert registration.region == REGION
    assert registration.capacity_type == "spot"
    for call in world.api.calls:
        assert f"/{HUB_REGION}/execute-api/aws4_request" in call.headers["Authorization"]
    # The directories are cleared after each batch.
    assert not any((world.state_dir / "batch").rglob("*.txt*"))
    assert run.worker.batches_done == 2


def test_wait_is_asked_again_and_the_job_container_gets_the_batch_in_its_environment(
    world: World, running: Any
) -> None:
    world.api.waits = 3
    world.api.pending = [batch(1, "a.txt", image="spothub/transform:1")]
    running(world.worker()).finished()
    assert world.api.actions()[:6] == ["register", "assignment", "assignment", "assignment", "assignment", "ack"]
    assert world.outputs() == dict([upper("a.txt")])
    assert "wrote a.txt.out" in world.batch_log()


def test_a_failing_container_fails_its_batch_with_the_exit_code_and_last_lines_and_the_worker_goes_on(
    world: World, running: Any
) -> None:
    world.api.pending = [batch(1, "a.txt", image="failing"), batch(2, "b.txt")]
    running(world.worker()).finished()
    failed, completed = world.api.reports()[:2]
    assert failed["batch_id"] == "b-0000001"
    assert failed["status"] == "failed"
    assert failed["error"].startswith("exit code 3; last lines:")
    assert "boom: the model would not load" in failed["error"]
    assert completed == {"batch_id": "b-0000002", "status": "completed", "error": None}
    # What the failed batch wrote is not uploaded.
    assert world.outputs() == dict([upper("b.txt")])
    assert len(world.group.terminated) == 1  # left at the end, not because of the failure


def test_an_image_that_cannot_be_pulled_fails_the_batch_and_the_worker_leaves(world: World, running: Any) -> None:
    world.api.pending = [batch(1, "a.txt", image="missing/image:1"), batch(2, "b.txt")]
    running(world.worker()).finished()
    assert world.api.actions() == ["register", "assignment", "ack", "status", "status"]
    failed, leaving = world.api.reports()
    assert failed["status"] == "failed"
    assert "pull access denied for missing/image:1" in failed["error"]
    assert leaving["status"] == "shutting-down"
    assert leaving["batch_id"] is None
    assert "cannot be pulled" in leaving["error"]
    assert world.group.terminated == [{"InstanceId": INSTANCE_ID, "ShouldDecrementDesiredCapacity": True}]
    assert world.api.pending == [batch(2, "b.txt")]  # never asked for


def test_an_s3_error_fails_the_batch_not_the_worker(world: World, running: Any) -> None:
    world.api.pending = [batch(1, "a.txt", "gone.txt"), batch(2, "../../escape.txt"), batch(3, "b.txt")]
    running(world.worker()).finished()
    missing, unsafe, completed = world.api.reports()[:3]
    assert missing["status"] == "failed"
    assert f"downloading s3://{INPUT_BUCKET}/{INPUT_PREFIX}gone.txt" in missing["error"]
    assert unsafe["status"] == "failed"
    assert "refusing the file name '../../escape.txt'" in unsafe["error"]
    assert completed["status"] == "completed"
    assert world.outputs() == dict([upper("b.txt")])
    assert not (world.state_dir / "escape.txt").exists()


def test_an_upload_refused_fails_the_batch(world: World, running: Any) -> None:
    world.api.pending = [batch(1, "a.txt", output_bucket="spothub-test-absent")]
    running(world.worker()).finished()
    failed = world.api.reports()[0]
    assert failed["status"] == "failed"
    assert "uploading s3://spothub-test-absent/data/out/a.txt.out" in failed["error"]


# --- 409: the batch is not this worker's any more ------------------------------------------------------


def test_a_409_on_the_ack_drops_the_batch_and_asks_again(world: World, running: Any) -> None:
    world.api.pending = [batch(1, "a.txt"), batch(2, "b.txt")]
    world.api.conflicts = {("ack", "b-0000001")}
    running(world.worker()).finished()
    assert world.api.actions()[:6] == ["register", "assignment", "ack", "assignment", "ack", "status"]
    assert world.api.reports()[0] == {"batch_id": "b-0000002", "status": "completed", "error": None}
    assert world.outputs() == dict([upper("b.txt")])  # the dropped batch was not even downloaded


def test_a_409_on_the_status_report_drops_the_batch_and_the_worker_goes_on(world: World, running: Any) -> None:
    world.api.pending = [batch(1, "a.txt"), batch(2, "b.txt")]
    world.api.conflicts = {("status", "b-0000001")}
    running(world.worker()).finished()
    reports = world.api.reports()
    assert [(r["batch_id"], r["status"]) for r in reports] == [
        ("b-0000001", "completed"),
        ("b-0000002", "completed"),
        (None, "shutting-down"),
    ]
    assert set(world.state()["batch"]) == {"left"}


# --- interruptions and stops ---------------------------------------------------------------------------


def test_an_interruption_during_a_batch_stops_the_container_hands_the_batch_back_and_leaves(
    world: World, running: Any
) -> None:
    world.api.pending = [batch(1, "a.txt", image="slow"), batch(2, "b.txt")]
    run = running(world.worker())
    wait_for(lambda: "started, slowly" in world.batch_log())
    pid = world.state()["batch"]["run"]["pid"]
    assert alive(pid)
    world.interrupt()
    run.finished()
    assert not alive(pid)
    assert world.api.actions() == ["register", "assignment", "ack", "status"]
    assert world.api.reports() == [
        {"batch_id": "b-0000001", "status": "shutting-down", "error": "spot interruption notice"}
    ]
    assert world.group.terminated == [{"InstanceId": INSTANCE_ID, "ShouldDecrementDesiredCapacity": True}]
    assert world.outputs() == {}


def test_an_interruption_between_batches_leaves_without_a_batch(world: World, running: Any) -> None:
    world.api.waits = 10_000
    run = running(world.worker(batch_poll_s=0.05))
    wait_for(lambda: world.api.actions().count("assignment") >= 2)
    world.interrupt()
    run.finished()
    assert world.api.reports()[-1] == {"batch_id": None, "status": "shutting-down", "error": "spot interruption notice"}
    assert len(world.group.terminated) == 1


def test_the_agents_own_stop_mid_batch_stops_the_container_and_keeps_the_batch(world: World, running: Any) -> None:
    world.api.pending = [batch(1, "a.txt", image="slow")]
    run = running(world.worker())
    wait_for(lambda: "started, slowly" in world.batch_log())
    pid = world.state()["batch"]["run"]["pid"]
    run.halt()
    assert not alive(pid)
    assert world.api.reports() == []  # nothing reported: the next start processes it again
    assert world.group.terminated == []
    assert world.state()["batch"]["assignment"]["batch_id"] == "b-0000001"


def test_a_batch_running_past_its_processing_timeout_is_stopped_and_failed(world: World, running: Any) -> None:
    world.api.pending = [batch(1, "a.txt", image="slow", processing_timeout_s=1)]
    started = time.monotonic()
    running(world.worker()).finished()
    assert time.monotonic() - started < 15
    failed = world.api.reports()[0]
    assert failed["status"] == "failed"
    assert failed["error"].startswith("still running after 1s")
    assert "started, slowly" in failed["error"]


# --- restarts ------------------------------------------------------------------------------------------


def test_an_agent_restarted_mid_batch_stops_the_leftover_and_processes_the_held_batch_again(
    world: World, running: Any
) -> None:
    """What a killed agent leaves: the state file naming the batch and its process, the process still running,
    half-written outputs. The hub still holds the batch for this worker and answers it again."""
    held = batch(1, "a.txt", "sub/c.txt")
    leftover = subprocess.Popen(  # the killed agent's job, still running
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    state = AgentState(world.state_dir, INSTANCE_ID)
    state.set_batch(
        {
            "assignment": held,
            "worker_id": WORKER_ID,
            "run": {
                "runner": "process",
                "pid": leftover.pid,
                "start_ticks": process_start_ticks(leftover.pid),
                "boot_id": boot_id(),
            },
        }
    )
    outputs = world.state_dir / "batch" / "Outputs"
    outputs.mkdir(parents=True)
    (outputs / "half-written.out").write_text("HALF")
    world.api.registered = True  # it had registered
    world.api.held = held
    world.api.pending = [batch(2, "b.txt")]
    running(world.worker()).finished()
    assert leftover.wait(5) == -signal.SIGKILL
    assert world.api.actions()[:3] == ["register", "assignment", "ack"]
    assert [(r["batch_id"], r["status"]) for r in world.api.reports()] == [
        ("b-0000001", "completed"),
        ("b-0000002", "completed"),
        (None, "shutting-down"),
    ]
    assert world.outputs() == dict(upper(name) for name in ("a.txt", "sub/c.txt", "b.txt"))


def test_a_batch_processed_twice_overwrites_its_outputs(world: World, running: Any) -> None:
    """The same batch again (taken back and handed out again, or after a restart): the same keys."""
    world.api.pending = [batch(1, "a.txt", "sub/c.txt"), batch(1, "a.txt", "sub/c.txt", attempt=2)]
    running(world.worker()).finished()
    assert [r["status"] for r in world.api.reports()] == ["completed", "completed", "shutting-down"]
    assert world.outputs() == dict(upper(name) for name in ("a.txt", "sub/c.txt"))


def test_a_worker_that_left_terminates_itself_again_after_a_restart_and_waits(world: World, running: Any) -> None:
    AgentState(world.state_dir, INSTANCE_ID).set_batch({"left": {"reason": "the job is complete", "at": 1.0}})
    run = running(world.worker())
    wait_for(lambda: world.group.terminated)
    time.sleep(0.2)
    assert run.thread.is_alive()  # systemd would only start it again: it waits for the instance to go
    assert world.api.calls == []
    run.halt()


def test_a_group_that_no_longer_has_the_instance_is_not_an_error(world: World, running: Any) -> None:
    world.group.fail_next = [
        ClientError(
            {"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "TerminateInstanceInAutoScalingGroup"
        ),
        ClientError(
            {"Error": {"Code": "ValidationError", "Message": "Instance Id not found - No managed instance found"}},
            "TerminateInstanceInAutoScalingGroup",
        ),
    ]
    running(world.worker()).finished()
    assert world.group.terminated == []
    assert world.group.fail_next == []  # tried again after the throttling, then stopped


# --- the control plane away ----------------------------------------------------------------------------


def test_the_api_away_is_retried_with_backoff_and_a_forgotten_worker_registers_again(
    world: World, running: Any
) -> None:
    world.api.unavailable = 3
    world.api.waits = 10_000
    run = running(world.worker())
    wait_for(lambda: world.api.actions().count("assignment") >= 2)
    assert world.api.actions()[:4] == ["register", "register", "register", "register"]
    world.api.forget()
    registrations = world.api.actions().count("register")
    wait_for(lambda: world.api.actions().count("register") > registrations)
    world.api.waits = 0
    world.api.pending = [batch(1, "a.txt")]
    run.finished()
    assert world.outputs() == dict([upper("a.txt")])

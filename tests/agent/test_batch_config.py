"""Batch mode's configuration (the spothub:job-id tag, the batch settings), the worker API's client (its four
routes, signed like the agent API's calls; 409 and 404), and the entry point choosing the mode."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import ReadOnlyCredentials

from spothub.sandbox.imds import InstanceMetadataServer
from spothub_agent import __main__ as entry
from spothub_agent.config import ConfigError, load_config
from spothub_agent.control_plane import ApiUnavailable, Conflict, ControlPlaneClient, InstanceUnknown
from spothub_agent.imds import Imds
from spothub_agent.settings import SettingsError, build_settings
from spothub_core.models.batch_workers import (
    BatchAck,
    BatchAssignment,
    BatchStatusReport,
    WorkerCommand,
    WorkerRegistration,
)
from spothub_core.timings import AGENT_BATCH_POLL_SECONDS
from tests.agent.conftest import HUB_REGION, IDENTITY, INSTANCE_ID, METADATA, TAGS
from tests.agent.test_batch_worker import BATCH_TAGS, JOB_ID, WORKER_ID, FakeWorkerApi, batch

CREDENTIALS = ReadOnlyCredentials("AKIDAGENTTEST", "secret", None)
SIGNATURE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=AKIDAGENTTEST/\d{8}/us-east-1/execute-api/aws4_request, "
    r"SignedHeaders=[a-z0-9;-]*host[a-z0-9;-]*, Signature=[0-9a-f]{64}"
)


def served(tags: dict[str, str]) -> InstanceMetadataServer:
    server = InstanceMetadataServer(dict(METADATA), tags, dict(IDENTITY))
    threading.Thread(target=server._server.serve_forever, args=(0.02,), daemon=True).start()
    return server


@pytest.fixture
def worker_api() -> Iterator[FakeWorkerApi]:
    api = FakeWorkerApi()
    yield api
    api.stop()


# --- configuration -----------------------------------------------------------------------------------


def test_the_job_tag_puts_the_agent_in_batch_mode_without_a_lifecycle_hook() -> None:
    server = served(dict(BATCH_TAGS))
    try:
        config = load_config(Imds(server.endpoint))
    finally:
        server.stop()
    assert config.batch_mode
    assert config.job_id == JOB_ID
    assert config.lifecycle_hook == ""
    assert config.capacity_type == "spot"


def test_serving_instances_still_need_their_lifecycle_hook_and_batch_ones_their_hub_region() -> None:
    serving = served({k: v for k, v in TAGS.items() if k != "spothub:lifecycle-hook"})
    batch_worker = served({k: v for k, v in BATCH_TAGS.items() if k != "spothub:hub-region"})
    try:
        with pytest.raises(ConfigError, match="spothub:lifecycle-hook"):
            load_config(Imds(serving.endpoint))
        with pytest.raises(ConfigError, match="spothub:hub-region"):
            load_config(Imds(batch_worker.endpoint))
    finally:
        serving.stop()
        batch_worker.stop()
    server = served(dict(TAGS))
    try:
        assert not load_config(Imds(server.endpoint)).batch_mode
    finally:
        server.stop()


def test_batch_settings_come_from_the_environment() -> None:
    defaults = build_settings(None, {})
    assert defaults.batch_runner == "docker"
    assert defaults.batch_command == ()
    assert defaults.batch_poll_s == AGENT_BATCH_POLL_SECONDS
    sandbox = build_settings(
        None,
        {
            "SPOTHUB_AGENT_BATCH_RUNNER": "process",
            "SPOTHUB_AGENT_BATCH_COMMAND": '["python3", "batch_job.py"]',
            "SPOTHUB_AGENT_BATCH_POLL_SECONDS": "0.2",
            "SPOTHUB_AGENT_WORKLOAD_COMMAND": '["python3", "server.py"]',  # the sandbox sets it for every instance
        },
    )
    assert sandbox.batch_runner == "process"
    assert sandbox.batch_command == ("python3", "batch_job.py")
    assert sandbox.batch_poll_s == 0.2
    assert "batch_runner" in sandbox.describe()


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"SPOTHUB_AGENT_BATCH_RUNNER": "podman"}, "must be one of docker, process"),
        ({"SPOTHUB_AGENT_BATCH_RUNNER": "process"}, "needs a command"),
        ({"SPOTHUB_AGENT_BATCH_COMMAND": "[1, 2]"}, "must be a non-empty list of strings"),
        ({"SPOTHUB_AGENT_BATCH_COMMAND": "not json"}, "JSON list"),
        ({"SPOTHUB_AGENT_BATCH_POLL_SECONDS": "0"}, "must be positive"),
    ],
)
def test_invalid_batch_settings_are_named(environment: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        build_settings(None, environment)


# --- the worker API's client -------------------------------------------------------------------------


def test_the_four_worker_routes_are_signed_and_answered_as_their_models(worker_api: FakeWorkerApi) -> None:
    client = ControlPlaneClient(worker_api.url, HUB_REGION, lambda: CREDENTIALS)
    registration = WorkerRegistration(job_id=JOB_ID, instance_id=INSTANCE_ID, region="us-west-2", capacity_type="spot")
    registered = client.register_worker(registration)
    assert registered.worker_id == WORKER_ID
    assert registered.registered
    worker_api.waits = 1
    worker_api.pending = [batch(1, "a.txt")]
    wait = client.assignment(WORKER_ID)
    assert wait == WorkerCommand(command="wait", retry_after_s=0)
    work = client.assignment(WORKER_ID)
    assert isinstance(work, BatchAssignment)
    assert work.command == ["python", "transform.py", "--upper"]  # a batch has a command too: not a WorkerCommand
    assert client.ack(WORKER_ID, BatchAck(batch_id=work.batch_id)).status == "processing"
    update = client.report(WORKER_ID, BatchStatusReport(batch_id=work.batch_id, status="completed"))
    assert update.changed
    assert isinstance(client.assignment(WORKER_ID), WorkerCommand)
    assert [(c.method, c.action) for c in worker_api.calls] == [
        ("POST", "register"),
        ("GET", "assignment"),
        ("GET", "assignment"),
        ("POST", "ack"),
        ("POST", "status"),
        ("GET", "assignment"),
    ]
    assert worker_api.calls[0].body == registration.model_dump(mode="json")
    assert worker_api.calls[4].body == {"batch_id": "b-0000001", "status": "completed", "error": None}
    for call in worker_api.calls:
        assert SIGNATURE.fullmatch(call.headers["Authorization"]), call.headers["Authorization"]


def test_409_is_a_conflict_404_an_unknown_worker_and_a_strange_answer_unavailable(worker_api: FakeWorkerApi) -> None:
    client = ControlPlaneClient(worker_api.url, HUB_REGION, lambda: CREDENTIALS)
    with pytest.raises(InstanceUnknown):
        client.assignment(WORKER_ID)
    client.register_worker(WorkerRegistration(job_id=JOB_ID, instance_id=INSTANCE_ID, region="us-west-2"))
    worker_api.conflicts = {("ack", "b-0000003"), ("status", "b-0000003")}
    with pytest.raises(Conflict, match="409"):
        client.ack(WORKER_ID, BatchAck(batch_id="b-0000003"))
    with pytest.raises(Conflict):
        client.report(WORKER_ID, BatchStatusReport(batch_id="b-0000003", status="failed", error="exit code 1"))
    worker_api.held = {"batch_id": "b-0000004"}  # not a batch
    with pytest.raises(ApiUnavailable, match="not a BatchAssignment"):
        client.assignment(WORKER_ID)


# --- the entry point ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("tags", "mode"), [(BATCH_TAGS, "batch"), (TAGS, "serving")])
def test_the_entry_point_runs_the_mode_the_tags_say(
    aws_credentials: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tags: dict[str, str], mode: str
) -> None:
    ran: list[str] = []

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, *_args: Any) -> Recorder:
            return self

        def run(self, _stop: threading.Event) -> None:
            ran.append(self.name)

    server = served(dict(tags))
    monkeypatch.setenv("SPOTHUB_IMDS_ENDPOINT", server.endpoint)
    monkeypatch.setenv("SPOTHUB_AGENT_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(entry, "BatchWorker", Recorder("batch"))
    monkeypatch.setattr(entry, "Agent", Recorder("serving"))
    monkeypatch.setattr(entry, "load_settings", lambda *_args: build_settings(None, {}))
    monkeypatch.setattr(entry.signal, "signal", lambda *_args: None)  # pytest keeps its own handlers
    try:
        assert entry.main() == 0
    finally:
        server.stop()
    assert ran == [mode]

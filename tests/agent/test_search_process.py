"""The agent in search mode as the service runs it (`python -m spothub_agent` on an instance tagged
Service=semantic-search), with the sandbox's overrides (device directory, mount and unmount commands, the service as
a local process), against a local IMDS and SSM and Secrets Manager in moto's server: it serves once the volume
appears; killed (SIGKILL) and restarted, it stops the service its predecessor left and serves again; on SIGTERM it
stops the service, unmounts and exits 0."""

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

import boto3
import pytest

from spothub.sandbox.imds import InstanceMetadataServer
from spothub.sandbox.ports import free_port
from spothub_agent.search import search_config_parameter
from spothub_agent.search_volume import device_link
from spothub_core.models.search_records import SearchAgentConfig
from stacks.paths import LAMBDAS_DIR, WORKER_AGENT_DIR
from tests.agent.conftest import IDENTITY, METADATA, PREFIX, REGION, wait_for
from tests.agent.test_agent_process import alive
from tests.agent.test_search_mode import API_KEY, SEARCH_TAGS, SECRET_NAME, SERVICE_SCRIPT, VOLUME_ID, get


@dataclass
class World:
    environment: dict[str, str]
    logs: Path
    volume: Path
    devices: Path
    mount_path: Path
    record: Path
    port: int

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

    def service_pids(self) -> list[int]:
        if not self.record.exists():
            return []
        return [json.loads(line)["pid"] for line in self.record.read_text().splitlines()]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    from moto.moto_api._internal.models import moto_api_backend  # noqa: PLC0415
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    credentials = {"AWS_ACCESS_KEY_ID": "AKIDAGENTTEST", "AWS_SECRET_ACCESS_KEY": "secret"}
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    moto_api_backend.reset()
    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    aws_endpoint = f"http://127.0.0.1:{moto_port}"
    devices = tmp_path / "devices"
    devices.mkdir()
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "spot.md").write_text("# Spot\nspare capacity")
    script = tmp_path / "search_server.py"
    script.write_text(SERVICE_SCRIPT)
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    world = None
    try:
        document = SearchAgentConfig(image="unused-in-the-sandbox", port=port, api_key_secret_name=SECRET_NAME)
        boto3.client("ssm", region_name=REGION, endpoint_url=aws_endpoint).put_parameter(
            Name=search_config_parameter(PREFIX), Value=document.model_dump_json(), Type="String"
        )
        boto3.client("secretsmanager", region_name=REGION, endpoint_url=aws_endpoint).create_secret(
            Name=SECRET_NAME, SecretString=API_KEY
        )
        with InstanceMetadataServer(dict(METADATA), dict(SEARCH_TAGS), dict(IDENTITY)) as imds:
            mount_path = tmp_path / "mnt" / "search-index"
            environment = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOTHUB_"))},
                **credentials,
                "PYTHONPATH": os.pathsep.join([str(WORKER_AGENT_DIR), str(LAMBDAS_DIR)]),
                "PYTHONUNBUFFERED": "1",
                "AWS_ENDPOINT_URL": aws_endpoint,
                "AWS_EC2_METADATA_DISABLED": "true",
                "SPOTHUB_IMDS_ENDPOINT": imds.endpoint,
                "SPOTHUB_AGENT_STATE_DIR": str(tmp_path / "state"),
                "SPOTHUB_AGENT_POLL_SECONDS": "0.1",
                "SPOTHUB_AGENT_BACKOFF_BASE_SECONDS": "0.05",
                "SPOTHUB_AGENT_BACKOFF_CAP_SECONDS": "0.5",
                "SPOTHUB_AGENT_BLOCK_DEVICE_DIR": str(devices),
                "SPOTHUB_AGENT_MOUNT_COMMAND": json.dumps(["ln", "-sfn", "{device}", "{path}"]),
                "SPOTHUB_AGENT_UNMOUNT_COMMAND": json.dumps(["rm", "{path}"]),
                "SPOTHUB_AGENT_SEARCH_COMMAND": json.dumps(
                    [sys.executable, str(script), "--port", "{port}", "--data", "{data}"]
                ),
                "SPOTHUB_AGENT_MOUNT_PATH": str(mount_path),
                "SERVICE_RECORD": str(tmp_path / "service-starts.jsonl"),
            }
            world = World(environment, logs, volume, devices, mount_path, tmp_path / "service-starts.jsonl", port)
            yield world
    finally:
        moto.stop()
        for pid in world.service_pids() if world else []:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_search_agent_serves_the_volume_survives_a_kill_and_unmounts_on_sigterm(world: World) -> None:
    agents: list[subprocess.Popen[bytes]] = []
    try:
        agents.append(world.start_agent(1))
        wait_for(lambda: "search_device_waiting" in world.log_events(1), timeout=30)
        device_link(world.devices, VOLUME_ID).symlink_to(world.volume)
        wait_for(
            lambda: get(f"http://127.0.0.1:{world.port}/health")[0] == 200 if world.service_pids() else False,
            timeout=30,
        )
        assert get(f"http://127.0.0.1:{world.port}/health") == (200, {"status": "ok", "documents": 1})
        (first,) = world.service_pids()

        # Killed: its service outlives it; the next agent stops that one and starts its own.
        agents[0].send_signal(signal.SIGKILL)
        agents[0].wait(10)
        assert alive(first)
        agents.append(world.start_agent(2))
        wait_for(lambda: len(world.service_pids()) == 2, timeout=30)
        assert not alive(first)
        wait_for(lambda: "search_service_healthy" in world.log_events(2), timeout=30)
        events = world.log_events(2)
        assert "search_leftover_stopped" in events
        assert "search_volume_mounted_already" in events  # its predecessor's link to the device is there

        agents[1].send_signal(signal.SIGTERM)
        assert agents[1].wait(30) == 0
        assert not alive(world.service_pids()[1])
        assert not world.mount_path.is_symlink()
        assert world.log_events(2)[-4:] == [
            "search_service_stopped",
            "search_volume_unmounted",
            "search_mode_stopped",
            "stopped",
        ]
        assert API_KEY not in (world.logs / "agent-2.log").read_text()
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait(10)

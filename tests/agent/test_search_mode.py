"""The agent in search mode (spothub_agent.search.SearchService) against SSM and Secrets Manager in moto and a local
IMDS: the mode chosen by the tags, the wait for the volume's device (a directory where the test creates the device
link later), the mount and unmount commands, the service (a small Python HTTP server standing in for the container,
run as SPOTHUB_AGENT_SEARCH_COMMAND) with its environment, its restart after an exit, and the stop; the default
`docker run` through a fake docker CLI."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spothub.sandbox.imds import InstanceMetadataServer
from spothub.sandbox.ports import free_port
from spothub_agent import search_volume
from spothub_agent.aws import AwsClients
from spothub_agent.config import AgentConfig, ConfigError, load_config
from spothub_agent.imds import Imds
from spothub_agent.process_runner import boot_id, process_start_ticks
from spothub_agent.search import CONTAINER_NAME, SearchService, search_config_parameter
from spothub_agent.search_volume import (
    DEFAULT_MOUNT_COMMAND,
    DEFAULT_UNMOUNT_COMMAND,
    SearchOptions,
    device_link,
    fill,
    load_search_options,
)
from spothub_agent.settings import SettingsError
from spothub_agent.state import AgentState
from spothub_core.models.search_records import SearchAgentConfig
from tests.agent.conftest import (
    HUB_REGION,
    IDENTITY,
    INSTANCE_ID,
    METADATA,
    PREFIX,
    REGION,
    TAGS,
    fast_settings,
    wait_for,
)

VOLUME_ID = "vol-0dec0de5eadc0ffee"
SECRET_NAME = f"{PREFIX}/search/api-key"
API_KEY = "sk-test-embedding-key"
SEARCH_TAGS = {
    "spothub:prefix": PREFIX,
    "spothub:hub-region": HUB_REGION,
    "spothub:launch-id": "search-20260101-000000-abcd",
    "Name": "semantic-search-20260101-000000",
    "Service": "semantic-search",
    "ManagedBy": "spothub",
    "EBSVolumeId": VOLUME_ID,
}

# The search container, as a process: records how it was started, serves GET /health (the documents it finds in
# SEARCH_DATA_DIR), exits 3 on GET /crash and 0 on SIGTERM.
SERVICE_SCRIPT = """
import json, os, pathlib, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port = int(sys.argv[sys.argv.index("--port") + 1])
data = sys.argv[sys.argv.index("--data") + 1]
names = ("SEARCH_API_KEY", "SEARCH_DATA_DIR", "SEARCH_PORT")
with open(os.environ["SERVICE_RECORD"], "a") as record:
    record.write(json.dumps({"pid": os.getpid(), "data": data, "env": {n: os.environ.get(n) for n in names}}) + "\\n")
class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        if self.path == "/crash":
            print("crashing", flush=True)
            os._exit(3)
        documents = sorted(pathlib.Path(os.environ["SEARCH_DATA_DIR"]).glob("*.md"))
        body = json.dumps({"status": "ok", "documents": len(documents)}).encode()
        self.send_response(200 if documents else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
def on_term(*_):
    print("SIGTERM: stopping", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
server = HTTPServer(("127.0.0.1", port), Handler)
print("serving on", port, flush=True)
server.serve_forever()
"""

# The docker CLI, faked: records each call; `run` stays in the foreground until `stop` signals it (as docker run's
# signal proxy ends it when the container stops); `rm -f` of no container fails as docker's does.
FAKE_DOCKER = """
import json, os, pathlib, signal, sys, time
state = pathlib.Path(os.environ["FAKE_DOCKER_DIR"])
with (state / "calls.jsonl").open("a") as calls:
    calls.write(json.dumps({"argv": sys.argv[1:], "api_key": os.environ.get("SEARCH_API_KEY")}) + "\\n")
command = sys.argv[1]
if command == "run":
    (state / "running").write_text(str(os.getpid()))
    def on_term(*_):
        (state / "running").unlink()
        sys.exit(143)
    signal.signal(signal.SIGTERM, on_term)
    while True:
        time.sleep(0.05)
if command == "stop":
    running = state / "running"
    if not running.exists():
        sys.exit(1)
    os.kill(int(running.read_text()), signal.SIGTERM)
    sys.exit(0)
if command == "rm":
    sys.exit(0 if (state / "running").exists() else 1)
"""


def events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    found = []
    for record in list(caplog.records):
        if record.name == "spothub_agent" and record.getMessage().startswith("{"):
            found.append(json.loads(record.getMessage()))
    return found


def event_names(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [event["event"] for event in events(caplog)]


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (a local test server)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def alive(pid: int) -> bool:
    return process_start_ticks(pid) is not None


# --- configuration ----------------------------------------------------------------------------------


Load = Callable[[dict[str, str]], AgentConfig]


@pytest.fixture
def load(imds_server: InstanceMetadataServer) -> Load:
    """The agent's configuration on an instance with these tags."""

    def load_with(tags: dict[str, str]) -> AgentConfig:
        imds_server.tags = dict(tags)
        return load_config(Imds(imds_server.endpoint))

    return load_with


def test_the_service_tag_puts_the_agent_in_search_mode_with_its_volume(load: Load) -> None:
    config = load(SEARCH_TAGS)
    assert config.search_mode
    assert not config.batch_mode
    assert config.volume_id == VOLUME_ID
    assert config.prefix == PREFIX
    assert config.region == REGION
    assert not load(TAGS).search_mode


def test_a_search_instance_needs_its_volume_tag_not_a_group(load: Load) -> None:
    with pytest.raises(ConfigError, match="EBSVolumeId"):
        load({k: v for k, v in SEARCH_TAGS.items() if k != "EBSVolumeId"})
    with pytest.raises(ConfigError, match="spothub:prefix"):
        load({k: v for k, v in SEARCH_TAGS.items() if k != "spothub:prefix"})
    # Another Service value is no search instance: the ordinary agent's tags are required.
    with pytest.raises(ConfigError, match="aws:autoscaling:groupName"):
        load({**SEARCH_TAGS, "Service": "something-else"})


def test_a_batch_job_tag_wins_over_the_service_tag(load: Load) -> None:
    config = load({**SEARCH_TAGS, "spothub:job-id": "job-0123456789ab"})
    assert config.batch_mode
    assert not config.search_mode


def test_the_device_is_the_volumes_by_id_link_without_the_dash() -> None:
    assert device_link(Path("/dev/disk/by-id"), VOLUME_ID) == Path(
        "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0dec0de5eadc0ffee"
    )


def test_search_options_come_from_the_environment() -> None:
    assert load_search_options({}) == SearchOptions()
    assert SearchOptions().mount_command == ("mount", "{device}", "{path}")
    assert SearchOptions().unmount_command == ("umount", "{path}")
    options = load_search_options(
        {
            "SPOTHUB_AGENT_BLOCK_DEVICE_DIR": "/tmp/devices",
            "SPOTHUB_AGENT_MOUNT_COMMAND": '["ln", "-sfn", "{device}", "{path}"]',
            "SPOTHUB_AGENT_UNMOUNT_COMMAND": '["rm", "{path}"]',
            "SPOTHUB_AGENT_SEARCH_COMMAND": '["python", "server.py", "--port", "{port}", "--data", "{data}"]',
            "SPOTHUB_AGENT_MOUNT_PATH": "/tmp/index",
            "SPOTHUB_AGENT_HEALTH_URL": "http://127.0.0.1:41234/healthz",
        }
    )
    assert options.block_device_dir == Path("/tmp/devices")
    assert options.mount_command == ("ln", "-sfn", "{device}", "{path}")
    assert options.unmount_command == ("rm", "{path}")
    assert options.search_command[-1] == "{data}"
    assert options.mount_path == Path("/tmp/index")
    assert options.health_url == "http://127.0.0.1:41234/healthz"
    with pytest.raises(SettingsError, match="SPOTHUB_AGENT_HEALTH_URL"):
        load_search_options({"SPOTHUB_AGENT_HEALTH_URL": "127.0.0.1:8000/health"})
    for bad in ("not json", '"mount"', "[]", '["mount", 3]'):
        with pytest.raises(SettingsError, match="SPOTHUB_AGENT_MOUNT_COMMAND"):
            load_search_options({"SPOTHUB_AGENT_MOUNT_COMMAND": bad})


def test_templates_replace_their_placeholders_only() -> None:
    assert fill(("mount", "{device}", "{path}"), device="/dev/x", path="/mnt/i") == ["mount", "/dev/x", "/mnt/i"]
    assert fill(("python", "-c", "print({'a': 1})", "{port}"), port="8000") == [
        "python",
        "-c",
        "print({'a': 1})",
        "8000",
    ]


# --- the service ------------------------------------------------------------------------------------


@dataclass
class World:
    tmp: Path
    config: AgentConfig
    aws: AwsClients
    state_dir: Path
    devices: Path
    volume: Path  # the volume's content, where the device link points
    mount_path: Path
    port: int
    record: Path
    script: Path
    services: list[tuple[SearchService, threading.Event, threading.Thread]] = field(default_factory=list)

    def publish(self, **changes: Any) -> SearchAgentConfig:
        document = SearchAgentConfig(
            image="ghcr.io/example/semantic-search:1",
            port=self.port,
            health_path="/health",
            mount_path=str(self.mount_path),
            api_key_secret_name=SECRET_NAME,
        ).model_copy(update=changes)
        boto3.client("ssm", region_name=REGION).put_parameter(
            Name=search_config_parameter(PREFIX), Value=document.model_dump_json(), Type="String", Overwrite=True
        )
        return document

    def options(self, **changes: Any) -> SearchOptions:
        base = SearchOptions(
            block_device_dir=self.devices,
            mount_command=("ln", "-sfn", "{device}", "{path}"),
            unmount_command=("rm", "{path}"),
            search_command=(sys.executable, str(self.script), "--port", "{port}", "--data", "{data}"),
        )
        return replace(base, **changes)

    def attach(self) -> Path:
        """The volume appears: its device link, as udev makes it."""
        link = device_link(self.devices, VOLUME_ID)
        link.symlink_to(self.volume)
        return link

    def start(self, options: SearchOptions | None = None, **kwargs: Any) -> tuple[SearchService, threading.Event]:
        service = SearchService(
            self.config, fast_settings(self.state_dir), self.aws, options=options or self.options(), **kwargs
        )
        stop = threading.Event()
        thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
        thread.start()
        self.services.append((service, stop, thread))
        return service, stop

    def finish(self, service: SearchService) -> None:
        for candidate, stop, thread in self.services:
            if candidate is service:
                stop.set()
                thread.join(30)
                assert not thread.is_alive()

    def starts(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def health(self) -> tuple[int, dict[str, Any]]:
        return get(f"http://127.0.0.1:{self.port}/health")


@pytest.fixture
def world(tmp_path: Path, aws_credentials: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    devices = tmp_path / "dev" / "disk" / "by-id"
    devices.mkdir(parents=True)
    volume = tmp_path / "volumes" / VOLUME_ID
    volume.mkdir(parents=True)
    for name, text in {"spot.md": "# Spot\nspare capacity", "ebs.md": "# EBS\nblock storage"}.items():
        (volume / name).write_text(text)
    script = tmp_path / "search_server.py"
    script.write_text(SERVICE_SCRIPT)
    record = tmp_path / "service-starts.jsonl"
    monkeypatch.setenv("SERVICE_RECORD", str(record))
    with (
        mock_aws(),
        InstanceMetadataServer(dict(METADATA), dict(SEARCH_TAGS), dict(IDENTITY)) as imds,
    ):
        boto3.client("secretsmanager", region_name=REGION).create_secret(Name=SECRET_NAME, SecretString=API_KEY)
        world = World(
            tmp=tmp_path,
            config=load_config(Imds(imds.endpoint)),
            aws=AwsClients(REGION, HUB_REGION),
            state_dir=tmp_path / "state",
            devices=devices,
            volume=volume,
            mount_path=tmp_path / "mnt" / "search-index",
            port=free_port(),
            record=record,
            script=script,
        )
        try:
            yield world
        finally:
            for _service, stop, thread in world.services:
                stop.set()
                thread.join(30)
            for start in world.starts():
                if alive(start["pid"]):
                    os.kill(start["pid"], signal.SIGKILL)


@pytest.fixture(autouse=True)
def _agent_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spothub_agent")


def test_it_waits_for_the_device_mounts_it_serves_and_on_stop_unmounts(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.publish()
    service, _stop = world.start()
    wait_for(lambda: "search_device_waiting" in event_names(caplog))
    assert not world.mount_path.exists()
    assert world.starts() == []

    device = world.attach()
    wait_for(world.starts)
    assert world.mount_path.resolve() == world.volume.resolve()
    (start,) = world.starts()
    assert start["env"] == {
        "SEARCH_API_KEY": API_KEY,
        "SEARCH_DATA_DIR": str(world.mount_path),
        "SEARCH_PORT": str(world.port),
    }
    assert start["data"] == str(world.mount_path)
    wait_for(lambda: "search_service_healthy" in event_names(caplog))
    assert world.health() == (200, {"status": "ok", "documents": 2})

    world.finish(service)
    assert not alive(start["pid"])
    assert not world.mount_path.exists() and not world.mount_path.is_symlink()
    assert device.exists()  # the volume itself is left alone: only the mount goes
    names = event_names(caplog)
    for name in (
        "search_mode_started",
        "search_config_read",
        "search_device_found",
        "search_volume_mounted",
        "search_secret_read",
        "search_service_started",
        "search_service_stopped",
        "search_volume_unmounted",
        "search_mode_stopped",
    ):
        assert name in names
    assert names.index("search_service_stopped") < names.index("search_volume_unmounted")
    assert (service.log_path.read_text()).count("SIGTERM: stopping") == 1
    assert AgentState(world.state_dir, INSTANCE_ID).workload is None
    assert API_KEY not in caplog.text  # the key is in no log line, nor in the command logged


def test_a_service_that_exits_is_started_again(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.publish()
    world.attach()
    service, _stop = world.start()
    wait_for(lambda: "search_service_healthy" in event_names(caplog))
    first = world.starts()[0]["pid"]
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        get(f"http://127.0.0.1:{world.port}/crash")
    wait_for(lambda: len(world.starts()) == 2)
    wait_for(lambda: event_names(caplog).count("search_service_healthy") == 2)
    (exited,) = [e for e in events(caplog) if e["event"] == "search_service_exited"]
    assert exited["exit_code"] == 3
    assert exited["pid"] == first
    assert "crashing" in exited["last_lines"]
    assert not alive(first)
    assert service.starts == 2
    world.finish(service)
    assert not alive(world.starts()[1]["pid"])
    assert not world.mount_path.is_symlink()


def test_it_waits_for_the_config_and_runs_without_a_key_when_none_is_configured(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.attach()
    service, _stop = world.start()
    wait_for(lambda: "search_config_unavailable" in event_names(caplog))
    assert world.starts() == []
    world.publish(api_key_secret_name=None)
    wait_for(world.starts)
    assert world.starts()[0]["env"]["SEARCH_API_KEY"] == ""
    assert "search_secret_read" not in event_names(caplog)
    world.finish(service)


def test_a_failing_mount_is_retried_and_a_stop_meanwhile_unmounts_nothing(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.publish()
    world.attach()
    service, _stop = world.start(world.options(mount_command=("false",)))
    wait_for(lambda: event_names(caplog).count("search_mount_failed") >= 2)
    world.finish(service)
    names = event_names(caplog)
    assert "search_service_started" not in names
    assert "search_volume_unmounted" not in names
    assert "search_unmount_failed" not in names
    assert world.starts() == []


def test_the_default_commands_create_the_mount_point_and_run_mount_and_umount(
    world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[list[str]] = []
    monkeypatch.setattr(search_volume.SearchVolume, "_run", staticmethod(lambda argv, _error: commands.append(argv)))
    world.publish()
    device = world.attach()
    options = world.options(mount_command=DEFAULT_MOUNT_COMMAND, unmount_command=DEFAULT_UNMOUNT_COMMAND)
    service, _stop = world.start(options)
    wait_for(world.starts)
    assert world.mount_path.is_dir()
    assert commands == [["mount", str(device), str(world.mount_path)]]
    world.finish(service)
    assert commands[1:] == [["umount", str(world.mount_path)]]


def test_a_service_left_running_by_a_killed_agent_is_stopped_first(world: World) -> None:
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        state = AgentState(world.state_dir, INSTANCE_ID)
        state.set_workload(
            {
                "runner": "search",
                "pid": leftover.pid,
                "start_ticks": process_start_ticks(leftover.pid),
                "boot_id": boot_id(),
                "container": None,
            }
        )
        service, _stop = world.start()  # no config published: it stops while waiting for it
        wait_for(lambda: leftover.poll() is not None)
        world.finish(service)
        assert AgentState(world.state_dir, INSTANCE_ID).workload is None
    finally:
        if leftover.poll() is None:
            leftover.kill()
        leftover.wait(10)


def test_the_default_service_is_docker_run_with_the_key_in_the_environment_only(
    world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    docker_dir = world.tmp / "docker"
    docker_dir.mkdir()
    fake = docker_dir / "docker"
    fake.write_text(f"#!{sys.executable}\n{FAKE_DOCKER}")
    fake.chmod(0o755)
    monkeypatch.setenv("FAKE_DOCKER_DIR", str(docker_dir))
    world.publish()
    world.attach()
    service, _stop = world.start(world.options(search_command=()), has_gpus=lambda: True, docker=str(fake))
    wait_for((docker_dir / "running").exists)
    world.finish(service)
    calls = [json.loads(line) for line in (docker_dir / "calls.jsonl").read_text().splitlines()]
    assert [call["argv"][0] for call in calls] == ["rm", "run", "stop"]
    assert calls[0]["argv"] == ["rm", "-f", CONTAINER_NAME]
    port = str(world.port)
    assert calls[1]["argv"] == [
        "run",
        "--rm",
        "--name",
        CONTAINER_NAME,
        "--gpus",
        "all",
        "-p",
        f"{port}:{port}",
        "-v",
        f"{world.mount_path}:/data:ro",
        "-e",
        "SEARCH_API_KEY",
        "-e",
        "SEARCH_DATA_DIR=/data",
        "-e",
        f"SEARCH_PORT={port}",
        "ghcr.io/example/semantic-search:1",
    ]
    assert calls[1]["api_key"] == API_KEY
    assert calls[2]["argv"] == ["stop", "--time", "10", CONTAINER_NAME]
    assert not (docker_dir / "running").exists()
    assert not world.mount_path.is_symlink()
    assert "search_volume_unmounted" in event_names(caplog)

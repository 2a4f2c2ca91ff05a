"""The agent process the systemd unit starts: reads its configuration, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from spothub.sandbox.imds import InstanceMetadataServer
from spothub_core.timings import AGENT_DRAIN_REPORT_SECONDS, SPOT_NOTICE_WINDOW_SECONDS
from stacks.paths import LAMBDAS_DIR, WORKER_AGENT_DIR
from tests.agent.test_imds_and_config import IDENTITY, TAGS


def start_agent(endpoint: str, state_dir: Path) -> subprocess.Popen[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOTHUB_"))},
        # The agent bundle ships spothub_core/contracts.py beside the agent's package.
        "PYTHONPATH": os.pathsep.join([str(WORKER_AGENT_DIR), str(LAMBDAS_DIR)]),
        "SPOTHUB_IMDS_ENDPOINT": endpoint,
        "SPOTHUB_AGENT_STATE_DIR": str(state_dir),
        "PYTHONUNBUFFERED": "1",
        # No AWS here: every call is refused at once (nothing listens on port 9), as with AWS unreachable.
        "AWS_ACCESS_KEY_ID": "AKIDAGENTTEST",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "spothub_agent"], env=env, stderr=subprocess.PIPE, text=True, cwd=WORKER_AGENT_DIR
    )


def test_agent_starts_with_its_configuration_and_stops_on_sigterm(tmp_path: Path) -> None:
    with InstanceMetadataServer({}, dict(TAGS), IDENTITY) as imds:
        agent = start_agent(imds.endpoint, tmp_path)
        assert agent.stderr is not None
        started = json.loads(agent.stderr.readline())
        assert started["event"] == "started"
        assert started["instance_id"] == "i-0abc"
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 0
        events = [json.loads(line)["event"] for line in agent.stderr.read().splitlines()]
        assert events[-1] == "stopped"
        assert "agent_config_unreadable" in events  # SSM unreachable: logged, defaults used, not fatal


def test_agent_runs_on_when_aws_and_the_control_plane_are_unreachable(tmp_path: Path) -> None:
    with InstanceMetadataServer({}, dict(TAGS), IDENTITY) as imds:
        agent = start_agent(imds.endpoint, tmp_path)
        assert agent.stderr is not None
        events: list[str] = []
        reader = threading.Thread(
            target=lambda: events.extend(json.loads(line)["event"] for line in agent.stderr), daemon=True
        )
        reader.start()
        # Past the settings' retries, into the loops: however long that takes on a loaded machine.
        deadline = time.monotonic() + 30
        while "control_plane_unreachable" not in events and time.monotonic() < deadline:
            time.sleep(0.1)
        assert agent.poll() is None
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 0
        reader.join(5)
        assert "configured" in events
        assert "control_plane_unreachable" in events
        assert events[-1] == "stopped"


def test_agent_exits_non_zero_when_it_cannot_configure_itself(tmp_path: Path) -> None:
    with InstanceMetadataServer({}, {}, IDENTITY) as imds:
        agent = start_agent(imds.endpoint, tmp_path)
        deadline = time.monotonic() + 10
        while agent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.returncode == 1
        assert agent.stderr is not None
        assert json.loads(agent.stderr.readline())["event"] == "config_failed"


def test_install_does_not_block_cloud_init_on_a_unit_ordered_after_ecs() -> None:
    script = (WORKER_AGENT_DIR / "install.sh").read_text()
    unit = (WORKER_AGENT_DIR / "spothub-agent.service").read_text()
    assert "After=network-online.target ecs.service" in unit
    assert "systemctl start --no-block spothub-agent.service" in script
    assert "enable --now" not in script


def test_the_unit_lets_a_drain_finish_and_install_wants_python_311_or_later() -> None:
    script = (WORKER_AGENT_DIR / "install.sh").read_text()
    unit = (WORKER_AGENT_DIR / "spothub-agent.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["Restart"] == "always"
    assert settings["KillMode"] == "mixed"  # SIGTERM to the agent alone: it finishes the drain it runs
    assert int(settings["TimeoutStopSec"]) >= SPOT_NOTICE_WINDOW_SECONDS + AGENT_DRAIN_REPORT_SECONDS
    assert settings["StateDirectory"] == "spothub-agent"
    assert "for candidate in python3.12 python3.11; do" in script
    assert "sys.version_info >= (3, 11)" in script
    assert "import spothub_agent.agent" in script

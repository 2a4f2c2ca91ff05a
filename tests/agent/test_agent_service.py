"""The agent process the systemd unit starts: reads its configuration, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from spothub.sandbox.imds import InstanceMetadataServer
from stacks.paths import WORKER_AGENT_DIR
from tests.agent.test_imds_and_config import IDENTITY, TAGS


def start_agent(endpoint: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(WORKER_AGENT_DIR),
        "SPOTHUB_IMDS_ENDPOINT": endpoint,
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "spothub_agent"], env=env, stderr=subprocess.PIPE, text=True, cwd=WORKER_AGENT_DIR
    )


def test_agent_starts_with_its_configuration_and_stops_on_sigterm() -> None:
    with InstanceMetadataServer({}, dict(TAGS), IDENTITY) as imds:
        agent = start_agent(imds.endpoint)
        assert agent.stderr is not None
        started = json.loads(agent.stderr.readline())
        assert started["event"] == "started"
        assert started["instance_id"] == "i-0abc"
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 0
        assert json.loads(agent.stderr.readline())["event"] == "stopped"


def test_agent_exits_non_zero_when_it_cannot_configure_itself() -> None:
    with InstanceMetadataServer({}, {}, IDENTITY) as imds:
        agent = start_agent(imds.endpoint)
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

"""`spothub sandbox up` as an operator runs it: state file, a signed request, a clean SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
import time_machine
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from spothub.sandbox.sandbox import Sandbox, free_port
from spothub.sandbox.shared_clock import real_time


def test_sandbox_up_serves_until_sigterm_then_cleans_up(sandbox: Sandbox, tmp_path: Path) -> None:
    port = free_port()
    state_file = tmp_path / "sandbox.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spothub.cli",
            "sandbox",
            "up",
            "--port",
            str(port),
            "--state-dir",
            str(tmp_path),
            # The session sandbox's assembly: the same templates, without synthesizing again.
            "--cdk-out",
            str(sandbox.options.state_dir / "cdk.out"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while not state_file.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert state_file.exists(), process.stdout.read() if process.poll() is not None else "no state file"
        state = json.loads(state_file.read_text())
        assert {
            "api_url",
            "aws_endpoint_url",
            "aws_access_key_id",
            "aws_secret_access_key",
            "hub_region",
            "worker_regions",
            "stacks",
        } <= set(state)
        assert state["api_url"] == f"http://127.0.0.1:{port}/v1/"

        url = state["api_url"] + "status"
        signable = AWSRequest(method="GET", url=url)
        # Signed as a caller outside this process signs (the session sandbox's clock, which this process's wall clock
        # follows, may run ahead of the real time that the new sandbox starts its own clock from).
        with time_machine.travel(real_time(), tick=True):
            SigV4Auth(
                Credentials(state["aws_access_key_id"], state["aws_secret_access_key"]),
                "execute-api",
                state["hub_region"],
            ).add_auth(signable)
        assert requests.get(url, headers=dict(signable.headers.items()), timeout=30).status_code == 200
        assert requests.get(url, timeout=30).status_code == 403
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "sandbox stopped" in output
    assert not state_file.exists()
    # The terminal shows the timeline; the functions' JSON logs are in their file.
    assert "deployed       spothub-hub" in output
    assert '{"level"' not in output
    assert (tmp_path / "functions.log").is_file()


def test_api_key_prints_the_running_sandboxs_model_key(sandbox: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "sandbox.json").write_text(json.dumps(sandbox.state()))
    result = subprocess.run(
        [sys.executable, "-m", "spothub.cli", "api-key", "--sandbox", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == sandbox.api_key()


def test_api_key_without_a_running_sandbox_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spothub.cli", "api-key", "--sandbox", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "no running sandbox" in result.stderr
    assert result.stdout == ""

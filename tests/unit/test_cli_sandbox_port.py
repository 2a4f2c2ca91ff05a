"""`spothub sandbox up` on a port another process holds says so, and how to choose another, before starting."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def test_a_taken_port_is_named_with_the_fix(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "spothub.cli", "sandbox", "up", "--port", str(port), "--state-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"port 127.0.0.1:{port} is taken" in result.stderr
    assert f"spothub sandbox up --port {port + 1}" in result.stderr
    assert not (tmp_path / "cdk.out").exists()  # nothing was synthesized or started

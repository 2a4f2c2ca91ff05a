"""Free TCP ports on this machine, for the sandbox's servers (emulator, API, per-instance workloads)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])

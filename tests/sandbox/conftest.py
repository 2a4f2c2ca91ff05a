"""One sandbox for the whole test session (it is a process-wide emulator), reset cheaply per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spothub.sandbox.sandbox import Sandbox, SandboxOptions, free_port


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    options = SandboxOptions(port=free_port(), state_dir=tmp_path_factory.mktemp("sandbox"), write_state_file=False)
    with Sandbox(options) as running:
        yield running


@pytest.fixture
def fresh_sandbox(sandbox: Sandbox) -> Sandbox:
    """The session's sandbox, as just deployed: no instances, default market, empty tables and queues."""
    sandbox.reset()
    return sandbox

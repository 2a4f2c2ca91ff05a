"""Shared fixtures. Environment variables that jsii and boto3 read are set before either loads."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")
os.environ.setdefault("JSII_DEPRECATED", "quiet")
# No test may reach AWS: fake credentials, and a region so clients can be built.
for key, value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ[key] = value
os.environ.pop("AWS_PROFILE", None)


def pytest_collection_modifyitems(items: list) -> None:
    """Run the sandbox tests last: `mock_aws()` (unit and integration tests) resets moto's process-wide
    backends, which would wipe a running session sandbox."""
    items.sort(key=lambda item: "tests/sandbox/" in str(item.fspath).replace("\\", "/"))


@pytest.fixture(autouse=True)
def _output_width_of_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest-xdist's workers say COLUMNS=80: the CLI's tables would wrap there and not in a serial run."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)

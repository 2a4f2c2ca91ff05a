"""What the CLI tests share: the stand-in API on a local port, and no API URL from the environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.fake_spothub_api import FakeApi, serve


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    server, thread = serve(fake)
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def no_url_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPOTHUB_API_URL", raising=False)

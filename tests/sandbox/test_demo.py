"""The narrated scenario `make demo` plays, on the session's sandbox: every expectation holds."""

from __future__ import annotations

import io

from spothub.sandbox.demo import run_demo
from spothub.sandbox.sandbox import Sandbox


def test_the_demo_scenario_passes(fresh_sandbox: Sandbox) -> None:
    out = io.StringIO()
    failures = run_demo(fresh_sandbox, out)
    assert failures == [], out.getvalue()
    assert "all expectations met" in out.getvalue()

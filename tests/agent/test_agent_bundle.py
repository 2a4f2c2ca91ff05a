"""The agent as the launch template installs it: from its bundle alone, with the control plane's shared
modules shipped beside it (stacks/agent_bundle.py), and nothing of the repository on its path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from spothub_core import timings
from stacks.agent_bundle import stage_agent_bundle

# What install.sh checks before it enables the service, and the settings the agent would start with. The
# repository's editable install (a finder on sys.meta_path) is not on an instance: it is taken away first.
PROBE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
import json, spothub_agent.agent, spothub_core
from spothub_agent.settings import Settings
settings = Settings()
print(json.dumps({"core": spothub_core.__file__, "healthy_within_s": settings.healthy_within_s}))
"""


def test_the_agent_imports_and_configures_itself_from_its_bundle_alone(tmp_path: Path) -> None:
    bundle = stage_agent_bundle(cache=tmp_path / "cache")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**env, "PYTHONPATH": str(bundle)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    probed = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(probed["core"]).resolve().is_relative_to(bundle.resolve())
    assert probed["healthy_within_s"] == timings.AGENT_HEALTHY_WITHIN_SECONDS

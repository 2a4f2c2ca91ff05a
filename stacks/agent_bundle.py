"""The agent bundle the launch template installs: worker_agent/ plus the control plane's modules it shares,
under spothub_core/: the event contracts and the instance tag keys (contracts.py), the timings (timings.py),
the models' base (models/base.py), the agent API's request models (models/agent.py), the batch worker API's
models (models/batch_workers.py) and the search records (models/search_records.py: SearchAgentConfig, what the
agent reads in search mode).
The agent names its events, reads its tags, sizes its waits and builds its payloads from the same modules the
control plane validates them with, not copies.

The shipped modules import the standard library and pydantic only (worker_agent/requirements.txt pins it as
the Lambdas do); tests/agent/test_agent_bundle.py checks that the bundle imports on its own."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from pathlib import Path

from stacks.paths import LAMBDAS_DIR, REPO_ROOT, WORKER_AGENT_DIR

AGENT_BUNDLE_CACHE = REPO_ROOT / ".build" / "agent-bundle"
CORE_DIR = LAMBDAS_DIR / "spothub_core"
# Paths under spothub_core/, shipped as they are. Not spothub_core/__init__.py: the bundle writes its own, so
# that the package's docstring says what the agent has of it.
SHIPPED_MODULES = (
    "contracts.py",
    "timings.py",
    "models/__init__.py",
    "models/base.py",
    "models/agent.py",
    "models/batch_workers.py",
    "models/search_records.py",
)
CORE_INIT = (
    '"""What the agent shares with the control plane: event contracts, timings, the agent API\'s and the batch '
    'worker API\'s models, and the search agent\'s configuration."""\n'
)
_IGNORED = ("__pycache__", "*.pyc", "tests")


def stage_agent_bundle(cache: Path = AGENT_BUNDLE_CACHE) -> Path:
    """The bundle's folder, keyed by what goes into it: concurrent synths share it, and a change to the
    agent or the shared modules makes a new one."""
    sources = sorted(p for p in WORKER_AGENT_DIR.rglob("*") if p.is_file() and not _ignored(p))
    shared = [CORE_DIR / m for m in SHIPPED_MODULES]
    digest = hashlib.sha256(CORE_INIT.encode())
    for path in [*sources, *shared]:
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    destination = cache / digest.hexdigest()[:16]
    if destination.is_dir():
        return destination
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=".staging-"))
    bundle = staging / "bundle"
    shutil.copytree(WORKER_AGENT_DIR, bundle, ignore=shutil.ignore_patterns(*_IGNORED))
    package = bundle / "spothub_core"
    package.mkdir()
    (package / "__init__.py").write_text(CORE_INIT)
    for module in SHIPPED_MODULES:
        target = package / module
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(CORE_DIR / module, target)
    with contextlib.suppress(OSError):  # another synth staged the same bundle first
        bundle.rename(destination)
    shutil.rmtree(staging, ignore_errors=True)
    return destination


def _ignored(path: Path) -> bool:
    return any(part in ("__pycache__", "tests") for part in path.parts) or path.suffix == ".pyc"

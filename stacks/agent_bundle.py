"""The agent bundle the launch template installs: worker_agent/ plus the control plane's standard-library-only
modules it shares (lambdas/spothub_core/contracts.py, the event contracts; timings.py, the launch's budgets),
so the agent names its events and sizes its waits from the same modules as the control plane, not copies."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from pathlib import Path

from stacks.paths import LAMBDAS_DIR, REPO_ROOT, WORKER_AGENT_DIR

AGENT_BUNDLE_CACHE = REPO_ROOT / ".build" / "agent-bundle"
SHIPPED_MODULES = ("contracts.py", "timings.py")
_IGNORED = ("__pycache__", "*.pyc", "tests")


def stage_agent_bundle(cache: Path = AGENT_BUNDLE_CACHE) -> Path:
    """The bundle's folder, keyed by what goes into it: concurrent synths share it, and a change to the
    agent or the contracts makes a new one."""
    sources = sorted(p for p in WORKER_AGENT_DIR.rglob("*") if p.is_file() and not _ignored(p))
    contracts = [LAMBDAS_DIR / "spothub_core" / m for m in SHIPPED_MODULES]
    digest = hashlib.sha256()
    for path in [*sources, *contracts]:
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
    (package / "__init__.py").write_text('"""The event contracts and timings, shipped with the agent."""\n')
    for module in contracts:
        shutil.copy2(module, package / module.name)
    with contextlib.suppress(OSError):  # another synth staged the same bundle first
        bundle.rename(destination)
    shutil.rmtree(staging, ignore_errors=True)
    return destination


def _ignored(path: Path) -> bool:
    return any(part in ("__pycache__", "tests") for part in path.parts) or path.suffix == ".pyc"

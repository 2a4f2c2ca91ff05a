"""Where the stacks find the source they package."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDAS_DIR = REPO_ROOT / "lambdas"
LAMBDA_REQUIREMENTS = LAMBDAS_DIR / "requirements.txt"
STATEMACHINES_DIR = REPO_ROOT / "statemachines"
WORKER_AGENT_DIR = REPO_ROOT / "worker_agent"
# Built dependency layers, keyed by what went into them, so repeated synths do not reinstall.
LAYER_CACHE_DIR = REPO_ROOT / ".build" / "layers"

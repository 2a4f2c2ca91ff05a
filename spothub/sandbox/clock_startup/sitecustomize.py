"""Run by Python at the start of every process with this folder on its PYTHONPATH: the processes the sandbox
starts (spothub.sandbox.shared_clock.child_environment). Their wall clock follows the sandbox clock file named by
SPOTHUB_SANDBOX_CLOCK_FILE. Then the sitecustomize this one hides, if any, runs as it would have."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path


def _follow_the_sandbox_clock() -> None:
    clock_file = os.environ.get("SPOTHUB_SANDBOX_CLOCK_FILE")
    if not clock_file:
        return
    try:
        from spothub.sandbox.shared_clock import follow_clock_file  # noqa: PLC0415
    except ImportError as missing:
        print(f"sandbox clock: not followed ({missing}); this process sees real time", file=sys.stderr)
        return
    follow_clock_file(Path(clock_file))


def _run_the_hidden_sitecustomize() -> None:
    here = str(Path(__file__).resolve().parent)
    rest = [p for p in sys.path if p and str(Path(p).resolve()) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_follow_the_sandbox_clock()
_run_the_hidden_sitecustomize()

"""Cold start: how long each Lambda handler takes to import in a fresh interpreter, beside a bare `import boto3`.

    .venv/bin/python benchmarks/cold_import_bench.py [--runs 5]

A cold start runs the handler module's import (settings checked, clients built) before the first event; the
target (issue 18) is at most 2 x `import boto3`. Each figure is the median of `--runs` fresh processes; the
environment is a deployment's shape with placeholder values (no call leaves the process at import).
Prints one line per handler; the README quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from spothub.handler_environment import PLACEHOLDER_ENVIRONMENT

ROOT = Path(__file__).resolve().parent.parent
LAMBDAS = ROOT / "lambdas"
# Issue 18: a handler's cold import costs at most this many bare `import boto3`s.
TARGET_RATIO = 2
TIMED_IMPORT = """
import importlib, json, sys, time
started = time.perf_counter()
importlib.import_module(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def handlers() -> list[str]:
    return sorted(p.parent.name for p in LAMBDAS.glob("*/handler.py"))


def timed_import(module: str, cwd: Path) -> float:
    environment = {"PATH": os.environ.get("PATH", ""), **PLACEHOLDER_ENVIRONMENT, "PYTHONPATH": str(LAMBDAS)}
    done = subprocess.run(
        [sys.executable, "-c", TIMED_IMPORT, module],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"importing {module} failed: {last}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def median_import(module: str, runs: int) -> float:
    return statistics.median(timed_import(module, LAMBDAS) for _ in range(runs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    baseline = median_import("boto3", arguments.runs)
    print(f"cold import (median of {arguments.runs} fresh processes)")
    print(f"  {'import boto3':<28} {baseline * 1000:7.0f} ms   1.00 x")
    failed = 0
    for name in handlers():
        try:
            seconds = median_import(f"{name}.handler", arguments.runs)
        except RuntimeError as exc:
            print(f"  {name:<28} {'failed':>7}      {exc}")
            failed += 1
            continue
        ratio = seconds / baseline
        mark = "" if ratio <= TARGET_RATIO else f"   over {TARGET_RATIO} x boto3"
        print(f"  {name:<28} {seconds * 1000:7.0f} ms {ratio:6.2f} x{mark}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

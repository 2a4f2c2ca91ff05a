"""Cold start: how long each Lambda handler takes to import in a fresh interpreter, beside a bare `import boto3`.

    .venv/bin/python benchmarks/cold_import_bench.py [--runs 5]

A cold start runs the handler module's import (settings checked, clients built) before the first event; the
target (issue 18) is at most 2 x `import boto3`. Each figure is the median of `--runs` fresh processes; the
environment is a deployment's shape with placeholder values (no call leaves the process at import).
Prints one line per handler; the README quotes them. The environment has tracing off (POWERTOOLS_TRACE_DISABLED,
and no LAMBDA_TASK_ROOT), so the handlers' Tracer loads no X-Ray SDK; a last line measures, apart, what tracing
as deployed (`Tracing.ACTIVE`: the X-Ray recorder in Lambda and botocore patched) adds to every handler.
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

# What a Tracer costs in Lambda with tracing on, beyond what the handlers above import anyway.
TIMED_TRACER = """
import json, os, tempfile, time
import boto3, aws_lambda_powertools
os.environ["LAMBDA_TASK_ROOT"] = tempfile.mkdtemp()  # the X-Ray SDK's test for Lambda
os.environ.pop("POWERTOOLS_TRACE_DISABLED", None)
started = time.perf_counter()
aws_lambda_powertools.Tracer()
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def handlers() -> list[str]:
    return sorted(p.parent.name for p in LAMBDAS.glob("*/handler.py"))


def timed_import(module: str, cwd: Path, program: str = TIMED_IMPORT) -> float:
    environment = {"PATH": os.environ.get("PATH", ""), **PLACEHOLDER_ENVIRONMENT, "PYTHONPATH": str(LAMBDAS)}
    done = subprocess.run(
        [sys.executable, "-c", program, module],
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
    failed = within = 0
    names = handlers()
    for name in names:
        try:
            seconds = median_import(f"{name}.handler", arguments.runs)
        except RuntimeError as exc:
            print(f"  {name:<28} {'failed':>7}      {exc}")
            failed += 1
            continue
        ratio = seconds / baseline
        within += ratio <= TARGET_RATIO
        mark = "" if ratio <= TARGET_RATIO else f"   over {TARGET_RATIO} x boto3"
        print(f"  {name:<28} {seconds * 1000:7.0f} ms {ratio:6.2f} x{mark}")
    limit_ms = TARGET_RATIO * baseline * 1000
    print(f"  {within} of {len(names)} handlers within {TARGET_RATIO} x import boto3 ({limit_ms:.0f} ms)")
    tracer = statistics.median(timed_import("tracer", LAMBDAS, TIMED_TRACER) for _ in range(arguments.runs))
    print(f"  not counted above: X-Ray tracing as deployed adds {tracer * 1000:.0f} ms to each handler's cold start")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

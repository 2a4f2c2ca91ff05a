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

ROOT = Path(__file__).resolve().parent.parent
LAMBDAS = ROOT / "lambdas"
ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:spothub-placeholder"
# Every variable a spothub function is given (stacks), with a placeholder of the right shape.
ENVIRONMENT = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "benchmark",
    "AWS_SECRET_ACCESS_KEY": "benchmark",
    "POWERTOOLS_SERVICE_NAME": "benchmark",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "Spothub",
    "SPOTHUB_PREFIX": "spothub",
    "SPOTHUB_VERSION": "0.0.0",
    "SPOTHUB_HUB_REGION": "us-east-1",
    "SPOTHUB_WORKER_REGIONS": "us-west-2,eu-west-1",
    "SPOTHUB_STATE_TABLE": "spothub-state",
    "SPOTHUB_JOBS_TABLE": "spothub-jobs",
    "SPOTHUB_CAPACITY_FALLBACK": "on-demand",
    "SPOTHUB_HUB_BUS": "spothub-hub",
    "SPOTHUB_WORKER_BUS": "spothub-worker",
    "SPOTHUB_ORCHESTRATOR_ARN": ARN,
    "SPOTHUB_LAUNCH_STATE_MACHINE_ARN": ARN,
    "SPOTHUB_TEARDOWN_STATE_MACHINE_ARN": ARN,
    "SPOTHUB_LISTING_STATE_MACHINE_ARN": ARN,
    "SPOTHUB_ACTIVE_INSTANCE_PARAMETER": "/spothub/spothub/active-instance",
    "SPOTHUB_ALERTS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:spothub-alerts",
    "SPOTHUB_JOBS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:spothub-jobs",
    "SPOTHUB_INSTANCE_TYPES": "g5.xlarge,g6.xlarge",
    "SPOTHUB_BATCH_INSTANCE_TYPES": "g5.xlarge,g6.xlarge",
    "SPOTHUB_BATCH_INPUT_BUCKETS": "inputs",
    "SPOTHUB_BATCH_OUTPUT_BUCKETS": "outputs",
    "SPOTHUB_BATCH_LAUNCH_TEMPLATE_ID": "lt-0123456789abcdef0",
    "SPOTHUB_BATCH_SUBNETS": "subnet-0123456789abcdef0",
    "SPOTHUB_BATCH_MAX_WORKERS": "20",
    "SPOTHUB_SPOT_FINDER_FUNCTION": "spothub-spot-finder",
    "SPOTHUB_GROUP_NAME": "spothub-gpu",
    "SPOTHUB_CLUSTER_NAME": "spothub-gpu",
    "SPOTHUB_TASK_DEFINITION": "spothub-serving",
    "SPOTHUB_SERVING_PORT": "8000",
    "SPOTHUB_SERVING_PUBLIC_IP": "true",
}
TIMED_IMPORT = """
import importlib, json, sys, time
started = time.perf_counter()
importlib.import_module(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def handlers() -> list[str]:
    return sorted(p.parent.name for p in LAMBDAS.glob("*/handler.py"))


def timed_import(module: str, cwd: Path) -> float:
    environment = {"PATH": os.environ.get("PATH", ""), **ENVIRONMENT, "PYTHONPATH": str(LAMBDAS)}
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
        mark = "" if ratio <= 2 else "   over 2 x boto3"
        print(f"  {name:<28} {seconds * 1000:7.0f} ms {ratio:6.2f} x{mark}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

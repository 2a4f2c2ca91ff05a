"""What a sandbox user waits for: start time, an API round trip, a three-step state machine.

    .venv/bin/python benchmarks/sandbox_bench.py [--requests 200] [--executions 10]

Synthesis is excluded from the start time (the assembly is synthesized first, then reused).
Prints one line per figure; the README quotes them.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

from spothub.sandbox.sandbox import DEFAULT_CONTEXT, Sandbox, SandboxOptions, free_port, synthesize

STEP_SOURCE = """
def handler(event, context):
    return {"steps": event.get("steps", 0) + 1}
"""


def _zip(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("step.py", source)
    return buffer.getvalue()


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def three_step_state_machine(sandbox: Sandbox) -> str:
    region = sandbox.hub.region
    role = sandbox.client("iam", region).create_role(
        RoleName="bench-step", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
    )["Role"]["Arn"]
    function = sandbox.client("lambda", region).create_function(
        FunctionName="bench-step",
        Runtime="python3.12",
        Role=role,
        Handler="step.handler",
        Code={"ZipFile": _zip(STEP_SOURCE)},
    )["FunctionArn"]
    task = {"Type": "Task", "Resource": function}
    definition = {
        "StartAt": "One",
        "States": {"One": {**task, "Next": "Two"}, "Two": {**task, "Next": "Three"}, "Three": {**task, "End": True}},
    }
    return sandbox.client("stepfunctions", region).create_state_machine(
        name="bench-three-steps", definition=json.dumps(definition), roleArn=role
    )["stateMachineArn"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--executions", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        state_dir = Path(scratch)
        started = time.perf_counter()
        cdk_out = synthesize(state_dir / "cdk.out", DEFAULT_CONTEXT)
        synth_s = time.perf_counter() - started
        options = SandboxOptions(port=free_port(), cdk_out=cdk_out, state_dir=state_dir, write_state_file=False)
        sandbox = Sandbox(options)
        started = time.perf_counter()
        sandbox.start()
        start_s = time.perf_counter() - started
        try:
            sandbox.request("GET", "status").raise_for_status()  # warm: the function's cold start
            round_trips = []
            for _ in range(args.requests):
                began = time.perf_counter()
                response = sandbox.request("GET", "status")
                round_trips.append((time.perf_counter() - began) * 1000)
                response.raise_for_status()

            machine = three_step_state_machine(sandbox)
            sfn = sandbox.client("stepfunctions")
            durations = []
            for i in range(args.executions):
                began = time.perf_counter()
                execution = sfn.start_execution(stateMachineArn=machine, name=f"bench-{i}", input="{}")["executionArn"]
                while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
                    time.sleep(0.005)
                durations.append((time.perf_counter() - began) * 1000)
                if described["status"] != "SUCCEEDED" or json.loads(described["output"]) != {"steps": 3}:
                    raise SystemExit(f"execution {i} ended {described['status']}: {described.get('output')}")
        finally:
            sandbox.stop()

    print(f"synthesis (excluded from start):                {synth_s:8.2f} s")
    print(f"sandbox start (emulator, 3 stacks, API, market): {start_s:8.2f} s")
    print(
        f"API round trip, signed GET /status (API Gateway proxy -> Lambda -> DynamoDB), n={args.requests}: "
        f"median {statistics.median(round_trips):.1f} ms, p95 {_percentile(round_trips, 0.95):.1f} ms"
    )
    print(
        f"state machine with three Lambda steps, start to SUCCEEDED, n={args.executions}: "
        f"median {statistics.median(durations):.1f} ms, p95 {_percentile(durations, 0.95):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

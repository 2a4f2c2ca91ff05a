"""What one failover costs the control plane: Step Functions state transitions and Lambda invocations, from a
rebalance recommendation of the serving instance until its replacement serves, the old instance's teardown is
done and no orchestrator runs, and, for comparison, what placing the replica took.

    .venv/bin/python benchmarks/failover_cost_bench.py

Counted in the sandbox by its hop recorder (spothub/sandbox/hops.py): everything the enable request or the
recommendation caused, directly or through other hops, and nothing else (the minute schedules, the agents'
heartbeats and reports). The agents' own notices come from their processes, so they are not counted: on AWS they
add a delivery and an invocation that find the replacement started. The instance is in service and its task
healthy at the first look, as in the sandbox; on AWS each further 15 s look while an instance boots or a model
loads adds 4 transitions and 1 invocation. Prints one line per figure; the README quotes them.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spothub.sandbox.hops import Hop, HopKind, Recording
from spothub.sandbox.sandbox import DEFAULT_CONTEXT, Sandbox, SandboxOptions, free_port, synthesize

SPEED = 4.0  # the sandbox clock's speed in the spot provisioning tests
TIMEOUT_S = 120.0
SETTLE_S = 3.0  # real seconds with nothing more caused, once the end is seen


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        state_dir = Path(scratch)
        cdk_out = synthesize(state_dir / "cdk.out", DEFAULT_CONTEXT)
        options = SandboxOptions(port=free_port(), cdk_out=cdk_out, state_dir=state_dir, write_state_file=False)
        with Sandbox(options) as sandbox:
            sandbox.clock.set_speed(SPEED)
            fleet = sandbox.fleet
            if fleet is None:
                raise SystemExit("the sandbox has no fleet")
            with sandbox.hops.recording() as recording:
                # The API request reaches the toggle function from outside the sandbox's own work: its invocation
                # is where the placement starts.
                sandbox.request("POST", "spot-provisioning", {"action": "enable"}).raise_for_status()
                enable = recording.wait_for(lambda hop: hop.kind == HopKind.INVOCATION and "Toggle" in hop.what)
                placed = _wait(sandbox, lambda view: _serving(view) and not _orchestrating(sandbox), "placement")
                placement = _settled(recording, enable)
            old = _serving(placed)
            with sandbox.hops.recording() as recording:
                with recording.origin(f"rebalance recommendation for {old}") as notice:
                    fleet.send_rebalance_recommendation(str(old))
                _wait(
                    sandbox,
                    lambda view: (
                        _serving(view) not in (None, old)
                        and fleet.instances[str(old)].state == "terminated"
                        and not _orchestrating(sandbox)
                    ),
                    "failover",
                )
                failover = _settled(recording, notice)
    print("control-plane cost, counted in the sandbox (what the action caused, directly or through other hops)")
    _print("one enable, replica placed", placement)
    _print("one failover after a rebalance recommendation, replacement healthy, old one torn down", failover)
    return 0


def _wait(sandbox: Sandbox, check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        view = sandbox.request("GET", "spot-instances").json()
        if check(view):
            return view  # type: ignore[no-any-return]
        time.sleep(0.25)
    raise SystemExit(f"the {what} did not finish within {TIMEOUT_S:.0f} s")


def _serving(view: dict[str, Any]) -> str | None:
    serving = [i for i in view.get("instances") or [] if i.get("status") == "serving"]
    return str(serving[0]["instance_id"]) if view.get("state") == "serving" and serving else None


def _orchestrating(sandbox: Sandbox) -> bool:
    sfn = sandbox.client("stepfunctions")
    machines = sfn.list_state_machines()["stateMachines"]
    return any(
        sfn.list_executions(stateMachineArn=m["stateMachineArn"], statusFilter="RUNNING")["executions"]
        for m in machines
        if "Orchestrator" in m["name"] or "Teardown" in m["name"] or "Launch" in m["name"]
    )


def _settled(recording: Recording, origin: Hop) -> list[Hop]:
    """What `origin` caused, once nothing more has been caused for SETTLE_S."""
    caused = recording.descendants(origin)
    while True:
        time.sleep(SETTLE_S)
        again = recording.descendants(origin)
        if len(again) == len(caused):
            return again
        caused = again


def _print(what: str, hops: list[Hop]) -> None:
    machines = Counter(str(h.details.get("state_machine")) for h in hops if h.kind == HopKind.TRANSITION)
    functions = Counter(str(h.details.get("function")) for h in hops if h.kind == HopKind.INVOCATION)
    transitions, invocations = sum(machines.values()), sum(functions.values())
    print(f"  {what}:")
    print(f"    {transitions} state transitions ({_by_name(machines)})")
    print(f"    {invocations} Lambda invocations ({_by_name(functions)})")


def _by_name(counts: Counter[str]) -> str:
    return ", ".join(f"{_short(name)} {count}" for name, count in sorted(counts.items()))


def _short(name: str) -> str:
    """A deployed name without its prefix and CloudFormation suffix: spothub-hub-CapacityHandlerFunction-AB12 ->
    CapacityHandlerFunction."""
    parts = name.split("-")
    return "-".join(parts[2:-1]) if len(parts) > 3 else name  # noqa: PLR2004


if __name__ == "__main__":
    raise SystemExit(main())

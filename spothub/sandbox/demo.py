"""`spothub sandbox demo`: a narrated scenario on a fresh sandbox, every expectation checked.

Each chapter narrates what happens as a timeline (one line per event, simulated time) and checks
what it claims. Capability issues add their chapters here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TextIO

from spothub.sandbox.sandbox import Sandbox, SandboxError


@dataclass
class Narrator:
    sandbox: Sandbox
    out: TextIO = sys.stdout
    failures: list[str] = field(default_factory=list)
    _shown: int = 0

    def chapter(self, title: str) -> None:
        self.show_timeline()
        print(f"\n== {title}", file=self.out)

    def show_timeline(self) -> None:
        entries = self.sandbox.timeline[self._shown :]
        self._shown += len(entries)
        for entry in entries:
            print("   " + entry.line(self.sandbox.origin), file=self.out)

    def expect(self, ok: bool, claim: str, evidence: str = "") -> bool:
        self.show_timeline()
        mark = "ok  " if ok else "FAIL"
        print(f"   [{mark}] {claim}" + (f"  ({evidence})" if evidence else ""), file=self.out)
        if not ok:
            self.failures.append(claim)
        return ok

    def eventually(self, check: Callable[[], object], claim: str, timeout_s: float = 15.0) -> bool:
        try:
            value = self.sandbox.wait_for(check, timeout_s=timeout_s)
        except SandboxError:
            return self.expect(False, claim, "timed out")
        evidence = f"{len(value)} seen" if isinstance(value, list) else ""
        return self.expect(True, claim, evidence)


def run_demo(sandbox: Sandbox, out: TextIO = sys.stdout) -> list[str]:
    """Play the scenario on a started sandbox; returns the expectations that failed."""
    n = Narrator(sandbox, out)
    hub_region = sandbox.hub.region
    west = sandbox.workers[0].region
    east = sandbox.workers[-1].region
    if sandbox.fleet is None or sandbox.market is None:
        raise SandboxError("the demo needs the sandbox's market and fleet")

    n.chapter("The synthesized stacks run in the embedded emulator")
    for deployment in sandbox.deployments:
        print("   " + deployment.report().replace("\n", "\n   "), file=out)
    n.expect(
        len(sandbox.workers) >= 1, "a hub and its worker stacks are deployed", f"{len(sandbox.deployments)} stacks"
    )
    n.expect(bool(sandbox.hub.outputs.get("ApiUrl")), "the hub publishes its API URL", sandbox.api_url)

    n.chapter("The API answers only SigV4-signed requests")
    unsigned = sandbox.request("GET", "status", signed=False)
    n.expect(unsigned.status_code == HTTPStatus.FORBIDDEN, "an unsigned GET /status is refused with 403", unsigned.text)
    wrong = sandbox.request("GET", "status", secret="not-the-secret")  # noqa: S106 (a wrong secret, on purpose)
    n.expect(wrong.status_code == HTTPStatus.FORBIDDEN, "a request signed with the wrong secret is refused with 403")
    signed = sandbox.request("GET", "status")
    body = signed.json() if signed.headers.get("Content-Type", "").startswith("application/json") else {}
    n.expect(
        signed.status_code == HTTPStatus.OK and body.get("state_table") == "reachable",
        "a signed GET /status runs the real handler against the state table",
        json.dumps(body),
    )

    n.chapter("The spot market answers EC2 as AWS would")
    scores = sandbox.client("ec2", hub_region).get_spot_placement_scores(
        InstanceTypes=[sandbox.market.pools(west)[0].instance_type],
        TargetCapacity=1,
        RegionNames=[w.region for w in sandbox.workers],
    )["SpotPlacementScores"]
    n.expect(
        {s["Region"] for s in scores} == {w.region for w in sandbox.workers},
        "GetSpotPlacementScores scores every worker region",
        ", ".join(f"{s['Region']}={s['Score']}" for s in scores),
    )
    prices = sandbox.client("ec2", west).describe_spot_price_history(InstanceTypes=["g5.xlarge"])["SpotPriceHistory"]
    n.expect(bool(prices), "DescribeSpotPriceHistory gives the market's prices", f"{len(prices)} zone prices")

    n.chapter(f"A GPU instance launches on spot capacity in {west} and runs the real agent")
    sandbox.client("autoscaling", west).set_desired_capacity(AutoScalingGroupName="spothub-gpu", DesiredCapacity=1)
    instance = sandbox.wait_for(lambda: next(iter(sandbox.fleet.running(west)), None), timeout_s=15)
    n.expect(instance.capacity_type == "spot", "the group launched a spot instance", instance.instance_id)
    n.eventually(
        lambda: '"event": "started"' in _read(instance.log_path),
        "its agent started and read its configuration from IMDS and the instance tags",
    )

    n.chapter(f"No spot capacity in {east}: the launch failure reaches the hub")
    for pool in sandbox.market.pools(east):
        sandbox.market.set_zone(pool.zone, pool.instance_type, capacity=0)
    sandbox.client("autoscaling", east).set_desired_capacity(AutoScalingGroupName="spothub-gpu", DesiredCapacity=1)
    n.eventually(
        lambda: sandbox.events(f":event-bus/{_hub_bus(sandbox)}", "EC2 Instance Launch Unsuccessful"),
        "EC2 Instance Launch Unsuccessful is forwarded to the hub bus",
    )
    n.expect(not sandbox.fleet.running(east), f"nothing runs in {east}")

    n.chapter(f"The market takes {instance.zone} away: interruption warning, then termination")
    sandbox.market.set_zone(instance.zone, instance.instance_type, capacity=0)
    n.eventually(
        lambda: sandbox.events(f":event-bus/{_hub_bus(sandbox)}", "EC2 Spot Instance Interruption Warning"),
        "the interruption warning is forwarded to the hub bus",
    )
    sandbox.clock.advance(120)
    n.eventually(
        lambda: sandbox.fleet.instances[instance.instance_id].state == "terminated",
        "two simulated minutes later the instance is terminated",
    )
    n.eventually(
        lambda: any(i.instance_id != instance.instance_id for i in sandbox.fleet.running(west)),
        "the group replaces it where the market still has capacity",
    )

    n.chapter("Scale to zero")
    for worker in sandbox.workers:
        sandbox.client("autoscaling", worker.region).set_desired_capacity(
            AutoScalingGroupName="spothub-gpu", DesiredCapacity=0
        )
    n.eventually(
        lambda: (
            not sandbox.fleet.running()
            and all(i.agent is None or i.agent.poll() is not None for i in sandbox.fleet.instances.values())
        ),
        "every instance is terminated and its agent stopped",
    )
    n.show_timeline()
    print(
        f"\n{'all expectations met' if not n.failures else f'{len(n.failures)} expectations failed'}",
        file=out,
    )
    return n.failures


def _hub_bus(sandbox: Sandbox) -> str:
    return sandbox.hub.outputs["HubBusArn"].rsplit("/", 1)[-1]


def _read(path: object) -> str:
    try:
        return open(path).read()  # type: ignore[call-overload]
    except OSError:
        return ""

"""The hops from a spot interruption warning for a serving replica to its replacement's launch call, counted in
the sandbox (spothub/sandbox/hops.py): so that the failover path cannot grow unnoticed.

The path is followed backwards from the launch call (the replacement region's group asked for one more
instance) through what caused each hop: state transitions, Lambda invocations, EventBridge deliveries. It must
start at the warning: the worker region's spot interruption event, or the instance's agent's own notice (the
agent polls IMDS and puts its notice on the hub bus from its own process: a path with no cause in the sandbox).

Cost: one placement (the session sandbox, at SPEED), then the warning; the test stops once the launch call is
made (about 15 s on a 2-core machine).
"""

from __future__ import annotations

from spothub.sandbox.hops import Hop, HopKind, Recording
from spothub.sandbox.sandbox import Sandbox
from tests.sandbox.test_spot_provisioning import place, set_region

# The most each kind of hop may take on the path, as measured: a test failing here means a hop was added between
# the warning and the launch call (lower them when the path gets shorter). Before issue 18's cuts: 6 invocations
# (capacity monitor's identify, capacity handler, spot finder, dispatch_launch, worker_tasks' command, scale_out),
# 5 deliveries, 9 transitions. Now: the forwarded warning -> capacity handler (ranks in-process, starts the
# orchestrator) -> Begin, ChooseCapacity, SpotTarget, Launch -> capacity handler (dispatch_launch) -> hub bus ->
# worker bus -> worker_tasks (scales out as it starts the launch). The agent's notice, when it comes first, takes
# one delivery less.
MAX_INVOCATIONS = 3
MAX_DELIVERIES = 4
MAX_TRANSITIONS = 4
LAUNCH_OPERATIONS = ("autoscaling:SetDesiredCapacity", "autoscaling:UpdateAutoScalingGroup")


def _is_launch_call(region: str) -> object:
    def launch_call(hop: Hop) -> bool:
        asks_for_more = int(hop.details.get("DesiredCapacity") or 0) >= 1
        return (
            hop.kind == HopKind.CALL
            and hop.details.get("region") == region
            and hop.what.startswith(LAUNCH_OPERATIONS)
            and asks_for_more
        )

    return launch_call


def _starts_at_the_warning(path: list[Hop], warning: Hop) -> bool:
    root = path[0]
    if root.number == warning.number:
        return True
    # The agent's own notice: put on the hub bus from the instance's process, so nothing in the sandbox caused it.
    return root.kind == HopKind.PUT and "spothub.agent/Spothub Capacity Notice" in root.what and root.cause is None


def test_an_interruption_warning_reaches_the_replacements_launch_call_in_three_invocations(spot: Sandbox) -> None:
    assert spot.fleet is not None
    before = place(spot)
    old_region = before["region"]
    (old,) = before["instances"]
    (new_region,) = [w.region for w in spot.workers if w.region != old_region]
    set_region(spot, old_region, placement_score=2)  # the replacement goes to the other region

    with spot.hops.recording() as recording:
        with recording.origin(f"spot interruption warning for {old['instance_id']} in {old_region}") as warning:
            spot.fleet.send_interruption_warning(old["instance_id"])
        launch = recording.wait_for(_is_launch_call(new_region), timeout_s=60)
        path = recording.path_to(launch)
        everything = recording.between(warning, launch)

    shown = f"path:\n{Recording.report(path)}\n\neverything from the warning to the launch call:\n"
    shown += Recording.report(everything)
    print(shown)
    counts = {kind: Recording.count(path, kind) for kind in (HopKind.INVOCATION, HopKind.DELIVERY, HopKind.TRANSITION)}
    print(
        f"interruption warning -> replacement's launch call: {counts[HopKind.INVOCATION]} Lambda invocations, "
        f"{counts[HopKind.DELIVERY]} EventBridge deliveries, {counts[HopKind.TRANSITION]} state transitions "
        f"(at most {MAX_INVOCATIONS}, {MAX_DELIVERIES}, {MAX_TRANSITIONS})"
    )
    assert _starts_at_the_warning(path, warning), f"the path starts elsewhere:\n{shown}"
    assert counts[HopKind.INVOCATION] <= MAX_INVOCATIONS, f"{counts}\n{shown}"
    assert counts[HopKind.DELIVERY] <= MAX_DELIVERIES, f"{counts}\n{shown}"
    assert counts[HopKind.TRANSITION] <= MAX_TRANSITIONS, f"{counts}\n{shown}"

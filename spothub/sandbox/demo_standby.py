"""The demo's warm standby chapter: provisioning enabled again with `warm_standby`, the young spot instance gets a
standby in another region, the serving instance's interruption warning promotes it in the warning's own invocation
(no launch), the model endpoint answers from it, GET /events tells the story, and a disable tears both down.

It runs after the spot chapters' disable, a quarter hour of the sandbox clock later (their exclusions over) on
restored capacity; the minute's standby check is fired by hand so that the chapter does not wait for the clock.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import requests

from spothub.sandbox.model_server import INSTANCE_HEADER
from spothub.sandbox.sandbox import Sandbox, SandboxError
from spothub_core.timings import CAPACITY_EXCLUSION_SECONDS

if TYPE_CHECKING:
    from spothub.sandbox.demo import Narrator

CHECK_RULE = "StandbyCheck"
PLACEMENT_TIMEOUT_S = 120.0
STANDBY_TIMEOUT_S = 120.0


def warm_standby_chapter(n: Narrator, sandbox: Sandbox) -> None:
    fleet, market = sandbox.fleet, sandbox.market
    if fleet is None or market is None:
        raise SandboxError("the warm standby chapter needs the sandbox's market and fleet")
    n.chapter(
        "A quarter hour later, spot is back; warm standby: a second spot instance while the risk is high, the warning "
        "promotes it, no launch"
    )
    # The failovers' exclusions run out, and capacity comes back: the replica goes to spot again.
    sandbox.clock.advance(CAPACITY_EXCLUSION_SECONDS + 60)
    market.restore()
    enabled = sandbox.request("POST", "spot-provisioning", {"action": "enable", "warm_standby": True})
    n.expect(enabled.status_code == HTTPStatus.OK, "POST /spot-provisioning enable with warm_standby answers 200")
    placed = _wait(
        n,
        sandbox,
        lambda view: view.get("state") == "serving" and _serving_instance(view).get("capacity_type") == "spot",
        "the replica serves on spot",
        PLACEMENT_TIMEOUT_S,
    )
    serving = _serving_instance(placed)
    if not serving:
        return
    sandbox.fire_schedule(CHECK_RULE)
    held = _wait(
        n,
        sandbox,
        lambda view: [s for s in view.get("standbys") or [] if s.get("status") == "ready"],
        "the instance is young, so at risk: a standby is warm in another region (GET /spot-instances `standbys`)",
        STANDBY_TIMEOUT_S,
        evidence=lambda view: ", ".join(
            f"{s.get('instance_id')} {s.get('capacity_type')} in {s.get('zone') or s.get('region')}"
            for s in view.get("standbys") or []
        ),
    )
    standby = (held.get("standbys") or [{}])[0]
    if not standby:
        return
    n.expect(
        bool(standby) and standby.get("region") != placed.get("region"),
        "the standby is in another region than the serving instance (the least correlated risk)",
        f"serving in {placed.get('region')}, standby {standby.get('instance_id')} in {standby.get('region')}",
    )

    launches_before = _orchestrated_launches(sandbox)
    fleet.send_interruption_warning(str(serving.get("instance_id")))
    moved = _wait(
        n,
        sandbox,
        lambda view: (
            view.get("state") == "serving" and _serving_instance(view).get("instance_id") == standby.get("instance_id")
        ),
        "the interruption warning promotes the standby: the replica serves on it",
        60.0,
    )
    n.expect(
        _orchestrated_launches(sandbox) == launches_before,
        "no replacement was launched: the standby was the replacement, warm",
        f"{launches_before} orchestrated launches before and after",
    )
    by = _answered_by(sandbox, moved.get("endpoint") or "")
    n.expect(
        by == standby.get("instance_id"), "the model endpoint answers from the promoted standby", f"answered by {by}"
    )
    events = sandbox.request("GET", "events").json().get("events", [])
    story = [e.get("kind") for e in reversed(events) if str(e.get("kind", "")).startswith("standby-")]
    n.expect(
        story[:3] == ["standby-started", "standby-ready", "standby-promoted"],
        "GET /events tells it: standby started (why), ready, promoted",
        ", ".join(story),
    )

    disabled = sandbox.request("POST", "spot-provisioning", {"action": "disable", "teardown": True})
    n.expect(disabled.status_code == HTTPStatus.OK, "disable with teardown answers 200")
    n.eventually(lambda: not fleet.running(), "every instance is terminated, standbys too", timeout_s=60)


def _wait(
    n: Narrator, sandbox: Sandbox, check: Any, claim: str, timeout_s: float, *, evidence: Any = None
) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        view = sandbox.request("GET", "spot-instances").json()
        return view if check(view) else None

    try:
        view = sandbox.wait_for(found, timeout_s=timeout_s, interval_s=0.5)
    except SandboxError:
        n.expect(False, claim, str(sandbox.request("GET", "spot-instances").json())[:400])
        return {}
    n.expect(True, claim, (evidence or _where)(view))
    return view  # type: ignore[no-any-return]


def _serving_instance(view: dict[str, Any]) -> dict[str, Any]:
    serving = [i for i in view.get("instances") or [] if i.get("status") == "serving"]
    return serving[0] if serving else {}


def _where(view: dict[str, Any]) -> str:
    instance = _serving_instance(view)
    return f"{view.get('region')}: {instance.get('instance_id')} {instance.get('capacity_type')}"


def _orchestrated_launches(sandbox: Sandbox) -> int:
    """Launch commands on the hub bus other than standbys' (theirs carry role `standby`)."""
    bus = sandbox.hub.outputs["HubBusArn"].rsplit("/", 1)[-1]
    return sum(
        1
        for e in sandbox.events(f":event-bus/{bus}", "Spothub Launch Requested")
        if e.details["event"]["detail"].get("role") != "standby"
    )


def _answered_by(sandbox: Sandbox, endpoint: str) -> str | None:
    try:
        answer = sandbox.model_request(endpoint, "/v1/chat/completions", {"messages": []}, key=sandbox.api_key())
    except (requests.exceptions.RequestException, SandboxError):
        return None
    return answer.headers.get(INSTANCE_HEADER) if answer.status_code == HTTPStatus.OK else None

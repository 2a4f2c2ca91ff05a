"""Instance resilience end to end in the sandbox: the real agent on each simulated instance, the launch
lifecycle hook held until it completes, per-instance alarms evaluated by the sandbox clock, the
worker's remediation and the hub's replacement."""

from __future__ import annotations

import re
from typing import Any

from spothub.sandbox.sandbox import Sandbox

SPEED = 4.0
PLACEMENT_S = 180.0


def serving(sandbox: Sandbox, extra: Any = lambda _d: True) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        details = sandbox.request("GET", "spot-instances").json()
        return details if details.get("state") == "serving" and details.get("instances") and extra(details) else None

    return sandbox.wait_for(check, timeout_s=PLACEMENT_S, interval_s=0.3)


def entries(sandbox: Sandbox, kind: str, instance_id: str) -> list[Any]:
    return [e for e in sandbox.timeline if e.kind == kind and instance_id in e.summary]


def test_an_instance_enters_service_only_once_its_workload_is_healthy(fresh_sandbox: Sandbox) -> None:
    sandbox = fresh_sandbox
    sandbox.clock.set_speed(SPEED)
    assert sandbox.request("POST", "spot-provisioning", {"action": "enable"}).status_code == 200
    placed = serving(sandbox)
    instance_id = placed["instances"][0]["instance_id"]

    launched = entries(sandbox, "launched", instance_id)
    completed = entries(sandbox, "lifecycle", instance_id)
    assert launched and "Pending:Wait" in launched[0].summary, "the group holds a new instance on its launch hook"
    assert completed and "CONTINUE" in completed[0].summary, "the agent completed the lifecycle action"
    succeeded = [e for e in sandbox.events(detail_type="Spothub Launch Succeeded")]
    assert succeeded and completed[0].at <= succeeded[0].at, (
        "the launch succeeded only after the instance was in service"
    )
    log = sandbox.fleet.instances[instance_id].log_path.read_text()  # type: ignore[union-attr]
    assert log.index('"workload_started"') < log.index('"lifecycle_completed"'), "workload first, then in service"

    def heard_from() -> dict[str, Any] | None:
        instance = sandbox.request("GET", "spot-instances").json()["instances"][0]
        return instance if instance.get("last_seen") and instance.get("ready") else None

    instance = sandbox.wait_for(heard_from, timeout_s=20)
    assert instance["gpu"], "the heartbeat carries the GPU health (no GPU here: said plainly)"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", instance["last_seen"]), "last_seen is ISO 8601 UTC"


def test_a_silent_instance_is_replaced_and_the_reason_recorded(fresh_sandbox: Sandbox) -> None:
    sandbox = fresh_sandbox
    sandbox.clock.set_speed(SPEED)
    assert sandbox.request("POST", "spot-provisioning", {"action": "enable"}).status_code == 200
    silent = serving(sandbox)["instances"][0]["instance_id"]
    sandbox.fleet.kill_agent(silent)  # type: ignore[union-attr]
    # Three silent minutes of simulated time, while the clock runs (a jump is not silence).
    sandbox.clock.set_speed(60.0)
    try:
        fired = sandbox.wait_for(
            lambda: [e for e in entries(sandbox, "alarm", silent) if "-> ALARM" in e.summary],
            timeout_s=30,
        )
    finally:
        sandbox.clock.set_speed(SPEED)
    assert "heartbeat" in fired[0].summary, fired[0].summary

    replaced = serving(sandbox, lambda d: d["instances"][0]["instance_id"] != silent)
    assert replaced["instances"][0]["instance_id"] != silent
    remediations = replaced["remediations"]
    assert [r["instance_id"] for r in remediations] == [silent], "one remediation, for the silent instance"
    assert "stopped sending heartbeats" in remediations[0]["reason"]
    sandbox.wait_for(lambda: sandbox.fleet.instances[silent].state == "terminated", timeout_s=30)  # type: ignore[union-attr]
    unhealthy = sandbox.events(detail_type="Spothub Instance Unhealthy")
    assert unhealthy, "the worker's remediation asked the hub to replace the instance"


def test_an_interruption_is_reported_by_the_agent_and_drained(fresh_sandbox: Sandbox) -> None:
    sandbox = fresh_sandbox
    sandbox.clock.set_speed(SPEED)
    assert sandbox.request("POST", "spot-provisioning", {"action": "enable"}).status_code == 200
    old = serving(sandbox)["instances"][0]["instance_id"]
    sandbox.fleet.send_interruption_warning(old)  # type: ignore[union-attr]

    def agent_reports() -> list[Any]:
        hub_events = sandbox.events(bus_suffix="/spothub-hub")
        by_agent = [e for e in hub_events if e.details["event"]["source"] == "spothub.agent"]
        notices = [e for e in by_agent if e.details["event"]["detail-type"] == "Spothub Capacity Notice"]
        drains = [e for e in by_agent if e.details["event"]["detail-type"] == "Spothub Drain Completed"]
        return [notices, drains] if notices and drains else []

    notices, drains = sandbox.wait_for(agent_reports, timeout_s=30)
    assert len(notices) == 1, "one event per notice, whatever the polling"
    assert notices[0].details["event"]["detail"]["replica_id"] == "replica-0", "named from the instance's live tags"
    assert drains[0].details["event"]["detail"]["outcome"] == "drained", drains[0].details
    moved = serving(sandbox, lambda d: d["instances"][0]["instance_id"] != old)
    assert moved["instances"][0]["instance_id"] != old

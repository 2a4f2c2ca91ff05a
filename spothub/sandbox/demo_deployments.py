"""The demo's model deployments chapters: two tenants fill the GPU nodes, a third waits for a new node, a killed task
is restarted, a drained node moves its tasks, utilization above the target scales a deployment up, every step is a
scaling event, and deleting everything gives the GPUs and the tenants' quotas back.

The deployment controller runs on a one-minute schedule and on the events it consumes (the API's nudge, ECS task
state changes); a task turning healthy is neither, so the chapters fire the controller's schedule by hand while they
wait instead of waiting for minutes. The hub's functions see real time: the restart backoff after a second failure
(30 real seconds) is never needed here, and the autoscaled deployment's first decision is immediate (no decision
before it, so no cooldown yet).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import boto3

from spothub.sandbox.model_server import COMPLETION_TEXT
from spothub.sandbox.sandbox import Sandbox, SandboxError

# At import, not in a function: see the note at spothub_core's import in sandbox.py.
from spothub_core.contracts import node_group_name
from spothub_core.dal.deployment_store import DeploymentStore

if TYPE_CHECKING:
    from spothub.sandbox.demo import Narrator

# The controller's schedule rule (stacks/constructs/model_deployments.py: ControllerSchedule).
CONTROLLER_RULE = "ControllerSchedule"
# Between two firings of the controller while a chapter waits, in real seconds: a run takes about a second here.
FIRE_EVERY_S = 1.5
SPEED = 4.0
SETTLE_TIMEOUT_S = 30.0

ACME = {"model": "Qwen/Qwen2.5-7B-Instruct", "tenant": "acme", "gpus": 1, "replicas": 2}
# Autoscaled: at its minimum while idle (no decision), up to 2 replicas above 50 % GPU utilization.
GLOBEX = {
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "tenant": "globex",
    "gpus": 1,
    "replicas": 1,
    "min_replicas": 1,
    "max_replicas": 2,
    "autoscale": {"target_gpu_utilization": 50, "cooldown_s": 60},
}
INITECH = {"model": "mistralai/Mistral-7B-Instruct-v0.3", "tenant": "initech", "gpus": 1, "replicas": 1}
BUSY_PCT = 90.0


def deployments_chapters(n: Narrator, sandbox: Sandbox) -> None:
    """The whole story; every deployment it created is deleted at the end."""
    if sandbox.market is None:
        raise SandboxError("the demo needs the sandbox's market")
    from spothub.sandbox.demo import _lift_exclusions  # noqa: PLC0415 (the demo imports this module)

    # The serving chapters took spot capacity away and excluded regions for a while (in real time): a later hour
    # would find both back.
    sandbox.market.restore()
    _lift_exclusions(sandbox)
    sandbox.clock.set_speed(SPEED)
    created: list[str] = []
    try:
        acme, globex = _fill_chapter(n, sandbox, created)
        if not (acme and globex):
            return
        initech = _waits_chapter(n, sandbox, created)
        _recovery_chapter(n, sandbox, acme)
        _drain_chapter(n, sandbox, acme)
        _autoscale_chapter(n, sandbox, globex)
        _events_chapter(n, sandbox, [d for d in (acme, globex, initech) if d])
    finally:
        _delete_chapter(n, sandbox, created)


# --- the chapters ------------------------------------------------------------------------------------------------


def _fill_chapter(n: Narrator, sandbox: Sandbox, created: list[str]) -> tuple[str | None, str | None]:
    n.chapter("Deployments: tenants acme (2 replicas) and globex (1, autoscaled) ask for 1-GPU replicas")
    acme = _create(n, sandbox, ACME, created)
    globex = _create(n, sandbox, GLOBEX, created)
    if not (acme and globex):
        return acme, globex
    started = time.monotonic()
    running = _drive(
        sandbox,
        lambda: all(_status(sandbox, d).get("status") == "running" for d in (acme, globex)),
        timeout_s=45,
    )
    nodes = _nodes(sandbox)
    n.expect(
        bool(running),
        "the controller asked the node groups for GPU nodes, placed the replicas on them, and both are running",
        f"after {time.monotonic() - started:.0f} s; node groups' desired {_desired_nodes(sandbox)}; nodes: "
        + ", ".join(_node_line(x) for x in nodes),
    )
    resources = _resources(sandbox)
    n.expect(
        resources.get("total", -1) == resources.get("allocated") == 3 and resources.get("free") == 0,  # noqa: PLR2004
        "the three replicas fill the nodes: GET /resources/available has no GPU free",
        _resources_line(resources),
    )
    endpoint = next(iter(_status(sandbox, acme).get("endpoints") or []), None)
    answer = None
    if endpoint:
        answer = sandbox.deployment_request(endpoint, "/v1/completions", {"model": ACME["model"], "prompt": "Hello?"})
    body = answer.json() if answer is not None and answer.status_code == HTTPStatus.OK else {}
    n.expect(
        body.get("object") == "text_completion"
        and body.get("model") == ACME["model"]
        and COMPLETION_TEXT in json.dumps(body),
        f"a client in the VPC calls POST /v1/completions at acme's endpoint {endpoint} and gets a completion",
        (body.get("choices") or [{}])[0].get("text", "") if body else (answer.text[:160] if answer else "no endpoint"),
    )
    return acme, globex


def _waits_chapter(n: Narrator, sandbox: Sandbox, created: list[str]) -> str | None:
    n.chapter("Deployments: tenant initech asks for one more replica; every node is full")
    asked_before = _desired_nodes(sandbox)
    initech = _create(n, sandbox, INITECH, created)
    if not initech:
        return None
    waiting = _drive(sandbox, lambda: _waiting_for_capacity(sandbox, initech, asked_before), timeout_s=20)
    n.expect(
        bool(waiting),
        "its task is pending, waiting for capacity, and one more node is asked of a node group",
        waiting or "",
    )
    started = time.monotonic()
    placed = _drive(sandbox, lambda: _status(sandbox, initech).get("status") == "running", timeout_s=40)
    task = next(iter(_status(sandbox, initech).get("tasks") or []), {})
    n.expect(
        bool(placed),
        "once the new node registered, the task was placed there and is running",
        f"after {time.monotonic() - started:.0f} s on {task.get('instance_id')} ({task.get('region')})",
    )
    return initech


def _recovery_chapter(n: Narrator, sandbox: Sandbox, acme: str) -> None:
    n.chapter("Deployments: acme's replica in slot 0 crashes (its container killed)")
    before = _slot_task(sandbox, acme, 0) or {}
    try:
        killed = sandbox.kill_deployment_task(deployment_id=acme, slot=0)
    except SandboxError as exc:
        n.expect(False, "acme's slot 0 has a running task to kill", str(exc))
        return
    n.expect(
        killed.get("last_status") == "STOPPED",
        "ECS reports the task stopped (Essential container in task exited)",
        f"{killed.get('stopped_reason')}, exit code {killed.get('exit_code')}",
    )
    # No firing by hand here: the ECS Task State Change, forwarded to the hub bus, runs the controller.
    restarted = _wait(sandbox, lambda: _events_of(sandbox, acme, "recovery"), timeout_s=20)
    n.expect(
        bool(restarted),
        "the ECS Task State Change reached the controller, which restarted the slot at once (a recovery event)",
        restarted[0]["reason"] if restarted else "",
    )
    healthy = _drive(sandbox, lambda: _slot_running(sandbox, acme, 0, other_than=before.get("task_id")), timeout_s=30)
    n.expect(
        bool(healthy),
        "the new task in slot 0 is healthy",
        f"restarts {healthy.get('restarts')} on {healthy.get('instance_id')}" if healthy else "",
    )


def _drain_chapter(n: Narrator, sandbox: Sandbox, acme: str) -> None:
    slot = _slot_task(sandbox, acme, 1)
    node = slot.get("instance_id") if slot else None
    n.chapter(f"Deployments: an operator drains {node or '(no node)'}, where acme's slot 1 runs")
    if not slot or not node:
        n.expect(False, "acme's slot 1 runs on a node", json.dumps(_status(sandbox, acme))[:300])
        return
    old_arn = _arn(sandbox, acme, 1)
    drained = sandbox.request("POST", f"nodes/{node}/drain", {"reason": "demo: maintenance"})
    n.expect(
        drained.status_code == HTTPStatus.OK and drained.json().get("status") == "draining",
        f"POST /nodes/{node}/drain answers 200: the node is draining",
        drained.text[:160],
    )
    moved = _drive(sandbox, lambda: _slot_running(sandbox, acme, 1, other_than=slot.get("task_id")), timeout_s=45)
    n.expect(
        bool(moved) and moved.get("instance_id") != node,
        "a replacement for slot 1 came up healthy on another node (a new one: none was free)",
        f"on {moved.get('instance_id')}" if moved else "",
    )
    stopped = _drive(sandbox, lambda: _runtime_task(sandbox, old_arn, stopped=True), timeout_s=20)
    replacement = _runtime_task(sandbox, _arn(sandbox, acme, 1)) if moved else None
    healthy_at = (replacement or {}).get("healthy_at") or ""
    stopped_at = (stopped or {}).get("stopped_at") or ""
    n.expect(
        bool(stopped) and bool(healthy_at) and healthy_at <= stopped_at,
        "the old task stopped only after its replacement was healthy (make before break)",
        f"replacement healthy {healthy_at[11:23]}, old stopped {stopped_at[11:23]}",
    )
    event = _events_of(sandbox, acme, "drain")
    n.expect(bool(event), "the move is a drain event", event[0]["reason"] if event else "")
    left = next((x for x in _nodes(sandbox) if x["instance_id"] == node), {})
    n.expect(
        left.get("status") == "draining" and left.get("gpus_allocated") == 0,
        f"{node} is draining with nothing allocated",
        _node_line(left) if left else "",
    )


def _autoscale_chapter(n: Narrator, sandbox: Sandbox, globex: str) -> None:
    n.chapter(f"Deployments: globex's GPUs run at {BUSY_PCT:.0f} % (its target: 50 %)")
    try:
        gpus = sandbox.set_gpu_utilization(BUSY_PCT, deployment_id=globex)
    except SandboxError as exc:
        n.expect(False, "globex has a running task", str(exc))
        return
    n.expect(True, f"the stand-in NVML reports {BUSY_PCT:.0f} % on {', '.join(g[:12] for g in gpus)}")
    scaled = _drive(sandbox, lambda: _events_of(sandbox, globex, "autoscale"), timeout_s=30)
    n.expect(
        bool(scaled) and scaled[0]["after"] == 2 and scaled[0]["result"] == "applied",  # noqa: PLR2004
        "the node's agent sent it with its heartbeat; the controller scaled globex from 1 to 2 (an autoscale event)",
        scaled[0]["reason"] if scaled else "",
    )
    both = _drive(sandbox, lambda: _status(sandbox, globex).get("replicas", {}).get("healthy") == 2, timeout_s=40)  # noqa: PLR2004
    n.expect(bool(both), "the second replica came up on a new node and is healthy", _replicas(sandbox, globex))


def _events_chapter(n: Narrator, sandbox: Sandbox, deployments: list[str]) -> None:
    n.chapter("Deployments: GET /scaling/events tells what happened")
    events = [e for e in _all_events(sandbox) if e["deployment_id"] in deployments]
    for event in reversed(events):
        print(
            f"   {event['at']}  {event['deployment_id']:<20} {event['trigger']:<9} {event['result']:<8} "
            f"{event['before']}→{event['after']}  {event['reason'][:90]}",
            file=n.out,
        )
    triggers = {e["trigger"] for e in events}
    n.expect(
        {"manual", "recovery", "drain", "autoscale"} <= triggers,
        "creates (manual), the restart (recovery), the drain and the scale-up (autoscale) are all there",
        f"{len(events)} events",
    )


def _delete_chapter(n: Narrator, sandbox: Sandbox, created: list[str]) -> None:
    if not created:
        return
    n.chapter("Deployments: every deployment deleted")
    answers = [sandbox.request("DELETE", f"deployments/{d}") for d in created]
    n.expect(
        all(a.status_code == HTTPStatus.OK and a.json().get("status") in ("deleting", "deleted") for a in answers),
        f"DELETE /deployments/{{id}} answers 200 for each of {len(created)}: deleting",
    )
    deleted = _drive(
        sandbox, lambda: all(_status(sandbox, d).get("status") == "deleted" for d in created), timeout_s=30
    )
    n.expect(bool(deleted), "their tasks stopped and the deployments are deleted", ", ".join(created))
    running = sandbox.deployment_tasks(running=True)
    n.expect(not running, "no deployment task runs on any node", f"{len(running)} running")
    resources = _resources(sandbox)
    n.expect(
        resources.get("allocated") == 0 and resources.get("free", 0) > 0,
        "GET /resources/available: every GPU given back",
        _resources_line(resources),
    )
    reserved = _reserved(sandbox, [str(spec["tenant"]) for spec in (ACME, GLOBEX, INITECH)])
    n.expect(
        not any(reserved.values()),
        "the tenants' quotas are released (nothing reserved)",
        ", ".join(f"{t} {g} GPUs" for t, g in reserved.items()),
    )


# --- helpers -----------------------------------------------------------------------------------------------------


def _create(n: Narrator, sandbox: Sandbox, spec: dict[str, Any], created: list[str]) -> str | None:
    answer = sandbox.request("POST", "deployments", spec)
    body = answer.json() if answer.status_code == HTTPStatus.ACCEPTED else {}
    deployment_id = body.get("deployment_id")
    if deployment_id:
        created.append(deployment_id)
    n.expect(
        bool(deployment_id) and body.get("status") == "creating",
        f"POST /deployments for {spec['tenant']} ({spec['model']}) answers 202, creating",
        deployment_id or answer.text[:160],
    )
    return deployment_id


def _drive(sandbox: Sandbox, check: Callable[[], Any], *, timeout_s: float) -> Any:
    """Fire the controller's schedule every FIRE_EVERY_S until `check` holds (its value) or the time is up (None)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value or None
        sandbox.fire_schedule(CONTROLLER_RULE)
        value = _wait(sandbox, check, timeout_s=min(FIRE_EVERY_S, max(0.0, deadline - time.monotonic())))
        if value:
            return value


def _wait(sandbox: Sandbox, check: Callable[[], Any], *, timeout_s: float) -> Any:
    try:
        return sandbox.wait_for(check, timeout_s=timeout_s, interval_s=0.3)
    except SandboxError:
        return None


def _get(sandbox: Sandbox, path: str) -> dict[str, Any]:
    answer = sandbox.request("GET", path)
    return answer.json() if answer.status_code == HTTPStatus.OK else {}


def _status(sandbox: Sandbox, deployment_id: str) -> dict[str, Any]:
    return _get(sandbox, f"deployments/{deployment_id}/status")


def _nodes(sandbox: Sandbox) -> list[dict[str, Any]]:
    return list(_get(sandbox, "nodes").get("nodes") or [])


def _resources(sandbox: Sandbox) -> dict[str, Any]:
    return _get(sandbox, "resources/available")


def _all_events(sandbox: Sandbox) -> list[dict[str, Any]]:
    return list(_get(sandbox, "scaling/events?limit=100").get("events") or [])


def _events_of(sandbox: Sandbox, deployment_id: str, trigger: str) -> list[dict[str, Any]]:
    found = _get(sandbox, f"scaling/events?deployment_id={deployment_id}").get("events") or []
    return [e for e in found if e.get("trigger") == trigger]


def _node_line(node: dict[str, Any]) -> str:
    return f"{node.get('instance_id')} {node.get('status')} {node.get('gpus_allocated')}/{node.get('gpus_total')}"


def _resources_line(resources: dict[str, Any]) -> str:
    return f"total {resources.get('total')}, allocated {resources.get('allocated')}, free {resources.get('free')}"


def _replicas(sandbox: Sandbox, deployment_id: str) -> str:
    replicas = _status(sandbox, deployment_id).get("replicas") or {}
    return ", ".join(f"{k} {v}" for k, v in replicas.items())


def _desired_nodes(sandbox: Sandbox) -> int:
    """The node groups' desired capacity, over every worker region."""
    start = node_group_name(sandbox.prefix, "")
    total = 0
    for worker in sandbox.workers:
        groups = sandbox.client("autoscaling", worker.region).describe_auto_scaling_groups()["AutoScalingGroups"]
        total += sum(int(g["DesiredCapacity"]) for g in groups if g["AutoScalingGroupName"].startswith(start))
    return total


def _waiting_for_capacity(sandbox: Sandbox, deployment_id: str, asked_before: int) -> str | None:
    status = _status(sandbox, deployment_id)
    pending = [t for t in status.get("tasks") or [] if t.get("status") == "pending"]
    desired = _desired_nodes(sandbox)
    if pending and desired > asked_before and "no capacity" in (status.get("last_error") or ""):
        return f"{status.get('last_error')}; node groups' desired {asked_before} → {desired}"
    return None


def _slot_task(sandbox: Sandbox, deployment_id: str, slot: int) -> dict[str, Any] | None:
    tasks = [t for t in _status(sandbox, deployment_id).get("tasks") or [] if t.get("slot") == slot]
    running = [t for t in tasks if t.get("status") == "running"]
    return running[-1] if running else None


def _arn(sandbox: Sandbox, deployment_id: str, slot: int) -> str | None:
    try:
        return sandbox.deployment_task_arn(deployment_id, slot)
    except SandboxError:
        return None


def _slot_running(sandbox: Sandbox, deployment_id: str, slot: int, *, other_than: str | None) -> dict[str, Any] | None:
    """A running task of the slot other than the task `other_than` (its replacement, once healthy)."""
    tasks = _status(sandbox, deployment_id).get("tasks") or []
    return next(
        (t for t in tasks if t.get("slot") == slot and t.get("status") == "running" and t["task_id"] != other_than),
        None,
    )


def _runtime_task(sandbox: Sandbox, task_arn: str | None, *, stopped: bool = False) -> dict[str, Any] | None:
    """The task as the sandbox runs it (deployment_tasks()), once stopped when `stopped`."""
    found = next((t for t in sandbox.deployment_tasks() if t["task_arn"] == task_arn), None)
    if found is None or (stopped and found["last_status"] != "STOPPED"):
        return None
    return found


def _reserved(sandbox: Sandbox, tenants: list[str]) -> dict[str, int]:
    """GPUs each tenant's deployments reserve of its quota, from the deployments table."""
    resource = boto3.resource(
        "dynamodb", region_name=sandbox.hub.region, endpoint_url=sandbox.aws_endpoint_url, **sandbox.credentials()
    )
    store = DeploymentStore(resource.Table(sandbox.deployments_table()))
    return {tenant: store.tenant(tenant).gpus_reserved for tenant in tenants}

"""Model deployments end to end in the sandbox: the deployments API, the controller (its schedule fired by hand, as
the tests cannot wait for minutes), the node groups growing, the node agents' heartbeats, and the deployment tasks
running as stand-in inference servers on the nodes.

One deployment's lifecycle is shared by the module's tests, in order (each leaves it as the next expects): created
and answering completions, scaled down and up, restarted (rolling), a node drained, a task killed; then a server
that exits at once, an autoscaled deployment, deletion, and twenty concurrent creates against a tenant's quota and
the GPUs there are. The last test resets the sandbox with deployments still live, and checks that nothing is left
running for the next module.

The hub's functions see real time: a slot's second restart waits 30 real seconds (and its give-up 30+60+120+240),
so the recovery test asserts the first restart (at once) and the backoff of the second; the give-up itself is the
unit tests' (tests/unit/test_restart_backoff.py, tests/integration/test_deployment_health.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import boto3
import pytest

from spothub.sandbox.model_server import COMPLETION_TEXT
from spothub.sandbox.sandbox import Sandbox, SandboxError
from spothub_core.contracts import node_group_name
from spothub_core.dal.deployment_store import DeploymentStore
from spothub_core.models.deployment_records import DeploymentTask, NodeStatus, TaskStatus

# The controller's schedule rule (stacks/constructs/model_deployments.py: ControllerSchedule).
CONTROLLER_RULE = "ControllerSchedule"
FIRE_EVERY_S = 1.5
# Instances boot and agents beat by the sandbox clock; the hub's functions see real time whatever the speed.
SPEED = 6.0
MODEL = "Qwen/Qwen2.5-7B-Instruct"
TENANT = "alpha"
# The default quota of a tenant the context does not name (stacks/config_deployments.DEFAULT_TENANT_QUOTA).
DEFAULT_QUOTA = 16
CONCURRENT_CREATES = 20


@dataclass
class Lifecycle:
    sandbox: Sandbox
    deployment_id: str
    others: list[str] = field(default_factory=list)  # deployments later tests created (deleted at the end)

    def status(self, deployment_id: str | None = None) -> dict[str, Any]:
        return status(self.sandbox, deployment_id or self.deployment_id)


# --- helpers -----------------------------------------------------------------------------------------------------


def drive(sandbox: Sandbox, check: Callable[[], Any], *, timeout_s: float, what: str = "") -> Any:
    """Fire the controller's schedule every FIRE_EVERY_S until `check` holds; its value (AssertionError on timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout_s:.0f} s: {what or getattr(check, '__name__', check)}")
        sandbox.fire_schedule(CONTROLLER_RULE)
        try:
            return sandbox.wait_for(check, timeout_s=min(FIRE_EVERY_S, deadline - time.monotonic()), interval_s=0.25)
        except SandboxError:
            continue


def get(sandbox: Sandbox, path: str) -> dict[str, Any]:
    answer = sandbox.request("GET", path)
    assert answer.status_code == HTTPStatus.OK, f"GET {path}: {answer.status_code} {answer.text[:300]}"
    return dict(answer.json())


def status(sandbox: Sandbox, deployment_id: str) -> dict[str, Any]:
    return get(sandbox, f"deployments/{deployment_id}/status")


def create(sandbox: Sandbox, **spec: Any) -> str:
    answer = sandbox.request("POST", "deployments", {"model": MODEL, "tenant": TENANT, "gpus": 1, **spec})
    assert answer.status_code == HTTPStatus.ACCEPTED, answer.text
    assert answer.json()["status"] == "creating"
    return str(answer.json()["deployment_id"])


def running(sandbox: Sandbox, deployment_id: str, healthy: int | None = None) -> dict[str, Any] | None:
    """The deployment's status once running (with `healthy` healthy replicas, if given)."""
    seen = status(sandbox, deployment_id)
    if seen["status"] != "running":
        return None
    return seen if healthy is None or seen["replicas"]["healthy"] == healthy else None


def events(sandbox: Sandbox, deployment_id: str, trigger: str | None = None) -> list[dict[str, Any]]:
    """The deployment's scaling events, newest first (of one trigger)."""
    found = get(sandbox, f"scaling/events?deployment_id={deployment_id}&limit=100")["events"]
    return [e for e in found if trigger is None or e["trigger"] == trigger]


def slot_tasks(seen: dict[str, Any], slot: int, task_status: str | None = None) -> list[dict[str, Any]]:
    return [t for t in seen["tasks"] if t["slot"] == slot and (task_status is None or t["status"] == task_status)]


def replacement_running(sandbox: Sandbox, deployment_id: str, slot: int, old_task_id: str) -> dict[str, Any] | None:
    """The slot's running task that is not `old_task_id`."""
    tasks = slot_tasks(status(sandbox, deployment_id), slot, "running")
    return next((t for t in tasks if t["task_id"] != old_task_id), None)


def runtime_task(sandbox: Sandbox, task_arn: str) -> dict[str, Any]:
    """The ECS task as the sandbox runs it (healthy_at, stopped_at: ISO 8601, real time)."""
    return next(t for t in sandbox.deployment_tasks() if t["task_arn"] == task_arn)


def healthy_before_stopped(sandbox: Sandbox, new_arn: str, old_arn: str) -> tuple[str, str]:
    """Wait for the old task's stop; (new healthy_at, old stopped_at)."""
    drive(sandbox, lambda: runtime_task(sandbox, old_arn)["last_status"] == "STOPPED", timeout_s=20, what="old stop")
    return runtime_task(sandbox, new_arn)["healthy_at"] or "", runtime_task(sandbox, old_arn)["stopped_at"] or ""


def store(sandbox: Sandbox) -> DeploymentStore:
    resource = boto3.resource(
        "dynamodb", region_name=sandbox.hub.region, endpoint_url=sandbox.aws_endpoint_url, **sandbox.credentials()
    )
    return DeploymentStore(resource.Table(sandbox.deployments_table()))


def node_groups(sandbox: Sandbox) -> list[tuple[str, dict[str, Any]]]:
    """(region, group) of every deployment node group."""
    start = node_group_name(sandbox.prefix, "")
    found = []
    for worker in sandbox.workers:
        groups = sandbox.client("autoscaling", worker.region).describe_auto_scaling_groups()["AutoScalingGroups"]
        found += [(worker.region, g) for g in groups if g["AutoScalingGroupName"].startswith(start)]
    return found


def assert_no_overcommit(sandbox: Sandbox) -> dict[str, int]:
    """Every node's allocation within its GPUs, and equal to the GPUs of the tasks placed on it; {node: allocated}.
    A placement (or an end) moves a node's allocation and its task in one transaction: the tasks are compared with
    the allocations read before and after them, once those are the same."""
    deployments_store = store(sandbox)
    for _ in range(5):
        before = deployments_store.nodes()
        for node in before:
            assert 0 <= node.gpus_allocated <= node.gpus_total, node
        held: dict[str, int] = {}
        for deployment in deployments_store.deployments():
            for task in deployments_store.tasks(deployment.deployment_id):
                if task.status.placed and task.instance_id:
                    held[task.instance_id] = held.get(task.instance_id, 0) + task.gpus
        allocated = {n.instance_id: n.gpus_allocated for n in before}
        if {n.instance_id: n.gpus_allocated for n in deployments_store.nodes()} == allocated:
            assert allocated == {i: held.get(i, 0) for i in allocated}, held
            return allocated
    raise AssertionError("the nodes' allocations kept changing while the tasks were read")


# --- the shared lifecycle ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lifecycle(sandbox: Sandbox) -> Iterator[Lifecycle]:
    """A deployment of 2 one-GPU replicas, running; everything the module's tests create is gone afterwards."""
    sandbox.reset()
    sandbox.iam.forget()
    sandbox.clock.set_speed(SPEED)
    deployment_id = create(sandbox, replicas=2)
    shared = Lifecycle(sandbox, deployment_id)
    try:
        drive(sandbox, lambda: running(sandbox, deployment_id, healthy=2), timeout_s=60, what="2 replicas running")
        assert not sandbox.iam.denials, [d.line() for d in sandbox.iam.denials]
        yield shared
    finally:
        sandbox.reset()


def test_create_places_the_replicas_on_new_nodes_and_their_endpoints_answer_completions(lifecycle: Lifecycle) -> None:
    sandbox = lifecycle.sandbox
    seen = lifecycle.status()
    assert seen["replicas"] == {"desired": 2, "running": 2, "healthy": 2}
    assert seen["last_error"] is None
    assert len(seen["endpoints"]) == 2 and len(set(seen["endpoints"])) == 2
    assert {t["instance_id"] for t in seen["tasks"]} == {n.instance_id for n in sandbox.model_nodes()}
    for endpoint in seen["endpoints"]:
        answer = sandbox.deployment_request(endpoint, "/v1/completions", {"model": MODEL, "prompt": "Hello?"})
        assert answer.status_code == HTTPStatus.OK, answer.text
        assert answer.json()["object"] == "text_completion" and answer.json()["model"] == MODEL
        assert answer.json()["choices"][0]["text"] == COMPLETION_TEXT
    resources = get(sandbox, "resources/available")
    assert (resources["total"], resources["allocated"], resources["free"]) == (2, 2, 0)
    listed = get(sandbox, f"deployments?tenant={TENANT}")["deployments"]
    assert [d["deployment_id"] for d in listed] == [lifecycle.deployment_id]
    assert [(e["trigger"], e["reason"]) for e in events(sandbox, lifecycle.deployment_id)] == [("manual", "created")]
    assert_no_overcommit(sandbox)


def test_scale_down_stops_the_surplus_replica_and_scale_up_places_one_on_the_freed_gpu(lifecycle: Lifecycle) -> None:
    sandbox, deployment_id = lifecycle.sandbox, lifecycle.deployment_id
    surplus_arn = sandbox.deployment_task_arn(deployment_id, 1)
    down = sandbox.request("POST", f"deployments/{deployment_id}/scale", {"replicas": 1})
    assert down.status_code == HTTPStatus.OK, down.text
    assert down.json()["replicas"]["desired"] == 1
    drive(sandbox, lambda: runtime_task(sandbox, surplus_arn)["last_status"] == "STOPPED", timeout_s=20)
    drive(sandbox, lambda: get(sandbox, "resources/available")["allocated"] == 1, timeout_s=20, what="GPU back")
    assert runtime_task(sandbox, surplus_arn)["stopped_reason"] == "spothub: scale-down"
    assert store(sandbox).tenant(TENANT).gpus_reserved == 1
    assert lifecycle.status()["replicas"] == {"desired": 1, "running": 1, "healthy": 1}

    up = sandbox.request("POST", f"deployments/{deployment_id}/scale", {"replicas": 2})
    assert up.status_code == HTTPStatus.OK, up.text
    drive(sandbox, lambda: running(sandbox, deployment_id, healthy=2), timeout_s=30, what="2 replicas again")
    assert len(sandbox.model_nodes()) == 2  # the freed GPU took it: no node asked
    assert store(sandbox).tenant(TENANT).gpus_reserved == 2
    scaled = [(e["before"], e["after"]) for e in events(sandbox, deployment_id, "manual") if "scaled" in e["reason"]]
    assert scaled == [(1, 2), (2, 1)]
    assert_no_overcommit(sandbox)


def test_a_rolling_restart_replaces_each_task_healthy_before_the_old_one_stops(lifecycle: Lifecycle) -> None:
    sandbox, deployment_id = lifecycle.sandbox, lifecycle.deployment_id
    old = {slot: sandbox.deployment_task_arn(deployment_id, slot) for slot in (0, 1)}
    old_ids = {slot: slot_tasks(lifecycle.status(), slot, "running")[0]["task_id"] for slot in (0, 1)}
    asked = sandbox.request("POST", f"deployments/{deployment_id}/restart")
    assert asked.status_code == HTTPStatus.OK, asked.text
    for slot in (0, 1):  # one slot at a time: slot 0 (on a new node: every GPU is taken), then slot 1
        drive(
            sandbox,
            lambda s=slot: replacement_running(sandbox, deployment_id, s, old_ids[s]),
            timeout_s=45,
            what=f"slot {slot} replaced",
        )
        new_arn = sandbox.deployment_task_arn(deployment_id, slot)
        healthy_at, stopped_at = healthy_before_stopped(sandbox, new_arn, old[slot])
        assert healthy_at and healthy_at <= stopped_at, (slot, healthy_at, stopped_at)
        assert runtime_task(sandbox, old[slot])["stopped_reason"] == "spothub: restart, replacement healthy"
    drive(sandbox, lambda: running(sandbox, deployment_id, healthy=2), timeout_s=20)
    assert any("rolling restart" in e["reason"] for e in events(sandbox, deployment_id, "manual"))
    assert_no_overcommit(sandbox)


def test_a_drained_node_moves_its_task_elsewhere_before_stopping_it(lifecycle: Lifecycle) -> None:
    sandbox, deployment_id = lifecycle.sandbox, lifecycle.deployment_id
    task = slot_tasks(lifecycle.status(), 0, "running")[0]
    node, old_arn = task["instance_id"], sandbox.deployment_task_arn(deployment_id, 0)
    free = [n for n in get(sandbox, "nodes")["nodes"] if n["gpus_free"] > 0]
    assert free, "the rolling restart left a node free"
    drained = sandbox.request("POST", f"nodes/{node}/drain", {"reason": "maintenance"})
    assert drained.status_code == HTTPStatus.OK, drained.text
    assert drained.json()["status"] == "draining"
    moved = drive(sandbox, lambda: replacement_running(sandbox, deployment_id, 0, task["task_id"]), timeout_s=30)
    assert moved["instance_id"] != node
    healthy_at, stopped_at = healthy_before_stopped(sandbox, sandbox.deployment_task_arn(deployment_id, 0), old_arn)
    assert healthy_at and healthy_at <= stopped_at
    drain = events(sandbox, deployment_id, "drain")
    assert [e["reason"] for e in drain] == [f"node {node} drained: 1 task moving"]
    after = drive(sandbox, lambda: (n := get(sandbox, f"nodes/{node}"))["gpus_allocated"] == 0 and n, timeout_s=20)
    assert after["status"] == "draining" and after["status_reason"] == "maintenance" and after["tasks"] == []
    # Back in service for the next tests.
    assert sandbox.request("POST", f"nodes/{node}/uncordon").json()["status"] == "ready"
    assert_no_overcommit(sandbox)


def test_a_killed_task_is_restarted_at_once_on_its_ecs_state_change(lifecycle: Lifecycle) -> None:
    sandbox, deployment_id = lifecycle.sandbox, lifecycle.deployment_id
    before = slot_tasks(lifecycle.status(), 1, "running")[0]
    killed = sandbox.kill_deployment_task(deployment_id=deployment_id, slot=1)
    assert (killed["last_status"], killed["exit_code"]) == ("STOPPED", 137)
    # No firing by hand: the ECS Task State Change, forwarded to the hub bus, runs the controller.
    recovery = sandbox.wait_for(lambda: events(sandbox, deployment_id, "recovery"), timeout_s=20, interval_s=0.25)
    assert recovery[0]["reason"].startswith(f"slot 1: task {before['task_id']} stopped (Essential container")
    assert recovery[0]["reason"].endswith("restart 1 at once") and recovery[0]["result"] == "applied"
    restarted = drive(sandbox, lambda: replacement_running(sandbox, deployment_id, 1, before["task_id"]), timeout_s=30)
    assert restarted["restarts"] == 1
    drive(sandbox, lambda: running(sandbox, deployment_id, healthy=2), timeout_s=20)
    assert_no_overcommit(sandbox)


def test_a_server_that_exits_at_once_is_restarted_at_once_then_backs_off(lifecycle: Lifecycle) -> None:
    sandbox = lifecycle.sandbox
    crashing = create(
        sandbox,
        tenant="crashes",
        replicas=1,
        env={"SPOTHUB_SANDBOX_EXIT_AFTER_SECONDS": "0", "SPOTHUB_SANDBOX_EXIT_CODE": "3"},
    )
    lifecycle.others.append(crashing)
    # The uncordoned node's GPU takes it; it exits, is restarted at once, exits again: the next restart waits.
    recovery = drive(sandbox, lambda: len(found := events(sandbox, crashing, "recovery")) >= 2 and found, timeout_s=40)
    first, second = recovery[-1], recovery[-2]
    assert "(exit 3)" in first["reason"] and first["reason"].endswith("restart 1 at once")
    assert second["reason"].endswith("restart 2 in 30 s")
    seen = lifecycle.status(crashing)
    assert seen["status"] == "creating" and seen["replicas"]["healthy"] == 0
    assert "restarting: 1 task in restart backoff" in seen["last_error"]
    assert "Essential container in task exited (exit 3)" in seen["last_error"]
    assert_no_overcommit(sandbox)


def test_utilization_above_the_target_scales_an_autoscaled_deployment_up(lifecycle: Lifecycle) -> None:
    sandbox = lifecycle.sandbox
    # The crashing deployment's GPU back first (its restart waits 30 s meanwhile).
    deleting = sandbox.request("DELETE", f"deployments/{lifecycle.others[-1]}")
    assert deleting.status_code == HTTPStatus.OK
    autoscaled = create(
        sandbox,
        tenant="gamma",
        replicas=1,
        min_replicas=1,
        max_replicas=2,
        autoscale={"target_gpu_utilization": 50, "cooldown_s": 60},
    )
    lifecycle.others.append(autoscaled)
    drive(sandbox, lambda: running(sandbox, autoscaled, healthy=1), timeout_s=40, what="the autoscaled one running")
    assert events(sandbox, autoscaled, "autoscale") == []  # idle at its minimum: nothing to decide
    sandbox.set_gpu_utilization(90, deployment_id=autoscaled)
    scaled = drive(sandbox, lambda: events(sandbox, autoscaled, "autoscale"), timeout_s=30, what="a decision")
    assert [(e["before"], e["after"], e["result"]) for e in scaled] == [(1, 2, "applied")]
    assert "90" in scaled[0]["reason"] and "50" in scaled[0]["reason"]
    drive(sandbox, lambda: running(sandbox, autoscaled, healthy=2), timeout_s=45, what="2 replicas")
    utilization = get(sandbox, "gpu-utilization")["deployments"]
    mine = next(d for d in utilization if d["deployment_id"] == autoscaled)
    assert mine["target_pct"] == 50 and mine["gpus"] == 2
    assert store(sandbox).tenant("gamma").gpus_reserved == 2
    assert_no_overcommit(sandbox)


def test_deleting_stops_every_task_gives_the_gpus_back_and_releases_the_quota(lifecycle: Lifecycle) -> None:
    sandbox = lifecycle.sandbox
    everything = [lifecycle.deployment_id, *lifecycle.others]
    for deployment_id in everything:
        answer = sandbox.request("DELETE", f"deployments/{deployment_id}")
        assert answer.status_code == HTTPStatus.OK and answer.json()["status"] in ("deleting", "deleted")
    drive(
        sandbox,
        lambda: all(status(sandbox, d)["status"] == "deleted" for d in everything),
        timeout_s=40,
        what="all deleted",
    )
    assert sandbox.deployment_tasks(running=True) == []
    resources = get(sandbox, "resources/available")
    assert resources["allocated"] == 0 and resources["free"] == resources["total"] == len(sandbox.model_nodes())
    assert {t: store(sandbox).tenant(t).gpus_reserved for t in (TENANT, "crashes", "gamma")} == {
        TENANT: 0,
        "crashes": 0,
        "gamma": 0,
    }
    for deployment_id in everything:
        deleted = events(sandbox, deployment_id, "manual")[0]
        assert (deleted["reason"], deleted["after"], deleted["result"]) == ("deleted", 0, "applied")
    again = sandbox.request("DELETE", f"deployments/{lifecycle.deployment_id}")
    assert again.status_code == HTTPStatus.OK and again.json()["status"] == "deleted"
    assert_no_overcommit(sandbox)


def test_twenty_concurrent_creates_never_exceed_the_quota_nor_overcommit_a_node(lifecycle: Lifecycle) -> None:
    sandbox = lifecycle.sandbox
    free_gpus = get(sandbox, "resources/available")["free"]
    assert free_gpus >= 2, "the earlier tests left idle nodes"
    # No new node: the GPUs there are now are all there is.
    clamped = [(r, g["AutoScalingGroupName"], g["MaxSize"], g["DesiredCapacity"]) for r, g in node_groups(sandbox)]
    for region, name, _, desired in clamped:
        sandbox.client("autoscaling", region).update_auto_scaling_group(AutoScalingGroupName=name, MaxSize=desired)
    try:
        with ThreadPoolExecutor(CONCURRENT_CREATES) as pool:
            answers = list(
                pool.map(
                    lambda i: sandbox.request(
                        "POST", "deployments", {"model": f"{MODEL}-{i}", "tenant": "burst", "gpus": 1}
                    ),
                    range(CONCURRENT_CREATES),
                )
            )
        accepted = [a.json()["deployment_id"] for a in answers if a.status_code == HTTPStatus.ACCEPTED]
        refused = [a for a in answers if a.status_code != HTTPStatus.ACCEPTED]
        assert len(accepted) == DEFAULT_QUOTA
        assert {a.status_code for a in refused} == {HTTPStatus.CONFLICT}
        assert all(f"quota {DEFAULT_QUOTA} GPUs" in a.json()["message"] for a in refused), refused[0].text
        assert store(sandbox).tenant("burst").gpus_reserved == DEFAULT_QUOTA

        def placed() -> list[DeploymentTask]:
            """The burst's placed tasks, checking at each look that no node is overcommitted."""
            assert_no_overcommit(sandbox)
            deployments_store = store(sandbox)
            assert deployments_store.tenant("burst").gpus_reserved == DEFAULT_QUOTA
            return [t for d in accepted for t in deployments_store.tasks(d) if t.status.placed]

        def all_running() -> bool:
            tasks = placed()
            return len(tasks) == free_gpus and all(t.status == TaskStatus.RUNNING for t in tasks)

        drive(sandbox, all_running, timeout_s=40, what=f"{free_gpus} tasks placed and running")
        for _ in range(3):  # more runs place nothing more: every GPU is allocated
            sandbox.fire_schedule(CONTROLLER_RULE)
            time.sleep(FIRE_EVERY_S)
            assert len(placed()) == free_gpus
        resources = get(sandbox, "resources/available")
        assert (resources["allocated"], resources["free"]) == (resources["total"], 0)
        waiting = [status(sandbox, d) for d in accepted]
        assert sum(1 for s in waiting if s["status"] == "running") == free_gpus
        assert all("no capacity" in (s["last_error"] or "") for s in waiting if s["status"] == "creating")
        lifecycle.others += accepted
    finally:
        for region, name, max_size, _ in clamped:
            sandbox.client("autoscaling", region).update_auto_scaling_group(AutoScalingGroupName=name, MaxSize=max_size)


def test_a_reset_with_deployments_live_leaves_no_node_task_or_record_behind(lifecycle: Lifecycle) -> None:
    sandbox = lifecycle.sandbox
    assert sandbox.deployment_tasks(running=True), "the previous test left deployments running"
    sandbox.reset()
    # Whatever the terminations set off, and the schedule after it, asks for nothing again.
    for _ in range(2):
        sandbox.fire_schedule(CONTROLLER_RULE)
        time.sleep(FIRE_EVERY_S)
    assert sandbox.model_nodes() == []
    assert sandbox.deployment_tasks(running=True) == []
    assert all(g["DesiredCapacity"] == 0 for _, g in node_groups(sandbox))
    deployments_store = store(sandbox)
    assert deployments_store.deployments() == [] and deployments_store.asks() == []
    assert [n for n in deployments_store.nodes() if n.status != NodeStatus.GONE] == []

"""`spothub deployments|nodes|resources|gpu-utilization|scaling-events|health` against the stand-in API.

Every canned answer is built from the API's own models (spothub_core/models/deployment_api.py) and every request
body is read back into them, so a renamed or added field breaks these tests instead of the operator's command."""

from __future__ import annotations

import json
from typing import Any

import pytest

from spothub_core.models.deployment_api import (
    DeploymentAccepted,
    DeploymentRequest,
    DeploymentsPage,
    DeploymentSummary,
    DeploymentUtilization,
    DeploymentView,
    GpuCount,
    GpuView,
    HealthCheck,
    InfrastructureHealth,
    NodeOperation,
    NodesView,
    NodeTaskView,
    NodeUtilization,
    NodeView,
    ReplicaCounts,
    ResourcesView,
    ScaleRequest,
    ScalingEventsPage,
    ScalingEventView,
    TaskView,
    UtilizationView,
)
from spothub_core.models.deployment_records import (
    Autoscale,
    DeploymentStatus,
    NodeStatus,
    ScalingResult,
    ScalingTrigger,
    TaskStatus,
)
from tests.unit.fake_spothub_api import FakeApi
from tests.unit.test_cli_api import one_line, run

DEPLOYMENT = "d-0a1b2c3d4e5f"
NODE = "i-0123456789abcdef0"
MODEL = "Qwen/Qwen2.5-7B-Instruct"
ENDPOINT = "http://10.64.0.12:32768"
# The API's own words (logic/deployment_api.py).
QUOTA = "tenant acme is over its quota: quota 8 GPUs, holds 4, asked 8 (4 replicas x 2 GPUs)"
SCALE_QUOTA = "tenant acme is over its quota: quota 8 GPUs, holds 8, asked 2 (1 -> 3 replicas x 1 GPUs)"
NO_CLASS = "8 GPUs per replica: the largest node class offers 4 (class 4gpu: g5.12xlarge, g6.12xlarge)"


def ok(model: Any) -> tuple[int, dict[str, Any]]:
    return 200, model.model_dump(mode="json")


def task(status: TaskStatus = TaskStatus.RUNNING, *, slot: int = 0, **fields: Any) -> TaskView:
    placed = status != TaskStatus.PENDING
    base: dict[str, Any] = {
        "task_id": f"t-0000000{slot}",
        "slot": slot,
        "instance_id": NODE if placed else None,
        "region": "us-west-2" if placed else None,
        "gpus": 1,
        "status": status,
        "endpoint": ENDPOINT if status == TaskStatus.RUNNING else None,
        "started_at": "2026-11-27T16:01:00Z" if placed else None,
        "restarts": 0,
    }
    return TaskView(**(base | fields))


def view(status: DeploymentStatus, *tasks: TaskView, desired: int = 1, **fields: Any) -> DeploymentView:
    healthy = [t for t in tasks if t.status == TaskStatus.RUNNING]
    base: dict[str, Any] = {
        "deployment_id": DEPLOYMENT,
        "model": MODEL,
        "tenant": "acme",
        "image": "vllm/vllm-openai:v0.8.5",
        "gpus": 1,
        "status": status,
        "replicas": ReplicaCounts(desired=desired, running=sum(t.status.placed for t in tasks), healthy=len(healthy)),
        "min_replicas": desired,
        "max_replicas": desired,
        "autoscale": None,
        "tasks": list(tasks),
        "endpoints": [t.endpoint for t in healthy if t.endpoint],
        "created_at": "2026-11-27T16:00:00Z",
        "last_error": None,
    }
    return DeploymentView(**(base | fields))


def node(status: NodeStatus = NodeStatus.READY, *, allocated: int = 1, **fields: Any) -> NodeView:
    base: dict[str, Any] = {
        "instance_id": NODE,
        "region": "us-west-2",
        "instance_type": "g5.12xlarge",
        "node_class": "gpu4",
        "capacity_type": "spot",
        "status": status,
        "status_reason": None,
        "gpus_total": 4,
        "gpus_allocated": allocated,
        "gpus_free": 4 - allocated,
        "last_heartbeat": "2026-11-27T16:05:00Z",
        "gpu_utilization_pct": 41.5,
        "tasks": [NodeTaskView(deployment_id=DEPLOYMENT, task_id="t-00000000", gpus=1, status=TaskStatus.RUNNING)]
        if allocated
        else [],
    }
    return NodeView(**(base | fields))


def api_error(status: int, error: str, message: str, **fields: Any) -> tuple[int, dict[str, Any]]:
    return status, {"error": error, "message": message, **fields}


# --- deployments create ------------------------------------------------------------------------------------


def test_create_sends_only_what_was_given_and_says_how_to_follow(api: FakeApi, capsys) -> None:
    api.on("POST", "/deployments", (202, DeploymentAccepted(deployment_id=DEPLOYMENT, status="creating").model_dump()))
    code, out, err = run(capsys, "deployments", "create", MODEL, "--tenant", "acme", "--url", api.url)
    assert (code, err) == (0, "")
    assert f"{DEPLOYMENT} creating" in out and f"spothub deployments status {DEPLOYMENT} --wait" in out
    body = api.seen[-1].body
    assert body == {"model": MODEL, "tenant": "acme"}
    assert DeploymentRequest.model_validate(body).gpus == 1  # the API's defaults fill the rest

    code, out, _ = run(capsys, "deployments", "create", MODEL, "--tenant", "acme", "--url", api.url, "--json")
    assert code == 0 and json.loads(out) == {"deployment_id": DEPLOYMENT, "status": "creating"}


def test_create_with_every_option(api: FakeApi, capsys) -> None:
    api.on("POST", "/deployments", (202, DeploymentAccepted(deployment_id=DEPLOYMENT, status="creating").model_dump()))
    code, _, err = run(
        capsys,
        "deployments",
        "create",
        MODEL,
        "--tenant",
        "acme",
        "--image",
        "lmsysorg/sglang:v0.4.6.post1-cu124",
        "--gpus",
        "2",
        "--replicas",
        "2",
        "--min",
        "1",
        "--max",
        "4",
        "--autoscale-target",
        "65",
        "--cooldown",
        "120",
        "--max-model-len",
        "8192",
        "--env",
        "HF_HUB_OFFLINE=1",
        "--env",
        "VLLM_LOGGING_LEVEL=DEBUG",
        "--url",
        api.url,
    )
    assert (code, err) == (0, "")
    body = api.seen[-1].body
    request = DeploymentRequest.model_validate(body)
    assert request == DeploymentRequest(
        model=MODEL,
        tenant="acme",
        image="lmsysorg/sglang:v0.4.6.post1-cu124",
        gpus=2,
        replicas=2,
        min_replicas=1,
        max_replicas=4,
        autoscale=Autoscale(target_gpu_utilization=65, cooldown_s=120),
        max_model_len=8192,
        env={"HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "DEBUG"},
    )
    assert body["autoscale"] == {"target_gpu_utilization": 65.0, "cooldown_s": 120}


def test_create_with_a_target_alone_leaves_the_cooldown_to_the_api(api: FakeApi, capsys) -> None:
    api.on("POST", "/deployments", (202, DeploymentAccepted(deployment_id=DEPLOYMENT, status="creating").model_dump()))
    code, _, _ = run(
        capsys, "deployments", "create", MODEL, "--tenant", "acme", "--autoscale-target", "80", "--url", api.url
    )
    assert code == 0 and api.seen[-1].body["autoscale"] == {"target_gpu_utilization": 80.0}


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--tenant", "Acme_Corp"], "tenant: String should match pattern"),
        (["--tenant", "acme", "--gpus", "9"], "gpus: Input should be less than or equal to 8"),
        (["--tenant", "acme", "--replicas", "3", "--max", "2"], "replicas must lie within min_replicas..max_replicas"),
        (["--tenant", "acme", "--autoscale-target", "120"], "autoscale.target_gpu_utilization"),
        (["--tenant", "acme", "--cooldown", "60"], "--cooldown needs --autoscale-target"),
        (["--tenant", "acme", "--env", "NOEQUALS"], "expected NAME=VALUE"),
        (["--tenant", "acme", "--env", "1BAD=x"], "env.1BAD"),
    ],
)
def test_create_refuses_what_the_model_refuses_before_sending(api: FakeApi, capsys, args: list[str], said: str) -> None:
    code, out, err = run(capsys, "deployments", "create", MODEL, *args, "--url", api.url)
    assert code == 2 and out == ""
    assert said in err
    assert api.seen == []


@pytest.mark.parametrize(
    ("answer", "line"),
    [
        (
            api_error(409, "Conflict", QUOTA),
            f"spothub deployments create: 409 Conflict: {QUOTA}",
        ),
        (
            api_error(400, "BadRequest", NO_CLASS),
            f"spothub deployments create: 400 Bad Request: {NO_CLASS}",
        ),
        (
            api_error(
                400,
                "BadRequest",
                "the request is not valid",
                details=[{"field": "body.max_model_len", "problem": "Input should be greater than or equal to 16"}],
            ),
            "spothub deployments create: 400 Bad Request: the request is not valid "
            "(max_model_len: Input should be greater than or equal to 16)",
        ),
    ],
)
def test_create_refused_by_the_api_is_one_line(api: FakeApi, capsys, answer, line: str) -> None:
    api.on("POST", "/deployments", answer)
    code, out, err = run(capsys, "deployments", "create", MODEL, "--tenant", "acme", "--gpus", "8", "--url", api.url)
    assert (code, out) == (1, "")
    assert one_line(err) == line


def test_create_wait_follows_creating_to_running(api: FakeApi, capsys) -> None:
    api.on("POST", "/deployments", (202, DeploymentAccepted(deployment_id=DEPLOYMENT, status="creating").model_dump()))
    api.on(
        "GET",
        f"/deployments/{DEPLOYMENT}/status",
        ok(view(DeploymentStatus.CREATING, task(TaskStatus.PENDING))),
        ok(view(DeploymentStatus.CREATING, task(TaskStatus.STARTING))),
        ok(view(DeploymentStatus.RUNNING, task(TaskStatus.RUNNING))),
    )
    code, out, err = run(
        capsys, "deployments", "create", MODEL, "--tenant", "acme", "--wait", "--interval", "0", "--url", api.url
    )
    assert code == 0, err
    progress = err.splitlines()
    assert progress == [
        f"{DEPLOYMENT} creating: 0/1 healthy, 0 running; slot 0 pending",
        f"{DEPLOYMENT} creating: 0/1 healthy, 1 running; slot 0 starting on {NODE} in us-west-2",
        f"{DEPLOYMENT} running: 1/1 healthy, 1 running; slot 0 running on {NODE} in us-west-2",
    ]
    assert f"{DEPLOYMENT} creating" in out and "running" in out and ENDPOINT in out
    assert len(api.requests("GET", f"/deployments/{DEPLOYMENT}/status")) == 3


def test_create_wait_exits_1_when_the_deployment_fails(api: FakeApi, capsys) -> None:
    api.on("POST", "/deployments", (202, DeploymentAccepted(deployment_id=DEPLOYMENT, status="creating").model_dump()))
    why = "creating for 30 min: no capacity for 1 GPU in any region"
    api.on(
        "GET",
        f"/deployments/{DEPLOYMENT}/status",
        ok(view(DeploymentStatus.CREATING, task(TaskStatus.PENDING))),
        ok(view(DeploymentStatus.FAILED, task(TaskStatus.FAILED, last_error="gave up"), last_error=why)),
    )
    code, out, err = run(
        capsys,
        "deployments",
        "create",
        MODEL,
        "--tenant",
        "acme",
        "--wait",
        "--interval",
        "0",
        "--json",
        "--url",
        api.url,
    )
    assert code == 1
    assert json.loads(out)["status"] == "failed"  # --json: the final view alone
    assert err.splitlines()[-1] == f"spothub deployments create: deployment {DEPLOYMENT} failed: {why}"


# --- deployments status, list ------------------------------------------------------------------------------


def test_status_table_and_json(api: FakeApi, capsys) -> None:
    shown = view(
        DeploymentStatus.DEGRADED,
        task(TaskStatus.RUNNING),
        task(TaskStatus.PENDING, slot=1, restarts=2, last_error="exit code 137 (OutOfMemoryError)"),
        desired=2,
        autoscale=Autoscale(target_gpu_utilization=70, cooldown_s=300),
        last_error="slot 1: restarting in 60 s",
    )
    api.on("GET", f"/deployments/{DEPLOYMENT}/status", ok(shown))
    code, out, err = run(capsys, "deployments", "status", DEPLOYMENT, "--url", api.url)
    assert (code, err) == (0, "")
    for text in (
        DEPLOYMENT,
        "degraded",
        MODEL,
        "acme",
        "1/2 healthy, 1 running (min 2, max 2)",
        "target 70.0% GPU utilization, cooldown 300s",
        ENDPOINT,
        "t-00000001",
        "exit code 137 (OutOfMemoryError)",
        "slot 1: restarting in 60 s",
    ):
        assert text in out
    code, out, _ = run(capsys, "deployments", "status", DEPLOYMENT, "--url", api.url, "--json")
    assert code == 0 and DeploymentView.model_validate(json.loads(out)) == shown


def test_status_wait_on_a_running_deployment_asks_once(api: FakeApi, capsys) -> None:
    api.on("GET", f"/deployments/{DEPLOYMENT}/status", ok(view(DeploymentStatus.RUNNING, task())))
    code, out, err = run(capsys, "deployments", "status", DEPLOYMENT, "--wait", "--url", api.url)
    assert (code, err) == (0, "") and "running" in out
    assert len(api.seen) == 1


def test_status_wait_follows_a_degraded_deployment_until_it_fails(api: FakeApi, capsys) -> None:
    api.on(
        "GET",
        f"/deployments/{DEPLOYMENT}/status",
        ok(view(DeploymentStatus.DEGRADED, task(TaskStatus.PENDING, restarts=4))),
        ok(view(DeploymentStatus.FAILED, task(TaskStatus.FAILED, restarts=5), last_error="slot 0 gave up")),
    )
    code, out, err = run(capsys, "deployments", "status", DEPLOYMENT, "--wait", "--interval", "0", "--url", api.url)
    assert code == 1
    assert f"{DEPLOYMENT} degraded: 0/1 healthy, 0 running; slot 0 pending (restarts 4)" in err
    assert err.splitlines()[-1] == f"spothub deployments status: deployment {DEPLOYMENT} failed: slot 0 gave up"
    assert "failed" in out


def test_status_wait_stops_at_a_slot_that_gave_up(api: FakeApi, capsys) -> None:
    why = "slot 1 exited with code 1 (CUDA out of memory) 6 times in a row: gave up"
    given_up = view(
        DeploymentStatus.DEGRADED,
        task(),
        task(TaskStatus.FAILED, slot=1, restarts=5, last_error="exit code 1"),
        desired=2,
        last_error=why,
    )
    api.on(
        "GET",
        f"/deployments/{DEPLOYMENT}/status",
        ok(view(DeploymentStatus.DEGRADED, task(), task(TaskStatus.PENDING, slot=1, restarts=5), desired=2)),
        ok(given_up),
    )
    code, _, err = run(capsys, "deployments", "status", DEPLOYMENT, "--wait", "--interval", "0", "--url", api.url)
    assert code == 1
    assert err.splitlines()[-1] == f"spothub deployments status: deployment {DEPLOYMENT} degraded: {why}"
    assert len(api.seen) == 2  # a degraded deployment still restarting is waited for; one that gave up is not


def test_status_wait_gives_up_after_the_timeout(api: FakeApi, capsys) -> None:
    api.on("GET", f"/deployments/{DEPLOYMENT}/status", ok(view(DeploymentStatus.CREATING, task(TaskStatus.PENDING))))
    code, _, err = run(
        capsys, "deployments", "status", DEPLOYMENT, "--wait", "--interval", "0", "--timeout", "0", "--url", api.url
    )
    assert code == 1 and "gave up waiting after 0s" in err.splitlines()[-1]


def test_status_of_an_unknown_deployment_is_a_404_line(api: FakeApi, capsys) -> None:
    api.on("GET", "/deployments/d-999999/status", api_error(404, "NotFound", "no deployment d-999999"))
    code, out, err = run(capsys, "deployments", "status", "d-999999", "--url", api.url)
    assert (code, out) == (1, "")
    assert one_line(err) == "spothub deployments status: 404 Not Found: no deployment d-999999"


def summary(deployment_id: str, status: DeploymentStatus = DeploymentStatus.RUNNING) -> DeploymentSummary:
    return DeploymentSummary(
        deployment_id=deployment_id,
        model=MODEL,
        tenant="acme",
        gpus=1,
        status=status,
        replicas=2,
        created_at="2026-11-27T16:00:00Z",
    )


def test_list_passes_the_filters_and_follows_the_pages_with_all(api: FakeApi, capsys) -> None:
    api.on(
        "GET",
        "/deployments",
        ok(DeploymentsPage(deployments=[summary("d-aaaaaa")], next_token="tok-1")),
        ok(DeploymentsPage(deployments=[summary("d-bbbbbb", DeploymentStatus.CREATING)])),
    )
    code, out, err = run(
        capsys,
        "deployments",
        "list",
        "--tenant",
        "acme",
        "--status",
        "RUNNING",
        "--model",
        MODEL,
        "--limit",
        "1",
        "--all",
        "--url",
        api.url,
    )
    assert (code, err) == (0, "")
    assert "d-aaaaaa" in out and "d-bbbbbb" in out and "creating" in out
    first, second = api.requests("GET", "/deployments")
    assert first.query == {"tenant": ["acme"], "status": ["running"], "model": [MODEL], "limit": ["1"]}
    assert second.query == first.query | {"next_token": ["tok-1"]}


def test_list_one_page_json_and_empty(api: FakeApi, capsys) -> None:
    api.on("GET", "/deployments", ok(DeploymentsPage(deployments=[summary("d-aaaaaa")], next_token="tok-1")))
    code, out, err = run(capsys, "deployments", "list", "--url", api.url)
    assert code == 0 and "d-aaaaaa" in out and "spothub deployments list --all" in err
    assert api.seen[-1].query == {"limit": ["20"]}
    code, out, _ = run(capsys, "deployments", "list", "--url", api.url, "--json")
    assert DeploymentsPage.model_validate(json.loads(out)).next_token == "tok-1"
    api.on("GET", "/deployments", ok(DeploymentsPage(deployments=[])))
    code, out, _ = run(capsys, "deployments", "list", "--url", api.url)
    assert (code, out) == (0, "no deployments\n")


def test_list_refuses_a_status_that_does_not_exist(api: FakeApi, capsys) -> None:
    code, _, err = run(capsys, "deployments", "list", "--status", "sleeping", "--url", api.url)
    assert code == 2 and "'sleeping' is not one of creating, running, degraded, failed, deleting, deleted" in err
    assert api.seen == []


# --- deployments scale, restart, delete ----------------------------------------------------------------------


def test_scale_sends_the_scale_request(api: FakeApi, capsys) -> None:
    api.on(
        "POST",
        f"/deployments/{DEPLOYMENT}/scale",
        ok(view(DeploymentStatus.DEGRADED, task(), task(TaskStatus.PENDING, slot=1), desired=3)),
    )
    code, out, err = run(capsys, "deployments", "scale", DEPLOYMENT, "3", "--url", api.url)
    assert (code, err) == (0, "")
    assert ScaleRequest.model_validate(api.seen[-1].body) == ScaleRequest(replicas=3)
    assert out == f"{DEPLOYMENT} degraded: 1/3 healthy, 1 running\n"
    code, out, _ = run(capsys, "deployments", "scale", DEPLOYMENT, "3", "--url", api.url, "--json")
    assert json.loads(out)["replicas"]["desired"] == 3


def test_scale_refusals(api: FakeApi, capsys) -> None:
    code, _, err = run(capsys, "deployments", "scale", DEPLOYMENT, "65", "--url", api.url)
    assert code == 2 and "replicas: Input should be less than or equal to 64" in err and api.seen == []
    api.on(
        "POST",
        f"/deployments/{DEPLOYMENT}/scale",
        api_error(409, "Conflict", SCALE_QUOTA),
    )
    code, out, err = run(capsys, "deployments", "scale", DEPLOYMENT, "10", "--url", api.url)
    assert (code, out) == (1, "")
    assert one_line(err) == f"spothub deployments scale: 409 Conflict: {SCALE_QUOTA}"


def test_restart(api: FakeApi, capsys) -> None:
    api.on("POST", f"/deployments/{DEPLOYMENT}/restart", ok(view(DeploymentStatus.RUNNING, task())))
    code, out, err = run(capsys, "deployments", "restart", DEPLOYMENT, "--url", api.url)
    assert (code, err) == (0, "")
    assert "rolling restart asked" in out and "1/1 healthy" in out
    assert api.seen[-1].body is None
    code, out, _ = run(capsys, "deployments", "restart", DEPLOYMENT, "--url", api.url, "--json")
    assert json.loads(out)["deployment_id"] == DEPLOYMENT


def test_restart_while_deleting_is_a_409_line(api: FakeApi, capsys) -> None:
    deleting = f"deployment {DEPLOYMENT} is deleting: it cannot change any more"
    api.on("POST", f"/deployments/{DEPLOYMENT}/restart", api_error(409, "Conflict", deleting))
    code, _, err = run(capsys, "deployments", "restart", DEPLOYMENT, "--url", api.url)
    assert code == 1 and one_line(err) == f"spothub deployments restart: 409 Conflict: {deleting}"


def test_delete_and_delete_wait(api: FakeApi, capsys) -> None:
    deleting = view(DeploymentStatus.DELETING, task(TaskStatus.STOPPING))
    api.on("DELETE", f"/deployments/{DEPLOYMENT}", ok(deleting))
    code, out, err = run(capsys, "deployments", "delete", DEPLOYMENT, "--url", api.url)
    assert (code, err) == (0, "") and f"{DEPLOYMENT} deleting" in out
    assert len(api.seen) == 1

    api.on(
        "GET",
        f"/deployments/{DEPLOYMENT}/status",
        ok(deleting),
        ok(view(DeploymentStatus.DELETED, task(TaskStatus.STOPPED))),
    )
    code, out, err = run(capsys, "deployments", "delete", DEPLOYMENT, "--wait", "--interval", "0", "--url", api.url)
    assert code == 0, err
    assert f"slot 0 stopping on {NODE}" in err
    assert out.splitlines()[-1] == f"{DEPLOYMENT} deleted"


def test_delete_wait_ends_when_the_deployment_is_gone(api: FakeApi, capsys) -> None:
    api.on("DELETE", f"/deployments/{DEPLOYMENT}", ok(view(DeploymentStatus.DELETING, task(TaskStatus.STOPPING))))
    api.on(
        "GET",
        f"/deployments/{DEPLOYMENT}/status",
        ok(view(DeploymentStatus.DELETING, task(TaskStatus.STOPPING))),
        api_error(404, "NotFound", f"no deployment {DEPLOYMENT}"),
    )
    code, out, err = run(
        capsys, "deployments", "delete", DEPLOYMENT, "--wait", "--interval", "0", "--json", "--url", api.url
    )
    assert code == 0, err
    assert json.loads(out) == {"deployment_id": DEPLOYMENT, "status": "deleted", "tasks": []}


def test_delete_of_an_unknown_deployment_is_a_404_line(api: FakeApi, capsys) -> None:
    api.on("DELETE", "/deployments/d-999999", api_error(404, "NotFound", "no deployment d-999999"))
    code, _, err = run(capsys, "deployments", "delete", "d-999999", "--wait", "--url", api.url)
    assert code == 1 and one_line(err) == "spothub deployments delete: 404 Not Found: no deployment d-999999"


# --- nodes ------------------------------------------------------------------------------------------------------


def test_nodes_alone_lists_them_and_list_json(api: FakeApi, capsys) -> None:
    api.on("GET", "/nodes", ok(NodesView(nodes=[node(), node(NodeStatus.CORDONED, allocated=0, instance_id="i-2")])))
    code, out, err = run(capsys, "--url", api.url, "nodes")
    assert (code, err) == (0, "")
    for text in (NODE, "ready", "cordoned", "g5.12xlarge", "gpu4", "1/4", "42%"):
        assert text in out
    code, out, _ = run(capsys, "--json", "nodes", "list", "--url", api.url)
    assert code == 0 and len(NodesView.model_validate(json.loads(out)).nodes) == 2
    api.on("GET", "/nodes", ok(NodesView(nodes=[])))
    code, out, _ = run(capsys, "nodes", "list", "--url", api.url)
    assert code == 0 and out.startswith("no GPU node")


def test_nodes_show(api: FakeApi, capsys) -> None:
    api.on("GET", f"/nodes/{NODE}", ok(node(NodeStatus.DRAINING, status_reason="drained by ops: kernel update")))
    code, out, err = run(capsys, "nodes", "show", NODE, "--url", api.url)
    assert (code, err) == (0, "")
    for text in ("draining", "drained by ops: kernel update", "us-west-2", DEPLOYMENT, "t-00000000", "running"):
        assert text in out
    code, out, _ = run(capsys, "nodes", "show", NODE, "--url", api.url, "--json")
    assert NodeView.model_validate(json.loads(out)).status == NodeStatus.DRAINING


def test_nodes_show_unknown_is_a_404_line(api: FakeApi, capsys) -> None:
    api.on("GET", "/nodes/i-nope", api_error(404, "NotFound", "no GPU node i-nope"))
    code, _, err = run(capsys, "nodes", "show", "i-nope", "--url", api.url)
    assert code == 1 and one_line(err) == "spothub nodes show: 404 Not Found: no GPU node i-nope"


@pytest.mark.parametrize(
    ("operation", "status", "said"),
    [
        ("cordon", NodeStatus.CORDONED, "takes no new placements"),
        ("uncordon", NodeStatus.READY, "takes placements again"),
        ("drain", NodeStatus.DRAINING, "its tasks are replaced elsewhere, then stopped"),
    ],
)
def test_node_operations(api: FakeApi, capsys, operation: str, status: NodeStatus, said: str) -> None:
    api.on("POST", f"/nodes/{NODE}/{operation}", ok(node(status)))
    code, out, err = run(capsys, "nodes", operation, NODE, "--reason", "kernel update", "--url", api.url)
    assert (code, err) == (0, "")
    assert out.startswith(f"{NODE} {status.value}: ") and out.endswith(f"{said} (1/4 allocated, 3 free, 1 task(s))\n")
    assert NodeOperation.model_validate(api.seen[-1].body) == NodeOperation(reason="kernel update")

    code, out, _ = run(capsys, "nodes", operation, NODE, "--url", api.url, "--json")
    assert code == 0 and json.loads(out)["status"] == status.value
    assert api.seen[-1].body == {}  # no reason given: the model's default, an empty object


def test_node_operation_refusals(api: FakeApi, capsys) -> None:
    code, _, err = run(capsys, "nodes", "drain", NODE, "--reason", "x" * 201, "--url", api.url)
    assert code == 2 and "reason: String should have at most 200 characters" in err and api.seen == []
    refused = f"node {NODE} is interrupted: uncordon applies to a node that is cordoned or draining"
    api.on("POST", f"/nodes/{NODE}/uncordon", api_error(409, "Conflict", refused))
    code, _, err = run(capsys, "nodes", "uncordon", NODE, "--url", api.url)
    assert code == 1 and one_line(err) == f"spothub nodes uncordon: 409 Conflict: {refused}"


# --- resources, gpu-utilization, scaling-events, health ------------------------------------------------------------


def test_resources(api: FakeApi, capsys) -> None:
    answer = ResourcesView(
        resources=[
            GpuCount(region="us-west-2", instance_type="g5.12xlarge", nodes=2, total=8, allocated=5, free=3),
            GpuCount(region="eu-west-1", instance_type="g5.xlarge", nodes=1, total=1, allocated=0, free=0),
        ],
        total=9,
        allocated=5,
        free=3,
    )
    api.on("GET", "/resources/available", ok(answer))
    code, out, err = run(capsys, "resources", "--url", api.url)
    assert (code, err) == (0, "")
    assert "GPUs: 9 total, 5 allocated, 3 free" in out and "g5.12xlarge" in out and "eu-west-1" in out
    code, out, _ = run(capsys, "resources", "--url", api.url, "--json")
    assert ResourcesView.model_validate(json.loads(out)) == answer
    api.on("GET", "/resources/available", ok(ResourcesView(resources=[], total=0, allocated=0, free=0)))
    code, out, _ = run(capsys, "resources", "--url", api.url)
    assert "no GPU node" in out


def test_gpu_utilization(api: FakeApi, capsys) -> None:
    answer = UtilizationView(
        nodes=[
            NodeUtilization(
                instance_id=NODE,
                region="us-west-2",
                last_heartbeat="2026-11-27T16:05:00Z",
                utilization_pct=45.0,
                gpus=[
                    GpuView(
                        uuid="GPU-aaaa",
                        index=0,
                        utilization_pct=90.0,
                        memory_used_mib=20000,
                        memory_total_mib=24576,
                        deployment_id=DEPLOYMENT,
                    ),
                    GpuView(
                        uuid="GPU-bbbb",
                        index=1,
                        utilization_pct=None,
                        memory_used_mib=None,
                        memory_total_mib=None,
                        deployment_id=None,
                    ),
                ],
            )
        ],
        deployments=[DeploymentUtilization(deployment_id=DEPLOYMENT, utilization_pct=90.0, gpus=1, target_pct=70.0)],
    )
    api.on("GET", "/gpu-utilization", ok(answer))
    code, out, err = run(capsys, "gpu-utilization", "--url", api.url)
    assert (code, err) == (0, "")
    for text in (DEPLOYMENT, "90%", "70%", "20000/24576", "GPU-aaaa", "GPU-bbbb"):
        assert text in out
    code, out, _ = run(capsys, "gpu-utilization", "--url", api.url, "--json")
    assert UtilizationView.model_validate(json.loads(out)) == answer


def test_scaling_events(api: FakeApi, capsys) -> None:
    answer = ScalingEventsPage(
        events=[
            ScalingEventView(
                event_id="e-2",
                deployment_id=DEPLOYMENT,
                trigger=ScalingTrigger.AUTOSCALE,
                reason="GPU utilization 92% over the target 70%",
                before=2,
                after=3,
                result=ScalingResult.APPLIED,
                at="2026-11-27T16:10:00Z",
            ),
            ScalingEventView(
                event_id="e-1",
                deployment_id=DEPLOYMENT,
                trigger=ScalingTrigger.RECOVERY,
                reason="slot 1 stopped (exit code 137): restarted",
                before=2,
                after=2,
                result=ScalingResult.APPLIED,
                at="2026-11-27T16:05:00Z",
            ),
        ]
    )
    api.on("GET", "/scaling/events", ok(answer))
    code, out, err = run(capsys, "scaling-events", "--deployment", DEPLOYMENT, "--limit", "5", "--url", api.url)
    assert (code, err) == (0, "")
    assert api.seen[-1].query == {"deployment_id": [DEPLOYMENT], "limit": ["5"]}
    for text in ("autoscale", "recovery", "2 -> 3", "applied", "GPU utilization 92% over the target 70%"):
        assert text in out
    assert out.index("16:10:00") < out.index("16:05:00")  # newest first, as answered
    code, out, _ = run(capsys, "scaling-events", "--url", api.url, "--json")
    assert ScalingEventsPage.model_validate(json.loads(out)) == answer and api.seen[-1].query == {}
    api.on("GET", "/scaling/events", ok(ScalingEventsPage(events=[])))
    code, out, _ = run(capsys, "scaling-events", "--url", api.url)
    assert (code, out) == (0, "no scaling events\n")


def test_health_exits_1_when_unhealthy(api: FakeApi, capsys) -> None:
    healthy = InfrastructureHealth(
        healthy=True,
        nodes_ready=2,
        nodes_total=2,
        stuck_deployments=[],
        alarms_in_alarm=[],
        checks=[HealthCheck(name="controller", ok=True, detail="ran 20 s ago")],
    )
    api.on("GET", "/health", ok(healthy))
    code, out, err = run(capsys, "health", "--url", api.url)
    assert (code, err) == (0, "") and "healthy" in out and "2/2" in out and "ran 20 s ago" in out

    unhealthy = InfrastructureHealth(
        healthy=False,
        nodes_ready=1,
        nodes_total=2,
        stuck_deployments=[DEPLOYMENT],
        alarms_in_alarm=["spothub-deployment-controller-errors"],
        checks=[
            HealthCheck(name="controller", ok=True, detail="ran 20 s ago"),
            HealthCheck(name="deployments", ok=False, detail=f"{DEPLOYMENT} creating for 31 min"),
        ],
    )
    api.on("GET", "/health", ok(unhealthy))
    code, out, err = run(capsys, "health", "--url", api.url)
    assert code == 1
    assert "unhealthy" in out and "1/2" in out and DEPLOYMENT in out and "spothub-deployment-controller-errors" in out
    assert one_line(err) == "spothub health: unhealthy (deployments)"
    code, out, _ = run(capsys, "health", "--url", api.url, "--json")
    assert code == 1 and InfrastructureHealth.model_validate(json.loads(out)) == unhealthy


def test_a_server_error_while_waiting_is_ridden_out(api: FakeApi, capsys) -> None:
    api.on(
        "GET",
        f"/deployments/{DEPLOYMENT}/status",
        ok(view(DeploymentStatus.CREATING, task(TaskStatus.STARTING))),
        api_error(502, "BadGateway", "Internal server error"),
        ok(view(DeploymentStatus.RUNNING, task())),
    )
    code, _, err = run(capsys, "deployments", "status", DEPLOYMENT, "--wait", "--interval", "0", "--url", api.url)
    assert code == 0, err
    assert "(retrying: 502 Bad Gateway" in err

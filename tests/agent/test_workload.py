"""The workload runners behind one interface: a local process (the sandbox) and a container through the
Docker CLI (here a fake `docker` executable that answers from a JSON file and records its calls)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from spothub_agent.docker_runner import DockerWorkload
from spothub_agent.process_runner import ProcessWorkload, process_start_ticks
from spothub_agent.settings import DEFAULT_CONTAINER_FILTER, WorkloadSpec
from spothub_agent.state import AgentState
from spothub_agent.workload import http_ok
from tests.agent.conftest import INSTANCE_ID, HealthServer, wait_for, workload_command


def process_workload(tmp_path: Path, command: tuple[str, ...], health_url: str = "", lines: int = 5) -> ProcessWorkload:
    state = AgentState(tmp_path / "state", INSTANCE_ID)
    return ProcessWorkload(command, state, tmp_path / "state" / "workload.log", health_url, lines)


def test_a_process_keeps_its_last_lines_and_exit_code(tmp_path: Path) -> None:
    workload = process_workload(tmp_path, ("/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8; do echo line $i; done; exit 3"))
    workload.start()
    status = wait_for(lambda: (s := workload.status()).ended and s)
    assert status.state == "exited"
    assert status.exit_code == 3
    assert status.last_lines == ("line 4", "line 5", "line 6", "line 7", "line 8")  # the last 5 only


def test_a_process_runs_in_its_own_session_and_stops_with_sigterm(tmp_path: Path) -> None:
    workload = process_workload(tmp_path, workload_command(tmp_path))
    workload.start()
    wait_for(lambda: "serving" in workload.status().last_lines)
    assert workload.pid is not None
    assert os.getsid(workload.pid) == workload.pid
    result = workload.stop(5)
    assert (result.exit_code, result.forced) == (0, False)
    status = workload.status()
    assert status.state == "stopped"
    assert status.last_lines[-1] == "SIGTERM received, draining"


def test_status_answers_while_a_stop_waits_out_the_grace_period(tmp_path: Path) -> None:
    workload = process_workload(tmp_path, workload_command(tmp_path, ignore_term=True))
    workload.start()
    wait_for(lambda: "serving" in workload.status().last_lines)
    stopping = threading.Thread(target=workload.stop, args=(1.0,))
    stopping.start()
    wait_for(lambda: "ignoring SIGTERM" in workload.status().last_lines)
    started = time.monotonic()
    assert workload.status().state == "running"  # the heartbeat is not held up by the drain
    assert time.monotonic() - started < 0.5
    stopping.join(10)
    assert workload.status().exit_code == -signal.SIGKILL


def test_a_restarted_agent_adopts_the_running_process(tmp_path: Path) -> None:
    first = process_workload(tmp_path, workload_command(tmp_path))
    first.start()
    wait_for(lambda: "serving" in first.status().last_lines)
    # The agent dies (its Popen object is gone); the process lives on and is found again.
    second = process_workload(tmp_path, workload_command(tmp_path))
    second.start()
    assert second.pid == first.pid
    assert second.status().state == "running"
    assert "serving" in second.status().last_lines
    assert second.stop(5).forced is False
    wait_for(lambda: process_start_ticks(first.pid) is None)  # type: ignore[arg-type]  (a zombie counts as gone)
    # A third start finds it ended while "the agent was away": not started again.
    third = process_workload(tmp_path, workload_command(tmp_path))
    third.start()
    assert third.pid == first.pid
    assert third.status().state == "stopped"
    assert first._child is not None
    first._child.wait()  # the test process is still its parent: reap it


def test_a_process_that_cannot_start_is_unavailable(tmp_path: Path) -> None:
    workload = process_workload(tmp_path, ("/nonexistent/server",))
    workload.start()
    status = workload.status()
    assert status.state == "unavailable"
    assert "cannot start '/nonexistent/server'" in status.detail
    assert workload.stop(1).exit_code is None


def test_health_is_an_http_200(tmp_path: Path, health: HealthServer) -> None:
    assert not http_ok(health.url)
    health.status = 200
    assert http_ok(health.url)
    assert not http_ok("http://127.0.0.1:9/health", timeout=0.5)
    workload = process_workload(tmp_path, ("sleep", "30"), health_url=health.url)
    assert workload.healthy()
    no_url = process_workload(tmp_path, ("sleep", "30"))
    assert not no_url.healthy()  # not running yet
    no_url.start()
    assert no_url.healthy()  # without a health URL: healthy while running
    no_url.release()
    assert not no_url.healthy()


FAKE_DOCKER = """#!{python}
import json, sys
from pathlib import Path
state_file = Path({state!r})
state = json.loads(state_file.read_text())
args = sys.argv[1:]
state["calls"].append(args)
def save():
    state_file.write_text(json.dumps(state))
command = args[0]
containers = state["containers"]
if command == "ps":
    filters = [args[i + 1] for i, a in enumerate(args) if a == "--filter"]
    rows = [c for c in containers if all(f in c["matches"] for f in filters)]
    if "-q" in args:
        print("\\n".join(c["id"] for c in rows))
    else:
        print("\\n".join(c["id"] + "\\t" + c["state"] for c in rows))
elif command == "inspect":
    c = next(c for c in containers if c["id"] == args[-1])
    if "{{{{json .State}}}}" in args:
        running = c["state"] == "running"
        print(json.dumps({{"Status": c["state"], "Running": running, "ExitCode": c["exit_code"], "Error": ""}}))
    else:
        print(c["exit_code"])
elif command == "logs":
    c = next(c for c in containers if c["id"] == args[-1])
    print("\\n".join(c["logs"][-int(args[args.index("--tail") + 1]):]))
elif command == "stop":
    c = next(c for c in containers if c["id"] == args[-1])
    c["state"], c["exit_code"] = "exited", state.get("stop_exit_code", 0)
    c["logs"].append("shutting down")
elif command == "run":
    new = {{"id": "c-new", "state": "running", "exit_code": 0, "logs": ["started"]}}
    new["matches"] = ["name=^/spothub-workload$"]
    containers.insert(0, new)
    print("c-new")
save()
"""


def fake_docker(tmp_path: Path, containers: list[dict], **extra: object) -> tuple[str, Path]:
    state = tmp_path / "docker-state.json"
    state.write_text(json.dumps({"containers": containers, "calls": [], **extra}))
    executable = tmp_path / "docker"
    executable.write_text(FAKE_DOCKER.format(python=sys.executable, state=str(state)))
    executable.chmod(0o755)
    return str(executable), state


SERVING = DEFAULT_CONTAINER_FILTER  # what the default runner, docker-attach, looks for


def test_attach_watches_the_newest_running_container_ecs_started_and_never_starts_one(tmp_path: Path) -> None:
    docker, state_file = fake_docker(
        tmp_path,
        [
            {"id": "c-old", "state": "exited", "exit_code": 1, "logs": ["oom"], "matches": [SERVING]},
            {"id": "c-2", "state": "running", "exit_code": 0, "logs": ["a", "b", "ready"], "matches": [SERVING]},
            {"id": "c-other", "state": "running", "exit_code": 0, "logs": [], "matches": ["label=x"]},
        ],
        stop_exit_code=0,
    )
    workload = DockerWorkload(WorkloadSpec(), "", 2, docker=docker)
    workload.start()
    status = workload.status()
    assert (status.state, status.last_lines) == ("running", ("b", "ready"))
    result = workload.stop(30)
    assert (result.exit_code, result.forced) == (0, False)
    assert workload.status().state == "stopped"
    calls = json.loads(state_file.read_text())["calls"]
    assert ["stop", "--time", "30", "c-2"] in calls
    assert not any(call[0] == "run" for call in calls)


def test_attach_before_ecs_started_the_container_is_waiting(tmp_path: Path) -> None:
    docker, _ = fake_docker(tmp_path, [])
    workload = DockerWorkload(WorkloadSpec(), "", 5, docker=docker)
    workload.start()
    assert workload.status().state == "waiting"
    assert workload.stop(10).error == ""  # nothing to drain is not a failure


def test_a_container_killed_after_the_grace_period_is_forced(tmp_path: Path) -> None:
    docker, _ = fake_docker(
        tmp_path,
        [{"id": "c-1", "state": "running", "exit_code": 0, "logs": [], "matches": [SERVING]}],
        stop_exit_code=137,
    )
    result = DockerWorkload(WorkloadSpec(), "", 5, docker=docker).stop(2.2)
    assert (result.exit_code, result.forced) == (137, True)


def test_the_docker_runner_starts_its_container_once_and_adopts_it_after(tmp_path: Path) -> None:
    docker, state_file = fake_docker(tmp_path, [])
    spec = WorkloadSpec(runner="docker", image="lmsysorg/sglang:v0.4", args=("python3", "-m", "sglang"))
    DockerWorkload(spec, "", 5, docker=docker).start()
    again = DockerWorkload(spec, "", 5, docker=docker)
    again.start()
    assert again.status().state == "running"
    runs = [call for call in json.loads(state_file.read_text())["calls"] if call[0] == "run"]
    assert runs == [
        [
            "run",
            "-d",
            "--name",
            "spothub-workload",
            "--network",
            "host",
            "--gpus",
            "all",
            "lmsysorg/sglang:v0.4",
            "python3",
            "-m",
            "sglang",
        ]
    ]


def test_no_docker_cli_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    workload = DockerWorkload(WorkloadSpec(), "", 5, docker=str(tmp_path / "no-docker"))
    workload.start()
    status = workload.status()
    assert status.state == "unavailable"
    assert "CLI is not installed" in status.detail
    assert "not installed" in workload.stop(5).error


@pytest.fixture(autouse=True)
def _reap_children() -> None:
    yield
    # Any process a failing test left behind is ended with its session.
    for child in Path("/proc").glob("[0-9]*"):
        try:
            if int((child / "stat").read_text().split(") ")[1].split()[1]) == os.getpid():
                os.killpg(int(child.name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue

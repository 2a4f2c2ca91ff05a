"""The agent finds the serving container by the labels the ECS agent really sets on it.

The ECS container agent labels every container it starts with its cluster, task ARN, task definition
family and version, and the container's name in the task definition
(`com.amazonaws.ecs.container-name`). Here a fake `docker` CLI, first on PATH, holds such containers and
answers `docker ps --filter ...` as Docker does (only what matches every filter; an unknown filter is an
error); the container name comes from the synthesized serving task definition, and the agent runs with
its default settings, so a filter naming any other container finds nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Template

from spothub_agent.settings import Settings
from spothub_agent.state import AgentState
from spothub_agent.workload import make_workload
from stacks.config import SpothubConfig
from stacks.constructs.serving_task import ServingTask
from tests.agent.conftest import INSTANCE_ID

CLUSTER = "spothub-gpu"
TASK_ARN = "arn:aws:ecs:us-west-2:123456789012:task/spothub-gpu/0123456789abcdef0123456789abcdef"

FAKE_DOCKER = r"""#!{python}
import json, re, sys
from pathlib import Path

state_file = Path({state!r})
state = json.loads(state_file.read_text())
args = sys.argv[1:]
state["calls"].append(args)
state_file.write_text(json.dumps(state))
containers = state["containers"]


def matches(container, expression):
    kind, _, value = expression.partition("=")
    if kind == "label":
        key, has_value, wanted = value.partition("=")
        return key in container["labels"] and (not has_value or container["labels"][key] == wanted)
    if kind == "name":
        return re.search(value, "/" + container["name"]) is not None
    if kind == "id":
        return container["id"].startswith(value)
    if kind == "status":
        return container["state"] == value
    sys.exit("Error response from daemon: invalid filter '" + kind + "'")


def find(reference):
    return next(c for c in containers if c["id"] == reference)


command = args[0]
if command == "ps":
    filters = [args[i + 1] for i, a in enumerate(args) if a == "--filter"]
    listed = [c for c in containers if ("-a" in args or c["state"] == "running")]
    rows = [c for c in listed if all(matches(c, f) for f in filters)]
    if "-q" in args:
        print("\n".join(c["id"] for c in rows))
    else:
        print("\n".join(c["id"] + "\t" + c["state"] for c in rows))
elif command == "inspect":
    container = find(args[-1])
    if "{{{{json .State}}}}" in args:
        state_json = {{"Status": container["state"], "Running": container["state"] == "running"}}
        print(json.dumps({{**state_json, "ExitCode": container["exit_code"], "Error": ""}}))
    else:
        print(container["exit_code"])
elif command == "logs":
    print("\n".join(find(args[-1])["logs"]))
elif command == "stop":
    container = find(args[-1])
    container["state"], container["exit_code"] = "exited", 0
    state_file.write_text(json.dumps(state))
else:
    sys.exit("fake docker: " + command + " is not expected here")
"""


@pytest.fixture(scope="module")
def serving_container_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The container's name in the synthesized serving task definition."""
    app = App(outdir=str(tmp_path_factory.mktemp("serving-task")))
    stack = Stack(app, "Serving")
    config = SpothubConfig.from_context({"hubRegion": "us-east-1", "workerRegions": "us-west-2"})
    ServingTask(
        stack,
        "Serving",
        config=config,
        model_cache_mount="/mnt/model-cache",
        log_group=logs.LogGroup(stack, "Logs"),
    )
    (definition,) = Template.from_stack(stack).find_resources("AWS::ECS::TaskDefinition").values()
    (container,) = definition["Properties"]["ContainerDefinitions"]
    return container["Name"]


def ecs_labels(container_name: str, family: str = "spothub-serving") -> dict[str, str]:
    """The labels the ECS container agent sets on a container it starts."""
    return {
        "com.amazonaws.ecs.cluster": CLUSTER,
        "com.amazonaws.ecs.container-name": container_name,
        "com.amazonaws.ecs.task-arn": TASK_ARN,
        "com.amazonaws.ecs.task-definition-family": family,
        "com.amazonaws.ecs.task-definition-version": "3",
    }


@pytest.fixture
def docker_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serving_container_name: str) -> Path:
    """A fake `docker` first on PATH, with the serving container ECS started, the ECS agent's own container
    (no task labels) and a container of another task; returns its state file."""
    containers = [
        {"id": "ecs-agent-id", "name": "ecs-agent", "state": "running", "exit_code": 0, "labels": {}, "logs": []},
        {
            "id": "other-task-id",
            "name": "ecs-other-1-sidecar-a1b2c3",
            "state": "running",
            "exit_code": 0,
            "labels": ecs_labels("sidecar", family="other"),
            "logs": ["sidecar"],
        },
        {
            "id": "serving-id",
            "name": f"ecs-spothub-serving-3-{serving_container_name}-d4e5f6",
            "state": "running",
            "exit_code": 0,
            "labels": ecs_labels(serving_container_name),
            "logs": ["loading weights", "The server is fired up and ready to roll!"],
        },
    ]
    state = tmp_path / "docker-state.json"
    state.write_text(json.dumps({"containers": containers, "calls": []}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable, state=str(state)))
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    return state


def test_the_agent_watches_the_container_ecs_started_for_the_serving_task(tmp_path: Path, docker_on_path: Path) -> None:
    settings = Settings(health_url="")  # the defaults the agent runs with on an instance
    workload = make_workload(settings, AgentState(tmp_path / "state", INSTANCE_ID))
    workload.start()
    status = workload.status()
    assert status.state == "running", status.detail
    assert status.last_lines[-1] == "The server is fired up and ready to roll!"

    result = workload.stop(30)
    assert (result.exit_code, result.forced, result.error) == (0, False, "")
    calls = json.loads(docker_on_path.read_text())["calls"]
    assert ["stop", "--time", "30", "serving-id"] in calls, "the drain stops the serving container, no other"
    assert not any(call[0] in ("run", "start", "rm") for call in calls), "the agent never starts a container"


def test_the_default_filter_names_the_container_of_the_task_definition(serving_container_name: str) -> None:
    assert Settings().workload.container_filter == f"label=com.amazonaws.ecs.container-name={serving_container_name}"

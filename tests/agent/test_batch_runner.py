"""Batch mode's runners of a batch's container: the process runner (the sandbox) with a small Python job, and
the docker runner's command lines against a fake `docker` CLI (no Docker here), the exit-125 image failures,
stops, and the clean-up after an agent that was killed mid-batch."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from spothub_agent.aws import AwsClients
from spothub_agent.batch import BatchWorker
from spothub_agent.batch_runner import (
    DockerBatchRunner,
    ProcessBatchRunner,
    RunnerUnavailable,
    container_name,
    image_failure,
)
from spothub_agent.config import AgentConfig
from spothub_agent.imds import Imds
from spothub_agent.process_runner import boot_id, process_start_ticks
from spothub_agent.settings import Settings
from spothub_agent.state import AgentState
from spothub_core.models.batch_workers import BatchAssignment
from tests.agent.conftest import HUB_REGION, INSTANCE_ID, REGION, wait_for

JOB = """
import json, os, signal, sys, time
print("input", os.environ["SPOTHUB_BATCH_INPUT_DIR"], flush=True)
print("output", os.environ["SPOTHUB_BATCH_OUTPUT_DIR"], flush=True)
print("image", os.environ["SPOTHUB_BATCH_IMAGE"], flush=True)
print("command", json.loads(os.environ["SPOTHUB_BATCH_JOB_COMMAND"]), flush=True)
mode = sys.argv[1]
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM", flush=True))
if mode in ("ignore-term", "sleep"):
    print("sleeping", flush=True)
    while True:
        time.sleep(0.05)
sys.exit(int(mode))
"""

FAKE_DOCKER = """#!{python}
import json, os, pathlib, signal, sys, time
home = pathlib.Path(os.environ["FAKE_DOCKER_HOME"])
args = sys.argv[1:]
with (home / "calls.jsonl").open("a") as calls:
    calls.write(json.dumps(args) + "\\n")
command = args[0]
if command == "run":
    rest, image = args[1:], None
    while rest:
        if rest[0] in ("--name", "--gpus", "-v"):
            rest = rest[2:]
        elif rest[0].startswith("-"):
            rest = rest[1:]
        else:
            image = rest[0]
            break
    name = args[args.index("--name") + 1]
    if image.startswith("missing/"):
        print(f"Unable to find image '{{image}}' locally", file=sys.stderr, flush=True)
        print(f"docker: Error response from daemon: pull access denied for {{image}}, repository does not exist "
              "or may require 'docker login': denied: requested access to the resource is denied.", file=sys.stderr)
        sys.exit(125)
    (home / f"{{name}}.pid").write_text(str(os.getpid()))
    print("container output", flush=True)
    if image == "slow":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        while True:
            time.sleep(0.05)
    sys.exit(0)
if command in ("stop", "rm"):
    pid_file = home / f"{{args[-1]}}.pid"
    if not pid_file.exists():
        print(f"Error response from daemon: No such container: {{args[-1]}}", file=sys.stderr)
        sys.exit(1)
    try:
        os.kill(int(pid_file.read_text()), signal.SIGTERM if command == "stop" else signal.SIGKILL)
    except ProcessLookupError:
        pass
    pid_file.unlink()
    sys.exit(0)
sys.exit(2)
"""


def assignment(image: str = "registry.example.com/team/transform:1.2", **changes: Any) -> BatchAssignment:
    return BatchAssignment(
        **{
            "batch_id": "b-0000042",
            "file_names": ["a.txt"],
            "input_bucket": "in",
            "input_prefix": "p/",
            "output_bucket": "out",
            "output_prefix": "q/",
            "attempt": 1,
            "image": image,
            "command": ["python", "transform.py", "--size", "512"],
            "ack_timeout_s": 60,
            "processing_timeout_s": 600,
            **changes,
        }
    )


@pytest.fixture
def state(tmp_path: Path) -> AgentState:
    return AgentState(tmp_path / "state", INSTANCE_ID)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    inputs, outputs = tmp_path / "batch" / "Inputs", tmp_path / "batch" / "Outputs"
    inputs.mkdir(parents=True)
    outputs.mkdir(parents=True)
    return inputs, outputs


def finish(runner: Any, timeout: float = 10.0) -> int:
    return wait_for(lambda: runner.poll() is not None, timeout) and runner.poll()


# --- the process runner ------------------------------------------------------------------------------


def process_runner(tmp_path: Path, state: AgentState, mode: str) -> ProcessBatchRunner:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    return ProcessBatchRunner((sys.executable, str(script), mode), state, tmp_path / "state", last_lines=20)


def test_the_process_runner_tells_the_job_its_batch_and_keeps_its_output(
    tmp_path: Path, state: AgentState, dirs: tuple[Path, Path]
) -> None:
    runner = process_runner(tmp_path, state, "0")
    runner.start(assignment(), *dirs)
    assert finish(runner) == 0
    run = runner.result()
    assert run.exit_code == 0
    assert not run.stopped
    assert not run.image_failed
    assert run.last_lines == (
        f"input {dirs[0]}",
        f"output {dirs[1]}",
        "image registry.example.com/team/transform:1.2",
        "command ['python', 'transform.py', '--size', '512']",
    )
    record = state.batch["run"]
    assert record["runner"] == "process"
    assert record["boot_id"] == boot_id()
    # The next batch's output replaces it; the previous batch's is kept once.
    runner.start(assignment(), *dirs)
    finish(runner)
    assert (tmp_path / "state" / "batch.log.1").read_text().startswith("input ")


def test_a_process_that_exits_125_saying_the_image_cannot_be_pulled_is_an_image_failure(
    tmp_path: Path, state: AgentState, dirs: tuple[Path, Path]
) -> None:
    script = tmp_path / "bad.py"
    script.write_text('import sys; print("pull access denied for nope/nope:1", flush=True); sys.exit(125)')
    runner = ProcessBatchRunner((sys.executable, str(script)), state, tmp_path / "state", last_lines=20)
    runner.start(assignment("nope/nope:1"), *dirs)
    finish(runner)
    assert runner.result().image_failed


def test_a_stop_terminates_the_process_and_kills_it_after_the_grace_period(
    tmp_path: Path, state: AgentState, dirs: tuple[Path, Path]
) -> None:
    runner = process_runner(tmp_path, state, "sleep")
    runner.start(assignment(), *dirs)
    wait_for(lambda: "sleeping" in runner.last_lines())
    runner.stop(2.0)
    run = runner.result()
    assert run.stopped
    assert run.exit_code == -signal.SIGTERM
    stubborn = process_runner(tmp_path, state, "ignore-term")
    stubborn.start(assignment(), *dirs)
    wait_for(lambda: "sleeping" in stubborn.last_lines())
    started = time.monotonic()
    stubborn.stop(0.3)
    assert time.monotonic() - started < 3
    assert stubborn.result().exit_code == -signal.SIGKILL
    assert "ignoring SIGTERM" in stubborn.last_lines()


def test_a_process_that_cannot_start_makes_the_runner_unavailable(
    tmp_path: Path, state: AgentState, dirs: tuple[Path, Path]
) -> None:
    runner = ProcessBatchRunner((str(tmp_path / "no-such-program"),), state, tmp_path / "state", last_lines=20)
    with pytest.raises(RunnerUnavailable, match="cannot start"):
        runner.start(assignment(), *dirs)


def test_clean_up_stops_the_leftover_of_a_killed_agent_and_nothing_else(tmp_path: Path, state: AgentState) -> None:
    runner = process_runner(tmp_path, state, "0")
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        ticks = process_start_ticks(leftover.pid)
        record = {"runner": "process", "pid": leftover.pid, "start_ticks": ticks, "boot_id": boot_id()}
        # Another boot's record, or the pid now another process's: left alone.
        runner.clean_up({**record, "pid": bystander.pid, "boot_id": "another-boot"})
        runner.clean_up({**record, "pid": bystander.pid, "start_ticks": ticks + 12_345})
        runner.clean_up({**record, "runner": "docker"})
        assert leftover.poll() is None
        assert bystander.poll() is None
        runner.clean_up(record)
        assert leftover.wait(5) == -signal.SIGKILL
        assert bystander.poll() is None
    finally:
        for process in (leftover, bystander):
            process.kill()
            process.wait(5)


# --- the docker runner (a fake docker CLI) -----------------------------------------------------------


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "docker-home"
    home.mkdir()
    cli = tmp_path / "docker"
    cli.write_text(FAKE_DOCKER.format(python=sys.executable))
    cli.chmod(0o755)
    monkeypatch.setenv("FAKE_DOCKER_HOME", str(home))
    return cli


def docker_calls(docker: Path) -> list[list[str]]:
    path = docker.parent / "docker-home" / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def docker_runner(docker: Path, state: AgentState, tmp_path: Path, gpus: bool = True) -> DockerBatchRunner:
    return DockerBatchRunner(state, tmp_path / "state", 20, lambda: gpus, docker=str(docker))


@pytest.mark.parametrize("gpus", [True, False])
def test_the_docker_command_mounts_the_batch_and_asks_for_gpus_only_where_there_are_some(
    docker: Path, state: AgentState, tmp_path: Path, dirs: tuple[Path, Path], gpus: bool
) -> None:
    runner = docker_runner(docker, state, tmp_path, gpus)
    inputs, outputs = dirs
    expected = [
        "run",
        "--rm",
        "--name",
        "spothub-batch-b-0000042",
        *(["--gpus", "all"] if gpus else []),
        "-v",
        f"{inputs}:/app/Inputs",
        "-v",
        f"{outputs}:/app/Outputs",
        "registry.example.com/team/transform:1.2",
        "python",
        "transform.py",
        "--size",
        "512",
    ]
    assert runner.run_command(assignment(), inputs, outputs) == [str(docker), *expected]
    runner.start(assignment(), inputs, outputs)
    assert finish(runner) == 0
    assert docker_calls(docker) == [expected]
    assert runner.result().last_lines == ("container output",)
    assert state.batch["run"] == {"runner": "docker", "container": "spothub-batch-b-0000042"}


def test_docker_run_exiting_125_because_the_image_cannot_be_pulled_is_an_image_failure(
    docker: Path, state: AgentState, tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    runner = docker_runner(docker, state, tmp_path)
    runner.start(assignment("missing/image:1"), *dirs)
    assert finish(runner) == 125
    run = runner.result()
    assert run.image_failed
    assert "pull access denied for missing/image:1" in run.last_lines[-1]


@pytest.mark.parametrize(
    ("exit_code", "output", "failed"),
    [
        (125, "docker: Error response from daemon: pull access denied for x, repository does not exist", True),
        (125, "docker: Error response from daemon: manifest for x:9 not found: manifest unknown", True),
        (125, 'docker: Error response from daemon: failed to resolve reference "x:1": x:1: not found', True),
        (125, 'docker: Error response from daemon: Conflict. The container name "/c" is already in use', False),
        (1, "pull access denied for x", False),
        (0, "", False),
    ],
)
def test_which_failures_are_the_image(exit_code: int, output: str, failed: bool) -> None:
    assert image_failure(exit_code, ["Unable to find image 'x:1' locally", output]) is failed


def test_a_stop_is_docker_stop_of_the_batchs_container(
    docker: Path, state: AgentState, tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    runner = docker_runner(docker, state, tmp_path)
    runner.start(assignment("slow"), *dirs)
    wait_for(lambda: "container output" in runner.last_lines())
    runner.stop(10)
    run = runner.result()
    assert run.stopped
    assert run.exit_code == 143
    assert docker_calls(docker)[-1] == ["stop", "--time", "10", container_name("b-0000042")]


def test_clean_up_removes_the_container_a_killed_agent_left(
    docker: Path, state: AgentState, tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    first = docker_runner(docker, state, tmp_path)
    first.start(assignment("slow"), *dirs)
    wait_for(lambda: "container output" in first.last_lines())
    record = state.batch["run"]
    # The agent is gone; its successor finds the record in the state file.
    docker_runner(docker, state, tmp_path).clean_up(record)
    assert docker_calls(docker)[-1] == ["rm", "-f", "spothub-batch-b-0000042"]
    assert finish(first) == -signal.SIGKILL


def test_no_docker_cli_makes_the_runner_unavailable(state: AgentState, tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    runner = DockerBatchRunner(state, tmp_path / "state", 20, lambda: False, docker=str(tmp_path / "no-docker"))
    with pytest.raises(RunnerUnavailable, match="no-docker"):
        runner.start(assignment(), *dirs)


# --- GPUs: what gpu.py says, or the driver's device node ---------------------------------------------


class FakeGpu:
    def __init__(self, available: bool) -> None:
        self.available = available
        self.samples = 0

    def sample(self) -> dict[str, Any]:
        self.samples += 1
        return {"available": self.available, "reason": "" if self.available else "no GPU found"}

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("nvml", "device", "gpus"), [(True, False, True), (False, True, True), (False, False, False)])
def test_the_worker_asks_for_gpus_where_nvml_or_the_driver_sees_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nvml: bool, device: bool, gpus: bool
) -> None:
    node = tmp_path / "nvidiactl"
    if device:
        node.write_text("")
    monkeypatch.setattr("spothub_agent.batch.NVIDIA_DEVICE", node)
    config = AgentConfig(
        instance_id=INSTANCE_ID,
        region=REGION,
        availability_zone="us-west-2b",
        instance_type="g5.xlarge",
        prefix="spothub",
        hub_region=HUB_REGION,
        auto_scaling_group="",
        lifecycle_hook="",
        model_cache="",
        job_id="job-0123456789ab",
    )
    gpu = FakeGpu(nvml)
    worker = BatchWorker(
        config,
        Settings(state_dir=tmp_path / "state"),
        Imds("http://127.0.0.1:9"),
        AwsClients(REGION, HUB_REGION),
        gpu=gpu,  # type: ignore[arg-type]
    )
    assert isinstance(worker.runner, DockerBatchRunner)
    command = worker.runner.run_command(assignment(), tmp_path, tmp_path)
    assert ("--gpus" in command) is gpus
    worker.runner.run_command(assignment(), tmp_path, tmp_path)
    assert gpu.samples == 1  # looked at once

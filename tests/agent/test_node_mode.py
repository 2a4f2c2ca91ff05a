"""The agent in node mode (spothub_agent.node.NodeAgent) on a deployment node (tagged Service=model-node by its node
group): chosen by the tags, no lifecycle hook needed; registration and heartbeats with the GPU sample through the
reconnect watchdog; `ready` from the GPUs NVML sees; capacity notices published once, an interruption making the node
not ready (and no drain); and the service's own entry point (`python -m spothub_agent`) choosing node mode, its GPUs
read through the sandbox's stand-in NVML by the agent's unchanged gpu.py."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from spothub.sandbox import gpu_files
from spothub.sandbox.imds import InstanceMetadataServer
from spothub.sandbox.ports import free_port
from spothub_agent.config import ConfigError, load_config
from spothub_agent.gpu import GpuMonitor
from spothub_agent.imds import Imds
from spothub_agent.node import NodeAgent, gpus_seen
from spothub_agent.state import AgentState
from stacks.paths import LAMBDAS_DIR, WORKER_AGENT_DIR
from tests.agent.conftest import (
    API_URL_PARAMETER,
    HUB_REGION,
    INSTANCE_ID,
    PREFIX,
    REGION,
    Aws,
    FakeAutoScaling,
    FakeControlPlane,
    create_hub,
    fast_settings,
    wait_for,
)
from tests.agent.test_heartbeat_and_gpu import fake_pynvml, use_nvml

NODE_GROUP = f"{PREFIX}-nodes-4gpu"
NODE_TAGS = {
    "Service": "model-node",
    "spothub:prefix": PREFIX,
    "spothub:hub-region": HUB_REGION,
    "aws:autoscaling:groupName": NODE_GROUP,
}
NODE_IDENTITY = {
    "instanceId": INSTANCE_ID,
    "region": REGION,
    "availabilityZone": "us-west-2a",
    "instanceType": "g5.12xlarge",
    "accountId": "123456789012",
}
NODE_METADATA = {"instance-id": INSTANCE_ID, "instance-life-cycle": "spot"}


@pytest.fixture
def node_imds() -> Iterator[InstanceMetadataServer]:
    with InstanceMetadataServer(dict(NODE_METADATA), dict(NODE_TAGS), dict(NODE_IDENTITY)) as server:
        yield server


MakeNode = Callable[..., NodeAgent]


@pytest.fixture
def make_node(aws: Aws, node_imds: InstanceMetadataServer, state_dir: Path) -> Iterator[MakeNode]:
    """A node agent wired to the local IMDS, API and moto, started; stopped after the test."""
    started: list[tuple[NodeAgent, threading.Event]] = []

    def make(gpu: GpuMonitor | None = None, **changes: Any) -> NodeAgent:
        imds = Imds(node_imds.endpoint)
        agent = NodeAgent(load_config(imds), fast_settings(state_dir, **changes), imds, aws.clients, gpu=gpu)
        stop = threading.Event()
        agent.start(stop)
        started.append((agent, stop))
        return agent

    yield make
    for agent, stop in started:
        stop.set()
        agent.shutdown()


def heartbeats(api: FakeControlPlane) -> list[dict[str, Any]]:
    return [c.body for c in api.calls if c.action == "heartbeat"]


def agent_ready_metric() -> float | None:
    now = datetime.now(UTC)
    points = boto3.client("cloudwatch", region_name=REGION).get_metric_statistics(
        Namespace="Spothub",
        MetricName="AgentReady",
        Dimensions=[{"Name": "Prefix", "Value": PREFIX}, {"Name": "InstanceId", "Value": INSTANCE_ID}],
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(minutes=5),
        Period=600,
        Statistics=["Minimum"],
    )["Datapoints"]
    return points[0]["Minimum"] if points else None


# --- the mode, chosen by the tags --------------------------------------------------------------------------


def test_the_model_node_tag_chooses_node_mode_without_a_lifecycle_hook(node_imds: InstanceMetadataServer) -> None:
    config = load_config(Imds(node_imds.endpoint))
    assert config.node_mode and not config.search_mode and not config.batch_mode
    assert (config.auto_scaling_group, config.lifecycle_hook) == (NODE_GROUP, "")
    assert config.capacity_type == "spot"

    del node_imds.tags["aws:autoscaling:groupName"]  # not needed: reported when IMDS shows it
    assert load_config(Imds(node_imds.endpoint)).node_mode
    del node_imds.tags["spothub:hub-region"]
    with pytest.raises(ConfigError, match="spothub:hub-region"):
        load_config(Imds(node_imds.endpoint))
    node_imds.tags.update({"spothub:hub-region": HUB_REGION, "spothub:job-id": "job-1"})
    assert load_config(Imds(node_imds.endpoint)).batch_mode  # a batch job's tag wins, as over search mode


def test_gpus_seen_needs_an_available_sample_naming_a_gpu() -> None:
    assert gpus_seen({"available": True, "count": 2, "gpus": [{}, {}]})
    assert not gpus_seen({"available": True, "count": 0})
    assert not gpus_seen({"available": False, "reason": "no GPU found"})
    assert not gpus_seen({})


# --- registration, heartbeats, readiness -------------------------------------------------------------------------


def test_a_node_registers_and_heartbeats_its_gpus_and_runs_no_lifecycle(
    make_node: MakeNode, api: FakeControlPlane, autoscaling: FakeAutoScaling, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_nvml(monkeypatch, fake_pynvml(gpus=4))
    make_node()
    wait_for(lambda: len(heartbeats(api)) >= 2)
    registration = next(c.body for c in api.calls if c.action == "register")
    assert registration["group"] == NODE_GROUP and registration["instance_type"] == "g5.12xlarge"
    assert registration["capacity_type"] == "spot" and registration["region"] == REGION
    beat = heartbeats(api)[-1]
    assert beat["ready"] is True and beat["drained"] is False
    assert beat["workload"] == {"state": "none", "exit_code": None, "last_lines": []}
    assert beat["gpu"]["count"] == 4
    assert [g["uuid"] for g in beat["gpu"]["gpus"]] == [f"GPU-handle-{i}" for i in range(4)]
    assert [g["utilization_pct"] for g in beat["gpu"]["gpus"]] == [87] * 4
    wait_for(lambda: agent_ready_metric() is not None)
    assert agent_ready_metric() == 1.0
    assert (autoscaling.completed, autoscaling.heartbeats) == ([], [])  # no lifecycle hook on a node group


def test_a_node_whose_gpus_nvml_cannot_see_is_not_ready(make_node: MakeNode, api: FakeControlPlane) -> None:
    make_node()  # pynvml is not installed (conftest): no GPU seen
    wait_for(lambda: heartbeats(api))
    beat = heartbeats(api)[-1]
    assert beat["ready"] is False
    assert beat["gpu"] == {"available": False, "reason": "nvidia-ml-py (pynvml) is not installed"}
    wait_for(lambda: agent_ready_metric() is not None)
    assert agent_ready_metric() == 0.0


def test_an_interruption_is_published_once_and_the_node_is_not_ready_from_then_on(
    make_node: MakeNode,
    api: FakeControlPlane,
    *,
    aws: Aws,
    node_imds: InstanceMetadataServer,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_nvml(monkeypatch, fake_pynvml(gpus=4))
    make_node()
    wait_for(lambda: any(b["ready"] for b in heartbeats(api)))
    node_imds.metadata["events/recommendations/rebalance"] = json.dumps({"noticeTime": "2026-01-01T00:00:00Z"})
    notices = wait_for(lambda: aws.events("Spothub Capacity Notice"))
    assert notices[0]["detail"]["kind"] == "rebalance" and notices[0]["detail"]["instance_id"] == INSTANCE_ID
    assert heartbeats(api)[-1]["ready"] is True  # a rebalance recommendation: still serving

    action_time = (datetime.now(UTC) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    node_imds.metadata["spot/instance-action"] = json.dumps({"action": "terminate", "time": action_time})
    wait_for(lambda: len(aws.events("Spothub Capacity Notice")) == 2)
    wait_for(lambda: heartbeats(api)[-1]["drained"] is True)
    assert heartbeats(api)[-1]["ready"] is False
    assert aws.events("Spothub Drain Completed") == []  # nothing to drain: ECS stops the tasks with the node
    count = len(heartbeats(api))
    wait_for(lambda: len(heartbeats(api)) >= count + 3)
    assert len(aws.events("Spothub Capacity Notice")) == 2  # each notice once
    assert AgentState(state_dir, INSTANCE_ID).drain is not None  # a restarted agent still reports it going


def test_the_watchdog_registers_again_once_the_control_plane_answers(
    make_node: MakeNode, api: FakeControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_nvml(monkeypatch, fake_pynvml(gpus=1))
    api.fail_with = 503
    node = make_node()
    wait_for(lambda: len(api.calls) >= 3)  # tried, backed off, tried again
    api.fail_with = None
    wait_for(lambda: heartbeats(api) and api.calls[-1].action == "heartbeat" and api.calls[-1].instance_id)
    assert node.link.registrations >= 1
    api.known.clear()  # the control plane forgot the node: a 404 registers it again
    registered = node.link.registrations
    wait_for(lambda: node.link.registrations > registered)


# --- the service's entry point, with the sandbox's stand-in NVML ---------------------------------------------------


def test_python_m_spothub_agent_runs_node_mode_over_the_stand_in_nvml(tmp_path: Path) -> None:
    from moto.moto_api._internal.models import moto_api_backend  # noqa: PLC0415
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    credentials = {"AWS_ACCESS_KEY_ID": "AKIDAGENTTEST", "AWS_SECRET_ACCESS_KEY": "secret"}
    moto_api_backend.reset()
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    api = FakeControlPlane()
    gpus = tmp_path / "gpus"
    uuids = gpu_files.write_inventory(gpus, INSTANCE_ID, "g5.12xlarge")
    gpu_files.set_figures(gpus, uuids[1], utilization_pct=64)
    agent: subprocess.Popen[bytes] | None = None
    try:
        create_hub(endpoint_url=endpoint)
        boto3.client(
            "ssm", region_name=HUB_REGION, endpoint_url=endpoint, **_boto_credentials(credentials)
        ).put_parameter(Name=API_URL_PARAMETER, Value=api.url, Type="String")
        with InstanceMetadataServer(dict(NODE_METADATA), dict(NODE_TAGS), dict(NODE_IDENTITY)) as imds:
            environment = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOTHUB_", "PYTHONPATH"))},
                **credentials,
                # The stand-in first: the agent's own gpu.py imports `pynvml` and finds it.
                "PYTHONPATH": os.pathsep.join([str(gpu_files.STAND_IN_NVML), str(WORKER_AGENT_DIR), str(LAMBDAS_DIR)]),
                gpu_files.GPU_DIR_VARIABLE: str(gpus),
                "PYTHONUNBUFFERED": "1",
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_EC2_METADATA_DISABLED": "true",
                "SPOTHUB_IMDS_ENDPOINT": imds.endpoint,
                "SPOTHUB_AGENT_STATE_DIR": str(tmp_path / "state"),
                "SPOTHUB_AGENT_POLL_SECONDS": "0.1",
                "SPOTHUB_AGENT_HEARTBEAT_SECONDS": "0.2",
                "SPOTHUB_AGENT_BACKOFF_BASE_SECONDS": "0.05",
                "SPOTHUB_AGENT_BACKOFF_CAP_SECONDS": "0.5",
            }
            log = tmp_path / "agent.log"
            with log.open("wb") as output:
                agent = subprocess.Popen(
                    [sys.executable, "-m", "spothub_agent"],
                    cwd=WORKER_AGENT_DIR,
                    env=environment,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            wait_for(lambda: any(b["ready"] for b in heartbeats(api)), timeout=30)
            beat = next(b for b in heartbeats(api) if b["ready"])
            assert [g["uuid"] for g in beat["gpu"]["gpus"]] == uuids
            assert [g["utilization_pct"] for g in beat["gpu"]["gpus"]] == [0, 64, 0, 0]
            agent.terminate()
            assert agent.wait(15) == 0
            events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
            started = next(e for e in events if e["event"] == "node_mode_started")
            assert started["gpus"] == 4 and started["gpu_uuids"] == uuids
            assert events[-1]["event"] == "stopped"
            assert not any(e["event"].startswith(("lifecycle", "workload")) for e in events)
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait(10)
        api.stop()
        moto.stop()


def _boto_credentials(environment: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": environment["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": environment["AWS_SECRET_ACCESS_KEY"],
    }

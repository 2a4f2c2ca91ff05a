"""The reconnect watchdog: backoff with full jitter, re-reading the API URL from SSM, re-registering."""

from __future__ import annotations

import threading
import time

import pytest

from spothub_agent.backoff import Backoff
from tests.agent.conftest import INSTANCE_ID, Aws, FakeControlPlane, FakeWorkload, MakeAgent, wait_for


def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    ceiling = Backoff(0.5, 4.0, rand=lambda: 1.0)
    assert [ceiling.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    ceiling.reset()
    assert ceiling.next_delay() == 0.5
    floor = Backoff(0.5, 4.0, rand=lambda: 0.0)
    assert [floor.next_delay() for _ in range(3)] == [0.0, 0.0, 0.0]  # full jitter reaches down to 0
    jittered = Backoff(1.0, 8.0)
    delays = [jittered.next_delay() for _ in range(200)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 150  # random, not in step with other agents
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_registers_first_then_beats_and_keeps_the_assignment(
    make_agent: MakeAgent, api: FakeControlPlane, aws: Aws
) -> None:
    api.assignment = {"replica_id": "r-7", "launch_id": "l-1"}
    agent = make_agent(use=FakeWorkload())
    body = agent.heartbeat.beat()
    assert agent.link.beat(body)
    assert api.actions() == ["register", "heartbeat"]
    assert api.calls[0].body == {
        "region": "us-west-2",
        "availability_zone": "us-west-2b",
        "instance_type": "g5.xlarge",
        "group": "spothub-gpu",
        "capacity_type": "spot",
        "agent_version": "0.2.0",
    }
    assert set(api.calls[1].body) == {"ready", "workload", "gpu", "drained"}
    assert agent.state.assignment == {"replica_id": "r-7", "launch_id": "l-1"}


def test_a_forgotten_instance_registers_again_and_beats(make_agent: MakeAgent, api: FakeControlPlane) -> None:
    agent = make_agent(use=FakeWorkload())
    assert agent.link.beat(agent.heartbeat.beat())
    api.known.clear()  # the control plane's record expired
    assert agent.link.beat(agent.heartbeat.beat())
    assert api.actions() == ["register", "heartbeat", "heartbeat", "register", "heartbeat"]
    assert agent.link.registrations == 2


def test_api_down_for_a_while_backs_off_rereads_the_url_and_reregisters(
    make_agent: MakeAgent, api: FakeControlPlane, aws: Aws
) -> None:
    agent = make_agent(use=FakeWorkload(), heartbeat_s=0.02, backoff_base_s=0.05, backoff_cap_s=0.2)
    stop = threading.Event()
    loop = threading.Thread(target=agent.heartbeat.run, args=(stop,), daemon=True)
    loop.start()
    try:
        wait_for(lambda: api.actions()[:2] == ["register", "heartbeat"])
        api.stop()  # the API goes away ...
        down_at, beats_before = time.monotonic(), agent.heartbeat.beats
        wait_for(lambda: agent.heartbeat._backoff.failures >= 4)
        time.sleep(0.5)
        failures, down_for = agent.heartbeat._backoff.failures, time.monotonic() - down_at
        # Retries back off: far fewer than one attempt per heartbeat, never slower than the cap.
        beats_while_down = agent.heartbeat.beats - beats_before
        assert failures < beats_while_down
        assert failures >= down_for / 0.2 / 2
        # ... and comes back elsewhere: the agent finds the new URL in SSM and registers there.
        moved = FakeControlPlane()
        try:
            aws.set_api_url(moved.url)
            wait_for(lambda: moved.actions()[:2] == ["register", "heartbeat"])
            assert agent.link.api_url == moved.url
            wait_for(lambda: agent.heartbeat._backoff.failures == 0)
            assert moved.calls[0].instance_id == INSTANCE_ID
        finally:
            moved.stop()
    finally:
        stop.set()
        loop.join(5)
    # The metric went on while the API was down: one AgentReady datapoint per beat.
    assert agent.heartbeat.beats >= beats_while_down


def test_an_unpublished_api_url_is_retried_not_fatal(make_agent: MakeAgent, aws: Aws, api: FakeControlPlane) -> None:
    import boto3  # noqa: PLC0415

    boto3.client("ssm", region_name="us-east-1").delete_parameter(Name="/spothub/spothub/api-url")
    agent = make_agent(use=FakeWorkload())
    assert not agent.link.beat(agent.heartbeat.beat())
    aws.set_api_url(api.url)
    assert agent.link.beat(agent.heartbeat.beat())
    assert api.actions() == ["register", "heartbeat"]

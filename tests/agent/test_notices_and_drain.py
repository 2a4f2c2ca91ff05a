"""The interruption watch against a local IMDS: one event per notice, whatever the polling or restarts,
and the drain of an interruption inside its window (drain command, SIGTERM, outcome reported)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from spothub.sandbox.imds import InstanceMetadataServer
from spothub_agent.notices import Notice, parse_notice
from spothub_agent.process_runner import ProcessWorkload
from spothub_agent.settings import Settings, WorkloadSpec
from spothub_agent.state import AgentState
from spothub_core.timings import SPOT_NOTICE_WINDOW_SECONDS as NOTICE_WINDOW_S
from tests.agent.conftest import (
    BUS_NAME,
    HUB_REGION,
    INSTANCE_ID,
    Aws,
    FakeWorkload,
    MakeAgent,
    wait_for,
    workload_command,
)

CAPACITY_NOTICE = "Spothub Capacity Notice"
DRAIN_COMPLETED = "Spothub Drain Completed"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def interruption(seconds_ahead: float = 120) -> str:
    return json.dumps({"action": "terminate", "time": iso(datetime.now(UTC) + timedelta(seconds=seconds_ahead))})


def test_notice_ids_are_stable_per_notice() -> None:
    raw = '{"action": "terminate", "time": "2026-01-01T10:02:00Z"}'
    first = parse_notice("interruption", raw, INSTANCE_ID)
    assert first == parse_notice("interruption", raw, INSTANCE_ID)
    assert first.notice_id.startswith("interruption-")
    assert first.action == "terminate"
    assert first.action_epoch() == datetime(2026, 1, 1, 10, 2, tzinfo=UTC).timestamp()
    later = parse_notice("interruption", raw.replace("10:02", "11:02"), INSTANCE_ID)
    assert later.notice_id != first.notice_id
    rebalance = parse_notice("rebalance", '{"noticeTime": "2026-01-01T10:02:00Z"}', INSTANCE_ID)
    assert rebalance.notice_id != first.notice_id
    assert parse_notice("rebalance", "garbage", INSTANCE_ID).notice_id.startswith("rebalance-")


def test_the_watch_survives_a_revoked_token_and_an_unreachable_imds(
    make_agent: MakeAgent, imds_server: InstanceMetadataServer
) -> None:
    agent = make_agent(use=FakeWorkload())
    assert agent.notices.poll_once() == []
    assert agent.notices.poll_once() == []
    assert imds_server.token_requests == 1  # one session token for configuration and every poll
    imds_server.revoke_tokens()
    imds_server.metadata["events/recommendations/rebalance"] = json.dumps({"noticeTime": iso(datetime.now(UTC))})
    assert [n.kind for n in agent.notices.poll_once()] == ["rebalance"]
    assert imds_server.token_requests == 2  # the revoked token was replaced, once
    imds_server.stop()
    assert agent.notices.poll_once() == []  # logged, not raised


def test_a_rebalance_recommendation_publishes_one_event_and_does_not_drain(
    make_agent: MakeAgent, imds_server: InstanceMetadataServer, aws: Aws
) -> None:
    workload = FakeWorkload()
    agent = make_agent(use=workload)
    imds_server.metadata["events/recommendations/rebalance"] = json.dumps({"noticeTime": "2026-01-01T10:00:00Z"})
    for _ in range(5):
        agent.notices.poll_once()
    events = aws.events(CAPACITY_NOTICE)
    assert len(events) == 1
    detail = events[0]["detail"]
    assert events[0]["source"] == "spothub.agent"
    assert detail == {
        "version": "1",
        "region": "us-west-2",
        "instance_id": INSTANCE_ID,
        "kind": "rebalance",
        "notice_id": parse_notice(
            "rebalance", imds_server.metadata["events/recommendations/rebalance"], INSTANCE_ID
        ).notice_id,
        "replica_id": None,
        "launch_id": None,
    }
    assert workload.stops == []
    assert agent.state.drain is None
    assert aws.events(DRAIN_COMPLETED) == []


def test_a_refused_notice_is_published_at_a_later_poll_and_then_only_once(
    make_agent: MakeAgent, imds_server: InstanceMetadataServer, aws: Aws
) -> None:
    events = boto3.client("events", region_name=HUB_REGION)
    rule_targets = events.list_targets_by_rule(Rule="agent", EventBusName=BUS_NAME)["Targets"]
    events.remove_targets(Rule="agent", EventBusName=BUS_NAME, Ids=["queue"])
    events.delete_rule(Name="agent", EventBusName=BUS_NAME)
    events.delete_event_bus(Name=BUS_NAME)
    agent = make_agent(use=FakeWorkload())
    imds_server.metadata["events/recommendations/rebalance"] = json.dumps({"noticeTime": "2026-01-01T10:00:00Z"})
    agent.notices.poll_once()
    assert agent.state.snapshot()["notices"] == {}  # the bus refused it: not recorded as published
    events.create_event_bus(Name=BUS_NAME)
    events.put_rule(Name="agent", EventBusName=BUS_NAME, EventPattern=json.dumps({"source": ["spothub.agent"]}))
    events.put_targets(Rule="agent", EventBusName=BUS_NAME, Targets=rule_targets)
    agent.notices.poll_once()
    agent.notices.poll_once()
    assert len(aws.events(CAPACITY_NOTICE)) == 1
    assert len(agent.state.snapshot()["notices"]) == 1


def test_a_spot_interruption_publishes_one_event_and_drains_within_the_window(
    make_agent: MakeAgent, imds_server: InstanceMetadataServer, aws: Aws, tmp_path: Path
) -> None:
    agent = make_agent(workload=_process_spec(tmp_path))
    stop = threading.Event()
    agent.start(stop)
    assert isinstance(agent.workload, ProcessWorkload)
    wait_for(lambda: agent.workload.status().state == "running" and "serving" in agent.workload.status().last_lines)
    pid = agent.workload.pid
    # The replica is tagged after the agent started: the event carries the tags of notice time.
    imds_server.tags["spothub:replica"] = "replica-1"
    imds_server.tags["spothub:launch-id"] = "launch-9"
    noticed = time.monotonic()
    imds_server.metadata["spot/instance-action"] = interruption()
    completed = wait_for(lambda: aws.events(DRAIN_COMPLETED), timeout=15)
    elapsed = time.monotonic() - noticed
    time.sleep(0.3)  # many more polls of the same notice
    notices = aws.events(CAPACITY_NOTICE)
    assert len(notices) == 1
    assert notices[0]["detail"]["kind"] == "interruption"
    assert notices[0]["detail"]["replica_id"] == "replica-1"
    assert notices[0]["detail"]["launch_id"] == "launch-9"
    assert len(aws.events(DRAIN_COMPLETED)) == 1
    detail = completed[0]["detail"]
    assert detail["notice_id"] == notices[0]["detail"]["notice_id"]
    assert detail["outcome"] == "drained"
    assert detail["exit_code"] == 0  # the workload's own exit code on SIGTERM
    assert detail["last_lines"][-1] == "SIGTERM received, draining"
    assert 0 <= detail["seconds"] < NOTICE_WINDOW_S
    assert elapsed < 10
    assert agent.workload.status().state == "stopped"
    assert agent.state.drained
    assert agent.heartbeat.beat().drained is True
    assert agent.heartbeat.beat().ready is False

    # Restart the agent: the notice is not published again, nothing is drained or started again.
    stop.set()
    agent.shutdown()
    restarted = make_agent(workload=_process_spec(tmp_path))
    restarted.start(threading.Event())
    time.sleep(0.3)
    assert len(aws.events(CAPACITY_NOTICE)) == 1
    assert len(aws.events(DRAIN_COMPLETED)) == 1
    assert restarted.workload.pid == pid
    assert restarted.workload.status().state == "stopped"
    assert restarted.workload.status().exit_code == 0


def _process_spec(tmp_path: Path, **kwargs: bool) -> WorkloadSpec:
    return WorkloadSpec(runner="process", command=workload_command(tmp_path, **kwargs))


def test_a_workload_that_ignores_sigterm_is_killed_after_the_grace_period(
    make_agent: MakeAgent, imds_server: InstanceMetadataServer, aws: Aws, tmp_path: Path
) -> None:
    agent = make_agent(grace_s=0.5, workload=_process_spec(tmp_path, ignore_term=True))
    agent.start(threading.Event())
    wait_for(lambda: "serving" in agent.workload.status().last_lines)
    imds_server.metadata["spot/instance-action"] = interruption()
    detail = wait_for(lambda: aws.events(DRAIN_COMPLETED), timeout=15)[0]["detail"]
    assert detail["outcome"] == "timed_out"
    assert detail["exit_code"] == -9  # SIGKILL
    assert "ignoring SIGTERM" in detail["last_lines"]
    assert 0.5 <= detail["seconds"] < 5


def test_the_drain_command_runs_before_the_workload_is_stopped(
    make_agent: MakeAgent, imds_server: InstanceMetadataServer, aws: Aws, tmp_path: Path
) -> None:
    marker = tmp_path / "drain-order"
    agent = make_agent(
        drain_command=("/bin/sh", "-c", f"echo command >> {marker}; echo draining connections"),
        workload=_process_spec(tmp_path),
    )
    agent.start(threading.Event())
    wait_for(lambda: "serving" in agent.workload.status().last_lines)
    imds_server.metadata["spot/instance-action"] = interruption()
    detail = wait_for(lambda: aws.events(DRAIN_COMPLETED), timeout=15)[0]["detail"]
    assert detail["outcome"] == "drained"
    assert marker.read_text() == "command\n"
    assert agent.state.drain["command"] == "ok"


@pytest.mark.parametrize(
    ("command", "outcome"),
    [(("/bin/sh", "-c", "exit 3"), "failed"), (("sleep", "30"), "timed_out"), (("/nonexistent/drain",), "failed")],
)
def test_a_drain_command_that_fails_or_overruns_is_reported_and_the_workload_still_stops(
    make_agent: MakeAgent, imds_server: InstanceMetadataServer, aws: Aws, command: tuple[str, ...], outcome: str
) -> None:
    workload = FakeWorkload()
    agent = make_agent(use=workload, drain_command=command, drain_timeout_s=0.3)
    imds_server.metadata["spot/instance-action"] = interruption()
    agent.notices.poll_once()
    detail = wait_for(lambda: aws.events(DRAIN_COMPLETED), timeout=15)[0]["detail"]
    assert detail["outcome"] == outcome
    assert workload.stops == [2.0]


def test_the_deadline_is_the_window_or_a_plausible_sooner_action_time(state_dir: Path) -> None:
    from spothub_agent.drain import Drain  # noqa: PLC0415

    now = 1_800_000_000.0
    drain = Drain(
        AgentState(state_dir, INSTANCE_ID),
        FakeWorkload(),
        None,  # type: ignore[arg-type]
        Settings(poll_s=5.0),
        region="us-west-2",
        instance_id=INSTANCE_ID,
        clock=lambda: now,
    )

    def notice_at(offset: float) -> Notice:
        moment = datetime.fromtimestamp(now + offset, UTC)
        return parse_notice("interruption", json.dumps({"action": "terminate", "time": iso(moment)}), INSTANCE_ID)

    assert drain.deadline_for(notice_at(120)) == now + 115  # detected within one poll: 115 s are sure
    assert drain.deadline_for(notice_at(60)) == now + 60  # detected late: the action time rules
    assert drain.deadline_for(notice_at(-3600)) == now + 115  # a skewed (or simulated) clock is ignored
    assert drain.deadline_for(notice_at(86400)) == now + 115


def test_an_agent_restarted_in_the_middle_of_a_drain_finishes_it_once(
    make_agent: MakeAgent, aws: Aws, tmp_path: Path, state_dir: Path
) -> None:
    # First run: the workload started, the drain began and ran its command, then the agent died.
    first = make_agent(workload=_process_spec(tmp_path))
    first.workload.start()
    wait_for(lambda: "serving" in first.workload.status().last_lines)
    pid = first.workload.pid
    first.state.record_notice("interruption-abc", {"kind": "interruption"})
    first.state.begin_drain("interruption-abc", time.time() + 100)
    first.state.update_drain(command="ok")
    # Second run: adopts the workload (same pid), stops it, reports once.
    second = make_agent(workload=_process_spec(tmp_path))
    second.start(threading.Event())
    assert second.workload.pid == pid
    detail = wait_for(lambda: aws.events(DRAIN_COMPLETED), timeout=15)[0]["detail"]
    assert detail["notice_id"] == "interruption-abc"
    assert detail["outcome"] == "drained"
    assert detail["exit_code"] is None  # not the agent's child any more: its exit code is not known
    assert "SIGTERM received, draining" in detail["last_lines"]
    wait_for(lambda: second.state.drain.get("reported"))
    third = make_agent(workload=_process_spec(tmp_path))
    third.start(threading.Event())
    time.sleep(0.3)
    assert len(aws.events(DRAIN_COMPLETED)) == 1

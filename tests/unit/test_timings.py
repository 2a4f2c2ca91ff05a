"""The launch's budgets nest, innermost first, as the stacks, the Lambdas and the agent use them:

agent health budget < lifecycle hook timeout < workload poll cap; every silence between two worker
reports < the orchestrator's launch heartbeat; the worker's whole launch < the launch timeout.
The agent's: its slowest heartbeat < the silence its heartbeat alarm tolerates; a drain at its
defaults, and at the slowest poll allowed, fits in the two minutes of an interruption warning.

Durations are worst cases read from the ASL: a poll loop at its cap, every retrier of a task used up
(Step Functions counts each retrier's attempts separately), and the failure path's cleanup.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from spothub_agent.aws import CLIENT_CONFIG
from spothub_agent.settings import Settings, build_settings
from spothub_core import timings
from spothub_core.logic import instance_alarms, region_exclusions
from stacks.config import SpothubConfig
from stacks.constructs import gpu_capacity, worker_automation
from stacks.hub_stack import ORCHESTRATOR_DURATIONS
from stacks.paths import STATEMACHINES_DIR

LAUNCH = json.loads((STATEMACHINES_DIR / "launch_instance.asl.json").read_text())["States"]
TEARDOWN = json.loads((STATEMACHINES_DIR / "teardown_instance.asl.json").read_text())["States"]
# One Lambda or EventBridge call from a state machine, in the common case (a cold Lambda start included).
CALL_SECONDS = 2
# From a worker's report on its bus to the hub's SendTaskHeartbeat: two rules, one Lambda.
DELIVERY_SECONDS = 60
DEFAULT_POLL_SECONDS = SpothubConfig.from_context({}).poll_seconds
# The range the configuration accepts for pollSeconds: the budgets must nest over all of it.
_POLL_BOUNDS = {type(m).__name__: m for m in SpothubConfig.model_fields["poll_seconds"].metadata}
MIN_POLL_SECONDS = int(_POLL_BOUNDS["Ge"].ge)
MAX_POLL_SECONDS = int(_POLL_BOUNDS["Le"].le)


def retries_seconds(state: dict[str, Any]) -> float:
    """The longest a task takes: its first call, then every retrier used up, each retry a call after its delay."""
    total = float(CALL_SECONDS)
    for retrier in state.get("Retry", []):
        delay = float(retrier.get("IntervalSeconds", 1))
        for _ in range(int(retrier.get("MaxAttempts", 3))):
            capped = min(delay, float(retrier.get("MaxDelaySeconds", delay)))
            total += capped + CALL_SECONDS
            delay *= float(retrier.get("BackoffRate", 2.0))
    return total


def tasks_seconds(states: dict[str, Any], *names: str) -> float:
    for name in names:
        assert states[name]["Type"] == "Task", name
    return sum(retries_seconds(states[name]) for name in names)


def loop_seconds(polls: int, poll: int, states: dict[str, Any], task: str) -> float:
    """A poll loop at its cap: each poll waits and calls once; one of its calls uses up its retries."""
    return polls * (poll + CALL_SECONDS) + retries_seconds(states[task])


def numbers(poll: int) -> dict[str, int]:
    return worker_automation.poll_numbers(poll)["launch_instance"]


def reports(states: dict[str, Any]) -> list[str]:
    return [name for name, state in states.items() if state.get("Resource") == "arn:aws:states:::events:putEvents"]


FAILURE_PATH = tasks_seconds(LAUNCH, "DescribeFailure", "Cleanup", "ReportFailed")


def stretches(poll: int) -> dict[str, tuple[float, str]]:
    """Each stretch the hub hears nothing from the launch: (its work, its report), by the report that ends it.
    A failure ends a stretch with the failure path instead of its report, and ends the launch."""
    polls = numbers(poll)
    return {
        "dispatch to group scaled": (DELIVERY_SECONDS + tasks_seconds(LAUNCH, "ScaleOut"), "ReportScaled"),
        "group scaled to instance claimed": (
            loop_seconds(polls["MaxInstancePolls"], poll, LAUNCH, "ClaimInstance"),
            "ReportInstance",
        ),
        "instance claimed to workload started": (tasks_seconds(LAUNCH, "StartWorkload"), "ReportWorkloadStarted"),
        "workload started to its outcome": (
            loop_seconds(polls["MaxWorkloadPolls"], poll, LAUNCH, "WorkloadStatus")
            + tasks_seconds(LAUNCH, "WatchInstance"),
            "ReportSucceeded",
        ),
    }


def silences(poll: int) -> dict[str, float]:
    return {
        name: work + max(tasks_seconds(LAUNCH, report), FAILURE_PATH) + DELIVERY_SECONDS
        for name, (work, report) in stretches(poll).items()
    }


def whole_launch(poll: int) -> float:
    """Every stretch's work and report, then (the worst end) the failure path and its delivery."""
    steps = stretches(poll).values()
    return sum(work + tasks_seconds(LAUNCH, report) for work, report in steps) + FAILURE_PATH + DELIVERY_SECONDS


def test_every_report_of_the_launch_is_a_step_of_the_silences() -> None:
    assert set(reports(LAUNCH)) == {
        "ReportScaled",
        "ReportInstance",
        "ReportWorkloadStarted",
        "ReportSucceeded",
        "ReportFailed",
    }


def test_the_agent_gives_its_verdict_before_the_lifecycle_hook_expires() -> None:
    agent = Settings()
    hook = gpu_capacity.LAUNCH_HOOK_TIMEOUT.to_seconds()
    assert agent.healthy_within_s + timings.INSTANCE_BOOT_SECONDS <= hook
    assert agent.healthy_within_s < hook
    # A live agent keeps the hook from expiring while it waits.
    assert agent.lifecycle_heartbeat_s < hook / 2


@pytest.mark.parametrize("poll", [MIN_POLL_SECONDS, DEFAULT_POLL_SECONDS, 60, MAX_POLL_SECONDS])
def test_the_worker_waits_for_the_hook_to_settle(poll: int) -> None:
    hook = gpu_capacity.LAUNCH_HOOK_TIMEOUT.to_seconds()
    polls = numbers(poll)["MaxWorkloadPolls"]
    # Even when each poll's call is instant, the worker waits for the hook's CONTINUE or ABANDON.
    assert polls * poll >= hook
    assert hook < worker_automation.MAX_WORKLOAD_POLLS_SECONDS


@pytest.mark.parametrize("poll", [MIN_POLL_SECONDS, DEFAULT_POLL_SECONDS, 60, MAX_POLL_SECONDS])
def test_the_launch_heartbeat_outlasts_every_silence_of_the_worker(poll: int) -> None:
    heartbeat = ORCHESTRATOR_DURATIONS["LaunchHeartbeatSeconds"]
    for stretch, seconds in silences(poll).items():
        assert seconds < heartbeat, f"{stretch}: {seconds / 60:.1f} min of silence, heartbeat {heartbeat / 60:g} min"
    assert gpu_capacity.LAUNCH_HOOK_TIMEOUT.to_seconds() < heartbeat


@pytest.mark.parametrize("poll", [MIN_POLL_SECONDS, DEFAULT_POLL_SECONDS, 60, MAX_POLL_SECONDS])
def test_the_launch_timeout_outlasts_the_workers_whole_launch(poll: int) -> None:
    whole = whole_launch(poll)
    timeout = ORCHESTRATOR_DURATIONS["LaunchTimeoutSeconds"]
    assert whole < timeout, f"the worker may take {whole / 60:.1f} min, the orchestrator waits {timeout / 60:g} min"
    assert ORCHESTRATOR_DURATIONS["LaunchHeartbeatSeconds"] < timeout


@pytest.mark.parametrize("poll", [MIN_POLL_SECONDS, DEFAULT_POLL_SECONDS, 60, MAX_POLL_SECONDS])
def test_the_teardown_timeout_outlasts_the_workers_teardown(poll: int) -> None:
    polls = worker_automation.poll_numbers(poll)["teardown_instance"]["MaxTeardownPolls"]
    whole = (
        DELIVERY_SECONDS
        + tasks_seconds(TEARDOWN, "Teardown")
        + loop_seconds(polls, poll, TEARDOWN, "CheckGone")
        + tasks_seconds(TEARDOWN, "Report")
        + DELIVERY_SECONDS
    )
    assert whole < ORCHESTRATOR_DURATIONS["TeardownTimeoutSeconds"]


def test_a_live_agent_beats_in_every_period_of_its_heartbeat_alarm() -> None:
    assert Settings().heartbeat_s <= instance_alarms.HEARTBEAT_ALARM_PERIOD_SECONDS


def aws_call_seconds() -> float:
    """One AWS call of the agent at its worst: every try connects and reads up to its timeouts, with the
    standard retry mode's first delay (at most 1 s) between tries."""
    attempts = int(CLIENT_CONFIG.retries["total_max_attempts"])
    timeouts = float(CLIENT_CONFIG.connect_timeout) + float(CLIENT_CONFIG.read_timeout)
    return attempts * timeouts + (attempts - 1) * 1.0


def test_a_hanging_control_plane_never_silences_a_live_agent() -> None:
    """The heartbeat loop puts the metric, then sends the beat, on one thread. At its slowest, the metric
    times out and the beat reconnects: SSM's api-url, register, a heartbeat answered 404, register again,
    heartbeat again (each API call connecting and reading up to its timeout). Even then the next metric
    comes before the alarm counts the agent silent."""
    api_call = 2 * timings.AGENT_API_TIMEOUT_SECONDS
    slowest_beat = aws_call_seconds() + aws_call_seconds() + 4 * api_call
    tolerated = instance_alarms.HEARTBEAT_ALARM_PERIOD_SECONDS * instance_alarms.HEARTBEAT_MISSING_PERIODS
    assert Settings().heartbeat_s + slowest_beat < tolerated
    # Each wait of the agent's loops is longer than the calls made in it.
    assert timings.AGENT_API_TIMEOUT_SECONDS < timings.AGENT_HEARTBEAT_SECONDS
    assert timings.AGENT_HEALTH_CHECK_TIMEOUT_SECONDS < timings.AGENT_POLL_SECONDS
    assert timings.AGENT_IMDS_TIMEOUT_SECONDS < timings.AGENT_POLL_SECONDS
    # A control plane that comes back is found again within one heartbeat interval.
    assert timings.AGENT_BACKOFF_BASE_SECONDS < timings.AGENT_BACKOFF_CAP_SECONDS <= timings.AGENT_HEARTBEAT_SECONDS
    assert timings.IMDS_TOKEN_RENEW_MARGIN_SECONDS < timings.IMDS_TOKEN_TTL_SECONDS


@pytest.mark.parametrize("poll", [timings.AGENT_POLL_SECONDS, timings.AGENT_MAX_POLL_SECONDS])
def test_a_drain_at_its_defaults_fits_in_the_notice_window(poll: int) -> None:
    window = timings.SPOT_NOTICE_WINDOW_SECONDS
    settings = build_settings(None, {"SPOTHUB_AGENT_POLL_SECONDS": str(poll)})
    # Detection (one poll), the grace period, the report and the margin: the default grace is not clamped.
    assert settings.grace_s == timings.AGENT_GRACE_SECONDS
    used = poll + settings.grace_s + timings.AGENT_DRAIN_REPORT_SECONDS + timings.AGENT_DRAIN_MARGIN_SECONDS
    assert used <= window
    # With a drain command at its default limit, the clamp still leaves the workload its least grace period.
    with_command = build_settings('{"drain_command": ["true"]}', {"SPOTHUB_AGENT_POLL_SECONDS": str(poll)})
    assert with_command.drain_timeout_s == timings.AGENT_DRAIN_COMMAND_SECONDS
    assert with_command.grace_s >= timings.AGENT_MIN_GRACE_SECONDS
    assert used - settings.grace_s + with_command.drain_timeout_s + with_command.grace_s <= window
    # One try of the report (its connection and its read at their timeouts) fits in its share of the window.
    one_try = float(CLIENT_CONFIG.connect_timeout) + float(CLIENT_CONFIG.read_timeout)
    assert one_try <= timings.AGENT_DRAIN_REPORT_SECONDS
    # The stop leaves the report's share and the margin before the deadline; the report's wait for the capacity
    # notice to go first comes out of the margin, so the report keeps its whole share.
    left_after_stop = timings.AGENT_DRAIN_REPORT_SECONDS + timings.AGENT_DRAIN_MARGIN_SECONDS
    assert left_after_stop >= timings.AGENT_NOTICE_FIRST_SECONDS + timings.AGENT_DRAIN_REPORT_SECONDS


def test_the_agents_own_image_pull_ends_inside_its_health_budget() -> None:
    assert timings.AGENT_DOCKER_RUN_TIMEOUT_SECONDS < timings.AGENT_HEALTHY_WITHIN_SECONDS


def test_a_quota_keeps_a_region_out_longer_than_any_other_failure() -> None:
    others = {k: v for k, v in timings.EXCLUSION_SECONDS.items() if k != "quota"}
    assert timings.EXCLUSION_SECONDS["quota"] > max(others.values())
    # The orchestrator's own waits are shorter than a capacity exclusion: it looks again while one stands.
    assert timings.EXCLUSION_SECONDS["capacity"] >= timings.CAPACITY_RETRY_SECONDS


def test_the_stacks_lambdas_and_agent_read_their_timings_from_one_module() -> None:
    assert region_exclusions.EXCLUSION_SECONDS is timings.EXCLUSION_SECONDS
    assert ORCHESTRATOR_DURATIONS["LaunchHeartbeatSeconds"] == timings.LAUNCH_HEARTBEAT_SECONDS
    assert ORCHESTRATOR_DURATIONS["LaunchTimeoutSeconds"] == timings.LAUNCH_TIMEOUT_SECONDS
    assert ORCHESTRATOR_DURATIONS["TeardownTimeoutSeconds"] == timings.TEARDOWN_TIMEOUT_SECONDS
    assert ORCHESTRATOR_DURATIONS["CapacityRetrySeconds"] == timings.CAPACITY_RETRY_SECONDS
    assert ORCHESTRATOR_DURATIONS["SpotReturnSeconds"] == timings.SPOT_RETURN_SECONDS
    assert gpu_capacity.LAUNCH_HOOK_TIMEOUT.to_seconds() == timings.LAUNCH_HOOK_TIMEOUT_SECONDS
    assert worker_automation.MAX_INSTANCE_POLLS_SECONDS == timings.MAX_INSTANCE_POLLS_SECONDS
    assert worker_automation.MAX_WORKLOAD_POLLS_SECONDS == timings.MAX_WORKLOAD_POLLS_SECONDS
    assert worker_automation.MAX_TEARDOWN_POLLS_SECONDS == timings.MAX_TEARDOWN_POLLS_SECONDS
    assert DEFAULT_POLL_SECONDS == timings.WORKER_POLL_SECONDS
    assert instance_alarms.HEARTBEAT_ALARM_PERIOD_SECONDS == timings.HEARTBEAT_ALARM_PERIOD_SECONDS
    agent = Settings()
    assert agent.healthy_within_s == timings.AGENT_HEALTHY_WITHIN_SECONDS
    assert agent.lifecycle_heartbeat_s == timings.AGENT_LIFECYCLE_HEARTBEAT_SECONDS
    assert agent.heartbeat_s == timings.AGENT_HEARTBEAT_SECONDS
    assert agent.poll_s == timings.AGENT_POLL_SECONDS
    assert agent.grace_s == timings.AGENT_GRACE_SECONDS
    assert agent.drain_timeout_s == timings.AGENT_DRAIN_COMMAND_SECONDS
    assert (agent.backoff_base_s, agent.backoff_cap_s) == (
        timings.AGENT_BACKOFF_BASE_SECONDS,
        timings.AGENT_BACKOFF_CAP_SECONDS,
    )
    assert (CLIENT_CONFIG.connect_timeout, CLIENT_CONFIG.read_timeout) == (
        timings.AGENT_AWS_CONNECT_TIMEOUT_SECONDS,
        timings.AGENT_AWS_READ_TIMEOUT_SECONDS,
    )

"""Settings: defaults, the agent-config parameter, environment overrides, and the 120 s notice window."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError

from spothub_agent.settings import (
    DEFAULT_HEALTH_URL,
    Settings,
    SettingsError,
    build_settings,
    load_settings,
)
from spothub_core.timings import AGENT_DRAIN_MARGIN_SECONDS as SAFETY_MARGIN_S
from spothub_core.timings import AGENT_DRAIN_REPORT_SECONDS as REPORT_BUDGET_S
from spothub_core.timings import SPOT_NOTICE_WINDOW_SECONDS as NOTICE_WINDOW_S


def test_defaults_without_agent_config_or_environment() -> None:
    settings = build_settings(None, {})
    assert settings == Settings()
    assert settings.health_url == DEFAULT_HEALTH_URL
    assert (settings.heartbeat_s, settings.poll_s, settings.grace_s) == (60.0, 5.0, 90.0)
    assert settings.healthy_within_s == 1500.0
    assert settings.drain_command == ()
    assert settings.workload.runner == "docker-attach"
    # The container of the serving task definition (contracts.SERVING_CONTAINER_NAME), by the ECS agent's label.
    assert settings.workload.container_filter == "label=com.amazonaws.ecs.container-name=server"
    assert settings.state_dir == Path("/var/lib/spothub-agent")


def test_agent_config_then_environment() -> None:
    document = json.dumps(
        {
            "health_url": "http://127.0.0.1:8000/ready",
            "healthy_within_s": 600,
            "drain_command": "curl -X POST localhost:8000/drain",
            "heartbeat_s": 30,
            "workload": {"runner": "docker", "image": "vllm/vllm-openai:v0.9", "args": ["--model", "m"]},
        }
    )
    settings = build_settings(
        document,
        {
            "SPOTHUB_AGENT_HEARTBEAT_SECONDS": "0.5",
            "SPOTHUB_AGENT_POLL_SECONDS": "0.1",
            "SPOTHUB_AGENT_STATE_DIR": "/tmp/agent-state",
        },
    )
    assert settings.health_url == "http://127.0.0.1:8000/ready"
    assert settings.healthy_within_s == 600
    assert settings.drain_command == ("/bin/sh", "-c", "curl -X POST localhost:8000/drain")
    assert settings.heartbeat_s == 0.5  # the environment wins
    assert settings.poll_s == 0.1
    assert settings.state_dir == Path("/tmp/agent-state")
    assert settings.workload.runner == "docker"
    assert settings.workload.image == "vllm/vllm-openai:v0.9"
    assert settings.workload.args == ("--model", "m")


def test_workload_command_in_the_environment_means_a_process_runner() -> None:
    settings = build_settings(None, {"SPOTHUB_AGENT_WORKLOAD_COMMAND": '["python", "-m", "http.server"]'})
    assert settings.workload.runner == "process"
    assert settings.workload.command == ("python", "-m", "http.server")


@pytest.mark.parametrize(
    ("document", "environ", "named"),
    [
        ({"grace_s": "soon"}, {}, "grace_s"),
        ({"poll_s": 0}, {}, "poll_s"),
        ({"health_url": "ftp://x"}, {}, "health_url"),
        ({"workload": {"runner": "podman"}}, {}, "runner"),
        ({"workload": {"runner": "docker"}}, {}, "image"),
        ({"drain_command": [1, 2]}, {}, "drain_command"),
        (None, {"SPOTHUB_AGENT_WORKLOAD_COMMAND": "python -m x"}, "SPOTHUB_AGENT_WORKLOAD_COMMAND"),
    ],
)
def test_invalid_values_are_named(document: dict | None, environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        build_settings(json.dumps(document) if document is not None else None, environ)


def test_grace_is_clamped_to_fit_the_notice_window(caplog: pytest.LogCaptureFixture) -> None:
    settings = build_settings(json.dumps({"drain_command": ["true"], "drain_timeout_s": 30, "grace_s": 110}), {})
    budget = NOTICE_WINDOW_S - settings.poll_s - REPORT_BUDGET_S - SAFETY_MARGIN_S
    assert settings.grace_s == budget - 30
    assert settings.poll_s + settings.drain_timeout_s + settings.grace_s + REPORT_BUDGET_S <= NOTICE_WINDOW_S
    clamped = [json.loads(r.message) for r in caplog.records if "setting_clamped" in r.message]
    assert clamped == [
        {"event": "setting_clamped", "setting": "grace_s", "configured": 110.0, "used": budget - 30, "window_s": 120.0}
    ]
    # The default grace fits as it is when there is no drain command.
    assert build_settings(None, {}).grace_s == 90.0


def test_an_unreadable_or_invalid_agent_config_falls_back_to_defaults() -> None:
    stop = threading.Event()
    attempts = []

    def unreachable() -> str | None:
        attempts.append(1)
        raise EndpointConnectionError(endpoint_url="https://ssm.us-east-1.amazonaws.com")

    settings = load_settings(unreachable, {"SPOTHUB_AGENT_POLL_SECONDS": "1"}, stop, attempts=2)
    assert len(attempts) == 2
    assert settings.poll_s == 1.0
    assert settings.grace_s == 90.0

    settings = load_settings(lambda: "{not json", {"SPOTHUB_AGENT_POLL_SECONDS": "2"}, stop)
    assert settings.poll_s == 2.0

    with pytest.raises(SettingsError):
        load_settings(lambda: None, {"SPOTHUB_AGENT_POLL_SECONDS": "-1"}, stop)

"""The worker function's entry point: the action table against what the worker state machines pass and read
back, the validation of a task's input, and the hub's commands it turns into executions."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterator
from types import ModuleType
from typing import Any
from unittest.mock import ANY

import boto3
import pytest
from pydantic import BaseModel, ValidationError

from spothub_core.contracts import CapacityNotice, HubCommand, LaunchRequested, NoticeKind, Source, TeardownRequested
from spothub_core.errors import TransientError
from spothub_core.models.worker_tasks import CapacityMonitorInput, ClaimStatus, WorkloadState
from stacks.paths import STATEMACHINES_DIR
from tests.integration.conftest import ApiCalls, asl_actions, eventbridge_event, executions
from tests.integration.worker_region.region import GROUP, LAUNCH_ID, REGION, run
from tests.lambda_events import FakeLambdaContext

MACHINES = ("launch_instance", "teardown_instance", "capacity_monitor")


def test_every_task_the_worker_state_machines_call_is_an_action(handler: ModuleType) -> None:
    named: set[str] = set()
    for machine in MACHINES:
        named |= asl_actions(machine)
    assert {"scale_out", "claim_instance", "teardown", "identify"} <= named
    assert named <= set(handler.ACTIONS)


# --- the ASL against the actions' models -------------------------------------------------------------------


def states(machine: str) -> dict[str, Any]:
    return dict(json.loads((STATEMACHINES_DIR / f"{machine}.asl.json").read_text())["States"])


def task_states(machine: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, state) of every Lambda task of a worker state machine."""
    for name, state in states(machine).items():
        if isinstance(state.get("Parameters", {}).get("Payload"), dict):
            yield name, state


def result_models(handler: ModuleType, action: str) -> list[type[BaseModel]]:
    """The models an action's function may return (the members of a union)."""
    _model, function = handler.ACTIONS[action]

    def members(hint: Any) -> Iterator[type[BaseModel]]:
        if isinstance(hint, type) and issubclass(hint, BaseModel):
            yield hint
        else:
            for argument in typing.get_args(hint):
                yield from members(argument)

    return list(members(typing.get_type_hints(function, include_extras=True)["return"]))


def paths(node: Any) -> Iterator[str]:
    """Every JSONPath a state reads from its input (values of `*.$` keys, paths inside intrinsic functions,
    choices' variables); a ResultSelector reads the task's result instead."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "ResultSelector":
                continue
            if key.endswith(".$") and isinstance(value, str):
                yield from re.findall(r"\$(?:\.[A-Za-z_]+)+", value)
            elif key == "Variable" and isinstance(value, str):
                yield value
            else:
                yield from paths(value)
    elif isinstance(node, list):
        for value in node:
            yield from paths(value)


@pytest.mark.parametrize("machine", MACHINES)
def test_every_task_payload_is_its_actions_input_model(handler: ModuleType, machine: str) -> None:
    for name, state in task_states(machine):
        payload = state["Parameters"]["Payload"]
        model, _function = handler.ACTIONS[payload["action"]]
        fields = {key.removesuffix(".$") for key in payload} - {"action"}
        assert fields <= set(model.model_fields), f"{machine}.{name} passes fields {model.__name__} does not have"
        required = {f for f, info in model.model_fields.items() if info.is_required()}
        assert required <= fields, f"{machine}.{name} leaves out fields {model.__name__} requires"


@pytest.mark.parametrize("machine", MACHINES)
def test_every_result_field_the_asl_reads_is_in_the_actions_result_model(handler: ModuleType, machine: str) -> None:
    # Where each task puts its result: under its ResultPath, each selected field, or all of it under `detail`.
    readable: dict[str, set[str]] = {}
    for name, state in task_states(machine):
        results = result_models(handler, state["Parameters"]["Payload"]["action"])
        fields = set().union(*(m.model_fields for m in results))
        for key, selected in (state.get("ResultSelector") or {}).items():
            field = selected.removeprefix("$.Payload.")
            if selected == "$.Payload":
                readable[f"{state['ResultPath']}.{key.removesuffix('.$')}"] = fields
            else:
                assert field in fields, f"{machine}.{name} selects {field}, which no result of the action has"
    read = [path for state in states(machine).values() for path in paths(state)]
    checked = set()
    for path in read:
        for prefix, fields in readable.items():
            if path.startswith(prefix + "."):
                field = path[len(prefix) + 1 :].split(".")[0]
                assert field in fields, f"{machine} reads {path}, which no result of the action has"
                checked.add(prefix)
    assert checked == set(readable), f"{machine}: no state reads {set(readable) - checked}"


@pytest.mark.parametrize(
    ("machine", "variable", "statuses"),
    [
        ("launch_instance", "$.claim.status", ClaimStatus),
        ("launch_instance", "$.health.status", WorkloadState),
    ],
)
def test_every_status_the_asl_branches_on_is_one_the_task_answers(
    machine: str, variable: str, statuses: type[Any]
) -> None:
    compared = {
        choice["StringEquals"]
        for state in states(machine).values()
        for choice in state.get("Choices", [])
        if choice.get("Variable") == variable
    }
    assert compared
    assert compared <= {s.value for s in statuses}


def test_the_capacity_monitor_reads_its_input_model() -> None:
    results = {state["ResultPath"].removeprefix("$.") for _, state in task_states("capacity_monitor")}
    read = {path.split(".")[1] for state in states("capacity_monitor").values() for path in paths(state)}
    assert read - results == set(CapacityMonitorInput.model_fields)


def test_the_notice_kinds_are_the_capacity_notices() -> None:
    assert CapacityMonitorInput.model_fields["kind"].annotation is CapacityNotice.model_fields["kind"].annotation
    assert {k.value for k in NoticeKind} == {"rebalance", "interruption"}


@pytest.mark.parametrize(
    ("action", "fields", "field"),
    [
        pytest.param("claim_instance", {"launch_id": LAUNCH_ID, "since": "2030-01-01T00:00:00Z"}, "replica_id"),
        pytest.param("scale_out", {"launch_id": LAUNCH_ID, "capacity_type": "reserved"}, "capacity_type"),
        pytest.param("identify", {"instance_id": "i-0123456789abcdef0", "kind": "eviction"}, "kind"),
        pytest.param("cleanup", {"launch_id": LAUNCH_ID, "launchid": LAUNCH_ID}, "launchid", id="unknown-field"),
    ],
)
def test_an_invalid_task_input_raises_naming_the_field(
    handler: ModuleType, action: str, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        run(handler, action, **fields)
    assert field in {str(error["loc"][0]) for error in raised.value.errors()}
    assert (
        boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups()["AutoScalingGroups"][0][
            "DesiredCapacity"
        ]
        == 0
    )


def test_an_unknown_action_is_an_error_naming_the_known_ones(handler: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"unknown action 'reboot'; known: scale_out, claim_instance, .*identify"):
        run(handler, "reboot")


# --- the hub's commands -------------------------------------------------------------------------------


def command(detail_type: str, detail: dict[str, Any], source: str = Source.HUB) -> dict[str, Any]:
    return eventbridge_event(source, detail_type, {"version": "1", **detail}, region=REGION)


def launch_requested(**overrides: Any) -> dict[str, Any]:
    detail = {"launch_id": LAUNCH_ID, "replica_id": "replica-0", "region": REGION, "capacity_type": "spot"}
    return command(HubCommand.LAUNCH_REQUESTED, {**detail, **overrides})


TEARDOWN = {"teardown_id": "retire-i-0old", "region": REGION, "instance_id": "i-0old", "reason": "replaced"}


def test_every_command_the_worker_consumes_has_a_function(handler: ModuleType) -> None:
    assert handler.commands.unregistered() == []
    assert {c.model for c in handler.commands.entries.values()} == {LaunchRequested, TeardownRequested}


def test_a_launch_command_starts_the_launch_named_by_its_id(handler: ModuleType) -> None:
    calls = ApiCalls(handler.sfn, "StartExecution")
    result = handler.lambda_handler(launch_requested(), FakeLambdaContext())
    assert result == {"outcome": f"started {LAUNCH_ID}"}
    expected_input = {
        "version": "1",
        "launch_id": LAUNCH_ID,
        "replica_id": "replica-0",
        "region": REGION,
        "capacity_type": "spot",
        "zone": None,
        "role": "serve",
        # The function scaled the group out as it started the launch: its ScaleOut state is skipped.
        "scaled": {"started_at": ANY},
    }
    (call,) = calls.of("StartExecution")
    assert (call["stateMachineArn"], call["name"]) == (handler.settings.launch_state_machine_arn, LAUNCH_ID)
    assert json.loads(call["input"]) == expected_input
    started = executions(handler.settings.launch_state_machine_arn)
    assert started[LAUNCH_ID]["status"] == "RUNNING"
    assert started[LAUNCH_ID]["input"] == expected_input


def test_a_launch_command_delivered_twice_starts_one_launch(handler: ModuleType) -> None:
    # Step Functions answers a second start of a running execution (same name, same input) with the first one.
    handler.lambda_handler(launch_requested(), FakeLambdaContext())
    assert LAUNCH_ID in handler.lambda_handler(launch_requested(), FakeLambdaContext())["outcome"]
    assert list(executions(handler.settings.launch_state_machine_arn)) == [LAUNCH_ID]


def test_a_launch_command_delivered_after_its_launch_ended_starts_nothing(handler: ModuleType) -> None:
    handler.lambda_handler(launch_requested(), FakeLambdaContext())
    launch_arn = handler.settings.launch_state_machine_arn
    execution_arn = launch_arn.replace(":stateMachine:", ":execution:") + f":{LAUNCH_ID}"
    boto3.client("stepfunctions", region_name=REGION).stop_execution(executionArn=execution_arn)
    set_desired(0)  # the ended launch gave its instance back
    assert handler.lambda_handler(launch_requested(), FakeLambdaContext()) == {
        "outcome": f"{LAUNCH_ID} was started before: not started again"
    }
    assert {name: e["status"] for name, e in executions(launch_arn).items()} == {LAUNCH_ID: "ABORTED"}
    assert desired() == 0, "a late command scales nothing out"


def test_a_launch_command_scales_the_group_out_before_its_launch_starts(handler: ModuleType) -> None:
    assert desired() == 0
    handler.lambda_handler(launch_requested(), FakeLambdaContext())
    assert desired() == 1, "the launch call follows the command in the same invocation"
    handler.lambda_handler(launch_requested(), FakeLambdaContext())
    assert desired() == 1, "a duplicate command asks for nothing more"


def test_a_launch_command_that_cannot_scale_out_leaves_it_to_the_launch(
    handler: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_arguments: Any) -> None:
        raise TransientError("throttled")

    monkeypatch.setattr(handler.launch_instance, "scale_out", refuse)
    assert handler.lambda_handler(launch_requested(), FakeLambdaContext()) == {"outcome": f"started {LAUNCH_ID}"}
    started = executions(handler.settings.launch_state_machine_arn)[LAUNCH_ID]["input"]
    assert "scaled" not in started, "the launch's ScaleOut state scales, with its retries and failure reports"


def desired() -> int:
    (group,) = boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
        AutoScalingGroupNames=[GROUP]
    )["AutoScalingGroups"]
    return int(group["DesiredCapacity"])


def set_desired(count: int) -> None:
    boto3.client("autoscaling", region_name=REGION).set_desired_capacity(
        AutoScalingGroupName=GROUP, DesiredCapacity=count
    )


def test_a_teardown_command_starts_the_teardown_named_by_its_id(handler: ModuleType) -> None:
    calls = ApiCalls(handler.sfn, "StartExecution")
    result = handler.lambda_handler(command(HubCommand.TEARDOWN_REQUESTED, TEARDOWN), FakeLambdaContext())
    assert result == {"outcome": "started retire-i-0old"}
    (call,) = calls.of("StartExecution")
    assert (call["stateMachineArn"], call["name"]) == (handler.settings.teardown_state_machine_arn, "retire-i-0old")
    started = executions(handler.settings.teardown_state_machine_arn)["retire-i-0old"]
    assert (started["input"]["instance_id"], started["input"]["launch_id"]) == ("i-0old", None)
    assert executions(handler.settings.launch_state_machine_arn) == {}


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(eventbridge_event("spothub.worker", "Spothub Launch Requested", {}), id="not-from-the-hub"),
        pytest.param(eventbridge_event("spothub.hub", "Spothub Launch Succeeded", {}), id="not-a-command"),
        pytest.param({"detail": {}}, id="no-source"),
    ],
)
def test_an_event_that_is_not_a_hub_command_is_ignored(handler: ModuleType, event: dict[str, Any]) -> None:
    assert handler.lambda_handler(event, FakeLambdaContext()) == {"outcome": "ignored: unknown kind"}
    assert executions(handler.settings.launch_state_machine_arn) == {}
    assert executions(handler.settings.teardown_state_machine_arn) == {}


@pytest.mark.parametrize(
    ("detail", "field"),
    [
        pytest.param({"launch_id": ""}, "launch_id", id="empty-launch-id"),
        pytest.param({"capacity_type": "reserved"}, "capacity_type", id="unknown-capacity-type"),
        pytest.param({"replica_id": "r" * 41}, "replica_id", id="replica-id-too-long"),
    ],
)
def test_a_broken_command_raises_naming_the_field_and_starts_nothing(
    handler: ModuleType, detail: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        handler.lambda_handler(launch_requested(**detail), FakeLambdaContext())
    assert field in {str(error["loc"][0]) for error in raised.value.errors()}
    assert executions(handler.settings.launch_state_machine_arn) == {}

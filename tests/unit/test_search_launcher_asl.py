"""The search launcher's ASL, read as a graph and walked: every transition lands on a state, every Task retries
Lambda's service errors and catches the rest into Fail, the tasks pass what their models take and read what their
results have, and the paths run as designed (spot, spot refused then on-demand, on-demand refused, the attach
refused, the start budget spent, no spot at all, a launch ended meanwhile)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel

from spothub_core.contracts import TaskError
from spothub_core.models.search_tasks import (
    Attach,
    Attached,
    Check,
    Fail,
    Health,
    Launch,
    Launched,
    LauncherAction,
    LauncherInput,
    Outcome,
    Place,
    Placement,
    Ready,
)
from spothub_core.timings import SEARCH_ATTACH_WAIT_SECONDS, SEARCH_LAUNCH_TIMEOUT_SECONDS, SEARCH_START_POLL_SECONDS
from stacks.constructs.state_machine import load_definition, placeholders
from stacks.paths import STATEMACHINES_DIR

NAME = "search_launcher"
ASL = json.loads((STATEMACHINES_DIR / f"{NAME}.asl.json").read_text(encoding="utf-8"))
STATES: dict[str, dict[str, Any]] = ASL["States"]
TASKS = [name for name, state in STATES.items() if state["Type"] == "Task"]
TASK_FUNCTION = "${SearchTasksArn}"
# The numbers the hub stack fills in (stacks/constructs/search_service.py): the attach is tried every poll for
# the attach wait, the health every poll, the whole execution within the launch timeout.
NUMBERS = {
    "LaunchTimeoutSeconds": SEARCH_LAUNCH_TIMEOUT_SECONDS,
    "StartPollSeconds": SEARCH_START_POLL_SECONDS,
    "AttachPollSeconds": SEARCH_START_POLL_SECONDS,
    "AttachPollAttempts": SEARCH_ATTACH_WAIT_SECONDS // SEARCH_START_POLL_SECONDS,
}
LAMBDA_SERVICE_RETRY = {
    "ErrorEquals": [
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
        "DependencyUnavailable",
    ],
    "IntervalSeconds": 2,
    "BackoffRate": 2,
    "MaxAttempts": 5,
    "JitterStrategy": "FULL",
}
MODELS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    LauncherAction.PLACE: (Place, Placement),
    LauncherAction.LAUNCH: (Launch, Launched),
    LauncherAction.ATTACH: (Attach, Attached),
    LauncherAction.CHECK: (Check, Health),
    LauncherAction.READY: (Ready, Outcome),
    LauncherAction.FAIL: (Fail, Outcome),
}
TERMINAL = ("Succeed", "Fail")
LAUNCH_ID = "s-20270115080000-0a1b2c3d"


def transitions(state: dict[str, Any]) -> Iterator[str]:
    for key in ("Next", "Default"):
        if key in state:
            yield state[key]
    for choice in state.get("Choices", []):
        yield choice["Next"]
    for catcher in state.get("Catch", []):
        yield catcher["Next"]


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(transitions(STATES[name]))
    return seen


def action_of(name: str) -> str:
    return STATES[name]["Parameters"]["Payload"]["action"]


# --- a walker for this file's subset of the ASL: Task (lambda:invoke), Choice, Pass, Wait, Succeed, Fail ------


class TaskFailed(Exception):
    """A task's error, as Step Functions catches it: its name and cause."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.cause = cause


def read(data: Any, path: str) -> Any:
    assert path == "$" or path.startswith("$."), path
    node = data
    for part in [p for p in path[2:].split(".") if p] if path != "$" else []:
        assert isinstance(node, dict) and part in node, f"{path}: no {part!r} in {node!r}"
        node = node[part]
    return node


def resolve(template: Any, data: Any) -> Any:
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            if key.endswith(".$"):
                out[key.removesuffix(".$")] = read(data, value)
            else:
                out[key] = resolve(value, data)
        return out
    return template


def put(data: dict[str, Any], path: str | None, value: Any) -> dict[str, Any]:
    if path is None:
        return data
    if path == "$":
        return value
    data = copy.deepcopy(data)
    node = data
    parts = path[2:].split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return data


def choose(state: dict[str, Any], data: dict[str, Any]) -> str:
    for rule in state["Choices"]:
        value = read(data, rule["Variable"])
        if "BooleanEquals" in rule and value is rule["BooleanEquals"]:
            return rule["Next"]
        if "StringEquals" in rule and value == rule["StringEquals"]:
            return rule["Next"]
    return state["Default"]


Answer = Callable[[str, BaseModel], BaseModel]


@dataclass
class Walk:
    path: list[str] = field(default_factory=list)
    calls: list[tuple[str, BaseModel]] = field(default_factory=list)
    output: dict[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> str:
        return self.path[-1]

    def actions(self) -> list[str]:
        return [action for action, _ in self.calls]

    def call(self, action: str) -> BaseModel:
        (found,) = [task for name, task in self.calls if name == action]
        return found


def walk(answer: Answer, execution_input: dict[str, Any], max_steps: int = 200) -> Walk:
    """Run the machine: each task's payload is read into its model and handed to `answer`, whose model (or
    TaskFailed, after the retries it would get) is what the task gives back."""
    run = Walk()
    data = copy.deepcopy(execution_input)
    name = ASL["StartAt"]
    for _ in range(max_steps):
        run.path.append(name)
        state = STATES[name]
        kind = state["Type"]
        if kind in TERMINAL:
            run.output = data
            return run
        if kind == "Choice":
            name = choose(state, data)
        elif kind == "Wait":
            name = state["Next"]
        elif kind == "Pass":
            data = put(data, state.get("ResultPath", "$"), resolve(state.get("Parameters", {}), data))
            name = state["Next"]
        else:
            assert state["Parameters"]["FunctionName"] == TASK_FUNCTION
            payload = resolve(state["Parameters"]["Payload"], data)
            model, result_model = MODELS[payload["action"]]
            task = model.model_validate(json.loads(json.dumps(payload)))
            run.calls.append((payload["action"], task))
            try:
                result = answer(name, task)
            except TaskFailed as failed:
                catcher = next(
                    c for c in state["Catch"] if failed.error in c["ErrorEquals"] or "States.ALL" in c["ErrorEquals"]
                )
                data = put(data, catcher["ResultPath"], {"Error": failed.error, "Cause": failed.cause})
                name = catcher["Next"]
                continue
            assert isinstance(result, result_model), f"{name} answered {type(result).__name__}"
            selected = resolve(state["ResultSelector"], {"Payload": result.model_dump(mode="json")})
            data = put(data, state["ResultPath"], selected)
            name = state["Next"]
    raise AssertionError(f"no end after {max_steps} steps: {run.path[-10:]}")


PLACEMENT = Placement(volume_id="vol-0dec0de5eadc0ffee", availability_zone="us-west-2a", subnet_id="subnet-0a")


class Script:
    """Answers the tasks the happy way, unless told otherwise: `failures[state name]` raises that error; the
    health check is unhealthy `unhealthy` times, then healthy (or gives up, with `give_up`)."""

    def __init__(self, failures: dict[str, str] | None = None, unhealthy: int = 0, *, give_up: bool = False) -> None:
        self.failures = failures or {}
        self.unhealthy = unhealthy
        self.give_up = give_up
        self.checks = 0

    def __call__(self, name: str, task: Any) -> BaseModel:
        if name in self.failures:
            raise TaskFailed(self.failures[name], json.dumps({"errorType": self.failures[name], "errorMessage": name}))
        if isinstance(task, Check):
            self.checks += 1
            if self.checks <= self.unhealthy:
                return Health(healthy=False, give_up=self.give_up and self.checks == self.unhealthy, detail="HTTP 503")
            return Health(healthy=True, detail="HTTP 200")
        answers: dict[type[BaseModel], Callable[[], BaseModel]] = {
            Place: lambda: PLACEMENT,
            Launch: lambda: Launched(
                instance_id="i-0123456789abcdef0", capacity_type=task.capacity_type, instance_type="g5.xlarge"
            ),
            Attach: lambda: Attached(device="/dev/sdf", private_ip="10.0.1.4", public_ip=None),
            Ready: lambda: Outcome(launch_id=task.launch_id, status="ready"),
            Fail: lambda: Outcome(launch_id=task.launch_id, status="terminated"),
        }
        return answers[type(task)]()


def start(use_spot: bool = True) -> dict[str, Any]:
    return LauncherInput(launch_id=LAUNCH_ID, use_spot=use_spot).model_dump(mode="json")


# --- the graph ------------------------------------------------------------------------------------------------


def test_start_and_every_transition_land_on_a_state() -> None:
    assert ASL["StartAt"] == "Place"
    for name, state in STATES.items():
        for target in transitions(state):
            assert target in STATES, f"{name} goes to {target!r}, which is not a state"


def test_every_state_is_reachable_from_the_start() -> None:
    assert reachable(ASL["StartAt"]) == set(STATES)


@pytest.mark.parametrize("name", list(STATES))
def test_every_state_goes_somewhere_or_ends(name: str) -> None:
    state = STATES[name]
    if state["Type"] in TERMINAL or state.get("End") is True:
        assert not list(transitions(state)), f"{name} ends and goes on"
    elif state["Type"] == "Choice":
        assert state["Choices"] and "Default" in state
    else:
        assert "Next" in state, f"{name} neither goes on nor ends"


def test_the_placeholders_are_the_task_function_and_the_numbers() -> None:
    assert placeholders(NAME) == {"SearchTasksArn", *NUMBERS}


def test_the_numbers_fill_in_as_numbers_and_bound_the_waits() -> None:
    filled = json.loads(load_definition(NAME, NUMBERS))
    assert not re.search(r'"\$\{(?!SearchTasksArn\})', json.dumps(filled))
    assert filled["TimeoutSeconds"] == SEARCH_LAUNCH_TIMEOUT_SECONDS
    assert filled["States"]["WaitForService"]["Seconds"] == SEARCH_START_POLL_SECONDS
    (_, waiting) = filled["States"]["Attach"]["Retry"]
    assert waiting["ErrorEquals"] == [TaskError.TRANSIENT.value] and waiting["BackoffRate"] == 1
    # Constant intervals: the attach is tried again every poll, for about the attach wait in all.
    total = waiting["IntervalSeconds"] * waiting["MaxAttempts"]
    assert SEARCH_ATTACH_WAIT_SECONDS - SEARCH_START_POLL_SECONDS <= total <= SEARCH_ATTACH_WAIT_SECONDS


# --- Retry and Catch ------------------------------------------------------------------------------------------


def test_the_tasks_are_the_search_tasks_function() -> None:
    assert all(STATES[name]["Resource"] == "arn:aws:states:::lambda:invoke" for name in TASKS)
    assert all(STATES[name]["Parameters"]["FunctionName"] == TASK_FUNCTION for name in TASKS)
    assert {action_of(name) for name in TASKS} == {a.value for a in LauncherAction}


@pytest.mark.parametrize("name", TASKS)
def test_every_task_retries_the_lambda_service_errors_first(name: str) -> None:
    assert STATES[name]["Retry"][0] == LAMBDA_SERVICE_RETRY


@pytest.mark.parametrize("name", TASKS)
def test_no_task_retries_a_fatal_or_classified_error(name: str) -> None:
    retried = {error for retrier in STATES[name]["Retry"] for error in retrier["ErrorEquals"]}
    assert not retried & {"FatalError", "CapacityError", "QuotaError", "Superseded", "States.ALL"}, name


@pytest.mark.parametrize("name", TASKS)
def test_every_task_catches_everything_last_keeping_the_error(name: str) -> None:
    last = STATES[name]["Catch"][-1]
    assert last["ErrorEquals"] == ["States.ALL"] and last["ResultPath"] == "$.error"
    assert last["Next"] == ("LaunchFailed" if name == "Fail" else "Fail")


def test_only_the_spot_launch_catches_capacity_and_quota_and_goes_on_demand() -> None:
    (refused, _) = STATES["LaunchSpot"]["Catch"]
    assert set(refused["ErrorEquals"]) == {TaskError.CAPACITY.value, "QuotaError"}
    assert refused["Next"] == "LaunchOnDemand"
    # Not $.error: the on-demand launch's own failure is the one Fail reports.
    assert refused["ResultPath"] not in ("$", "$.error", "$.placement", "$.launch_id")
    for name in TASKS:
        if name != "LaunchSpot":
            assert len(STATES[name]["Catch"]) == 1, name


def test_fail_gets_the_error_and_its_cause() -> None:
    payload = STATES["Fail"]["Parameters"]["Payload"]
    assert payload == {
        "action": "fail",
        "launch_id.$": "$.launch_id",
        "error.$": "$.error.Error",
        "cause.$": "$.error.Cause",
    }
    assert STATES["LaunchFailed"]["Type"] == "Fail"


# --- the models -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TASKS)
def test_a_task_passes_exactly_what_its_model_takes(name: str) -> None:
    model, _ = MODELS[action_of(name)]
    passed = {key.removesuffix(".$") for key in STATES[name]["Parameters"]["Payload"]}
    assert passed <= set(model.model_fields), f"{name} passes fields {model.__name__} does not know"
    required = {field for field, info in model.model_fields.items() if info.is_required()}
    assert required <= passed, f"{name} leaves out fields {model.__name__} requires"


@pytest.mark.parametrize("name", TASKS)
def test_a_task_selects_every_field_of_its_result_and_no_other(name: str) -> None:
    _, result = MODELS[action_of(name)]
    selector = STATES[name]["ResultSelector"]
    assert {key.removesuffix(".$") for key in selector} == set(result.model_fields)
    assert all(path == f"$.Payload.{key.removesuffix('.$')}" for key, path in selector.items())


def test_the_logic_answers_each_action_with_its_models() -> None:
    from typing import get_type_hints  # noqa: PLC0415

    from spothub_core.logic.search_launcher import TASKS as LOGIC  # noqa: PLC0415

    assert set(LOGIC) == set(MODELS)
    for action, (model, run) in LOGIC.items():
        hints = get_type_hints(run)
        assert (model, hints["return"]) == MODELS[action] == (hints["task"], hints["return"]), action


# --- the paths ------------------------------------------------------------------------------------------------


def test_spot_comes_up_and_is_ready() -> None:
    run = walk(Script(unhealthy=2), start())
    assert run.end == "Serving"
    assert run.actions() == ["place", "launch", "attach", "check", "check", "check", "ready"]
    launched = run.call("launch")
    assert isinstance(launched, Launch) and launched.capacity_type == "spot" and launched.placement == PLACEMENT
    attach = run.call("attach")
    assert isinstance(attach, Attach)
    assert (attach.instance_id, attach.volume_id) == ("i-0123456789abcdef0", PLACEMENT.volume_id)
    assert run.path.count("WaitForService") == 3  # a wait before each check
    assert run.output["outcome"] == {"launch_id": LAUNCH_ID, "status": "ready"}


@pytest.mark.parametrize("refusal", [TaskError.CAPACITY.value, "QuotaError"])
def test_a_spot_refusal_launches_on_demand(refusal: str) -> None:
    run = walk(Script({"LaunchSpot": refusal}), start())
    assert run.end == "Serving"
    assert [t.capacity_type for a, t in run.calls if isinstance(t, Launch)] == ["spot", "on-demand"]
    assert "Fail" not in run.path


def test_without_spot_the_launch_is_on_demand_only() -> None:
    run = walk(Script(), start(use_spot=False))
    assert "LaunchSpot" not in run.path and run.end == "Serving"
    assert [t.capacity_type for _, t in run.calls if isinstance(t, Launch)] == ["on-demand"]


def test_an_on_demand_refusal_fails_the_launch_with_its_error() -> None:
    run = walk(Script({"LaunchSpot": TaskError.CAPACITY.value, "LaunchOnDemand": TaskError.CAPACITY.value}), start())
    assert run.path[-3:] == ["Fail", "WasCancelled", "LaunchFailed"]
    fail = run.call("fail")
    assert isinstance(fail, Fail) and fail.error == TaskError.CAPACITY.value
    assert json.loads(fail.cause)["errorMessage"] == "LaunchOnDemand"


@pytest.mark.parametrize("error", [TaskError.FATAL.value, TaskError.TRANSIENT.value, "States.Timeout"])
def test_an_attach_that_fails_fails_the_launch(error: str) -> None:
    run = walk(Script({"Attach": error}), start())
    assert run.actions() == ["place", "launch", "attach", "fail"]
    assert run.end == "LaunchFailed"
    assert run.call("fail").error == error  # type: ignore[attr-defined]


def test_a_placement_that_fails_fails_the_launch_before_any_instance() -> None:
    run = walk(Script({"Place": TaskError.FATAL.value}), start())
    assert run.actions() == ["place", "fail"] and run.end == "LaunchFailed"


def test_the_start_budget_spent_fails_the_launch_with_the_last_detail() -> None:
    run = walk(Script(unhealthy=5, give_up=True), start())
    assert run.actions() == ["place", "launch", "attach", *["check"] * 5, "fail"]
    assert "NeverHealthy" in run.path and run.end == "LaunchFailed"
    fail = run.call("fail")
    assert isinstance(fail, Fail) and (fail.error, fail.cause) == ("NeverHealthy", "HTTP 503")


@pytest.mark.parametrize("name", ["Place", "LaunchSpot", "Attach", "Check", "Ready"])
def test_a_launch_ended_meanwhile_cleans_up_and_ends_cancelled(name: str) -> None:
    run = walk(Script({name: TaskError.SUPERSEDED.value}), start())
    assert run.actions()[-1] == "fail"
    assert run.path[-2:] == ["WasCancelled", "Cancelled"]
    assert STATES["Cancelled"]["Type"] == "Succeed"


def test_a_failing_fail_step_still_ends_the_execution_failed() -> None:
    run = walk(Script({"Attach": TaskError.FATAL.value, "Fail": "Lambda.Unknown"}), start())
    assert run.path[-2:] == ["Fail", "LaunchFailed"]

"""The batch listing's ASL, read as a graph: every transition lands on a state, every Task retries Lambda's
service errors and catches the rest, the loop carries what ListPages answers, the tasks pass exactly what
their models take (models/batch_tasks.py forbids other fields), and any failure fails the job through
FailListing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, get_type_hints

import pytest
from pydantic import BaseModel

from spothub_core.contracts import TaskError
from spothub_core.models.batch_tasks import (
    LISTING_ACTIONS,
    SUPERVISOR_ACTIONS,
    FailListing,
    ListPages,
    PagesListed,
)
from stacks.constructs.state_machine import placeholders
from stacks.paths import STATEMACHINES_DIR

NAME = "batch_listing"
ASL = json.loads((STATEMACHINES_DIR / f"{NAME}.asl.json").read_text(encoding="utf-8"))
STATES: dict[str, dict[str, Any]] = ASL["States"]
TASKS = [name for name, state in STATES.items() if state["Type"] == "Task"]
LISTING_TASKS = [name for name in TASKS if STATES[name]["Parameters"]["FunctionName"] == "${BatchListingArn}"]
SUPERVISOR_TASKS = [name for name in TASKS if STATES[name]["Parameters"]["FunctionName"] == "${BatchSupervisorArn}"]
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
TERMINAL = ("Succeed", "Fail")


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


def read_fields(node: Any) -> set[str]:
    """Top-level fields of the state input that `node` reads ($.field)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("ResultSelector", "ResultPath", "Catch", "Retry"):
                continue
            if key.endswith(".$") or key == "Variable":
                found |= set(re.findall(r"(?<![$\w])\$\.(\w+)", value))
            else:
                found |= read_fields(value)
    elif isinstance(node, list):
        for value in node:
            found |= read_fields(value)
    return found


def payload_fields(name: str) -> set[str]:
    payload = STATES[name]["Parameters"]["Payload"]
    return {key.removesuffix(".$") for key in payload} - {"action"}


def required(model: type[BaseModel]) -> set[str]:
    return {name for name, field in model.model_fields.items() if field.is_required()}


# --- the graph ------------------------------------------------------------------------------------------------


def test_start_and_every_transition_land_on_a_state() -> None:
    assert ASL["StartAt"] in STATES
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


def test_the_substitutions_are_the_two_functions_and_no_numbers() -> None:
    assert placeholders(NAME) == {"BatchListingArn", "BatchSupervisorArn"}


# --- Retry and Catch ------------------------------------------------------------------------------------------


def test_the_tasks_are_the_listing_functions_and_the_supervisor() -> None:
    assert set(LISTING_TASKS) | set(SUPERVISOR_TASKS) == set(TASKS)
    assert all(STATES[name]["Resource"] == "arn:aws:states:::lambda:invoke" for name in TASKS)
    assert set(LISTING_TASKS) == {"ListPages", "FinishListing", "FailListing"}
    assert SUPERVISOR_TASKS == ["StartWorkers"]


@pytest.mark.parametrize("name", TASKS)
def test_every_task_retries_the_lambda_service_errors_first(name: str) -> None:
    assert STATES[name]["Retry"][0] == LAMBDA_SERVICE_RETRY


def test_only_the_listing_retries_transient_s3_errors_and_never_a_fatal_one() -> None:
    (_, transient) = STATES["ListPages"]["Retry"]
    assert transient["ErrorEquals"] == [TaskError.TRANSIENT.value]
    assert transient["MaxAttempts"] >= 3 and transient["MaxDelaySeconds"] <= 60
    for name in TASKS:
        retried = {error for retrier in STATES[name]["Retry"] for error in retrier["ErrorEquals"]}
        assert TaskError.FATAL.value not in retried and "States.ALL" not in retried, name


@pytest.mark.parametrize("name", TASKS)
def test_every_task_catches_everything_and_keeps_the_error(name: str) -> None:
    (catcher,) = STATES[name]["Catch"]
    assert catcher["ErrorEquals"] == ["States.ALL"]
    assert catcher["ResultPath"] == "$.error"


def test_a_listing_failure_fails_the_job_through_fail_listing_then_the_execution() -> None:
    for name in ("ListPages", "FinishListing"):
        assert STATES[name]["Catch"][0]["Next"] == "FailListing"
    payload = STATES["FailListing"]["Parameters"]["Payload"]
    assert payload["error.$"] == "$.error.Error" and payload["cause.$"] == "$.error.Cause"
    assert STATES["FailListing"]["Next"] == STATES["FailListing"]["Catch"][0]["Next"] == "ListingFailed"
    assert STATES["ListingFailed"]["Type"] == "Fail"


def test_a_failed_start_of_the_workers_is_ignored_the_schedule_catches_up() -> None:
    state = STATES["StartWorkers"]
    assert state["Catch"][0]["Next"] == state["Next"] == "Done"
    assert STATES["Done"]["Type"] == "Succeed"
    assert state["ResultPath"] is None


# --- the loop and the models ----------------------------------------------------------------------------------


def test_the_loop_lists_until_done_then_finishes() -> None:
    assert STATES["Begin"]["Next"] == "ListPages"
    assert STATES["ListPages"]["Next"] == "Listed"
    (done,) = STATES["Listed"]["Choices"]
    assert done == {"Variable": "$.done", "BooleanEquals": True, "Next": "FinishListing"}
    assert STATES["Listed"]["Default"] == "ListPages"
    assert STATES["FinishListing"]["Next"] == "StartWorkers"


def test_the_first_listing_starts_from_the_job_id_alone_with_the_models_defaults() -> None:
    begin = STATES["Begin"]["Parameters"]
    assert read_fields(STATES["Begin"]) == {"job_id"}
    state = {key.removesuffix(".$"): value for key, value in begin.items()}
    assert ListPages.model_validate({**state, "job_id": "job-0123456789ab"}) == ListPages(job_id="job-0123456789ab")


def test_list_pages_replaces_the_state_with_all_it_answered_so_the_loop_reads_it_back() -> None:
    state = STATES["ListPages"]
    assert state["ResultPath"] == "$"
    selected = {key.removesuffix(".$"): value for key, value in state["ResultSelector"].items()}
    assert selected == {field: f"$.Payload.{field}" for field in PagesListed.model_fields}
    # What the loop reads is what ListPages answers: ListPages' own input and FinishListing's.
    for name in ("ListPages", "Listed", "FinishListing", "StartWorkers", "FailListing"):
        assert read_fields(STATES[name]) - {"error"} <= set(PagesListed.model_fields), name


@pytest.mark.parametrize("name", LISTING_TASKS)
def test_a_listing_task_passes_exactly_what_its_model_takes(name: str) -> None:
    action = STATES[name]["Parameters"]["Payload"]["action"]
    model = LISTING_ACTIONS[action]
    assert payload_fields(name) <= set(model.model_fields), f"{name} passes fields {model.__name__} does not know"
    assert required(model) <= payload_fields(name), f"{name} leaves out fields {model.__name__} requires"


def test_fail_listing_gets_the_error_and_its_cause() -> None:
    assert payload_fields("FailListing") == set(FailListing.model_fields)


@pytest.mark.parametrize("name", SUPERVISOR_TASKS)
def test_the_supervisor_task_names_its_action_and_the_job(name: str) -> None:
    payload = STATES[name]["Parameters"]["Payload"]
    model = SUPERVISOR_ACTIONS[payload["action"]]
    assert payload_fields(name) == {"job_id"} <= set(model.model_fields)


def test_the_result_selectors_read_only_fields_the_results_have() -> None:
    from spothub_core.logic import batch_listing  # noqa: PLC0415

    for name in LISTING_TASKS:
        action = STATES[name]["Parameters"]["Payload"]["action"]
        run = getattr(batch_listing, action)
        output: type[BaseModel] = get_type_hints(run)["return"]
        assert get_type_hints(run)["task"] is LISTING_ACTIONS[action]
        selected = {str(path).removeprefix("$.Payload.") for path in STATES[name].get("ResultSelector", {}).values()}
        assert selected <= set(output.model_fields), name

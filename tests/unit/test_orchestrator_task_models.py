"""The orchestrator's Lambda tasks and their models agree: every field a task's Payload passes is a field of
the action's input model (which forbids others), every field the model requires is passed, and every field
the task's ResultSelector reads is a field of the output model. The same for the spot finder's tasks."""

from __future__ import annotations

import json
from typing import Any, get_type_hints

import pytest
from pydantic import BaseModel, ValidationError

from spothub_core.logic.orchestrator_tasks import TASKS
from spothub_core.models.orchestrator_tasks import (
    DispatchLaunchInput,
    FindAnswer,
    FindRequest,
    OrchestratorInput,
    RecordInstanceInput,
)
from stacks.paths import STATEMACHINES_DIR

STATES: dict[str, dict[str, Any]] = json.loads(
    (STATEMACHINES_DIR / "spot_orchestrator.asl.json").read_text(encoding="utf-8")
)["States"]


def _lambda_tasks(function: str) -> dict[str, dict[str, Any]]:
    return {
        name: state
        for name, state in STATES.items()
        if state["Type"] == "Task"
        and state["Resource"].startswith("arn:aws:states:::lambda:invoke")
        and state["Parameters"]["FunctionName"] == f"${{{function}}}"
    }


CAPACITY_TASKS = _lambda_tasks("CapacityHandlerArn")
FINDER_TASKS = _lambda_tasks("SpotFinderArn")


def _keys(payload: dict[str, Any]) -> set[str]:
    return {key.removesuffix(".$") for key in payload}


def _required(model: type[BaseModel]) -> set[str]:
    return {name for name, field in model.model_fields.items() if field.is_required()}


def _selected(state: dict[str, Any]) -> set[str]:
    """The fields of the Lambda's answer the task reads back ($.Payload.<field>)."""
    return {str(path).removeprefix("$.Payload.").split(".")[0] for path in state.get("ResultSelector", {}).values()}


def test_the_asl_has_capacity_and_finder_tasks() -> None:
    assert CAPACITY_TASKS and FINDER_TASKS


@pytest.mark.parametrize("name", sorted(CAPACITY_TASKS))
def test_a_capacity_task_passes_exactly_what_its_input_model_takes(name: str) -> None:
    payload = dict(CAPACITY_TASKS[name]["Parameters"]["Payload"])
    model, _ = TASKS[payload.pop("action")]
    passed = _keys(payload)
    assert passed <= set(model.model_fields), f"{name} passes fields {model.__name__} does not know"
    assert _required(model) <= passed, f"{name} leaves out fields {model.__name__} requires"


@pytest.mark.parametrize("name", sorted(CAPACITY_TASKS))
def test_a_capacity_task_reads_back_only_what_its_output_model_answers(name: str) -> None:
    _, run = TASKS[CAPACITY_TASKS[name]["Parameters"]["Payload"]["action"]]
    output: type[BaseModel] = get_type_hints(run)["return"]
    assert _selected(CAPACITY_TASKS[name]) <= set(output.model_fields), name


@pytest.mark.parametrize("name", sorted(FINDER_TASKS))
def test_a_finder_task_passes_what_the_find_request_takes_and_reads_what_it_answers(name: str) -> None:
    state = FINDER_TASKS[name]
    assert _keys(state["Parameters"]["Payload"]) <= set(FindRequest.model_fields), name
    assert _selected(state) <= set(FindAnswer.model_fields), name


def test_the_spot_watchs_continued_state_is_an_orchestrator_input() -> None:
    state = STATES["ContinueSpotWatch"]["Parameters"]["Payload"]["state"]
    assert _keys(state) <= set(OrchestratorInput.model_fields)
    assert _required(OrchestratorInput) <= _keys(state)


def test_the_orchestrator_input_names_every_field_the_asl_comment_documents() -> None:
    comment = json.loads((STATEMACHINES_DIR / "spot_orchestrator.asl.json").read_text(encoding="utf-8"))["Comment"]
    documented = comment.split("Input: {", 1)[1].split("}", 1)[0]
    assert {f.strip() for f in documented.split(",")} == set(OrchestratorInput.model_fields)


def test_an_input_with_a_field_the_model_does_not_know_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError) as raised:
        DispatchLaunchInput.model_validate(
            {"token": "t", "replica_id": "r", "generation": 1, "region": "x", "launch_id": "l", "regoin": "y"}
        )
    assert [e["loc"] for e in raised.value.errors()] == [("regoin",)]


def test_an_input_without_a_required_field_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError) as raised:
        RecordInstanceInput.model_validate({"replica_id": "r", "generation": 1, "launch_id": "l", "region": "x"})
    assert [e["loc"] for e in raised.value.errors()] == [("instance",)]

"""The ASL names events and errors as literals (statemachines/*.asl.json); every one must be a name the
contracts or the domain errors define, so a rename on one side cannot leave the state machines behind."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import spothub_core
from spothub_core.contracts import HubCommand, Source, TaskError, WorkerReport
from spothub_core.models.batch_tasks import LISTING_ACTIONS, SUPERVISOR_ACTIONS

STATE_MACHINES = sorted((Path(__file__).parents[2] / "statemachines").glob("*.asl.json"))
# Error names of AWS itself: Step Functions' own, and those of the service integrations the ASL uses.
AWS_ERROR_PREFIXES = ("States.", "Lambda.", "EventBridge.")
# The batch functions' actions, by the substitution of the function's ARN: a task names one of them and passes
# only fields of its model (the models forbid others, so a renamed field would fail the task's first call).
ACTIONS_BY_FUNCTION = {"${BatchListingArn}": LISTING_ACTIONS, "${BatchSupervisorArn}": SUPERVISOR_ACTIONS}


def _walk(node: Any, key: str) -> Iterator[Any]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                yield value
            yield from _walk(value, key)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value, key)


def _domain_exceptions() -> set[str]:
    names = set()
    for found in pkgutil.walk_packages(spothub_core.__path__, "spothub_core."):
        module = importlib.import_module(found.name)
        names.update(
            name
            for name, value in vars(module).items()
            if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == module.__name__
        )
    return names


@pytest.mark.parametrize("path", STATE_MACHINES, ids=lambda p: p.name)
def test_every_event_the_asl_puts_is_a_contract(path: Path) -> None:
    definition = json.loads(path.read_text())
    for entries in _walk(definition, "Entries"):
        for entry in entries:
            assert entry["Source"] in {s.value for s in Source}, entry
            assert entry["DetailType"] in {*WorkerReport, *HubCommand}, entry


@pytest.mark.parametrize("path", STATE_MACHINES, ids=lambda p: p.name)
def test_every_error_the_asl_catches_is_raised_by_name_somewhere(path: Path) -> None:
    known = _domain_exceptions() | {e.value for e in TaskError}
    definition = json.loads(path.read_text())
    for names in _walk(definition, "ErrorEquals"):
        for name in names:
            assert name.startswith(AWS_ERROR_PREFIXES) or name in known, f"{path.name}: {name} is defined nowhere"


def test_the_task_errors_are_domain_exceptions() -> None:
    assert {e.value for e in TaskError} <= _domain_exceptions()


@pytest.mark.parametrize("path", STATE_MACHINES, ids=lambda p: p.name)
def test_every_batch_task_names_an_action_its_function_knows_with_its_fields(path: Path) -> None:
    definition = json.loads(path.read_text())
    for parameters in _walk(definition, "Parameters"):
        if not isinstance(parameters, dict) or parameters.get("FunctionName") not in ACTIONS_BY_FUNCTION:
            continue
        actions = ACTIONS_BY_FUNCTION[parameters["FunctionName"]]
        payload = dict(parameters["Payload"])
        action = payload.pop("action")
        assert action in actions, f"{path.name}: {parameters['FunctionName']} has no action {action!r}"
        passed = {key.removesuffix(".$") for key in payload}
        assert passed <= set(actions[action].model_fields), f"{path.name}: {action} is passed {sorted(passed)}"


def test_the_batch_listing_is_among_the_state_machines_checked() -> None:
    assert "batch_listing.asl.json" in {path.name for path in STATE_MACHINES}

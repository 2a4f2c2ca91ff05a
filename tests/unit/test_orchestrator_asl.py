"""The spot orchestrator's ASL, read as a graph: every transition lands on a state, every Task follows the
file's Retry/Catch conventions, every placeholder is filled, and the spot watch and spot-only paths keep the
fields they read and never reach an on-demand launch."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from spothub_core.contracts import TaskError
from spothub_core.models.orchestrator_tasks import OrchestratorInput, Placement
from spothub_core.timings import CAPACITY_RETRY_SECONDS, SPOT_RETURN_SECONDS
from stacks.constructs.state_machine import load_definition, placeholders
from stacks.hub_stack import ORCHESTRATOR_DURATIONS
from stacks.paths import STATEMACHINES_DIR

NAME = "spot_orchestrator"
ASL = json.loads((STATEMACHINES_DIR / f"{NAME}.asl.json").read_text(encoding="utf-8"))
STATES: dict[str, dict[str, Any]] = ASL["States"]
TASKS = [name for name, state in STATES.items() if state["Type"] == "Task"]
LAMBDA_TASKS = [name for name in TASKS if STATES[name]["Resource"].startswith("arn:aws:states:::lambda:invoke")]
SNS_TASKS = [name for name in TASKS if STATES[name]["Resource"] == "arn:aws:states:::sns:publish"]
# The ARNs the hub stack substitutes (DefinitionSubstitutions); numbers come from ORCHESTRATOR_DURATIONS.
SUBSTITUTIONS = {"SpotFinderArn", "CapacityHandlerArn", "AlertsTopicArn"}
LAMBDA_SERVICE_ERRORS = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "DependencyUnavailable",
]
TERMINAL = ("Succeed", "Fail")


def transitions(state: dict[str, Any]) -> Iterator[str]:
    """Every state `state` may go to: Next, Default, each choice's Next, each catcher's Next."""
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
    """Top-level fields of the state input that `node` reads ($.field; not $$ context, not results)."""
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
        assert state["Choices"] and "Default" in state, f"{name}: a Choice without choices or a Default"
    else:
        assert "Next" in state, f"{name} neither goes on nor ends"


# --- Retry and Catch, the same on every Task ---------------------------------------------------------------


def test_the_conventions_are_checked_on_every_task() -> None:
    assert set(LAMBDA_TASKS) | set(SNS_TASKS) == set(TASKS)
    assert {"LookForSpot", "ReturnToSpot", "ContinueSpotWatch", "SpotGone", "SpotWatchFailed"} <= set(TASKS)


@pytest.mark.parametrize("name", LAMBDA_TASKS)
def test_every_lambda_task_retries_the_service_errors_with_jittered_backoff(name: str) -> None:
    (retrier,) = STATES[name]["Retry"]
    finder = STATES[name]["Parameters"]["FunctionName"] == "${SpotFinderArn}"
    expected = LAMBDA_SERVICE_ERRORS + (["SpotDataUnavailable"] if finder else [])
    assert retrier == {
        "ErrorEquals": expected,
        "IntervalSeconds": 2,
        "BackoffRate": 2,
        "MaxAttempts": 5,
        "JitterStrategy": "FULL",
    }


@pytest.mark.parametrize("name", SNS_TASKS)
def test_every_alert_retries_whatever_failed(name: str) -> None:
    assert STATES[name]["Retry"] == [
        {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 2}
    ]


@pytest.mark.parametrize("name", TASKS)
def test_every_task_catches_everything_last_and_keeps_the_error_where_alerts_read_it(name: str) -> None:
    catchers = STATES[name]["Catch"]
    assert catchers, name
    assert catchers[-1]["ErrorEquals"] == ["States.ALL"], f"{name}: the last catcher must catch everything"
    for catcher in catchers:
        assert catcher["ResultPath"] in ("$.error", None), f"{name} writes its error to {catcher['ResultPath']}"
        # A state that reports the error finds it: written by this catcher, or kept from the error this
        # state itself was reporting (ResultPath null).
        if "error" in read_fields(STATES[catcher["Next"]]):
            assert catcher["ResultPath"] == "$.error" or "error" in read_fields(STATES[name]), (
                f"{name} goes to {catcher['Next']}, which reads $.error"
            )


# --- numbers --------------------------------------------------------------------------------------------------


def test_every_placeholder_is_filled_by_the_hub_stack() -> None:
    assert placeholders(NAME) == SUBSTITUTIONS | set(ORCHESTRATOR_DURATIONS)
    filled = json.loads(load_definition(NAME, ORCHESTRATOR_DURATIONS))
    assert filled["States"]["WaitForSpot"]["Seconds"] == SPOT_RETURN_SECONDS
    assert filled["States"]["WaitForCapacity"]["Seconds"] == CAPACITY_RETRY_SECONDS


def test_the_wait_seconds_come_from_the_timings_module() -> None:
    assert ORCHESTRATOR_DURATIONS["SpotReturnSeconds"] == SPOT_RETURN_SECONDS
    assert ORCHESTRATOR_DURATIONS["CapacityRetrySeconds"] == CAPACITY_RETRY_SECONDS


# --- what each path reads is there ----------------------------------------------------------------------------


def test_every_field_a_fresh_execution_reads_has_a_default() -> None:
    given = set(OrchestratorInput(replica_id="replica-0", generation=1).model_dump())
    for name in ("Begin", "FindRegion", "NextAttempt"):
        assert read_fields(STATES[name]) <= given, name


def test_the_watch_loop_reads_only_what_count_look_keeps() -> None:
    kept = set(STATES["CountLook"]["Parameters"]) | {"spot", "returned", "error"}  # + what the loop's tasks add
    kept = {key.removesuffix(".$") for key in kept}
    loop = reachable("CountLook") - {"Placed", "Continued", "SpotWatchStopped"}
    assert {"WaitForSpot", "LookForSpot", "SpotFound", "ReturnToSpot", "ContinueSpotWatch"} <= loop
    for name in loop:
        assert read_fields(STATES[name]) <= kept, name


def test_a_watch_execution_starts_by_waiting_and_a_placement_by_finding_a_region() -> None:
    begin = STATES[ASL["StartAt"]]
    assert begin["Type"] == "Choice"
    watch, ranked = begin["Choices"]
    assert watch["Next"] == "WaitForSpot"
    assert {"Variable": "$.watch_spot", "BooleanEquals": True} in watch["And"]
    assert begin["Default"] == "FindRegion"
    # A replacement ranked by its starter (the capacity handler) skips FindRegion for its first attempt only.
    assert ranked["Next"] == "ChooseCapacity"
    assert {"Variable": "$.placement", "IsPresent": True} in ranked["And"]
    assert "placement" not in STATES["NextAttempt"]["Parameters"], "a later attempt ranks again"
    # The starter's ranking has the fields FindRegion's would have (what ChooseCapacity and RecordInstance read).
    selected = {key.removesuffix(".$") for key in STATES["FindRegion"]["ResultSelector"]}
    assert selected == set(Placement.model_fields)


def test_the_look_asks_for_spot_only() -> None:
    assert STATES["LookForSpot"]["Parameters"]["Payload"]["spot_only"] is True
    assert STATES["FindRegion"]["Parameters"]["Payload"]["spot_only.$"] == "$.spot_only"
    assert STATES["WaitForSpot"]["Next"] == "LookForSpot"


def test_an_on_demand_instance_is_watched_once_recorded_and_retired_after() -> None:
    assert STATES["RetireNeeded"]["Default"] == "OnDemandPlaced"
    assert STATES["Retire"]["Next"] == "OnDemandPlaced"
    assert STATES["RetireFailed"]["Next"] == "OnDemandPlaced"
    (on_demand,) = STATES["OnDemandPlaced"]["Choices"]
    assert on_demand["Next"] == "WaitForSpot"
    assert {"Variable": "$.target.capacity_type", "StringEquals": "on-demand"} in on_demand["And"]
    assert {"Variable": "$.recorded.superseded", "BooleanEquals": False} in on_demand["And"]
    assert STATES["OnDemandPlaced"]["Default"] == "Placed"


def test_a_spot_only_execution_never_reaches_an_on_demand_launch() -> None:
    choices = STATES["ChooseCapacity"]["Choices"]
    order = [choice["Next"] for choice in choices]
    # The spot-only branch is decided before the on-demand fallback and the wait for capacity.
    assert order.index("SpotGone") < order.index("OnDemandTarget")
    spot_only = choices[order.index("SpotGone")]
    assert {"Variable": "$.spot_only", "BooleanEquals": True} in spot_only["And"]
    # A failed spot-only launch goes round again, carrying spot_only, and only on-demand targets wait.
    assert STATES["NextAttempt"]["Parameters"]["spot_only.$"] == "$.spot_only"
    assert STATES["ContinueAsNew"]["Parameters"]["Payload"]["state.$"] == "$"
    (backoff,) = STATES["BackOffOnDemand"]["Choices"]
    assert backoff == {"Variable": "$.target.capacity_type", "StringEquals": "on-demand", "Next": "WaitForCapacity"}
    assert STATES["SpotTarget"]["Parameters"]["capacity_type"] == "spot"
    # SpotGone keeps the on-demand instance and ends: the watch goes on in the execution it starts.
    assert STATES["SpotGone"]["Parameters"]["Payload"]["action"] == "keep_on_demand"
    assert STATES[STATES["SpotGone"]["Next"]]["Type"] == "Succeed"


def test_the_watch_continues_as_a_new_watch_with_its_counter_reset() -> None:
    (enough,) = STATES["WatchLeft"]["Choices"]
    assert enough == {
        "Variable": "$.looks",
        "NumericGreaterThanEquals": "${AttemptsPerExecution}",
        "Next": "ContinueSpotWatch",
    }
    assert STATES["CountLook"]["Parameters"]["looks.$"] == "States.MathAdd($.looks, 1)"
    payload = STATES["ContinueSpotWatch"]["Parameters"]["Payload"]
    assert payload["action"] == "continue_as_new"
    assert payload["state"]["watch_spot"] is True
    assert payload["state"]["looks"] == 0


def test_a_region_another_replica_reserved_first_sends_the_launch_to_look_again() -> None:
    catchers = {tuple(c["ErrorEquals"]): c for c in STATES["Launch"]["Catch"]}
    taken = catchers[(str(TaskError.REGION_TAKEN),)]
    # Straight to the next attempt: no exclusion (the region is fine) and no wait (another region may be free).
    assert taken["Next"] == "NextAttempt"
    assert STATES["NextAttempt"]["Next"] == "HistoryLeft"
    assert STATES["HistoryLeft"]["Default"] == "FindRegion"

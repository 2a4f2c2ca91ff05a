"""Return to spot, the hub's side: a replica serving on on-demand is replaced by a spot-only replacement when a
look finds a spot region (`return_to_spot`), and kept on its on-demand instance, watched again, when that
replacement finds no spot region left (`keep_on_demand`).

DynamoDB and Step Functions are moto's (executions are recorded with their input, not run; a name started
twice is refused as on AWS); EventBridge, SSM and Route 53 are mocks.
"""

from __future__ import annotations

from typing import Any
from unittest.mock import MagicMock

import boto3
import pytest
from botocore.exceptions import ClientError

from spothub_core.contracts import LaunchFailed
from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.errors import DependencyUnavailable
from spothub_core.logic.hub_services import HubServices
from spothub_core.logic.worker_reports import on_launch_failed
from tests.integration.conftest import config, create_state_machine, executions, orchestrator_task

NOW = 1_700_000_000.0
LOOKED_AT = "2023-11-14T22:18:20.123Z"  # NOW + 300 s, as Step Functions writes $$.State.EnteredTime
LOOK = 1_700_000_300
ON_DEMAND_REGION = "us-west-2"
SPOT_REGION = "eu-west-1"
REPLICA = "replica-0"
PLACING = "replica-0-g1"

continue_as_new = orchestrator_task("continue_as_new")
dispatch_launch = orchestrator_task("dispatch_launch")
keep_on_demand = orchestrator_task("keep_on_demand")
record_instance = orchestrator_task("record_instance")
return_to_spot = orchestrator_task("return_to_spot")


@pytest.fixture
def hub(table: Any) -> HubServices:
    """Provisioning enabled at generation 1; replica-0 serves on the on-demand instance i-od, placed by
    replica-0-g1 (no spot region was left), which now watches for spot."""
    events = MagicMock(name="events")
    events.put_events.return_value = {"FailedEntryCount": 0, "Entries": [{"EventId": "e1"}]}
    hub = HubServices(
        store=ProvisioningStore(table),
        exclusions=ExclusionStore(table),
        health=InstanceHealthStore(table),
        sfn=boto3.client("stepfunctions", region_name="us-east-1"),
        events=events,
        ssm=MagicMock(name="ssm"),
        route53=MagicMock(name="route53"),
        bus_name="spothub-hub",
        orchestrator_arn=create_state_machine("spothub-orchestrator"),
        active_instance_parameter="/spothub/active-instance",
    )
    assert hub.store.write_config(config(status="enabled", generation=1, replicas=1), expected_generation=0)
    assert hub.store.start_placing(REPLICA, generation=1, execution=PLACING, now=NOW - 900)
    record_instance(hub, recorded("i-od", ON_DEMAND_REGION, "on-demand", launch_id=f"{PLACING}-2"), now=NOW - 600)
    return hub


def recorded(instance_id: str, region: str, capacity_type: str, **overrides: Any) -> dict[str, Any]:
    """What RecordInstance passes the capacity handler."""
    return {
        "replica_id": REPLICA,
        "generation": 1,
        "launch_id": f"{PLACING}-0",
        "region": region,
        "capacity_type": capacity_type,
        "instance": {"instance_id": instance_id, "capacity_type": capacity_type, "public_ip": "203.0.113.7"},
        "replacing": None,
        "reason": "",
        **overrides,
    }


def look(hub: HubServices, execution: str = PLACING, looked_at: str = LOOKED_AT, now: float = NOW + 301) -> dict:
    """ReturnToSpot, as the orchestrator invokes it after LookForSpot found a spot region."""
    request = {"replica_id": REPLICA, "generation": 1, "execution": execution, "looked_at": looked_at}
    return return_to_spot(hub, request, now=now)


def spot_gone(hub: HubServices, execution: str, now: float = NOW + 400) -> dict[str, Any]:
    """SpotGone, as a spot-only replacement that ran out of spot regions invokes it."""
    request = {
        "replica_id": REPLICA,
        "generation": 1,
        "execution": execution,
        "replacing": {"instance_id": "i-od", "region": ON_DEMAND_REGION, "notice": "return-to-spot"},
    }
    return keep_on_demand(hub, request, now=now)


def replica(hub: HubServices) -> dict[str, Any]:
    found = hub.store.replica(REPLICA)
    assert found is not None
    return found


def started(hub: HubServices) -> dict[str, dict[str, Any]]:
    return {name: e["input"] for name, e in executions(hub.orchestrator_arn).items()}


RETURN = f"{REPLICA}-s-i-od-{LOOK}"


# --- return_to_spot ---------------------------------------------------------------------------------------


def test_a_look_that_found_spot_starts_a_spot_only_replacement_of_the_on_demand_instance(hub: HubServices) -> None:
    assert look(hub) == {"started": True, "outcome": f"replacement started: {RETURN}"}
    assert started(hub) == {
        RETURN: {
            "replica_id": REPLICA,
            "generation": 1,
            "attempt": 0,
            "prefer_region": ON_DEMAND_REGION,
            "replacing": {"instance_id": "i-od", "region": ON_DEMAND_REGION, "notice": "return-to-spot"},
            "spot_only": True,
            "watch_spot": False,
            "looks": 0,
        }
    }
    assert (replica(hub).status, replica(hub).execution) == ("replacing", RETURN)


def test_a_look_time_written_with_an_offset_names_the_same_replacement(hub: HubServices) -> None:
    # The sandbox's emulator writes $$.State.EnteredTime with +00:00 instead of Z.
    assert look(hub, looked_at="2023-11-14T22:18:20.123+00:00")["outcome"] == f"replacement started: {RETURN}"


def test_a_retried_look_starts_one_replacement(hub: HubServices) -> None:
    assert look(hub)["started"] is True
    # Step Functions retries the task (the answer was lost): same look, same name; nothing more starts.
    assert look(hub, now=NOW + 305)["started"] is True
    assert list(started(hub)) == [RETURN]


def test_a_retried_look_starts_the_replacement_its_first_try_could_not(
    hub: HubServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = hub.sfn.start_execution

    def throttled(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "StartExecution")

    monkeypatch.setattr(hub.sfn, "start_execution", throttled)
    with pytest.raises(DependencyUnavailable):
        look(hub)
    assert replica(hub).status == "replacing"  # marked, but nothing runs yet
    monkeypatch.setattr(hub.sfn, "start_execution", real)
    assert look(hub, now=NOW + 305)["started"] is True
    assert list(started(hub)) == [RETURN]


def test_a_replica_serving_on_spot_is_not_returned(hub: HubServices) -> None:
    hub.store.update_replica(REPLICA, {"capacity_type": "spot"})
    assert look(hub)["started"] is False
    assert started(hub) == {}
    assert replica(hub).status == "serving"


def test_a_stale_watch_starts_nothing(hub: HubServices) -> None:
    # The on-demand instance was replaced meanwhile (e.g. unhealthy) by another execution, which watches now.
    hub.store.update_replica(REPLICA, {"execution": f"{REPLICA}-r-i-od"})
    assert look(hub)["started"] is False
    assert started(hub) == {}


def test_a_watch_of_an_older_generation_starts_nothing(hub: HubServices) -> None:
    assert hub.store.write_config(config(status="enabled", generation=2, replicas=1), expected_generation=1)
    assert look(hub)["started"] is False
    assert started(hub) == {}


def test_a_look_after_a_disable_starts_nothing(hub: HubServices) -> None:
    assert hub.store.write_config(config(status="disabled", generation=2), expected_generation=1)
    hub.store.stop_replicas(NOW + 200)
    assert look(hub)["started"] is False
    assert started(hub) == {}
    assert replica(hub).status == "stopped"


def test_a_replica_being_replaced_is_not_returned_as_well(hub: HubServices) -> None:
    assert hub.store.start_replacing(REPLICA, instance_id="i-od", execution=f"{REPLICA}-r-i-od", now=NOW + 100)
    assert look(hub)["started"] is False
    assert replica(hub).execution == f"{REPLICA}-r-i-od"


# --- keep_on_demand -----------------------------------------------------------------------------------------


def test_no_spot_left_keeps_the_replica_on_its_on_demand_instance_and_watches_again(hub: HubServices) -> None:
    look(hub)
    # The spot-only replacement dispatched a spot launch in eu-west-1, which failed for capacity.
    dispatch_launch(
        hub,
        {"launch_id": f"{RETURN}-0", "replica_id": REPLICA, "region": SPOT_REGION, "generation": 1, "token": "t-1"},
        now=NOW + 310,
    )
    failure = LaunchFailed(
        launch_id=f"{RETURN}-0", region=SPOT_REGION, error_class="capacity", code="InsufficientInstanceCapacity"
    )
    on_launch_failed(hub, failure, now=NOW + 350)
    assert (replica(hub).target_region, replica(hub).capacity_type) == (SPOT_REGION, "spot")

    watch = f"{RETURN}-w"
    assert spot_gone(hub, RETURN) == {"kept": True, "watch": watch}
    kept = replica(hub)
    assert (kept.status, kept.execution, kept.instance_id, kept.region) == (
        "serving",
        watch,
        "i-od",
        ON_DEMAND_REGION,
    )
    assert (kept.capacity_type, kept.target_region, kept.launch_id) == ("on-demand", None, f"{PLACING}-2")
    assert started(hub)[watch] == {
        "replica_id": REPLICA,
        "generation": 1,
        "attempt": 0,
        "prefer_region": None,
        "replacing": None,
        "spot_only": False,
        "watch_spot": True,
        "looks": 0,
    }
    assert [e.region for e in hub.exclusions.active(NOW + 400)] == [SPOT_REGION]


def test_keep_on_demand_retried_starts_one_watch(hub: HubServices) -> None:
    look(hub)
    assert spot_gone(hub, RETURN)["kept"] is True
    assert spot_gone(hub, RETURN, now=NOW + 402) == {"kept": True, "watch": f"{RETURN}-w"}
    assert sorted(started(hub)) == [RETURN, f"{RETURN}-w"]


def test_the_watch_looks_again_and_returns_the_replica_later(hub: HubServices) -> None:
    look(hub)
    spot_gone(hub, RETURN)
    later = "2023-11-14T22:28:20Z"  # NOW + 900
    outcome = look(hub, execution=f"{RETURN}-w", looked_at=later, now=NOW + 901)
    second = f"{REPLICA}-s-i-od-{int(NOW) + 900}"
    assert outcome == {"started": True, "outcome": f"replacement started: {second}"}
    # The spot instance is healthy: recorded, and the on-demand instance is the one to retire.
    spot = recorded(
        "i-spot",
        SPOT_REGION,
        "spot",
        launch_id=f"{second}-0",
        replacing={"instance_id": "i-od", "region": ON_DEMAND_REGION, "notice": "return-to-spot"},
    )
    assert record_instance(hub, spot, now=NOW + 1300) == {
        "retire": {"instance_id": "i-od", "region": ON_DEMAND_REGION},
        "superseded": False,
    }
    assert (replica(hub).capacity_type, replica(hub).instance_id) == ("spot", "i-spot")


def test_keep_on_demand_after_a_disable_leaves_the_replica_stopped_and_starts_no_watch(hub: HubServices) -> None:
    look(hub)
    assert hub.store.write_config(config(status="disabled", generation=2), expected_generation=1)
    hub.store.stop_replicas(NOW + 350)
    assert spot_gone(hub, RETURN) == {"kept": False, "watch": None}
    assert replica(hub).status == "stopped"
    assert list(started(hub)) == [RETURN]


def test_keep_on_demand_after_a_new_enable_leaves_the_new_placement_alone(hub: HubServices) -> None:
    look(hub)
    assert hub.store.write_config(config(status="enabled", generation=2, replicas=1), expected_generation=1)
    assert hub.store.start_placing(REPLICA, generation=2, execution=f"{REPLICA}-g2", now=NOW + 350)
    assert spot_gone(hub, RETURN)["kept"] is False
    assert (replica(hub).status, replica(hub).execution) == ("placing", f"{REPLICA}-g2")


def test_keep_on_demand_by_an_execution_that_does_not_hold_the_replica_changes_nothing(hub: HubServices) -> None:
    look(hub)
    assert spot_gone(hub, f"{REPLICA}-s-i-od-1")["kept"] is False
    assert (replica(hub).status, replica(hub).execution) == ("replacing", RETURN)


# --- the watch continues as new while it still watches ------------------------------------------------------


def watch_continues(hub: HubServices, execution: str) -> dict[str, Any]:
    state = {"replica_id": REPLICA, "generation": 1, "watch_spot": True, "looks": 0}
    request = {"replica_id": REPLICA, "generation": 1, "execution": execution, "state": state}
    return continue_as_new(hub, request, now=NOW + 60_000)


def test_a_long_watch_continues_as_a_new_watch(hub: HubServices) -> None:
    name = f"{REPLICA}-g1-c{int(NOW) + 60_000}"
    assert watch_continues(hub, PLACING) == {"continued_as": name}
    assert started(hub)[name]["watch_spot"] is True
    assert replica(hub).execution == name


def test_a_stale_watch_does_not_continue(hub: HubServices) -> None:
    hub.store.update_replica(REPLICA, {"execution": f"{REPLICA}-r-i-od"})
    assert watch_continues(hub, PLACING) == {"continued_as": None}
    assert started(hub) == {}
    assert replica(hub).execution == f"{REPLICA}-r-i-od"

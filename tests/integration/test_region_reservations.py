"""Concurrent replicas never land in one region: each launch reserves its region in the state table (moto)
before it is dispatched, and the reservation goes when the replica leaves the region, its launch fails or is
given up, the replica fails, or provisioning is disabled.

The race: replicas enabled together rank the regions before either holds one, so both target the same best
region; the second reservation fails its condition, and that replica looks again and takes the next region.
"""

from __future__ import annotations

import json
from typing import Any
from unittest.mock import MagicMock

import pytest

from spothub_core.contracts import LaunchFailed
from spothub_core.dal.provisioning import LAUNCH
from spothub_core.errors import RegionTaken
from spothub_core.logic.hub_services import HubServices
from spothub_core.logic.provisioning import Orchestration, toggle
from spothub_core.logic.region_reservations import occupied_regions
from spothub_core.logic.worker_reports import on_launch_failed
from spothub_core.models.api import ToggleRequest
from spothub_core.models.records import ReservationStatus
from tests.integration.conftest import config, hub_services, orchestrator_task

NOW = 1_700_000_000.0
WEST, EAST = "us-west-2", "us-east-2"

abandon_launch = orchestrator_task("abandon_launch")
dispatch_launch = orchestrator_task("dispatch_launch")
record_instance = orchestrator_task("record_instance")
replica_failed = orchestrator_task("replica_failed")


@pytest.fixture
def hub(table: Any) -> HubServices:
    """Provisioning enabled at generation 1 with two replicas, both being placed."""
    hub = hub_services(table)
    assert hub.store.write_config(config(status="enabled", generation=1, replicas=2), expected_generation=0)
    for replica_id in ("replica-0", "replica-1"):
        assert hub.store.start_placing(replica_id, generation=1, execution=f"{replica_id}-g1", now=NOW)
    return hub


def launch(replica_id: str, region: str, attempt: int = 0) -> dict[str, Any]:
    return {
        "launch_id": f"{replica_id}-g1-{attempt}",
        "replica_id": replica_id,
        "region": region,
        "generation": 1,
        "token": f"token-{replica_id}-{attempt}",
    }


def launched_regions(hub: HubServices) -> list[tuple[str, str]]:
    """(replica, region) of every launch command put on the bus, in order."""
    details = [
        json.loads(entry["Detail"])
        for call in hub.events.put_events.call_args_list
        for entry in call.kwargs["Entries"]
        if entry["DetailType"] == "Spothub Launch Requested"
    ]
    return [(d["replica_id"], d["region"]) for d in details]


def holders(hub: HubServices) -> dict[str, str]:
    return {held.region: held.replica_id for held in hub.store.reservations()}


def best_for(hub: HubServices, replica_id: str, ranking: list[str]) -> str:
    """What the spot finder answers `replica_id`: the best region of `ranking` no other replica occupies."""
    occupied = occupied_regions(replica_id, hub.store.replicas(), hub.store.reservations())
    return next(region for region in ranking if region not in occupied)


def serve(hub: HubServices, replica_id: str, region: str, attempt: int = 0, **request: Any) -> None:
    answer = record_instance(
        hub,
        {
            "instance": {"instance_id": f"i-{replica_id}-{attempt}"},
            "region": region,
            "replica_id": replica_id,
            "generation": 1,
            "launch_id": f"{replica_id}-g1-{attempt}",
            **request,
        },
        now=NOW,
    )
    assert not answer["superseded"], answer


def failed(replica_id: str, region: str, attempt: int = 0) -> LaunchFailed:
    return LaunchFailed(
        launch_id=f"{replica_id}-g1-{attempt}",
        region=region,
        error_class="capacity",
        code="InsufficientInstanceCapacity",
        message="no g5 capacity",
    )


# --- the race -------------------------------------------------------------------------------------------


def test_two_replicas_ranking_at_once_launch_in_two_regions(hub: HubServices) -> None:
    ranking = [WEST, EAST]
    # Both rank before either holds a region: both find the same best region.
    first, second = best_for(hub, "replica-0", ranking), best_for(hub, "replica-1", ranking)
    assert first == second == WEST

    dispatch_launch(hub, launch("replica-0", first), now=NOW)
    with pytest.raises(RegionTaken, match=f"{WEST} is reserved for replica-0"):
        dispatch_launch(hub, launch("replica-1", second), now=NOW)
    # Nothing was dispatched for the loser: no launch waits on its token, no command went out.
    assert hub.store.request(LAUNCH, "replica-1-g1-0") is None
    assert launched_regions(hub) == [("replica-0", WEST)]

    # The orchestrator looks again (the next attempt): the region is taken, the next one is not.
    again = best_for(hub, "replica-1", ranking)
    assert again == EAST
    dispatch_launch(hub, launch("replica-1", again, attempt=1), now=NOW)
    assert launched_regions(hub) == [("replica-0", WEST), ("replica-1", EAST)]
    assert holders(hub) == {WEST: "replica-0", EAST: "replica-1"}


def test_a_reservation_is_visible_to_the_ranking_before_the_replica_notes_its_target(hub: HubServices) -> None:
    assert hub.store.reserve_region(WEST, replica_id="replica-0", launch_id="replica-0-g1-0", now=NOW)
    assert occupied_regions("replica-1", hub.store.replicas(), hub.store.reservations()) == {WEST: "replica-0"}
    # A replica's own reservation never keeps it out.
    assert occupied_regions("replica-0", hub.store.replicas(), hub.store.reservations()) == {}


def test_a_retried_dispatch_keeps_the_replicas_own_reservation(hub: HubServices) -> None:
    dispatch_launch(hub, launch("replica-0", WEST), now=NOW)
    dispatch_launch(hub, launch("replica-0", WEST), now=NOW + 1)
    assert holders(hub) == {WEST: "replica-0"}


def test_a_dispatch_of_an_answered_launch_gives_its_reservation_back(hub: HubServices) -> None:
    dispatch_launch(hub, launch("replica-0", WEST), now=NOW)
    on_launch_failed(hub, failed("replica-0", WEST), now=NOW)
    with pytest.raises(Exception, match="already answered"):
        dispatch_launch(hub, launch("replica-0", WEST), now=NOW + 1)
    assert holders(hub) == {}


# --- held while the replica is there --------------------------------------------------------------------


def test_a_region_stays_reserved_while_its_replica_serves_there(hub: HubServices) -> None:
    dispatch_launch(hub, launch("replica-0", WEST), now=NOW)
    serve(hub, "replica-0", WEST)
    assert holders(hub) == {WEST: "replica-0"}
    with pytest.raises(RegionTaken):
        dispatch_launch(hub, launch("replica-1", WEST), now=NOW)


def test_a_replacement_in_the_same_region_renews_the_reservation(hub: HubServices) -> None:
    dispatch_launch(hub, launch("replica-0", WEST), now=NOW)
    serve(hub, "replica-0", WEST)
    dispatch_launch(hub, launch("replica-0", WEST, attempt=1), now=NOW)
    assert hub.store.reservation(WEST).launch_id == "replica-0-g1-1"  # type: ignore[union-attr]


def test_a_failed_replacement_in_the_region_where_the_replica_serves_keeps_it(hub: HubServices) -> None:
    dispatch_launch(hub, launch("replica-0", WEST), now=NOW)
    serve(hub, "replica-0", WEST)
    dispatch_launch(hub, launch("replica-0", WEST, attempt=1), now=NOW)
    on_launch_failed(hub, failed("replica-0", WEST, attempt=1), now=NOW)
    assert holders(hub) == {WEST: "replica-0"}


# --- released ---------------------------------------------------------------------------------------------


def test_a_failed_launch_releases_its_region(hub: HubServices) -> None:
    dispatch_launch(hub, launch("replica-0", WEST), now=NOW)
    assert on_launch_failed(hub, failed("replica-0", WEST), now=NOW) == "launch failed (capacity)"
    assert holders(hub) == {}
    assert hub.store.reservation(WEST).status == ReservationStatus.RELEASED


def test_a_duplicate_failure_releases_nothing_reserved_since(hub: HubServices) -> None:
    dispatch_launch(hub, launch("replica-0", WEST), now=NOW)
    on_launch_failed(hub, failed("replica-0", WEST), now=NOW)
    dispatch_launch(hub, launch("replica-1", WEST), now=NOW)
    on_launch_failed(hub, failed("replica-0", WEST), now=NOW + 1)
    assert holders(hub) == {WEST: "replica-1"}


def test_a_launch_given_up_releases_its_region(hub: HubServices) -> None:
    dispatch_launch(hub, launch("replica-0", WEST), now=NOW)
    abandon_launch(hub, {"launch_id": "replica-0-g1-0", "region": WEST, "cause": "States.HeartbeatTimeout"}, now=NOW)
    assert holders(hub) == {}


def test_a_replica_that_moves_releases_the_region_it_leaves(hub: HubServices) -> None:
    dispatch_launch(hub, launch("replica-0", WEST), now=NOW)
    serve(hub, "replica-0", WEST)
    assert hub.store.start_replacing("replica-0", instance_id="i-replica-0-0", execution="replica-0-r", now=NOW)
    dispatch_launch(hub, launch("replica-0", EAST, attempt=1), now=NOW)
    assert holders(hub) == {WEST: "replica-0", EAST: "replica-0"}  # make before break: both while it moves
    serve(hub, "replica-0", EAST, attempt=1, replacing={"instance_id": "i-replica-0-0", "region": WEST})
    assert holders(hub) == {EAST: "replica-0"}


def test_a_superseded_success_releases_its_region(hub: HubServices) -> None:
    dispatch_launch(hub, launch("replica-0", WEST), now=NOW)
    hub.store.replica_status("replica-0", "stopped")
    answer = record_instance(
        hub,
        {
            "instance": {"instance_id": "i-0"},
            "region": WEST,
            "replica_id": "replica-0",
            "generation": 1,
            "launch_id": "replica-0-g1-0",
        },
        now=NOW,
    )
    assert answer["superseded"]
    assert holders(hub) == {}


def test_a_failed_replica_releases_its_regions(hub: HubServices) -> None:
    dispatch_launch(hub, launch("replica-0", WEST), now=NOW)
    replica_failed(hub, {"replica_id": "replica-0", "error": {"Error": "FatalError", "Cause": "bad image"}}, now=NOW)
    assert holders(hub) == {}


def fake_orchestration() -> Orchestration:
    return Orchestration(
        start_execution=MagicMock(return_value=True), stop_execution=MagicMock(), put_command=MagicMock()
    )


def test_disable_releases_every_region(hub: HubServices) -> None:
    dispatch_launch(hub, launch("replica-0", WEST), now=NOW)
    dispatch_launch(hub, launch("replica-1", EAST), now=NOW)
    toggle(
        ToggleRequest(action="disable"),
        store=hub.store,
        orchestration=fake_orchestration(),
        worker_regions=[WEST, EAST],
        default_instance_types=["g5.xlarge"],
        now=NOW,
    )
    assert holders(hub) == {}


def test_fewer_replicas_release_the_regions_of_those_no_longer_wanted(hub: HubServices) -> None:
    dispatch_launch(hub, launch("replica-0", WEST), now=NOW)
    dispatch_launch(hub, launch("replica-1", EAST), now=NOW)
    toggle(
        ToggleRequest(action="enable", replicas=1),
        store=hub.store,
        orchestration=fake_orchestration(),
        worker_regions=[WEST, EAST],
        default_instance_types=["g5.xlarge"],
        now=NOW,
    )
    assert holders(hub) == {WEST: "replica-0"}


# --- left behind ------------------------------------------------------------------------------------------


def test_a_reservation_left_by_a_stopped_replica_is_taken_over(hub: HubServices) -> None:
    # A release that never ran: the replica was stopped while its dispatch was reserving.
    assert hub.store.reserve_region(WEST, replica_id="replica-0", launch_id="replica-0-g1-0", now=NOW)
    hub.store.replica_status("replica-0", "stopped")
    assert occupied_regions("replica-1", hub.store.replicas(), hub.store.reservations()) == {}
    dispatch_launch(hub, launch("replica-1", WEST), now=NOW)
    assert holders(hub) == {WEST: "replica-1"}


def test_a_takeover_names_the_reservation_it_replaces(hub: HubServices) -> None:
    assert hub.store.reserve_region(WEST, replica_id="replica-0", launch_id="replica-0-g1-0", now=NOW)
    # Another replica took the stale reservation over first: this takeover, naming the old one, fails.
    assert hub.store.reserve_region(
        WEST, replica_id="replica-1", launch_id="replica-1-g1-0", now=NOW, taking_over="replica-0-g1-0"
    )
    assert not hub.store.reserve_region(
        WEST, replica_id="replica-2", launch_id="replica-2-g1-0", now=NOW, taking_over="replica-0-g1-0"
    )
    assert holders(hub) == {WEST: "replica-1"}

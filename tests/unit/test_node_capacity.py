"""Capacity for deployments (logic/node_capacity.py): how many nodes the shortfall needs, which regions are asked
(the finder's ranking less the excluded ones; on-demand when no spot region is left), an ask that gave no node taken
back and its region excluded, idle nodes released. The pure decisions first, then `provide` against the deployments
table in moto with stand-in node groups and a stand-in finder."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from spothub_core.dal.deployment_store import DeploymentStore
from spothub_core.logic.deployment_context import ControllerContext, RegionClients
from spothub_core.logic.node_capacity import (
    IDLE_REASON,
    CapacityResult,
    coming,
    excluded,
    expecting,
    idle_nodes,
    nodes_needed,
    on_demand_regions,
    overdue,
    provide,
    registered,
    silent,
    spot_regions,
    warming,
)
from spothub_core.models.deployment_records import DeploymentTask, GpuNode, NodeGroupAsk, NodeStatus
from spothub_core.models.orchestrator_tasks import FindAnswer, FindRequest, RankedRegionView
from spothub_core.timings import CAPACITY_EXCLUSION_SECONDS, NODE_BOOT_SECONDS, NODE_IDLE_GRACE_SECONDS
from tests.integration.deployment_fixtures import (  # noqa: F401
    NOW,
    deployment_store_fixture,
    deployments_table_fixture,
    make_deployment,
    make_node,
    make_task,
    write_node,
)
from tests.unit.test_deployment_placement import FakeGroup, FakeGroups, context, regions_of

WEST, EU = "us-west-2", "eu-west-1"  # the worker regions of the deployment settings, in order
WORKER_REGIONS = [WEST, EU]


def answer(*ranked: str, on_demand: str | None = None) -> FindAnswer:
    return FindAnswer(
        best=ranked[0] if ranked else None,
        reason="ranked",
        on_demand_region=on_demand,
        ranked=[
            RankedRegionView(region=r, rank=i + 1, placement_score=9 - i, spot_price=0.5, reason="score")
            for i, r in enumerate(ranked)
        ],
        left_out=[],
        instance_types=["g5.xlarge"],
        target_capacity=1,
        observed_at=NOW,
    )


class Finder:
    def __init__(self, result: FindAnswer) -> None:
        self.result = result
        self.asked: list[FindRequest] = []

    def __call__(self, request: FindRequest) -> FindAnswer:
        self.asked.append(request)
        return self.result


def ask(region: str = WEST, node_class: str = "1gpu", **fields: object) -> NodeGroupAsk:
    values: dict[str, object] = {"desired": 2, "asked_at": NOW, "registered_at_ask": 0, **fields}
    return NodeGroupAsk(region=region, node_class=node_class, **values)  # type: ignore[arg-type]


def pending(n: int, gpus: int = 1) -> list[DeploymentTask]:
    deployment = make_deployment(gpus=gpus)
    return [make_task(deployment, f"t-{i}", slot=i) for i in range(n)]


# --- pure decisions --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpus", "node_gpus", "nodes"),
    [([], 1, 0), ([1, 1, 1], 1, 3), ([2, 2, 2], 4, 2), ([3, 2, 1, 1, 1], 4, 2), ([3, 3], 4, 2), ([4], 4, 1)],
)
def test_the_nodes_a_shortfall_needs_hold_each_task_on_one_node(gpus: list[int], node_gpus: int, nodes: int) -> None:
    assert nodes_needed(gpus, node_gpus) == nodes


def test_an_exclusion_holds_until_it_expires_and_for_on_demand_only_after_an_on_demand_ask() -> None:
    assert not excluded(None, NOW)
    spot_failed = ask(excluded_until=NOW + 60)
    assert excluded(spot_failed, NOW) and not excluded(spot_failed, NOW + 60)
    assert not excluded(spot_failed, NOW, on_demand=True)  # an empty spot pool is not an empty region
    assert excluded(ask(excluded_until=NOW + 60, on_demand=True), NOW, on_demand=True)


def test_an_ask_is_expected_until_its_nodes_register_or_the_boot_time_passes() -> None:
    asked = ask(desired=3, registered_at_ask=1)
    assert expecting(asked) and not expecting(ask(desired=1, registered_at_ask=1))
    assert coming(asked, 2, NOW + 60) == 1
    assert not overdue(asked, 2, NOW + NODE_BOOT_SECONDS - 1)
    assert overdue(asked, 2, NOW + NODE_BOOT_SECONDS) and coming(asked, 2, NOW + NODE_BOOT_SECONDS) == 0
    assert not overdue(asked, 3, NOW + NODE_BOOT_SECONDS) and coming(asked, 3, NOW) == 0


def test_spot_regions_follow_the_ranking_less_the_excluded_and_foreign_ones() -> None:
    ranking = answer("ap-south-1", EU, WEST)
    assert spot_regions(ranking, {}, WORKER_REGIONS, NOW) == [EU, WEST]
    assert spot_regions(ranking, {EU: ask(EU, excluded_until=NOW + 1)}, WORKER_REGIONS, NOW) == [WEST]


def test_on_demand_goes_to_the_finders_choice_first() -> None:
    assert on_demand_regions(answer(on_demand=EU), {}, WORKER_REGIONS, NOW) == [EU, WEST]
    assert on_demand_regions(answer(), {}, WORKER_REGIONS, NOW) == [WEST, EU]
    failed = {EU: ask(EU, excluded_until=NOW + 1, on_demand=True)}
    assert on_demand_regions(answer(on_demand=EU), failed, WORKER_REGIONS, NOW) == [WEST]


def _idle(instance_id: str, **fields: object) -> GpuNode:
    values: dict[str, object] = {"last_heartbeat": NOW, "idle_since": NOW - NODE_IDLE_GRACE_SECONDS, **fields}
    return make_node(instance_id, **values)  # type: ignore[arg-type]


def test_idle_nodes_are_ready_empty_past_the_grace_and_of_a_class_nothing_waits_for() -> None:
    nodes = [
        _idle("i-0000000000000001"),
        _idle("i-0000000000000002", idle_since=NOW - NODE_IDLE_GRACE_SECONDS + 1),  # within the grace
        _idle("i-0000000000000003", idle_since=None),  # something allocated
        _idle("i-0000000000000004", status=NodeStatus.CORDONED),  # an operator's
        _idle("i-0000000000000005", node_class="4gpu"),
    ]
    assert [n.instance_id for n in idle_nodes(nodes, set(), NOW)] == [
        "i-0000000000000001",
        "i-0000000000000005",
    ]
    assert [n.instance_id for n in idle_nodes(nodes, {"1gpu"}, NOW)] == ["i-0000000000000005"]


def test_a_node_whose_agent_never_beat_is_released_even_when_tasks_wait() -> None:
    mute = _idle("i-0000000000000001", last_heartbeat=None, first_seen=NOW - NODE_BOOT_SECONDS)
    assert silent(mute, NOW)
    assert [n.instance_id for n in idle_nodes([mute], {"1gpu"}, NOW)] == [mute.instance_id]
    booting = _idle("i-0000000000000002", last_heartbeat=None, first_seen=NOW - 60)
    assert not silent(booting, NOW) and warming([booting, mute], "1gpu", NOW) == 1


def test_registered_counts_the_groups_nodes_that_are_not_gone() -> None:
    nodes = [
        make_node("i-0000000000000001"),
        make_node("i-0000000000000002", status=NodeStatus.GONE),
        make_node("i-0000000000000003", region=EU),
        make_node("i-0000000000000004", node_class="4gpu"),
    ]
    assert registered(nodes, WEST, "1gpu") == 1


# --- provide ---------------------------------------------------------------------------------------------------


def _clients(**groups: dict[str, FakeGroup]) -> dict[str, RegionClients]:
    """Stand-in node groups: `us_west_2={"1gpu": FakeGroup(...)}`."""
    clients = regions_of(WEST, EU)
    for name, by_class in groups.items():
        fake = clients[name.replace("_", "-")].groups
        assert isinstance(fake, FakeGroups)
        fake.groups.update(by_class)
    return clients


def _groups(clients: dict[str, RegionClients], region: str) -> FakeGroups:
    groups = clients[region].groups
    assert isinstance(groups, FakeGroups)
    return groups


def _nodes(store: DeploymentStore) -> dict[str, GpuNode]:
    return {n.instance_id: n for n in store.nodes()}


def _provide(
    store: DeploymentStore,
    clients: dict[str, RegionClients],
    finder: Callable[[FindRequest], FindAnswer],
    shortfall: dict[str, list[DeploymentTask]],
    *,
    now: float = NOW,
    **settings: str,
) -> tuple[ControllerContext, CapacityResult]:
    ctx = context(store, clients, find=finder, now=now, **settings)
    pending_classes = set(shortfall)
    return ctx, provide(ctx, shortfall, _nodes(store), pending_classes)


def test_the_shortfall_is_asked_of_the_best_region_and_recorded(deployment_store: DeploymentStore) -> None:
    clients = _clients(us_west_2={"1gpu": FakeGroup()}, eu_west_1={"1gpu": FakeGroup()})
    finder = Finder(answer(EU, WEST))

    _, result = _provide(deployment_store, clients, finder, {"1gpu": pending(3)})

    (request,) = finder.asked
    assert (request.instance_types, request.target_capacity, request.share_regions) == (
        ["g5.xlarge", "g6.xlarge"],
        3,
        True,
    )
    assert _groups(clients, EU).groups["1gpu"].desired == 3 and _groups(clients, WEST).groups["1gpu"].desired == 0
    assert (result.asked, result.asks) == (3, ["eu-west-1#1gpu+3"])
    (recorded,) = deployment_store.asks()
    assert (recorded.region, recorded.desired, recorded.asked_at, recorded.registered_at_ask) == (EU, 3, NOW, 0)
    assert not recorded.on_demand and recorded.excluded_until is None


def test_nodes_on_the_way_are_not_asked_twice(deployment_store: DeploymentStore) -> None:
    clients = _clients(us_west_2={"1gpu": FakeGroup()})
    finder = Finder(answer(WEST))
    _provide(deployment_store, clients, finder, {"1gpu": pending(2)})

    _, result = _provide(deployment_store, clients, finder, {"1gpu": pending(3)}, now=NOW + 120)

    assert result.asked == 1 and _groups(clients, WEST).groups["1gpu"].desired == 3
    assert finder.asked[-1].target_capacity == 1


def test_a_full_region_overflows_to_the_next(deployment_store: DeploymentStore) -> None:
    clients = _clients(us_west_2={"1gpu": FakeGroup(desired=3)}, eu_west_1={"1gpu": FakeGroup()})

    _, result = _provide(deployment_store, clients, Finder(answer(WEST, EU)), {"1gpu": pending(3)})

    assert result.asks == ["us-west-2#1gpu+1", "eu-west-1#1gpu+2"]
    assert _groups(clients, WEST).groups["1gpu"].desired == 4  # the class's max_nodes


def test_an_ask_that_gave_no_node_in_time_is_taken_back_and_asked_elsewhere(
    deployment_store: DeploymentStore,
) -> None:
    clients = _clients(
        us_west_2={"1gpu": FakeGroup(desired=3, instance_ids=["i-0000000000000001", "i-00000000000000b1"])},
        eu_west_1={"1gpu": FakeGroup()},
    )
    write_node(deployment_store, make_node("i-0000000000000001", last_heartbeat=NOW))  # one of three registered
    deployment_store.put_ask(ask(WEST, desired=3, registered_at_ask=0, asked_at=NOW - NODE_BOOT_SECONDS))
    _groups(clients, WEST).groups["1gpu"].last_failure = "InsufficientInstanceCapacity"

    ctx, result = _provide(deployment_store, clients, Finder(answer(WEST, EU)), {"1gpu": pending(2)})

    west = _groups(clients, WEST)
    assert west.released == ["i-00000000000000b1"]  # the member that never registered
    assert west.groups["1gpu"].desired == 1
    assert result.excluded == ["us-west-2#1gpu"] and result.asks == ["eu-west-1#1gpu+2"]
    asks = {a.region: a for a in deployment_store.asks()}
    assert asks[WEST].excluded_until == NOW + CAPACITY_EXCLUSION_SECONDS
    assert (asks[WEST].desired, asks[WEST].registered_at_ask) == (1, 1)
    assert any("InsufficientInstanceCapacity" in line for line in ctx.log)


def test_an_excluded_region_is_not_asked_until_its_exclusion_ends(deployment_store: DeploymentStore) -> None:
    clients = _clients(us_west_2={"1gpu": FakeGroup()})
    deployment_store.put_ask(ask(WEST, desired=0, registered_at_ask=0, excluded_until=NOW + 60))
    finder = Finder(answer(WEST))

    _, result = _provide(deployment_store, clients, finder, {"1gpu": pending(1)}, SPOTHUB_CAPACITY_FALLBACK="none")
    assert result.asked == 0

    _, result = _provide(deployment_store, clients, finder, {"1gpu": pending(1)}, now=NOW + 60)
    assert result.asks == ["us-west-2#1gpu+1"]


def test_no_spot_region_left_turns_the_on_demand_region_on_demand(deployment_store: DeploymentStore) -> None:
    clients = _clients(us_west_2={"1gpu": FakeGroup()}, eu_west_1={"1gpu": FakeGroup()})

    _, result = _provide(deployment_store, clients, Finder(answer(on_demand=EU)), {"1gpu": pending(2)})

    eu = _groups(clients, EU)
    assert eu.groups["1gpu"].on_demand and eu.groups["1gpu"].desired == 2
    assert eu.calls[0] == ("set_on_demand", "1gpu", "True")
    assert result.asks == ["eu-west-1#1gpu+2"]
    (recorded,) = deployment_store.asks()
    assert recorded.on_demand


def test_without_the_on_demand_fallback_nothing_is_asked(deployment_store: DeploymentStore) -> None:
    clients = _clients(us_west_2={"1gpu": FakeGroup()})

    ctx, result = _provide(
        deployment_store,
        clients,
        Finder(answer(on_demand=WEST)),
        {"1gpu": pending(1)},
        SPOTHUB_CAPACITY_FALLBACK="none",
    )

    assert result.asked == 0 and _groups(clients, WEST).calls == []
    assert any("no on-demand fallback" in line for line in ctx.log)


def test_a_fulfilled_ask_is_recorded_so(deployment_store: DeploymentStore) -> None:
    clients = _clients(us_west_2={"1gpu": FakeGroup(desired=1)})
    deployment_store.put_ask(ask(WEST, desired=1, registered_at_ask=0))
    write_node(deployment_store, make_node("i-0000000000000001", last_heartbeat=NOW))

    _provide(deployment_store, clients, Finder(answer(WEST)), {}, now=NOW + NODE_BOOT_SECONDS + 1)

    (recorded,) = deployment_store.asks()
    assert not expecting(recorded) and recorded.excluded_until is None


def test_a_node_registered_whose_agent_has_not_beaten_counts_as_coming(deployment_store: DeploymentStore) -> None:
    clients = _clients(us_west_2={"1gpu": FakeGroup(desired=1)})
    write_node(deployment_store, make_node("i-0000000000000001", first_seen=NOW - 30))
    finder = Finder(answer(WEST))

    _, result = _provide(deployment_store, clients, finder, {"1gpu": pending(1)})

    assert result.asked == 0 and finder.asked == []


def test_an_idle_node_is_cordoned_and_released(deployment_store: DeploymentStore) -> None:
    clients = _clients(us_west_2={"1gpu": FakeGroup(desired=1, instance_ids=["i-0000000000000001"])})
    write_node(deployment_store, _idle("i-0000000000000001"))
    deployment_store.put_ask(ask(WEST, desired=1, registered_at_ask=1))

    _, result = _provide(deployment_store, clients, Finder(answer(WEST)), {})

    assert result.released == ["i-0000000000000001"]
    assert _groups(clients, WEST).released == ["i-0000000000000001"]
    node = deployment_store.get_node("i-0000000000000001")
    assert node is not None and (node.status, node.status_reason) == (NodeStatus.CORDONED, IDLE_REASON)
    (recorded,) = deployment_store.asks()
    assert (recorded.desired, recorded.registered_at_ask) == (0, 0)


def test_an_idle_node_stays_while_a_task_of_its_class_waits(deployment_store: DeploymentStore) -> None:
    clients = _clients(us_west_2={"1gpu": FakeGroup(desired=1)})
    write_node(deployment_store, _idle("i-0000000000000001"))
    ctx = context(deployment_store, clients, find=Finder(answer(WEST)))

    result = provide(ctx, {}, _nodes(deployment_store), {"1gpu"})  # a task in its restart backoff

    assert result.released == []


def test_a_release_that_fails_puts_the_node_back(deployment_store: DeploymentStore) -> None:
    clients = _clients(us_west_2={"1gpu": FakeGroup(desired=1)})
    _groups(clients, WEST).release_error = RuntimeError("Throttling")
    write_node(deployment_store, _idle("i-0000000000000001"))

    _, result = _provide(deployment_store, clients, Finder(answer(WEST)), {})

    assert result.released == [] and result.errors == 1
    node = deployment_store.get_node("i-0000000000000001")
    assert node is not None and node.status == NodeStatus.READY


def test_an_on_demand_group_with_no_node_left_returns_to_spot(deployment_store: DeploymentStore) -> None:
    clients = _clients(eu_west_1={"1gpu": FakeGroup(on_demand=True)})
    deployment_store.put_ask(ask(EU, desired=0, registered_at_ask=0, on_demand=True))

    _provide(deployment_store, clients, Finder(answer(EU)), {})

    assert not _groups(clients, EU).groups["1gpu"].on_demand
    (recorded,) = deployment_store.asks()
    assert not recorded.on_demand

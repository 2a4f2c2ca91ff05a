"""The synthesized EventBridge rules carry exactly what the consumer list (spothub_core.consumers) gives: for each
consumer, the (source, detail-type) pairs its rules let through are its entries, on the bus the entries name;
and the rules that carry events between buses carry exactly what is consumed at the other end.

The deployment checked is the search fixture (the reference regions with the search instance in us-west-2), where
every consumer exists; without searchVolumeId, nothing consumes or forwards the search monitor's entries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from spothub_core.consumers import CONSUMERS, Bus, Target, consumed_by, event_patterns
from spothub_core.contracts import AWS_EVENT_SOURCES, Source
from tests.infrastructure.synth import Synthesized

Pair = tuple[str, str]
# The hub's consumers, all on the hub bus.
HUB_TARGETS = (Target.CAPACITY_HANDLER, Target.BATCH_SUPERVISOR, Target.SEARCH_MONITOR, Target.DEPLOYMENT_CONTROLLER)
# Consumers whose AWS events only the search region forwards.
SEARCH_REGION_TARGETS = (Target.SEARCH_MONITOR,)
# The worker region's consumers, by the bus their rules read ("default": the region's default bus).
WORKER_TARGETS = {
    Target.WORKER_TASKS: "WorkerBus",
    Target.BATCH_FLEET: "WorkerBus",
    Target.INSTANCE_REMEDIATION: "default",
    Target.CAPACITY_MONITOR: "default",
}


def _rules(synthesized: Synthesized, stack_name: str) -> list[dict[str, Any]]:
    """The rules that match events (schedules, such as the batch supervisor's, match none)."""
    return [
        r["Properties"]
        for r in synthesized.resources(stack_name, "AWS::Events::Rule").values()
        if "EventPattern" in r["Properties"]
    ]


def _pairs(pattern: dict[str, Any]) -> set[Pair]:
    # A pattern of one source matches no pairing that the list does not give (one rule per source).
    assert len(pattern["source"]) == 1, f"a rule of several sources matches their product: {pattern}"
    return {(pattern["source"][0], detail_type) for detail_type in pattern["detail-type"]}


def _consumer_of(synthesized: Synthesized, stack_name: str, target: dict[str, Any]) -> str | None:
    """The concern (Lambda) or state machine a rule target invokes, or the bus ARN text it forwards to."""
    resources = synthesized.templates[stack_name]["Resources"]
    arn = target["Arn"]
    if "Fn::GetAtt" in arn:
        handler = resources[arn["Fn::GetAtt"][0]]["Properties"]["Handler"]
        return handler.removesuffix(".handler.lambda_handler")
    if "Ref" in arn:
        name = resources[arn["Ref"]]["Properties"]["StateMachineName"]
        return name.removeprefix(f"{synthesized.config.prefix}-").replace("-", "_")
    return json.dumps(arn)


def _pairs_to(synthesized: Synthesized, stack_name: str, consumer: str) -> tuple[set[Pair], set[str]]:
    """The pairs the stack's rules deliver to `consumer`, and the buses (by Ref, or "default") they are read from."""
    pairs: set[Pair] = set()
    buses: set[str] = set()
    for rule in _rules(synthesized, stack_name):
        targets = {_consumer_of(synthesized, stack_name, t) for t in rule["Targets"]}
        if any(consumer in (t or "") for t in targets):
            pairs |= _pairs(rule["EventPattern"])
            buses.add(rule.get("EventBusName", {}).get("Ref", "default"))
    return pairs, buses


def _keys(target: Target) -> set[Pair]:
    return {(str(s), str(d)) for s, d in consumed_by(target)}


@pytest.mark.parametrize("target", HUB_TARGETS)
def test_each_hub_consumer_takes_exactly_its_entries_from_the_hub_bus(search: Synthesized, target: Target) -> None:
    hub = search.config.hub_stack_name()
    pairs, buses = _pairs_to(search, hub, target)
    assert pairs == _keys(target)
    assert len(buses) == 1
    assert next(iter(buses)).startswith("HubBus")


@pytest.mark.parametrize("target", HUB_TARGETS)
def test_one_hub_rule_per_source_with_the_lists_pattern(search: Synthesized, target: Target) -> None:
    hub = search.config.hub_stack_name()
    handler_rules = [
        rule["EventPattern"]
        for rule in _rules(search, hub)
        if {_consumer_of(search, hub, t) for t in rule["Targets"]} == {target.value}
    ]
    expected = list(event_patterns(consumed_by(target).values()).values())
    assert sorted(handler_rules, key=json.dumps) == sorted(expected, key=json.dumps)


def test_every_consumer_is_checked_here() -> None:
    assert {*HUB_TARGETS, *WORKER_TARGETS} == set(Target)


@pytest.mark.parametrize(("target", "bus"), WORKER_TARGETS.items())
@pytest.mark.parametrize("region", ["us-west-2", "eu-west-1"])
def test_each_worker_consumer_takes_exactly_its_entries(
    search: Synthesized, target: Target, bus: str, region: str
) -> None:
    worker = search.config.worker_stack_name(region)
    pairs, buses = _pairs_to(search, worker, target)
    assert pairs == _keys(target)
    assert {"WorkerBus" if b.startswith("WorkerBus") else b for b in buses} == {bus}
    expected_bus = {Bus.WORKER: "WorkerBus", Bus.WORKER_DEFAULT: "default"}
    assert {expected_bus[c.bus] for c in consumed_by(target).values()} == {bus}


def _produced_in(synthesized: Synthesized, region: str) -> set[Pair]:
    """The hub entries a worker region produces: the worker's own reports and the AWS events of the region (the
    search monitor's only from the search region); the agent puts its reports on the hub bus itself."""
    search_region = synthesized.config.search_enabled and region == synthesized.config.search_region
    return {
        (str(c.source), str(c.detail_type))
        for c in CONSUMERS
        if c.bus == Bus.HUB
        and (c.source == Source.WORKER or c.source in AWS_EVENT_SOURCES.values())
        and (search_region or c.target not in SEARCH_REGION_TARGETS)
    }


@pytest.mark.parametrize("region", ["us-west-2", "eu-west-1"])
def test_a_worker_region_forwards_to_the_hub_exactly_the_hub_entries_it_produces(
    search: Synthesized, reference: Synthesized, region: str
) -> None:
    for synthesized in (search, reference):
        worker = synthesized.config.worker_stack_name(region)
        pairs, _ = _pairs_to(synthesized, worker, ":event-bus/spothub-hub")
        assert pairs == _produced_in(synthesized, region), region


def _worker_wide_aws_pairs() -> set[tuple[str, str]]:
    """AWS events the hub consumes from every worker region (the spot notices: the capacity handler's)."""
    return {
        (str(c.source), str(c.detail_type))
        for c in CONSUMERS
        if c.bus == Bus.HUB and c.target not in SEARCH_REGION_TARGETS and c.source in AWS_EVENT_SOURCES.values()
    }


def test_only_the_search_region_forwards_the_search_monitors_aws_events(search: Synthesized) -> None:
    """...unless the hub consumes the same kind from every region (a spot interruption warning, which the capacity
    handler tells by its records): then every region forwards it, once."""
    search_pairs = {k for target in SEARCH_REGION_TARGETS for k in _keys(target)}
    assert search_pairs
    assert ("aws.ec2", "EC2 Spot Instance Interruption Warning") in search_pairs & _worker_wide_aws_pairs()
    for region in search.config.deployed_worker_regions:
        pairs, _ = _pairs_to(search, search.config.worker_stack_name(region), ":event-bus/spothub-hub")
        expected = search_pairs if region == search.config.search_region else search_pairs & _worker_wide_aws_pairs()
        assert search_pairs & pairs == expected, region


def test_without_a_search_volume_nothing_consumes_or_forwards_the_search_monitors_entries(
    reference: Synthesized,
) -> None:
    hub = reference.config.hub_stack_name()
    assert _pairs_to(reference, hub, Target.SEARCH_MONITOR) == (set(), set())
    search_pairs = {k for target in SEARCH_REGION_TARGETS for k in _keys(target)}
    # Only what the hub consumes from every worker region (the capacity handler's spot notices) goes to the hub.
    for region in reference.config.deployed_worker_regions:
        forwarded, _ = _pairs_to(reference, reference.config.worker_stack_name(region), ":event-bus/spothub-hub")
        assert forwarded & search_pairs == search_pairs & _worker_wide_aws_pairs(), region


def test_the_hub_sends_each_worker_region_exactly_the_commands_it_consumes(reference: Synthesized) -> None:
    hub = reference.config.hub_stack_name()
    # The hub's own commands to a worker bus: its tasks' (launch, teardown) and its batch fleet's.
    commands = {
        (str(c.source), str(c.detail_type)) for c in CONSUMERS if c.bus == Bus.WORKER and c.source == Source.HUB
    }
    assert commands == _keys(Target.WORKER_TASKS) | _keys(Target.BATCH_FLEET)
    for region in reference.config.deployed_worker_regions:
        pairs, _ = _pairs_to(reference, hub, f"arn:aws:events:{region}:")
        assert pairs == commands, region

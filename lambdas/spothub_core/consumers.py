"""Who consumes which event: one entry per (source, detail-type), with the model its `detail` is read
into, the bus it is consumed from, and the function (or state machine) that consumes it.

Everything about consuming an event comes from this list: the stacks build their EventBridge rules
from it (the hub's rule to the capacity handler; what each worker region forwards to the hub bus; the
worker rules), and a consuming handler validates each delivery against the entry's model and dispatches
on the model to the function registered for it (`Dispatch`). A kind not in the list is logged and ignored.

Adding an event kind: its contract (spothub_core.contracts), its entry here, the consuming function
registered on its concern's `Dispatch`, and a test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from spothub_core.contracts import (
    AWS_EVENT_SOURCES,
    AlarmStateChangeDetail,
    AwsEvent,
    BatchFleetReport,
    BatchFleetRequested,
    CapacityNotice,
    DeploymentsChanged,
    DrainCompleted,
    EcsTaskStateChangeDetail,
    HubCommand,
    HubEvent,
    InstanceUnhealthy,
    InterruptionWarningDetail,
    LaunchFailed,
    LaunchProgress,
    LaunchRequested,
    LaunchSucceeded,
    LaunchUnsuccessfulDetail,
    RebalanceRecommendationDetail,
    Source,
    SpotNoticeDetail,
    TeardownCompleted,
    TeardownRequested,
    WorkerReport,
)


class Bus(StrEnum):
    """Where an event is consumed: the hub bus, a worker region's bus, or a worker region's default bus
    (where AWS services put their events)."""

    HUB = "hub"
    WORKER = "worker"
    WORKER_DEFAULT = "worker-default"


class Target(StrEnum):
    """What consumes: a Lambda concern (lambdas/<name>/) or a state machine (statemachines/<name>.asl.json)."""

    CAPACITY_HANDLER = "capacity_handler"
    WORKER_TASKS = "worker_tasks"
    INSTANCE_REMEDIATION = "instance_remediation"
    CAPACITY_MONITOR = "capacity_monitor"
    BATCH_SUPERVISOR = "batch_supervisor"
    BATCH_FLEET = "batch_fleet"
    SEARCH_MONITOR = "search_monitor"
    DEPLOYMENT_CONTROLLER = "deployment_controller"


@dataclass(frozen=True)
class Consumer:
    source: str
    detail_type: str
    model: type[BaseModel]
    bus: Bus
    target: Target

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.detail_type)


def _aws(event: AwsEvent) -> str:
    return AWS_EVENT_SOURCES[event]


CONSUMERS: tuple[Consumer, ...] = (
    # The hub: worker reports (from each worker region's bus), agent reports, forwarded AWS events.
    Consumer(Source.WORKER, WorkerReport.LAUNCH_PROGRESS, LaunchProgress, Bus.HUB, Target.CAPACITY_HANDLER),
    Consumer(Source.WORKER, WorkerReport.LAUNCH_SUCCEEDED, LaunchSucceeded, Bus.HUB, Target.CAPACITY_HANDLER),
    Consumer(Source.WORKER, WorkerReport.LAUNCH_FAILED, LaunchFailed, Bus.HUB, Target.CAPACITY_HANDLER),
    Consumer(Source.WORKER, WorkerReport.TEARDOWN_COMPLETED, TeardownCompleted, Bus.HUB, Target.CAPACITY_HANDLER),
    # Spot notices: EC2's own, forwarded raw from each worker region's default bus (the hub tells its instances by
    # its records: no function stands between a warning and the hub), and the agent's, which sees them first hand.
    # Whichever arrives second finds the replacement started.
    Consumer(
        _aws(AwsEvent.SPOT_INTERRUPTION_WARNING),
        AwsEvent.SPOT_INTERRUPTION_WARNING,
        InterruptionWarningDetail,
        Bus.HUB,
        Target.CAPACITY_HANDLER,
    ),
    Consumer(
        _aws(AwsEvent.REBALANCE_RECOMMENDATION),
        AwsEvent.REBALANCE_RECOMMENDATION,
        RebalanceRecommendationDetail,
        Bus.HUB,
        Target.CAPACITY_HANDLER,
    ),
    Consumer(Source.AGENT, WorkerReport.CAPACITY_NOTICE, CapacityNotice, Bus.HUB, Target.CAPACITY_HANDLER),
    Consumer(Source.AGENT, WorkerReport.DRAIN_COMPLETED, DrainCompleted, Bus.HUB, Target.CAPACITY_HANDLER),
    Consumer(Source.WORKER, WorkerReport.INSTANCE_UNHEALTHY, InstanceUnhealthy, Bus.HUB, Target.CAPACITY_HANDLER),
    Consumer(
        _aws(AwsEvent.LAUNCH_UNSUCCESSFUL),
        AwsEvent.LAUNCH_UNSUCCESSFUL,
        LaunchUnsuccessfulDetail,
        Bus.HUB,
        Target.CAPACITY_HANDLER,
    ),
    # Batch jobs: a worker region's account of a job's group.
    Consumer(Source.WORKER, WorkerReport.BATCH_FLEET_REPORT, BatchFleetReport, Bus.HUB, Target.BATCH_SUPERVISOR),
    # The search instance: the search region forwards its spot interruption warnings (EventBridge cannot tell
    # by tags; the monitor ignores every instance but the search instance).
    Consumer(
        _aws(AwsEvent.SPOT_INTERRUPTION_WARNING),
        AwsEvent.SPOT_INTERRUPTION_WARNING,
        SpotNoticeDetail,
        Bus.HUB,
        Target.SEARCH_MONITOR,
    ),
    # Model deployments: the API's nudge, a deployment task's state change (forwarded from its worker region,
    # narrowed to the GPU cluster and DEPLOYMENT_STARTED_BY), a node's agent warning of an interruption (the capacity
    # handler gets the same notice and ignores an instance that is no replica; the controller ignores any but nodes).
    Consumer(Source.HUB, HubEvent.DEPLOYMENTS_CHANGED, DeploymentsChanged, Bus.HUB, Target.DEPLOYMENT_CONTROLLER),
    Consumer(
        _aws(AwsEvent.ECS_TASK_STATE_CHANGE),
        AwsEvent.ECS_TASK_STATE_CHANGE,
        EcsTaskStateChangeDetail,
        Bus.HUB,
        Target.DEPLOYMENT_CONTROLLER,
    ),
    Consumer(Source.AGENT, WorkerReport.CAPACITY_NOTICE, CapacityNotice, Bus.HUB, Target.DEPLOYMENT_CONTROLLER),
    # A worker region: the hub's commands, its own alarms, and interruption warnings (the capacity monitor takes an
    # interrupted instance of the group out of its count, so that the group does not replace it too).
    Consumer(Source.HUB, HubCommand.LAUNCH_REQUESTED, LaunchRequested, Bus.WORKER, Target.WORKER_TASKS),
    Consumer(Source.HUB, HubCommand.TEARDOWN_REQUESTED, TeardownRequested, Bus.WORKER, Target.WORKER_TASKS),
    Consumer(Source.HUB, HubCommand.BATCH_FLEET_REQUESTED, BatchFleetRequested, Bus.WORKER, Target.BATCH_FLEET),
    Consumer(
        _aws(AwsEvent.ALARM_STATE_CHANGE),
        AwsEvent.ALARM_STATE_CHANGE,
        AlarmStateChangeDetail,
        Bus.WORKER_DEFAULT,
        Target.INSTANCE_REMEDIATION,
    ),
    Consumer(
        _aws(AwsEvent.SPOT_INTERRUPTION_WARNING),
        AwsEvent.SPOT_INTERRUPTION_WARNING,
        SpotNoticeDetail,
        Bus.WORKER_DEFAULT,
        Target.CAPACITY_MONITOR,
    ),
)


def consumed_by(target: Target) -> dict[tuple[str, str], Consumer]:
    """The entries one function or state machine consumes, by (source, detail-type)."""
    return {c.key: c for c in CONSUMERS if c.target == target}


def event_patterns(entries: Iterable[Consumer]) -> dict[str, dict[str, list[str]]]:
    """EventBridge patterns matching exactly these entries, one per source (a pattern matches the product of
    its sources and detail-types, so one pattern for several sources would let through pairings nobody
    consumes)."""
    by_source: dict[str, set[str]] = {}
    for consumer in entries:
        by_source.setdefault(str(consumer.source), set()).add(str(consumer.detail_type))
    return {
        source: {"source": [source], "detail-type": sorted(detail_types)}
        for source, detail_types in sorted(by_source.items())
    }


Detail = TypeVar("Detail", bound=BaseModel)
Services = TypeVar("Services")


class Dispatch(Generic[Services]):
    """A concern's consuming functions, registered by the model they take; `consume` validates a delivery
    against its entry's model and calls the function registered for that model."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.entries = consumed_by(target)
        self._functions: dict[type[BaseModel], Callable[..., str]] = {}

    def on(self, model: type[Detail]) -> Callable[[Callable[..., str]], Callable[..., str]]:
        def register(function: Callable[..., str]) -> Callable[..., str]:
            if model in self._functions:
                raise ValueError(f"{model.__name__} is consumed twice in {self.target}")
            self._functions[model] = function
            return function

        return register

    def unregistered(self) -> list[Consumer]:
        """Entries of this target with no function registered: a wiring mistake, checked by the tests."""
        return [c for c in self.entries.values() if c.model not in self._functions]

    def entry(self, event: dict[str, Any]) -> Consumer | None:
        return self.entries.get((str(event.get("source")), str(event.get("detail-type"))))

    def consume(self, services: Services, event: dict[str, Any], **arguments: Any) -> str | None:
        """The outcome of consuming `event`; None when it is of a kind this target does not consume.
        Raises pydantic's ValidationError when its detail breaks the entry's model."""
        entry = self.entry(event)
        if entry is None:
            return None
        detail = entry.model.model_validate(event.get("detail") or {})
        return self._functions[entry.model](services, detail, **arguments)

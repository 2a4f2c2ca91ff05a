"""Search monitor: the search instance's health, idleness, maximum runtime, the reconciliation with EC2, and
its spot interruption warnings (hub).

Two kinds of callers, told apart by the event's shape:
- the schedule, every searchHealthInterval: `{"action": "sweep"}` (validated against Sweep), or the bare
  Scheduled Event of a rule given no input; both sweep, answered with the SweepSummary;
- EventBridge, with the spot interruption warnings the search region forwards to the hub bus, dispatched on the
  consumers declared for this function (spothub_core.logic.search_monitor); kinds it does not consume are logged
  and ignored.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from spothub_core import aws_clients
from spothub_core.dal.search_instances import SearchInstances
from spothub_core.dal.search_router import SearchRouter
from spothub_core.dal.search_store import SearchStore
from spothub_core.logic.search_launches import Launcher
from spothub_core.logic.search_monitor import MonitorServices, Sweep, dispatch, sweep
from spothub_core.logic.search_rules import SearchLimits
from spothub_core.observability import logger, metrics, tracer
from spothub_core.settings import SearchSettings, load_settings

# What EventBridge delivers for a scheduled rule with no input of its own.
SCHEDULED_EVENT = ("aws.events", "Scheduled Event")

settings = load_settings(SearchSettings)
store = SearchStore(aws_clients.table(settings.search_table_name))
services = MonitorServices(
    store=store,
    launcher=Launcher(
        store=store,
        sfn=aws_clients.client("stepfunctions"),
        state_machine_arn=settings.launcher_arn,
        volume_id=settings.volume_id,
        use_spot=settings.use_spot,
    ),
    # The router and the instance are in the search region; the table and the launcher in the hub's.
    router=SearchRouter(aws_clients.client("lambda", region_name=settings.search_region), settings.router_arn),
    instances=SearchInstances(aws_clients.client("ec2", region_name=settings.search_region)),
    limits=SearchLimits(idle_timeout_s=settings.idle_timeout_s, max_runtime_s=settings.max_runtime_s),
    port=settings.port,
    health_path=settings.health_path,
)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = time.time()
    kind = (str(event.get("source")), str(event.get("detail-type")))
    if "action" in event:
        Sweep.model_validate(event)  # a ValidationError naming what is wrong
        return _sweep(now)
    if kind == SCHEDULED_EVENT:
        return _sweep(now)
    outcome = dispatch.consume(services, event, now=now)
    if outcome is None:
        logger.info("ignored event of a kind the search monitor does not consume", extra={"kind": kind})
        return {"outcome": "ignored: unknown kind"}
    metrics.add_metric(name="SearchInterruptionWarnings", unit="Count", value=1)
    logger.info("event consumed", extra={"kind": kind, "event_id": event.get("id"), "outcome": outcome})
    return {"outcome": outcome}


def _sweep(now: float) -> dict[str, Any]:
    summary = sweep(services, now=now)
    metrics.add_metric(name="SearchHealthChecksMissed", unit="Count", value=summary.missed)
    metrics.add_metric(name="SearchInstancesFailed", unit="Count", value=len(summary.failed))
    metrics.add_metric(
        name="SearchInstancesRetired",
        unit="Count",
        value=len(summary.retired_idle) + len(summary.retired_max_runtime),
    )
    metrics.add_metric(name="SearchInstancesAdopted", unit="Count", value=len(summary.adopted))
    metrics.add_metric(name="SearchSweepErrors", unit="Count", value=summary.errors)
    logger.info("search swept", extra={"summary": summary.model_dump(mode="json")})
    return summary.model_dump(mode="json")

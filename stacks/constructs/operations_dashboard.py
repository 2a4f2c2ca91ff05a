"""The on-call engineer's CloudWatch dashboard `<prefix>-operations`, in the hub region.

One page, five rows under a text widget that says what each row is:

  Replicas          replicas serving per worker region (the sum of the agents' AgentReady there), each agent's
                    heartbeats, GPU XID errors: the agents' `Spothub` metrics, dimensioned by Prefix and
                    InstanceId, found with SEARCH in each worker region (instance ids are not known at synthesis)
  Placement         the spot orchestrator's executions (every placement: enable, failover, back to spot; a
                    failed one is a failed replica) with the regions the spot finder ranked; launches, launch
                    failures (capacity, quota, transient, fatal: the worker's launch_instance ends Failed) and
                    spot notices (capacity_monitor runs) per worker region; the worker reports the hub consumed
  Failures          Errors and Throttles of every Lambda function in the hub stack, ExecutionsFailed and
                    ExecutionsTimedOut of every hub state machine, the hub's dead-letter queue depth
  Batch and search  the batch supervisor's metrics; with searchVolumeId, the search monitor's
  Deployments       the deployment controller's metrics (contracts.DeploymentMetric, Powertools metrics like the other
                    functions', one value per run): GPUs on the nodes against GPUs allocated, tasks healthy and
                    pending, restarts, nodes asked

Every metric named here is one something emits: the functions' Powertools metrics (namespace `Spothub`,
dimension `service` = `<prefix>-<concern>`, as stacks/constructs/python_function.py sets
POWERTOOLS_SERVICE_NAME), the agent's, and AWS/Lambda, AWS/States and AWS/SQS. The worker regions' state machines
are named `<prefix>-<kind>` (stacks/constructs/worker_automation.py), so their ARNs are known here.

The functions and state machines are collected from the hub stack's construct tree when the app is synthesized
(an aspect), not when this construct is built: a construct added to the hub stack after this one is on the
dashboard too.

Cost: $3.00 a month, whether anyone looks at it or not (CloudWatch's price per dashboard; the free tier's three
dashboards hold up to 50 metrics each, and this one has more: two per hub function alone). Its metrics cost
nothing more: they are AWS's own, or the functions' and agents' already billed custom metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jsii
from aws_cdk import ArnFormat, Aspects, Duration, IAspect, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct, IConstruct

from spothub_core.contracts import METRICS_NAMESPACE, AgentMetric, DeploymentMetric
from stacks.config import SpothubConfig

PERIOD = Duration.minutes(5)
ROW_HEIGHT = 6
FULL_WIDTH = 24
# The worker's state machines, `<prefix>-<kind>` in every worker region (worker_automation.py names them).
LAUNCH_INSTANCE = "launch-instance"
CAPACITY_MONITOR = "capacity-monitor"

# The ids SpothubFunction and SpothubStateMachine give the resource they wrap, and constructs give those helpers.
INNER_IDS = frozenset({"Function", "StateMachine"})

# The Powertools metrics of the hub's functions, by concern (lambdas/<concern>/handler.py):
# name -> (statistic, label).
SPOT_FINDER_METRICS = {"RegionsRanked": ("Minimum", "regions the finder ranked (min)")}
CAPACITY_HANDLER_METRICS = {"WorkerReports": ("Sum", "worker reports the hub consumed")}
BATCH_SUPERVISOR_METRICS = {
    "BatchJobsSupervised": ("Maximum", "unsettled jobs (max)"),  # each run counts the jobs it looked at
    "BatchWorkersRequested": ("Sum", "workers requested"),
    "BatchesTimedOut": ("Sum", "batches timed out"),
    "BatchFleetReports": ("Sum", "fleet reports"),
}
SEARCH_MONITOR_METRICS = {
    "SearchHealthChecksMissed": ("Sum", "health checks missed"),
    "SearchInstancesFailed": ("Sum", "instances failed (replaced)"),
    "SearchInstancesRetired": ("Sum", "instances retired (idle, max runtime)"),
    "SearchInstancesAdopted": ("Sum", "instances adopted"),
    "SearchSweepErrors": ("Sum", "sweep errors"),
    "SearchInterruptionWarnings": ("Sum", "spot interruption warnings"),
}

# The deployment controller's metrics (one value per run, every minute), by widget: name -> (statistic, label).
DEPLOYMENT_GPU_METRICS = {
    DeploymentMetric.GPUS_TOTAL: ("Maximum", "GPUs on nodes taking placements"),
    DeploymentMetric.GPUS_ALLOCATED: ("Maximum", "GPUs allocated"),
}
DEPLOYMENT_TASK_METRICS = {
    DeploymentMetric.TASKS_HEALTHY: ("Minimum", "tasks healthy (min)"),
    DeploymentMetric.TASKS_PENDING: ("Maximum", "tasks pending (max)"),
}
DEPLOYMENT_RESTART_METRICS = {DeploymentMetric.TASK_RESTARTS: ("Sum", "tasks restarted")}
DEPLOYMENT_NODE_METRICS = {DeploymentMetric.NODES_ASKED: ("Sum", "nodes asked of node groups")}


def service_name(prefix: str, concern: str) -> str:
    """The `service` dimension of a function's Powertools metrics (its POWERTOOLS_SERVICE_NAME)."""
    return f"{prefix}-{concern.replace('_', '-')}"


def agent_search(prefix: str, metric: AgentMetric, statistic: str) -> str:
    """A SEARCH over this deployment's agents: one time series per instance."""
    schema = f"{{{METRICS_NAMESPACE},InstanceId,Prefix}}"
    return (
        f"SEARCH('{schema} MetricName=\"{metric.value}\" Prefix=\"{prefix}\"', '{statistic}', "
        f"{int(PERIOD.to_seconds())})"
    )


class OperationsDashboard(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: SpothubConfig,
        orchestrator: sfn.IStateMachine,
        dead_letter_queue: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self._orchestrator = orchestrator
        self._dead_letter_queue = dead_letter_queue
        self.dashboard_name = f"{config.prefix}-operations"
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=self.dashboard_name,
            default_interval=Duration.hours(6),
            period_override=cloudwatch.PeriodOverride.AUTO,
        )
        self._built = False
        Aspects.of(self).add(_BuildAtSynthesis(self))

    # Collected at synthesis, from the whole hub stack.

    def functions(self) -> list[lambda_.Function]:
        return [c for c in Stack.of(self).node.find_all() if isinstance(c, lambda_.Function)]

    def state_machines(self) -> list[sfn.StateMachine]:
        return [c for c in Stack.of(self).node.find_all() if isinstance(c, sfn.StateMachine)]

    def build(self) -> None:
        if self._built:
            return
        self._built = True
        self.dashboard.add_widgets(self._legend())
        self.dashboard.add_widgets(*self._replicas_row())
        self.dashboard.add_widgets(*self._placement_row())
        self.dashboard.add_widgets(*self._failures_row())
        self.dashboard.add_widgets(*self._batch_and_search_row())
        self.dashboard.add_widgets(*self._deployments_row())

    # Rows.

    def _legend(self) -> cloudwatch.TextWidget:
        config = self._config
        regions = ", ".join(config.deployed_worker_regions)
        search = (
            "; the search monitor's health checks missed, instances failed, retired and adopted, sweep errors"
            if config.search_enabled
            else ""
        )
        return cloudwatch.TextWidget(
            width=FULL_WIDTH,
            height=6,
            markdown="\n".join(
                [
                    f"# spothub `{config.prefix}`: operations",
                    f"Hub in **{config.hub_region}**, worker regions **{regions}**. Rows, top to bottom:",
                    "1. **Replicas**: replicas serving per worker region (agents reporting a healthy workload), "
                    "each agent's heartbeats (a line that stops is a silent agent), GPU XID errors.",
                    "2. **Placement**: spot orchestrator executions (a placement, failover or return to spot each; "
                    "a failed one is a failed replica) and the regions the spot finder ranked; launches, launch "
                    "failures (capacity, quota, transient, fatal) and spot notices per worker region.",
                    "3. **Failures**: Lambda errors and throttles per hub function, hub state machine failures, "
                    "messages in the hub's dead-letter queue (each also raises an alarm on the alerts topic).",
                    f"4. **Batch and search**: the batch supervisor's jobs, workers requested, timeouts{search}.",
                    "5. **Deployments**: GPUs on the deployment nodes against GPUs allocated, tasks healthy and "
                    "pending (waiting for capacity or a restart backoff), tasks restarted, nodes asked of node groups.",
                ]
            ),
        )

    def _per_region(self, expression: str) -> list[cloudwatch.IMetric]:
        """One agent SEARCH expression per worker region, run in that region (the agent puts its metrics there)."""
        return [
            cloudwatch.MathExpression(
                expression=expression, using_metrics={}, label=region, period=PERIOD, search_region=region
            )
            for region in self._config.deployed_worker_regions
        ]

    def _replicas_row(self) -> list[cloudwatch.IWidget]:
        prefix = self._config.prefix
        serving = self._per_region(f"SUM({agent_search(prefix, AgentMetric.READY, 'Maximum')})")
        heartbeats = self._per_region(agent_search(prefix, AgentMetric.READY, "SampleCount"))
        xid = self._per_region(agent_search(prefix, AgentMetric.GPU_XID_ERRORS, "Sum"))
        return [
            cloudwatch.SingleValueWidget(
                title="Replicas serving, by worker region",
                metrics=serving,
                width=6,
                height=ROW_HEIGHT,
                sparkline=True,
            ),
            self._graph("Agent heartbeats per instance (beats per 5 min)", heartbeats, width=12),
            self._graph("GPU XID errors per instance", xid, width=6),
        ]

    def _placement_row(self) -> list[cloudwatch.IWidget]:
        regions = self._config.deployed_worker_regions
        orchestrator = self._orchestrator
        placements = self._graph(
            "Placements (spot orchestrator executions)",
            [
                orchestrator.metric_started(label="started", period=PERIOD),
                orchestrator.metric_succeeded(label="succeeded", period=PERIOD),
                orchestrator.metric_failed(label="failed (replica failed, alerted)", period=PERIOD),
                orchestrator.metric_timed_out(label="timed out", period=PERIOD),
            ],
            right=self._service_metrics("spot_finder", SPOT_FINDER_METRICS),
        )
        launches = self._graph(
            "Launches by worker region",
            [
                self._worker_machine_metric(LAUNCH_INSTANCE, "ExecutionsStarted", region, f"started {region}")
                for region in regions
            ]
            + [
                self._worker_machine_metric(LAUNCH_INSTANCE, "ExecutionsSucceeded", region, f"healthy {region}")
                for region in regions
            ],
        )
        failures = self._graph(
            "Launch failures by worker region (capacity, quota, transient, fatal)",
            [
                self._worker_machine_metric(LAUNCH_INSTANCE, "ExecutionsFailed", region, f"failed {region}")
                for region in regions
            ]
            + [
                self._worker_machine_metric(LAUNCH_INSTANCE, "ExecutionsTimedOut", region, f"timed out {region}")
                for region in regions
            ],
        )
        notices = self._graph(
            "Spot notices by worker region (capacity monitor runs); worker reports",
            [
                self._worker_machine_metric(CAPACITY_MONITOR, "ExecutionsStarted", region, f"notices {region}")
                for region in regions
            ],
            right=self._service_metrics("capacity_handler", CAPACITY_HANDLER_METRICS),
        )
        return [placements, launches, failures, notices]

    def _failures_row(self) -> list[cloudwatch.IWidget]:
        stack_path = Stack.of(self).node.path
        functions = sorted(self.functions(), key=lambda f: f.node.path)
        machines = sorted(self.state_machines(), key=lambda m: m.node.path)

        def label(construct: IConstruct) -> str:
            """Where it is in the stack, without the ids of the helpers' inner constructs: `AgentApi`,
            `SpotProvisioning/CapacityHandler`, `SpotProvisioning/SpotOrchestrator`."""
            parts = construct.node.path.removeprefix(f"{stack_path}/").split("/")
            while len(parts) > 1 and parts[-1] in INNER_IDS:
                parts.pop()
            return "/".join(parts)

        errors = [f.metric_errors(label=label(f), period=PERIOD) for f in functions]
        throttles = [f.metric_throttles(label=label(f), period=PERIOD) for f in functions]
        machine_failures = [
            metric
            for m in machines
            for metric in (
                m.metric_failed(label=f"{label(m)} failed", period=PERIOD),
                m.metric_timed_out(label=f"{label(m)} timed out", period=PERIOD),
            )
        ]
        depth = self._dead_letter_queue.metric_approximate_number_of_messages_visible(
            label="messages waiting", period=PERIOD, statistic="Maximum"
        )
        return [
            self._graph("Lambda errors, hub functions", errors, width=7),
            self._graph("Lambda throttles, hub functions", throttles, width=5),
            self._graph("State machine failures, hub", machine_failures, width=7),
            self._graph("Dead-letter queue depth (failed invocations)", [depth], width=5),
        ]

    def _batch_and_search_row(self) -> list[cloudwatch.IWidget]:
        batch = self._service_metrics("batch_supervisor", BATCH_SUPERVISOR_METRICS)
        if not self._config.search_enabled:
            return [self._graph("Batch jobs (supervisor)", batch, width=FULL_WIDTH)]
        search = self._service_metrics("search_monitor", SEARCH_MONITOR_METRICS)
        return [
            self._graph("Batch jobs (supervisor)", batch, width=12),
            self._graph("Search instance (monitor)", search, width=12),
        ]

    def _deployments_row(self) -> list[cloudwatch.IWidget]:
        def controller(metrics: Mapping[DeploymentMetric, tuple[str, str]]) -> list[cloudwatch.IMetric]:
            return self._service_metrics("deployment_controller", {m.value: shown for m, shown in metrics.items()})

        return [
            self._graph("Deployment GPUs: on nodes, allocated", controller(DEPLOYMENT_GPU_METRICS)),
            self._graph("Deployment tasks: healthy, pending", controller(DEPLOYMENT_TASK_METRICS)),
            self._graph("Deployment tasks restarted", controller(DEPLOYMENT_RESTART_METRICS)),
            self._graph("Deployment nodes asked", controller(DEPLOYMENT_NODE_METRICS)),
        ]

    # Metrics and widgets.

    def _service_metrics(self, concern: str, metrics: Mapping[str, tuple[str, str]]) -> list[cloudwatch.IMetric]:
        """A function's Powertools metrics: namespace Spothub, dimension service."""
        return [
            cloudwatch.Metric(
                namespace=METRICS_NAMESPACE,
                metric_name=name,
                dimensions_map={"service": service_name(self._config.prefix, concern)},
                statistic=statistic,
                period=PERIOD,
                label=label,
            )
            for name, (statistic, label) in metrics.items()
        ]

    def _worker_machine_metric(self, kind: str, name: str, region: str, label: str) -> cloudwatch.Metric:
        arn = Stack.of(self).format_arn(
            service="states",
            resource="stateMachine",
            resource_name=f"{self._config.prefix}-{kind}",
            region=region,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        return cloudwatch.Metric(
            namespace="AWS/States",
            metric_name=name,
            dimensions_map={"StateMachineArn": arn},
            statistic="Sum",
            period=PERIOD,
            region=region,
            label=label,
        )

    @staticmethod
    def _graph(
        title: str,
        left: Sequence[cloudwatch.IMetric],
        *,
        right: Sequence[cloudwatch.IMetric] = (),
        width: int = 6,
    ) -> cloudwatch.GraphWidget:
        return cloudwatch.GraphWidget(
            title=title,
            left=list(left),
            right=list(right),
            width=width,
            height=ROW_HEIGHT,
            left_y_axis=cloudwatch.YAxisProps(min=0, show_units=False),
            right_y_axis=cloudwatch.YAxisProps(min=0, show_units=False),
            legend_position=cloudwatch.LegendPosition.BOTTOM,
        )


@jsii.implements(IAspect)
class _BuildAtSynthesis:
    """Fills the dashboard once the hub stack is complete (aspects run before the template is rendered)."""

    def __init__(self, dashboard: OperationsDashboard) -> None:
        self._dashboard = dashboard

    def visit(self, node: IConstruct) -> None:
        if node is self._dashboard:
            self._dashboard.build()

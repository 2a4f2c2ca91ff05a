"""Template assertions for the hub's operations dashboard (stacks/constructs/operations_dashboard.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk import App, Duration, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn

from spothub_core.contracts import METRICS_NAMESPACE, DeploymentMetric
from stacks.config import SpothubConfig
from stacks.constructs.operations_dashboard import OperationsDashboard
from stacks.paths import LAMBDAS_DIR
from tests.infrastructure.conftest import DEPLOYMENTS
from tests.infrastructure.synth import REFERENCE_CONTEXT, Synthesized

GRID_WIDTH = 24


def _part(part: Any) -> str:
    """A part of the body's Fn::Join as text: a reference becomes ${LogicalId}, an attribute ${LogicalId.Name}."""
    if isinstance(part, str):
        return part
    if "Ref" in part:
        return f"${{{part['Ref']}}}"
    if "Fn::GetAtt" in part:
        return "${" + ".".join(part["Fn::GetAtt"]) + "}"
    raise AssertionError(f"unexpected part of the dashboard body: {part!r}")


def dashboards(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The template's dashboards by name, each body parsed (references as ${...})."""
    found = {}
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::CloudWatch::Dashboard":
            continue
        body = resource["Properties"]["DashboardBody"]
        if isinstance(body, dict):
            separator, parts = body["Fn::Join"]
            body = separator.join(_part(p) for p in parts)
        found[resource["Properties"]["DashboardName"]] = json.loads(body)
    return found


def hub_dashboard(synthesized: Synthesized) -> dict[str, Any]:
    found = dashboards(synthesized.templates[synthesized.config.hub_stack_name()])
    assert list(found) == [f"{synthesized.config.prefix}-operations"]
    return next(iter(found.values()))


def widget(body: dict[str, Any], title: str) -> dict[str, Any]:
    matches = [w for w in body["widgets"] if w.get("properties", {}).get("title") == title]
    assert len(matches) == 1, f"{title!r}: {[w.get('properties', {}).get('title') for w in body['widgets']]}"
    return matches[0]


def metrics(body: dict[str, Any], title: str | None = None) -> list[dict[str, Any]]:
    """Every metric of the body (or of one widget): {namespace, name, dimensions, options} or {expression, …}."""
    found = []
    for w in body["widgets"]:
        properties = w.get("properties", {})
        if title is not None and properties.get("title") != title:
            continue
        for entry in properties.get("metrics", []):
            options = entry[-1] if isinstance(entry[-1], dict) else {}
            fields = entry[:-1] if options else entry
            if not fields:
                found.append({"expression": options["expression"], "options": options})
                continue
            namespace, name, *pairs = fields
            dimensions = dict(zip(pairs[::2], pairs[1::2], strict=True))
            found.append({"namespace": namespace, "name": name, "dimensions": dimensions, "options": options})
    return found


def logical_ids(synthesized: Synthesized, resource_type: str) -> set[str]:
    return set(synthesized.resources(synthesized.config.hub_stack_name(), resource_type))


def test_one_dashboard_in_the_hub_named_after_the_prefix(reference: Synthesized, hub_as_worker: Synthesized) -> None:
    assert hub_dashboard(reference)
    assert hub_dashboard(hub_as_worker)  # prefix gpu-prod: gpu-prod-operations
    for synthesized in (reference, hub_as_worker):
        for name, template in synthesized.templates.items():
            if name != synthesized.config.hub_stack_name():
                assert dashboards(template) == {}, name


def test_a_text_widget_on_top_says_what_each_row_is(reference: Synthesized) -> None:
    first = hub_dashboard(reference)["widgets"][0]
    assert first["type"] == "text"
    assert (first["x"], first["y"], first["width"]) == (0, 0, GRID_WIDTH)
    text = first["properties"]["markdown"]
    for row in ("Replicas", "Placement", "Failures", "Batch and search", "Deployments"):
        assert f"**{row}**" in text
    assert "us-west-2, eu-west-1" in text


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_widgets_fit_the_grid_without_overlapping(request: pytest.FixtureRequest, deployment: str) -> None:
    body = hub_dashboard(request.getfixturevalue(deployment))
    cells: set[tuple[int, int]] = set()
    for w in body["widgets"]:
        assert w["x"] + w["width"] <= GRID_WIDTH, w
        mine = {(x, y) for x in range(w["x"], w["x"] + w["width"]) for y in range(w["y"], w["y"] + w["height"])}
        assert not cells & mine, w
        cells |= mine


@pytest.mark.parametrize("deployment", ["reference", "search", "hub_as_worker"])
@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_errors_and_throttles_of_every_hub_function(
    request: pytest.FixtureRequest, deployment: str, metric: str
) -> None:
    synthesized: Synthesized = request.getfixturevalue(deployment)
    body = hub_dashboard(synthesized)
    title = {"Errors": "Lambda errors, hub functions", "Throttles": "Lambda throttles, hub functions"}[metric]
    shown = metrics(body, title)
    assert {(m["namespace"], m["name"], m["options"]["stat"]) for m in shown} == {("AWS/Lambda", metric, "Sum")}
    functions = logical_ids(synthesized, "AWS::Lambda::Function")
    assert {m["dimensions"]["FunctionName"] for m in shown} == {f"${{{f}}}" for f in functions}
    assert len(shown) == len(functions)
    labels = {m["options"]["label"] for m in shown}
    assert {"AgentApi", "PlatformStatus", "SpotProvisioning/CapacityHandler", "BatchJobs/Supervisor"} <= labels


def test_the_search_functions_are_on_the_dashboard_only_with_search(
    reference: Synthesized, search: Synthesized
) -> None:
    def labels(synthesized: Synthesized) -> set[str]:
        return {m["options"]["label"] for m in metrics(hub_dashboard(synthesized), "Lambda errors, hub functions")}

    assert {"Search/Monitor", "Search/Tasks", "Search/Api"} <= labels(search)
    assert not {label for label in labels(reference) if label.startswith("Search")}


@pytest.mark.parametrize("deployment", ["reference", "search"])
def test_failures_and_timeouts_of_every_hub_state_machine(request: pytest.FixtureRequest, deployment: str) -> None:
    synthesized: Synthesized = request.getfixturevalue(deployment)
    shown = metrics(hub_dashboard(synthesized), "State machine failures, hub")
    machines = {f"${{{m}}}" for m in logical_ids(synthesized, "AWS::StepFunctions::StateMachine")}
    for name in ("ExecutionsFailed", "ExecutionsTimedOut"):
        assert {m["dimensions"]["StateMachineArn"] for m in shown if m["name"] == name} == machines
    assert {m["namespace"] for m in shown} == {"AWS/States"}


def test_placements_are_the_spot_orchestrators_executions(reference: Synthesized) -> None:
    shown = metrics(hub_dashboard(reference), "Placements (spot orchestrator executions)")
    orchestrator = [
        logical_id
        for logical_id, machine in reference.resources("spothub-hub", "AWS::StepFunctions::StateMachine").items()
        if machine["Properties"]["StateMachineName"] == "spothub-spot-orchestrator"
    ]
    states = [m for m in shown if m["namespace"] == "AWS/States"]
    assert {m["name"] for m in states} == {
        "ExecutionsStarted",
        "ExecutionsSucceeded",
        "ExecutionsFailed",
        "ExecutionsTimedOut",
    }
    assert {m["dimensions"]["StateMachineArn"] for m in states} == {f"${{{orchestrator[0]}}}"}


def test_the_dead_letter_queue_depth_is_the_hubs_failure_queue(reference: Synthesized) -> None:
    (depth,) = metrics(hub_dashboard(reference), "Dead-letter queue depth (failed invocations)")
    (queue,) = logical_ids(reference, "AWS::SQS::Queue")
    assert depth["namespace"] == "AWS/SQS"
    assert depth["name"] == "ApproximateNumberOfMessagesVisible"
    assert depth["dimensions"] == {"QueueName": f"${{{queue}.QueueName}}"}
    assert depth["options"]["stat"] == "Maximum"


@pytest.mark.parametrize("deployment", ["reference", "hub_as_worker"])
def test_agent_heartbeats_are_searched_in_every_worker_region(request: pytest.FixtureRequest, deployment: str) -> None:
    synthesized: Synthesized = request.getfixturevalue(deployment)
    config = synthesized.config
    body = hub_dashboard(synthesized)
    search = f'SEARCH(\'{{Spothub,InstanceId,Prefix}} MetricName="AgentReady" Prefix="{config.prefix}"\''
    serving = widget(body, "Replicas serving, by worker region")
    assert serving["properties"]["view"] == "singleValue"
    for title, wrapper in (
        ("Replicas serving, by worker region", "SUM("),
        ("Agent heartbeats per instance (beats per 5 min)", ""),
    ):
        shown = metrics(body, title)
        assert [m["options"]["label"] for m in shown] == config.deployed_worker_regions
        for entry in shown:
            assert entry["expression"].startswith(wrapper + search), entry
            # The region of a search other than the dashboard's is named; the dashboard's own is implied.
            region = entry["options"].get("region", config.hub_region)
            assert region == entry["options"]["label"]
    xid = metrics(body, "GPU XID errors per instance")
    assert all('MetricName="GpuXidErrors"' in m["expression"] for m in xid)


@pytest.mark.parametrize("deployment", ["reference", "hub_as_worker"])
def test_launches_failures_and_notices_name_every_worker_regions_state_machines(
    request: pytest.FixtureRequest, deployment: str
) -> None:
    synthesized: Synthesized = request.getfixturevalue(deployment)
    config = synthesized.config
    body = hub_dashboard(synthesized)
    account = config.account or "${AWS::AccountId}"
    for title, names, kind in (
        ("Launches by worker region", {"ExecutionsStarted", "ExecutionsSucceeded"}, "launch_instance"),
        (
            "Launch failures by worker region (capacity, quota, transient, fatal)",
            {"ExecutionsFailed", "ExecutionsTimedOut"},
            "launch_instance",
        ),
        (
            "Spot notices by worker region (capacity monitor runs); worker reports",
            {"ExecutionsStarted"},
            "capacity_monitor",
        ),
    ):
        shown = [m for m in metrics(body, title) if m["namespace"] == "AWS/States"]
        assert {m["name"] for m in shown} == names
        expected = set()
        for region in config.deployed_worker_regions:
            worker = synthesized.resources(config.worker_stack_name(region), "AWS::StepFunctions::StateMachine")
            (name,) = [
                m["Properties"]["StateMachineName"]
                for m in worker.values()
                if m["Properties"]["StateMachineName"] == f"{config.prefix}-{kind.replace('_', '-')}"
            ]
            expected.add(f"arn:aws:states:{region}:{account}:stateMachine:{name}")
        assert {m["dimensions"]["StateMachineArn"] for m in shown} == expected
        for m in shown:
            region = m["dimensions"]["StateMachineArn"].split(":")[3]
            assert m["options"].get("region", config.hub_region) == region


@pytest.mark.parametrize("deployment", ["reference", "search"])
def test_every_spothub_metric_is_one_a_function_emits(request: pytest.FixtureRequest, deployment: str) -> None:
    synthesized: Synthesized = request.getfixturevalue(deployment)
    prefix = synthesized.config.prefix
    shown = [m for m in metrics(hub_dashboard(synthesized)) if "namespace" in m and m["namespace"] == METRICS_NAMESPACE]
    assert shown
    concerns = {p.name.replace("_", "-"): p for p in LAMBDAS_DIR.iterdir() if (p / "handler.py").is_file()}
    for m in shown:
        assert list(m["dimensions"]) == ["service"], m
        concern = concerns[m["dimensions"]["service"].removeprefix(f"{prefix}-")]
        source = (concern / "handler.py").read_text()
        assert re.search(rf'add_metric\(\s*name="{m["name"]}"', source) or _names(source, m["name"]), (
            f"{concern.name} emits no {m['name']}"
        )


def _names(source: str, metric: str) -> bool:
    """The handler names the metric by its contract (the deployment controller adds every DeploymentMetric)."""
    known = {m.value: m for m in DeploymentMetric}
    return metric in known and f"DeploymentMetric.{known[metric].name}" in source


@pytest.mark.parametrize("deployment", ["reference", "hub_as_worker"])
def test_the_deployments_row_shows_every_controller_metric(request: pytest.FixtureRequest, deployment: str) -> None:
    synthesized: Synthesized = request.getfixturevalue(deployment)
    body = hub_dashboard(synthesized)
    expected = {
        "Deployment GPUs: on nodes, allocated": {
            ("DeploymentGpusTotal", "Maximum"),
            ("DeploymentGpusAllocated", "Maximum"),
        },
        "Deployment tasks: healthy, pending": {
            ("DeploymentTasksHealthy", "Minimum"),
            ("DeploymentTasksPending", "Maximum"),
        },
        "Deployment tasks restarted": {("DeploymentTaskRestarts", "Sum")},
        "Deployment nodes asked": {("DeploymentNodesAsked", "Sum")},
    }
    shown = set()
    for title, names in expected.items():
        found = metrics(body, title)
        assert {(m["name"], m["options"]["stat"]) for m in found} == names
        service = f"{synthesized.config.prefix}-deployment-controller"
        for m in found:
            assert (m["namespace"], m["dimensions"]) == (METRICS_NAMESPACE, {"service": service})
            # The controller runs in the hub region: the dashboard's own.
            assert "region" not in m["options"]
        shown |= {name for name, _ in names}
    assert shown == {m.value for m in DeploymentMetric}
    # One row, below the others.
    rows = {widget(body, title)["y"] for title in expected}
    assert len(rows) == 1
    assert rows.pop() == max(w["y"] for w in body["widgets"])


def test_batch_and_search_metrics(reference: Synthesized, search: Synthesized) -> None:
    batch = {m["name"] for m in metrics(hub_dashboard(reference), "Batch jobs (supervisor)")}
    assert batch == {"BatchJobsSupervised", "BatchWorkersRequested", "BatchesTimedOut", "BatchFleetReports"}
    assert not [w for w in hub_dashboard(reference)["widgets"] if "Search" in w["properties"].get("title", "")]
    searched = {m["name"] for m in metrics(hub_dashboard(search), "Search instance (monitor)")}
    assert {"SearchHealthChecksMissed", "SearchInstancesFailed", "SearchInstancesRetired"} <= searched


def test_a_function_added_after_the_dashboard_is_on_it_too(tmp_path) -> None:
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Hub")
    config = SpothubConfig.from_context(REFERENCE_CONTEXT)
    orchestrator = sfn.StateMachine(
        stack, "Orchestrator", definition_body=sfn.DefinitionBody.from_chainable(sfn.Pass(stack, "Pass"))
    )
    OperationsDashboard(
        stack, "Dashboard", config=config, orchestrator=orchestrator, dead_letter_queue=sqs.Queue(stack, "Dlq")
    )
    lambda_.Function(
        stack,
        "Later",
        runtime=lambda_.Runtime.PYTHON_3_12,
        handler="index.handler",
        code=lambda_.Code.from_inline("def handler(event, context):\n    return None\n"),
        timeout=Duration.seconds(3),
    )
    template = app.synth().get_stack_by_name("Hub").template
    (body,) = dashboards(template).values()
    (later,) = [k for k, r in template["Resources"].items() if r["Type"] == "AWS::Lambda::Function"]
    errors = metrics(body, "Lambda errors, hub functions")
    assert [(m["dimensions"]["FunctionName"], m["options"]["label"]) for m in errors] == [(f"${{{later}}}", "Later")]

"""The operations dashboard as deployed into the emulator: in the hub region, a valid body whose metrics name the
deployment's real functions, state machines and queue."""

from __future__ import annotations

import json
from typing import Any

from spothub.sandbox.sandbox import Sandbox


def stack_resources(sandbox: Sandbox, stack_name: str, region: str, resource_type: str) -> list[str]:
    summaries = sandbox.client("cloudformation", region).list_stack_resources(StackName=stack_name)[
        "StackResourceSummaries"
    ]
    return [r["PhysicalResourceId"] for r in summaries if r["ResourceType"] == resource_type]


def body_metrics(body: dict[str, Any]) -> list[tuple[str, str, dict[str, str], dict[str, Any]]]:
    """(namespace, name, dimensions, options) of every metric of the body; expressions are left out."""
    found = []
    for widget in body["widgets"]:
        for entry in widget.get("properties", {}).get("metrics", []):
            options = entry[-1] if isinstance(entry[-1], dict) else {}
            fields = entry[:-1] if options else entry
            if fields:
                namespace, name, *pairs = fields
                found.append((namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True)), options))
    return found


def test_the_dashboard_names_the_deployments_functions_state_machines_and_queue(sandbox: Sandbox) -> None:
    hub = sandbox.hub
    name = f"{sandbox.prefix}-operations"
    cloudwatch = sandbox.client("cloudwatch", hub.region)
    assert name in [d["DashboardName"] for d in cloudwatch.list_dashboards()["DashboardEntries"]]
    for worker in sandbox.workers:
        if worker.region != hub.region:
            assert sandbox.client("cloudwatch", worker.region).list_dashboards()["DashboardEntries"] == []

    body = json.loads(cloudwatch.get_dashboard(DashboardName=name)["DashboardBody"])
    assert body["widgets"][0]["type"] == "text"
    shown = body_metrics(body)
    text = json.dumps(body)
    assert "${" not in text and "Fn::" not in text, "a reference was left unresolved"

    # Every hub function, by the name Lambda knows it by.
    functions = stack_resources(sandbox, hub.stack_name, hub.region, "AWS::Lambda::Function")
    assert functions
    lambda_ = sandbox.client("lambda", hub.region)
    for metric in ("Errors", "Throttles"):
        named = {d["FunctionName"] for ns, n, d, _ in shown if (ns, n) == ("AWS/Lambda", metric)}
        assert named == set(functions), metric
    for function in functions:
        lambda_.get_function(FunctionName=function)

    # Every hub state machine, by its ARN.
    machines = stack_resources(sandbox, hub.stack_name, hub.region, "AWS::StepFunctions::StateMachine")
    assert machines
    failed = {
        d["StateMachineArn"]
        for ns, n, d, o in shown
        if (ns, n) == ("AWS/States", "ExecutionsFailed") and o.get("region", hub.region) == hub.region
    }
    assert failed == set(machines)

    # Each worker region's launch and capacity-monitor machines, which exist there under the ARN shown.
    for worker in sandbox.workers:
        in_region = {
            d["StateMachineArn"] for ns, _, d, o in shown if ns == "AWS/States" and o.get("region") == worker.region
        }
        assert in_region == {
            arn
            for arn in stack_resources(sandbox, worker.stack_name, worker.region, "AWS::StepFunctions::StateMachine")
            if arn.endswith(("-launch-instance", "-capacity-monitor"))
        }
        stepfunctions = sandbox.client("stepfunctions", worker.region)
        for arn in in_region:
            stepfunctions.describe_state_machine(stateMachineArn=arn)

    # The hub's dead-letter queue, by its name.
    (queue_url,) = stack_resources(sandbox, hub.stack_name, hub.region, "AWS::SQS::Queue")
    (depth,) = [d for ns, _, d, _ in shown if ns == "AWS/SQS"]
    assert queue_url.endswith("/" + depth["QueueName"])
    sandbox.client("sqs", hub.region).get_queue_url(QueueName=depth["QueueName"])

    # The functions' own metrics carry the service dimension their POWERTOOLS_SERVICE_NAME gives them.
    services = {
        lambda_.get_function_configuration(FunctionName=f)["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
        for f in functions
    }
    for namespace, metric, dimensions, _ in shown:
        if namespace == "Spothub":
            assert dimensions["service"] in services, metric

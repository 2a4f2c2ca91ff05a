"""cdk-nag's AwsSolutions pack over every stack: no unacknowledged finding, every one with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_sns as sns

from stacks.nag import add_nag_checks
from tests.infrastructure.conftest import DEPLOYMENTS
from tests.infrastructure.synth import Synthesized

# Reviewed acknowledgments; a new one fails this test until it is reviewed and listed here.
EXPECTED_ACKNOWLEDGED = {
    "spothub-hub": {
        "AwsSolutions-APIG3",
        "AwsSolutions-COG4",
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
        "AwsSolutions-IAM5[Resource::*]",
        "AwsSolutions-IAM5[Resource::<SpotProvisioningCapacityHandlerFunction4A337EA1.Arn>:*]",
        "AwsSolutions-IAM5[Resource::<SpotProvisioningSpotFinderFunction1B802D6A.Arn>:*]",
        "AwsSolutions-IAM5[Resource::arn:aws:states:us-east-1:<AWS::AccountId>:execution:spothub-spot-orchestrator:*]",
        # Batch jobs: the listing state machine invokes its two functions; the jobs API stops listings (cancel)
        # and reads config files in the input buckets.
        "AwsSolutions-IAM5[Resource::<BatchJobsListingFunctionAC71A90E.Arn>:*]",
        "AwsSolutions-IAM5[Resource::<BatchJobsSupervisorFunction7887773B.Arn>:*]",
        "AwsSolutions-IAM5[Resource::arn:aws:states:us-east-1:<AWS::AccountId>:execution:spothub-batch-listing:*]",
        "AwsSolutions-IAM5[Resource::arn:aws:s3:::spothub-inputs/*]",
        "AwsSolutions-IAM5[Resource::arn:aws:s3:::team.raw-data/*]",
        # The model API key: read once when the serving task starts, so rotated by hand and a replacement.
        "AwsSolutions-SMG4",
        "AwsSolutions-SQS3",
        # Model deployments: the controller's node groups, container instances, tasks and task definition families
        # in each worker region; GET /health's alarms; the tasks' execution role (image pulls, container logs).
        *(
            f"AwsSolutions-IAM5[Resource::arn:aws:{resource}]"
            for region in ("us-west-2", "eu-west-1")
            for resource in (
                f"autoscaling:{region}:<AWS::AccountId>:autoScalingGroup:*:autoScalingGroupName/spothub-nodes-*",
                f"ecs:{region}:<AWS::AccountId>:container-instance/spothub-gpu/*",
                f"ecs:{region}:<AWS::AccountId>:task/spothub-gpu/*",
                f"ecs:{region}:<AWS::AccountId>:task-definition/spothub-model-*:*",
                f"logs:{region}:<AWS::AccountId>:log-group:/spothub/spothub/deployments:log-stream:*",
            )
        ),
        *(
            f"AwsSolutions-IAM5[Resource::arn:aws:ecr:{region}:<AWS::AccountId>:repository/*]"
            for region in ("us-east-1", "us-west-2", "eu-west-1")
        ),
        "AwsSolutions-IAM5[Resource::arn:aws:cloudwatch:us-east-1:<AWS::AccountId>:alarm:spothub-*]",
    },
    "spothub-worker-us-west-2": {
        "AwsSolutions-AS3",
        "AwsSolutions-EC26",
        "AwsSolutions-IAM5[Resource::*]",
        "AwsSolutions-IAM5[Resource::arn:aws:autoscaling:us-west-2:<AWS::AccountId>:autoScalingGroup:*:"
        "autoScalingGroupName/spothub-gpu]",
        "AwsSolutions-IAM5[Resource::arn:aws:ec2:us-west-2:<AWS::AccountId>:instance/*]",
        # Tags at launch (ec2:CreateAction RunInstances) on the volumes a group launches from its template.
        "AwsSolutions-IAM5[Resource::arn:aws:ec2:us-west-2:<AWS::AccountId>:volume/*]",
        "AwsSolutions-IAM5[Resource::<AutomationWorkerTasksFunctionB8C14F61.Arn>:*]",
        "AwsSolutions-IAM5[Resource::arn:aws:ecs:us-west-2:<AWS::AccountId>:task-definition/spothub-serving:*]",
        # Tags at StartTask (ecs:CreateAction) on the cluster's new tasks; the ECS agent's system logs.
        "AwsSolutions-IAM5[Resource::arn:aws:ecs:us-west-2:<AWS::AccountId>:task/<GpuCapacityClusterE3A60131>/*]",
        "AwsSolutions-IAM5[Resource::arn:aws:ecs:us-west-2:<AWS::AccountId>:"
        "container-instance/<GpuCapacityClusterE3A60131>/*]",
        "AwsSolutions-IAM5[Resource::arn:aws:states:us-west-2:<AWS::AccountId>:execution:spothub-launch-instance:*]",
        "AwsSolutions-ECS2",
        "AwsSolutions-IAM5[Resource::arn:aws:ssm:us-east-1:<AWS::AccountId>:parameter/spothub/spothub/*]",
        "AwsSolutions-IAM5[Resource::arn:aws:execute-api:us-east-1:<AWS::AccountId>:*/*/POST/agents/*]",
        "AwsSolutions-IAM5[Resource::arn:aws:cloudwatch:us-west-2:<AWS::AccountId>:alarm:spothub-agent-*]",
        "AwsSolutions-SQS3",
        # Batch capacity: jobs' groups (created per job), the worker routes, images and the batch buckets.
        "AwsSolutions-IAM5[Resource::arn:aws:autoscaling:us-west-2:<AWS::AccountId>:autoScalingGroup:*:"
        "autoScalingGroupName/spothub-job-*]",
        "AwsSolutions-IAM5[Resource::arn:aws:execute-api:us-east-1:<AWS::AccountId>:*/*/POST/workers/*]",
        "AwsSolutions-IAM5[Resource::arn:aws:execute-api:us-east-1:<AWS::AccountId>:*/*/GET/workers/*]",
        "AwsSolutions-IAM5[Resource::arn:aws:ecr:*:<AWS::AccountId>:repository/*]",
        "AwsSolutions-IAM5[Resource::arn:aws:s3:::spothub-inputs/*]",
        "AwsSolutions-IAM5[Resource::arn:aws:s3:::team.raw-data/*]",
        "AwsSolutions-IAM5[Resource::arn:aws:s3:::spothub-outputs/*]",
    },
}


# What the search part adds (searchVolumeId; the search fixture: the volume in us-west-2), reviewed likewise.
SEARCH_ACKNOWLEDGED = {
    "spothub-hub": {
        # The launcher invokes its tasks; the functions terminate (and the tasks attach to) only instances tagged as
        # the search instance; tags at launch on its root volume; a spot launch's request.
        "AwsSolutions-IAM5[Resource::<SearchTasksFunction5FC9953D.Arn>:*]",
        "AwsSolutions-IAM5[Resource::arn:aws:ec2:us-west-2:<AWS::AccountId>:instance/*]",
        "AwsSolutions-IAM5[Resource::arn:aws:ec2:us-west-2:<AWS::AccountId>:volume/*]",
        "AwsSolutions-IAM5[Resource::arn:aws:ec2:us-west-2:<AWS::AccountId>:spot-instances-request/*]",
    },
    "spothub-worker-us-west-2": {
        # The router's network interfaces in the VPC (Lambda creates them with the function's role).
        "AwsSolutions-IAM5[Resource::arn:aws:ec2:us-west-2:<AWS::AccountId>:network-interface/*]",
        # The embedding API key is the provider's: rotated by putting a new value, not by a rotation Lambda.
        "AwsSolutions-SMG4",
    },
    "spothub-worker-eu-west-1": set(),
}


def _acknowledged(template: dict) -> dict[str, str]:
    return {
        rule["id"]: rule["reason"]
        for resource in template["Resources"].values()
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
        if rule["id"].startswith("AwsSolutions")
    }


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_synthesis_reports_no_violation(request: pytest.FixtureRequest, deployment: str) -> None:
    synthesized: Synthesized = request.getfixturevalue(deployment)
    report = json.loads((synthesized.outdir / "validation-report.json").read_text())
    errors = [
        v["ruleName"]
        for plugin in report["pluginReports"]
        for v in plugin.get("violations", [])
        if v.get("severity") != "warning"
    ]
    assert errors == []


def test_every_acknowledgment_is_reviewed_and_has_a_reason(reference: Synthesized) -> None:
    for stack_name, expected in EXPECTED_ACKNOWLEDGED.items():
        acknowledged = _acknowledged(reference.templates[stack_name])
        assert set(acknowledged) == expected, stack_name
        for rule, reason in acknowledged.items():
            assert len(reason) >= 40, f"{stack_name}: {rule} needs a real reason, got {reason!r}"


def test_every_acknowledgment_of_the_search_part_is_reviewed_and_has_a_reason(
    reference: Synthesized, search: Synthesized
) -> None:
    for stack_name, expected in SEARCH_ACKNOWLEDGED.items():
        acknowledged = _acknowledged(search.templates[stack_name])
        added = set(acknowledged) - set(_acknowledged(reference.templates[stack_name]))
        assert added == expected, stack_name
        for rule in added:
            assert len(acknowledged[rule]) >= 40, f"{stack_name}: {rule} needs a real reason"
    # The search part's own resources carry their reasons, besides the stacks' shared acknowledgments.
    for stack_name, rules in {
        "spothub-hub": {"AwsSolutions-IAM5[Resource::*]"},
        "spothub-worker-us-west-2": {"AwsSolutions-IAM5[Resource::*]", "AwsSolutions-SMG4"},
    }.items():
        resources = search.templates[stack_name]["Resources"]
        own = _acknowledged({"Resources": {k: r for k, r in resources.items() if k.startswith("Search")}})
        assert rules <= set(own), stack_name


def test_the_task_token_wildcard_is_acknowledged_on_the_capacity_handler_with_its_reason(
    reference: Synthesized,
) -> None:
    resources = reference.templates["spothub-hub"]["Resources"]
    (policy,) = [
        k
        for k, r in resources.items()
        if k.startswith("SpotProvisioningCapacityHandlerRole") and r["Type"] == "AWS::IAM::Policy"
    ]
    reasons = _acknowledged({"Resources": {policy: resources[policy]}})
    assert "states:SendTaskSuccess" in reasons["AwsSolutions-IAM5[Resource::*]"]


def test_an_unacknowledged_finding_stops_synthesis(tmp_path: Path) -> None:
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Careless")
    sns.Topic(stack, "Plain")  # no encryption, no TLS enforcement
    add_nag_checks(app)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for plugin in report["pluginReports"] for v in plugin["violations"]}
    assert "AwsSolutions-SNS3" in rules

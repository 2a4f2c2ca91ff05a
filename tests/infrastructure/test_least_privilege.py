"""Every identity policy grants named actions on named resources.

`Resource: "*"` is accepted only for actions that have no resource-level permissions, or where a
condition key narrows them (listed below with the key that must be present).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tests.infrastructure.synth import Synthesized

# action -> condition key required alongside Resource "*" (None: the action has no resource-level form)
RESOURCE_WILDCARD_ALLOWED: dict[str, str | None] = {
    "xray:PutTraceSegments": None,
    "xray:PutTelemetryRecords": None,
    "ecr:GetAuthorizationToken": None,
    "ec2:GetSpotPlacementScores": None,
    "ec2:DescribeSpotPriceHistory": None,
    # The capacity handler's standby check: zone ids (placement scores) to this account's zone names.
    "ec2:DescribeAvailabilityZones": None,
    "ecs:DiscoverPollEndpoint": None,
    "ssmmessages:CreateControlChannel": None,
    "ssmmessages:CreateDataChannel": None,
    "ssmmessages:OpenControlChannel": None,
    "ssmmessages:OpenDataChannel": None,
    "cloudwatch:PutMetricData": "cloudwatch:namespace",
    "ecs:Poll": "ecs:cluster",
    "ecs:StartTelemetrySession": "ecs:cluster",
    "ecs:PutSystemLogEvents": "ecs:cluster",
    # Step Functions' log delivery to CloudWatch Logs and X-Ray sampling: no resource-level permissions.
    "logs:CreateLogDelivery": None,
    "logs:GetLogDelivery": None,
    "logs:UpdateLogDelivery": None,
    "logs:DeleteLogDelivery": None,
    "logs:ListLogDeliveries": None,
    "logs:PutResourcePolicy": None,
    "logs:DescribeResourcePolicies": None,
    "logs:DescribeLogGroups": None,
    "xray:GetSamplingRules": None,
    "xray:GetSamplingTargets": None,
    # Task-token answers: the token names the task; no resource-level permissions.
    "states:SendTaskSuccess": None,
    "states:SendTaskFailure": None,
    "states:SendTaskHeartbeat": None,
    # The worker function: describes have no resource-level permissions; the rest is conditioned.
    "autoscaling:DescribeAutoScalingGroups": None,
    "autoscaling:DescribeAutoScalingInstances": None,
    "autoscaling:DescribeScalingActivities": None,
    "ec2:DescribeInstances": None,
    # The batch fleet function: what a job's group launches from.
    "ec2:DescribeLaunchTemplateVersions": None,
    "ec2:RunInstances": "ec2:LaunchTemplate",
    "ec2:CreateTags": "ec2:LaunchTemplate",
    "ecs:ListTasks": "ecs:cluster",
    "ecs:DescribeTasks": "ecs:cluster",
    "ecs:StopTask": "ecs:cluster",
    "ecs:TagResource": "ecs:cluster",
    "ecs:ListContainerInstances": "ecs:cluster",
    "ecs:DescribeContainerInstances": "ecs:cluster",
    # The deployment controller: a family's latest revision, the memory of the node classes' types.
    "ecs:DescribeTaskDefinition": None,
    "ec2:DescribeInstanceTypes": None,
    # The search launcher's tasks: where the volume is and the subnets of its zone.
    "ec2:DescribeVolumes": None,
    "ec2:DescribeSubnets": None,
    # The search router in the VPC: Lambda creates its network interfaces with the function's role, on "*".
    "ec2:CreateNetworkInterface": None,
    "ec2:DescribeNetworkInterfaces": None,
}
MANAGED_POLICIES_ALLOWED = {"AmazonAPIGatewayPushToCloudWatchLogs"}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(synthesized: Synthesized) -> Iterator[tuple[str, dict[str, Any]]]:
    for stack_name, template in synthesized.templates.items():
        for logical_id, resource in template["Resources"].items():
            documents = []
            if resource["Type"] == "AWS::IAM::Policy":
                documents.append(resource["Properties"]["PolicyDocument"])
            if resource["Type"] == "AWS::IAM::Role":
                documents.extend(p["PolicyDocument"] for p in resource["Properties"].get("Policies", []))
            for document in documents:
                for statement in document["Statement"]:
                    yield f"{stack_name}/{logical_id}", statement


def _conditions(statement: dict[str, Any]) -> set[str]:
    return {key for operator in statement.get("Condition", {}).values() for key in operator}


def test_no_action_wildcards(
    reference: Synthesized, hub_as_worker: Synthesized, search: Synthesized, search_in_hub: Synthesized
) -> None:
    for synthesized in (reference, hub_as_worker, search, search_in_hub):
        for where, statement in _statements(synthesized):
            for action in _as_list(statement["Action"]):
                assert action != "*", where
                assert not action.endswith(":*"), f"{where}: {action}"
                assert "*" not in action, f"{where}: {action} is not a named action"


def test_resource_wildcards_only_where_the_service_has_no_resource_level_permissions(
    reference: Synthesized, hub_as_worker: Synthesized, search: Synthesized, search_in_hub: Synthesized
) -> None:
    for synthesized in (reference, hub_as_worker, search, search_in_hub):
        for where, statement in _statements(synthesized):
            if "*" not in _as_list(statement["Resource"]):
                continue
            for action in _as_list(statement["Action"]):
                assert action in RESOURCE_WILDCARD_ALLOWED, f'{where}: {action} on "*"'
                required = RESOURCE_WILDCARD_ALLOWED[action]
                if required:
                    assert required in _conditions(statement), f'{where}: {action} on "*" needs condition {required}'


def test_only_the_api_gateway_logging_role_uses_a_managed_policy(
    reference: Synthesized, search: Synthesized, search_in_hub: Synthesized
) -> None:
    for stack_name, template in [t for s in (reference, search, search_in_hub) for t in s.templates.items()]:
        for logical_id, resource in template["Resources"].items():
            if resource["Type"] != "AWS::IAM::Role":
                continue
            for arn in resource["Properties"].get("ManagedPolicyArns", []):
                rendered = str(arn)
                assert any(name in rendered for name in MANAGED_POLICIES_ALLOWED), (
                    f"{stack_name}/{logical_id}: {rendered}"
                )


def _function_actions(reference: Synthesized, role_prefix: str) -> set[str]:
    """Every action the hub function whose role's logical id starts with `role_prefix` may call."""
    policies = reference.resources(reference.config.hub_stack_name(), "AWS::IAM::Policy")
    (policy,) = [p for logical_id, p in policies.items() if logical_id.startswith(role_prefix)]
    return {
        action
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        for action in _as_list(statement["Action"])
    }


def test_status_function_may_only_read_the_state_table_and_ask_the_finder(reference: Synthesized) -> None:
    assert _function_actions(reference, "PlatformStatusFunctionRole") == {
        "dynamodb:GetItem",
        "dynamodb:Query",  # GET /events: the launch, teardown, instance, remediation and exclusion partitions
        "kms:Decrypt",
        "lambda:InvokeFunction",  # GET /regions: the spot finder, which only reads
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "sqs:SendMessage",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }


def test_status_function_may_invoke_the_spot_finder_and_no_other_function(reference: Synthesized) -> None:
    hub = reference.config.hub_stack_name()
    policies = reference.resources(hub, "AWS::IAM::Policy")
    (policy,) = [p for logical_id, p in policies.items() if logical_id.startswith("PlatformStatusFunctionRole")]
    (invoke,) = [
        s
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if "lambda:InvokeFunction" in _as_list(s["Action"])
    ]
    (resource,) = _as_list(invoke["Resource"])
    finder, attribute = resource["Fn::GetAtt"]
    assert (finder.startswith("SpotProvisioningSpotFinderFunction"), attribute) == (True, "Arn")
    functions = reference.resources(hub, "AWS::Lambda::Function")
    (status,) = [f for logical_id, f in functions.items() if logical_id.startswith("PlatformStatusFunction")]
    assert status["Properties"]["Environment"]["Variables"]["SPOTHUB_SPOT_FINDER_FUNCTION"] == {"Ref": finder}


def test_spot_finder_reads_spot_data_and_queries_exclusions_only(reference: Synthesized) -> None:
    assert _function_actions(reference, "SpotProvisioningSpotFinderRole") == {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "ec2:DescribeSpotPriceHistory",
        "ec2:GetSpotPlacementScores",
        "kms:Decrypt",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "sqs:SendMessage",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }


# What every function's role has besides its own: its log group, the dead-letter queue, X-Ray.
FUNCTION_BASE = {
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "sqs:SendMessage",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}
# Readers and writers of the encrypted tables.
TABLE_KEY = {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"}
JOBS_TABLE = {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem"}


def test_batch_hub_functions_may_call_only_their_actions(reference: Synthesized) -> None:
    expected = {
        "BatchJobsJobsApiRole": {
            *JOBS_TABLE,
            "s3:ListBucket",
            "s3:GetObject",
            "states:StartExecution",
            "states:StopExecution",
            "sns:Subscribe",
            "sns:ListSubscriptionsByTopic",
            "sns:GetSubscriptionAttributes",
            "sns:SetSubscriptionAttributes",
        },
        "BatchJobsWorkersApiRole": {*JOBS_TABLE, "dynamodb:BatchGetItem"},
        "BatchJobsListingRole": {
            "dynamodb:GetItem",
            "dynamodb:UpdateItem",
            "dynamodb:BatchGetItem",
            "dynamodb:BatchWriteItem",
            "s3:ListBucket",
        },
        "BatchJobsSupervisorRole": {
            *JOBS_TABLE,
            "dynamodb:BatchGetItem",
            "events:PutEvents",
            "sns:Publish",
            "lambda:InvokeFunction",
            "ses:SendEmail",
        },
    }
    for role_prefix, actions in expected.items():
        assert _function_actions(reference, role_prefix) == FUNCTION_BASE | TABLE_KEY | actions, role_prefix


def _worker_role_actions(reference: Synthesized, region: str, role_prefix: str) -> set[str]:
    policies = reference.resources(reference.config.worker_stack_name(region), "AWS::IAM::Policy")
    (policy,) = [p for logical_id, p in policies.items() if logical_id.startswith(role_prefix)]
    return {
        action
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        for action in _as_list(statement["Action"])
    }


def test_batch_worker_roles_may_call_only_their_actions(reference: Synthesized) -> None:
    for region in ("us-west-2", "eu-west-1"):
        assert _worker_role_actions(reference, region, "BatchCapacityBatchFleetRole") == FUNCTION_BASE | {
            "autoscaling:CreateAutoScalingGroup",
            "autoscaling:CreateOrUpdateTags",
            "autoscaling:UpdateAutoScalingGroup",
            "autoscaling:SetDesiredCapacity",
            "autoscaling:TerminateInstanceInAutoScalingGroup",
            "autoscaling:DeleteAutoScalingGroup",
            "autoscaling:DescribeAutoScalingGroups",
            "autoscaling:DescribeScalingActivities",
            "ec2:DescribeLaunchTemplateVersions",
            "ec2:RunInstances",
            "ec2:CreateTags",
            "iam:PassRole",
            "events:PutEvents",
        }, region
        assert _worker_role_actions(reference, region, "BatchCapacityInstanceRole") == {
            "execute-api:Invoke",
            "ssm:GetParameter",
            "autoscaling:TerminateInstanceInAutoScalingGroup",
            "ecr:GetAuthorizationToken",
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
            "cloudwatch:PutMetricData",
            "ssm:UpdateInstanceInformation",
            "ssmmessages:CreateControlChannel",
            "ssmmessages:CreateDataChannel",
            "ssmmessages:OpenControlChannel",
            "ssmmessages:OpenDataChannel",
            "s3:GetObject",
            "s3:PutObject",
            "s3:AbortMultipartUpload",
        }, region


SEARCH_TABLE = {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"}
# What each search function may do in the search region besides the table: the router, the instance's end.
SEARCH_REGION_BASE = {"lambda:InvokeFunction", "ec2:TerminateInstances", "ec2:DescribeInstances"}


def test_search_hub_functions_may_call_only_their_actions(search: Synthesized, search_in_hub: Synthesized) -> None:
    expected = {
        "SearchApiRole": {*SEARCH_TABLE, "dynamodb:PutItem", *SEARCH_REGION_BASE, "states:StartExecution"},
        "SearchMonitorRole": {*SEARCH_TABLE, "dynamodb:PutItem", *SEARCH_REGION_BASE, "states:StartExecution"},
        "SearchTasksRole": {
            *SEARCH_TABLE,
            *SEARCH_REGION_BASE,
            "ssm:GetParameter",
            "ec2:DescribeVolumes",
            "ec2:DescribeSubnets",
            "ec2:RunInstances",
            "ec2:CreateTags",
            "ec2:AttachVolume",
            "iam:PassRole",
        },
    }
    for synthesized in (search, search_in_hub):
        for role_prefix, actions in expected.items():
            assert _function_actions(synthesized, role_prefix) == FUNCTION_BASE | TABLE_KEY | actions, role_prefix


def test_search_region_roles_may_call_only_their_actions(search: Synthesized, search_in_hub: Synthesized) -> None:
    for synthesized in (search, search_in_hub):
        region = synthesized.config.search_region
        assert _worker_role_actions(synthesized, region, "SearchRouterRole") == FUNCTION_BASE | {
            "ec2:CreateNetworkInterface",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeSubnets",
            "ec2:DeleteNetworkInterface",
            "ec2:AssignPrivateIpAddresses",
            "ec2:UnassignPrivateIpAddresses",
        }
        assert _worker_role_actions(synthesized, region, "SearchInstanceRole") == {
            "ssm:GetParameter",
            "secretsmanager:GetSecretValue",
            "kms:Decrypt",
            "s3:GetObject",
            "ssm:UpdateInstanceInformation",
            "ssmmessages:CreateControlChannel",
            "ssmmessages:CreateDataChannel",
            "ssmmessages:OpenControlChannel",
            "ssmmessages:OpenDataChannel",
        }

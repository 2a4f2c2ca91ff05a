"""Template assertions for batch jobs: the hub's jobs table, routes, functions, grants, listing state machine,
schedule and rules (stacks/constructs/batch_jobs.py), and each worker region's batch launch template, instance
role and fleet function (stacks/constructs/batch_capacity.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from spothub_core.consumers import Bus, Target, consumed_by
from spothub_core.contracts import HubCommand, Source, WorkerReport
from spothub_core.dal.batch_table import BY_STATUS, BY_TIME
from tests.infrastructure.synth import Synthesized

HUB = "spothub-hub"
WORKERS = ["us-west-2", "eu-west-1"]
# What every hub function is given (python_function.py, hub_stack.py), besides its own.
COMMON_ENVIRONMENT = {
    "SPOTHUB_PREFIX",
    "SPOTHUB_VERSION",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
}
HUB_ENVIRONMENT = {
    *COMMON_ENVIRONMENT,
    "SPOTHUB_HUB_REGION",
    "SPOTHUB_WORKER_REGIONS",
    "SPOTHUB_STATE_TABLE",
    "SPOTHUB_CAPACITY_FALLBACK",
}
# Actions some batch role may have on "*": none of them has a resource-level permission, or a condition narrows it.
UNSCOPABLE = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "ecr:GetAuthorizationToken",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeScalingActivities",
    "ec2:DescribeLaunchTemplateVersions",
}
CONDITIONED_ON_ANY_RESOURCE = {
    "cloudwatch:PutMetricData": "cloudwatch:namespace",
    "ec2:RunInstances": "ec2:LaunchTemplate",
    "ec2:CreateTags": "ec2:LaunchTemplate",
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _resources(synthesized: Synthesized, stack_name: str) -> dict[str, dict[str, Any]]:
    return synthesized.templates[stack_name]["Resources"]


def _function(synthesized: Synthesized, stack_name: str, concern: str) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (logical_id, resource["Properties"])
        for logical_id, resource in synthesized.resources(stack_name, "AWS::Lambda::Function").items()
        if resource["Properties"]["Handler"] == f"{concern}.handler.lambda_handler"
    ]
    return found


def _role_statements(synthesized: Synthesized, stack_name: str, role_logical_id: str) -> list[dict[str, Any]]:
    return [
        statement
        for policy in synthesized.resources(stack_name, "AWS::IAM::Policy").values()
        if {"Ref": role_logical_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _function_statements(synthesized: Synthesized, stack_name: str, concern: str) -> list[dict[str, Any]]:
    _, properties = _function(synthesized, stack_name, concern)
    return _role_statements(synthesized, stack_name, properties["Role"]["Fn::GetAtt"][0])


def _by_sid(statements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in statements if "Sid" in s}


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    return {action for s in statements for action in _as_list(s["Action"])}


def _text(value: Any) -> str:
    return json.dumps(value)


def _environment(synthesized: Synthesized, stack_name: str, concern: str) -> dict[str, Any]:
    return _function(synthesized, stack_name, concern)[1]["Environment"]["Variables"]


def _assert_nothing_on_any_resource_that_could_be_scoped(statements: list[dict[str, Any]], where: str) -> None:
    for statement in statements:
        if "*" not in _as_list(statement["Resource"]):
            continue
        for action in _as_list(statement["Action"]):
            if action in CONDITIONED_ON_ANY_RESOURCE:
                keys = {k for operator in statement.get("Condition", {}).values() for k in operator}
                assert CONDITIONED_ON_ANY_RESOURCE[action] in keys, f"{where}: {action} on * without its condition"
            else:
                assert action in UNSCOPABLE, f'{where}: {action} on "*" could be scoped'


# --- the hub ----------------------------------------------------------------------------------------------


def test_jobs_table_is_on_demand_encrypted_recoverable_expires_items_and_is_kept(reference: Synthesized) -> None:
    reference.hub.has_resource(
        "AWS::DynamoDB::Table",
        {
            "Properties": Match.object_like(
                {
                    "TableName": "spothub-jobs",
                    "BillingMode": "PAY_PER_REQUEST",
                    "KeySchema": [
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"},
                    ],
                    "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                    # The alerts key, as the state table's.
                    "SSESpecification": {
                        "SSEEnabled": True,
                        "SSEType": "KMS",
                        "KMSMasterKeyId": {"Fn::GetAtt": [Match.string_like_regexp("^AlertsKey"), "Arn"]},
                    },
                    "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
                }
            ),
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
        },
    )


def test_jobs_table_has_the_sparse_indexes_the_queue_reads(reference: Synthesized) -> None:
    (table,) = [
        t["Properties"]
        for t in reference.resources(HUB, "AWS::DynamoDB::Table").values()
        if t["Properties"].get("TableName") == "spothub-jobs"
    ]
    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert set(indexes) == {BY_STATUS, BY_TIME}
    assert indexes[BY_STATUS]["KeySchema"] == [
        {"AttributeName": "status_key", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert indexes[BY_STATUS]["Projection"] == {
        "ProjectionType": "INCLUDE",
        "NonKeyAttributes": ["deadline", "worker_id", "attempt"],
    }
    assert indexes[BY_TIME]["KeySchema"] == [
        {"AttributeName": "list_key", "KeyType": "HASH"},
        {"AttributeName": "created_key", "KeyType": "RANGE"},
    ]
    assert indexes[BY_TIME]["Projection"] == {"ProjectionType": "ALL"}
    assert "ProvisionedThroughput" not in _text(table)


def _route_paths(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    """The API's methods by "METHOD /path"."""
    resources = _resources(synthesized, HUB)

    def path_of(reference: Any) -> str:
        if "Fn::GetAtt" in reference:  # the root resource
            return ""
        resource = resources[reference["Ref"]]["Properties"]
        return f"{path_of(resource['ParentId'])}/{resource['PathPart']}"

    return {
        f"{method['Properties']['HttpMethod']} {path_of(method['Properties']['ResourceId'])}": method["Properties"]
        for method in synthesized.resources(HUB, "AWS::ApiGateway::Method").values()
    }


BATCH_ROUTES = {
    "POST /jobs": ("jobs_api", "JobRequest"),
    "GET /jobs": ("jobs_api", None),
    "GET /jobs/{job_id}": ("jobs_api", None),
    "DELETE /jobs/{job_id}": ("jobs_api", None),
    "POST /workers/register": ("batch_workers_api", "WorkerRegistration"),
    "GET /workers/{worker_id}/assignment": ("batch_workers_api", None),
    "POST /workers/{worker_id}/ack": ("batch_workers_api", "BatchAck"),
    "POST /workers/{worker_id}/status": ("batch_workers_api", "BatchStatusReport"),
}


@pytest.mark.parametrize("route", BATCH_ROUTES)
def test_batch_routes_use_iam_validate_and_reach_their_function(reference: Synthesized, route: str) -> None:
    concern, model = BATCH_ROUTES[route]
    method = _route_paths(reference)[route]
    assert method["AuthorizationType"] == "AWS_IAM"
    assert "RequestValidatorId" in method
    function_id, _ = _function(reference, HUB, concern)
    assert method["Integration"]["Type"] == "AWS_PROXY"
    assert {"Fn::GetAtt": [function_id, "Arn"]} in method["Integration"]["Uri"]["Fn::Join"][1]
    if model is None:
        assert "RequestModels" not in method
    else:
        assert method["RequestModels"] == {"application/json": model}
        reference.hub.has_resource_properties("AWS::ApiGateway::Model", {"Name": model})


def test_the_api_has_exactly_these_job_and_worker_routes(reference: Synthesized) -> None:
    routes = {r for r in _route_paths(reference) if r.split(" ")[1].startswith(("/jobs", "/workers"))}
    assert routes == set(BATCH_ROUTES)


def test_jobs_api_environment(reference: Synthesized) -> None:
    env = _environment(reference, HUB, "jobs_api")
    assert set(env) == HUB_ENVIRONMENT | {
        "SPOTHUB_JOBS_TABLE",
        "SPOTHUB_BATCH_INPUT_BUCKETS",
        "SPOTHUB_BATCH_OUTPUT_BUCKETS",
        "SPOTHUB_LISTING_STATE_MACHINE_ARN",
        "SPOTHUB_JOBS_TOPIC_ARN",
    }
    assert env["SPOTHUB_JOBS_TABLE"]["Ref"].startswith("BatchJobsTable")
    assert env["SPOTHUB_BATCH_INPUT_BUCKETS"] == "spothub-inputs,team.raw-data"
    assert env["SPOTHUB_BATCH_OUTPUT_BUCKETS"] == "spothub-outputs"
    assert _text(env["SPOTHUB_LISTING_STATE_MACHINE_ARN"]).endswith(':stateMachine:spothub-batch-listing"]]}')
    assert env["SPOTHUB_JOBS_TOPIC_ARN"]["Ref"].startswith("BatchJobsTopic")


def test_workers_api_and_listing_know_the_jobs_table_only(reference: Synthesized) -> None:
    for concern in ("batch_workers_api", "batch_listing"):
        env = _environment(reference, HUB, concern)
        assert set(env) == HUB_ENVIRONMENT | {"SPOTHUB_JOBS_TABLE"}, concern


def test_supervisor_environment(reference: Synthesized, hub_as_worker: Synthesized) -> None:
    env = _environment(reference, HUB, "batch_supervisor")
    assert set(env) == HUB_ENVIRONMENT | {
        "SPOTHUB_JOBS_TABLE",
        "SPOTHUB_HUB_BUS",
        "SPOTHUB_JOBS_TOPIC_ARN",
        "SPOTHUB_SPOT_FINDER_FUNCTION",
        "SPOTHUB_BATCH_INSTANCE_TYPES",
        "SPOTHUB_BATCH_MAX_WORKERS",
        "SPOTHUB_SES_SENDER",
    }
    assert env["SPOTHUB_HUB_BUS"]["Ref"].startswith("HubBus")
    assert env["SPOTHUB_BATCH_MAX_WORKERS"] == "20"
    assert env["SPOTHUB_SPOT_FINDER_FUNCTION"]["Ref"].startswith("SpotProvisioningSpotFinderFunction")
    assert env["SPOTHUB_BATCH_INSTANCE_TYPES"] == "g5.xlarge,g6.xlarge,g6e.xlarge"
    assert env["SPOTHUB_SES_SENDER"] == "spothub@example.com"
    # No jobsSesSender: no SES at all; the batch instance types default to instanceTypes.
    env = _environment(hub_as_worker, "gpu-prod-hub", "batch_supervisor")
    assert "SPOTHUB_SES_SENDER" not in env
    assert env["SPOTHUB_BATCH_INSTANCE_TYPES"] == "p4d.24xlarge,p5.48xlarge"


def test_batch_function_timeouts(reference: Synthesized) -> None:
    timeouts = {c: _function(reference, HUB, c)[1]["Timeout"] for c in ("jobs_api", "batch_workers_api")}
    assert timeouts == {"jobs_api": 30, "batch_workers_api": 30}
    assert _function(reference, HUB, "batch_listing")[1]["Timeout"] == 120
    # The supervisor waits on the spot finder (60 s at most), then does its own calls.
    assert _function(reference, HUB, "batch_supervisor")[1]["Timeout"] == 120


def _table_statements(statements: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """The actions on the jobs table itself, and the index names Query is granted on."""
    by_sid = _by_sid(statements)
    table = by_sid["JobsTable"]
    assert table["Resource"]["Fn::GetAtt"][0].startswith("BatchJobsTable")
    indexes = set()
    if "JobsTableIndexes" in by_sid:
        assert by_sid["JobsTableIndexes"]["Action"] == "dynamodb:Query"
        for arn in _as_list(by_sid["JobsTableIndexes"]["Resource"]):
            parts = arn["Fn::Join"][1]
            assert parts[0]["Fn::GetAtt"][0].startswith("BatchJobsTable")
            indexes.add(parts[1].removeprefix("/index/"))
    # No grant on the table's indexes as a wildcard (Table.grant's "<table>/index/*").
    assert "/index/*" not in _text(statements)
    return set(_as_list(table["Action"])), indexes


def test_jobs_api_grants(reference: Synthesized) -> None:
    statements = _function_statements(reference, HUB, "jobs_api")
    actions, indexes = _table_statements(statements)
    assert actions == {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem"}
    assert indexes == {BY_STATUS, BY_TIME}
    by_sid = _by_sid(statements)
    assert by_sid["ListInputBuckets"]["Action"] == "s3:ListBucket"
    assert by_sid["ListInputBuckets"]["Resource"] == ["arn:aws:s3:::spothub-inputs", "arn:aws:s3:::team.raw-data"]
    assert by_sid["ReadConfigFiles"]["Action"] == "s3:GetObject"
    assert by_sid["ReadConfigFiles"]["Resource"] == ["arn:aws:s3:::spothub-inputs/*", "arn:aws:s3:::team.raw-data/*"]
    assert _text(by_sid["StartListing"]["Resource"]).endswith(':stateMachine:spothub-batch-listing"]]}')
    assert by_sid["StartListing"]["Action"] == "states:StartExecution"
    assert _text(by_sid["StopListing"]["Resource"]).endswith(':execution:spothub-batch-listing:*"]]}')
    assert by_sid["StopListing"]["Action"] == "states:StopExecution"
    assert by_sid["SubscribeNotifyEmail"]["Resource"]["Ref"].startswith("BatchJobsTopic")
    assert "sns:Publish" not in _actions(statements)
    # Nothing on the output buckets: the API reads config files, the workers write outputs.
    assert "spothub-outputs" not in _text(statements)


def test_listing_state_machine_arn_in_the_grants_is_the_machines(reference: Synthesized) -> None:
    (machine,) = [
        m["Properties"]
        for m in reference.resources(HUB, "AWS::StepFunctions::StateMachine").values()
        if m["Properties"]["StateMachineName"] == "spothub-batch-listing"
    ]
    substitutions = machine["DefinitionSubstitutions"]
    assert substitutions["BatchListingArn"] == {"Fn::GetAtt": [_function(reference, HUB, "batch_listing")[0], "Arn"]}
    assert substitutions["BatchSupervisorArn"] == {
        "Fn::GetAtt": [_function(reference, HUB, "batch_supervisor")[0], "Arn"]
    }
    assert machine["TracingConfiguration"] == {"Enabled": True}
    # The machine invokes those two functions and nothing else.
    role = machine["RoleArn"]["Fn::GetAtt"][0]
    invoked = {
        _text(resource)
        for s in _role_statements(reference, HUB, role)
        if s["Action"] == "lambda:InvokeFunction"
        for resource in _as_list(s["Resource"])
    }
    functions = {_function(reference, HUB, c)[0] for c in ("batch_listing", "batch_supervisor")}
    assert invoked and all(any(f in arn for f in functions) for arn in invoked)


def test_workers_api_grants(reference: Synthesized) -> None:
    statements = _function_statements(reference, HUB, "batch_workers_api")
    actions, indexes = _table_statements(statements)
    assert actions == {
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    }
    assert indexes == {BY_STATUS}
    assert not {a for a in _actions(statements) if a.split(":")[0] in {"s3", "states", "sns", "events", "lambda"}}


def test_listing_grants(reference: Synthesized) -> None:
    statements = _function_statements(reference, HUB, "batch_listing")
    actions, indexes = _table_statements(statements)
    assert actions == {"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"}
    assert indexes == set()
    by_sid = _by_sid(statements)
    assert by_sid["ListInputBuckets"]["Resource"] == ["arn:aws:s3:::spothub-inputs", "arn:aws:s3:::team.raw-data"]
    assert {a for a in _actions(statements) if a.startswith("s3:")} == {"s3:ListBucket"}


def test_supervisor_grants(reference: Synthesized) -> None:
    statements = _function_statements(reference, HUB, "batch_supervisor")
    actions, indexes = _table_statements(statements)
    assert actions == {
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    }
    assert indexes == {BY_STATUS}
    by_sid = _by_sid(statements)
    assert by_sid["PutOnHubBus"]["Action"] == "events:PutEvents"
    assert by_sid["PutOnHubBus"]["Resource"]["Fn::GetAtt"][0].startswith("HubBus")
    assert by_sid["NotifyJobEnd"]["Action"] == "sns:Publish"
    assert by_sid["NotifyJobEnd"]["Resource"]["Ref"].startswith("BatchJobsTopic")
    # The finder itself, unqualified: no "<ARN>:*".
    finder_id, _ = _function(reference, HUB, "spot_finder")
    assert by_sid["RankRegions"]["Action"] == "lambda:InvokeFunction"
    assert by_sid["RankRegions"]["Resource"] == {"Fn::GetAtt": [finder_id, "Arn"]}
    ses = by_sid["MailJobEnd"]
    assert ses["Action"] == "ses:SendEmail"
    identities = sorted(r["Fn::Join"][1][2] for r in ses["Resource"])
    assert identities == [":identity/example.com", ":identity/spothub@example.com"]
    assert all(r["Fn::Join"][1][0] == "arn:aws:ses:us-east-1:" for r in ses["Resource"])
    assert ses["Condition"] == {"StringEquals": {"ses:FromAddress": "spothub@example.com"}}
    assert not {a for a in _actions(statements) if a.startswith(("s3:", "states:"))}


def test_without_buckets_or_sender_nothing_is_granted_on_s3_or_ses(hub_as_worker: Synthesized) -> None:
    for name in hub_as_worker.templates:
        for where, statement in _all_statements(hub_as_worker, name):
            for action in _as_list(statement["Action"]):
                assert not action.startswith("ses:"), where
                assert action not in {"s3:ListBucket", "s3:PutObject", "s3:AbortMultipartUpload"}, where
                if action == "s3:GetObject":
                    assert "cdk-hnb659fds-assets" in _text(statement["Resource"]), f"{where}: only the agent bundle"


def _all_statements(synthesized: Synthesized, stack_name: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (logical_id, statement)
        for logical_id, policy in synthesized.resources(stack_name, "AWS::IAM::Policy").items()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


@pytest.mark.parametrize("concern", ["jobs_api", "batch_workers_api", "batch_listing", "batch_supervisor"])
def test_hub_batch_functions_have_nothing_on_any_resource_that_could_be_scoped(
    reference: Synthesized, concern: str
) -> None:
    _assert_nothing_on_any_resource_that_could_be_scoped(_function_statements(reference, HUB, concern), concern)


def test_supervisor_runs_every_minute(reference: Synthesized) -> None:
    supervisor_id, _ = _function(reference, HUB, "batch_supervisor")
    supervisor = {"Fn::GetAtt": [supervisor_id, "Arn"]}
    (schedule,) = [
        r["Properties"]
        for r in reference.resources(HUB, "AWS::Events::Rule").values()
        if "ScheduleExpression" in r["Properties"] and any(t["Arn"] == supervisor for t in r["Properties"]["Targets"])
    ]
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    (target,) = schedule["Targets"]
    assert json.loads(target["Input"]) == {"action": "supervise"}
    assert "DeadLetterConfig" in target


def test_supervisor_consumes_fleet_reports_from_the_hub_bus(reference: Synthesized) -> None:
    supervisor_id, _ = _function(reference, HUB, "batch_supervisor")
    rules = [
        r["Properties"]
        for r in reference.resources(HUB, "AWS::Events::Rule").values()
        if "EventPattern" in r["Properties"]
        and any(t["Arn"] == {"Fn::GetAtt": [supervisor_id, "Arn"]} for t in r["Properties"]["Targets"])
    ]
    assert [r["EventPattern"] for r in rules] == [
        {"source": [str(Source.WORKER)], "detail-type": [str(WorkerReport.BATCH_FLEET_REPORT)]}
    ]
    (rule,) = rules
    assert rule["EventBusName"]["Ref"].startswith("HubBus")
    (target,) = rule["Targets"]
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 8, "MaximumEventAgeInSeconds": 7200}
    assert "DeadLetterConfig" in target
    assert set(consumed_by(Target.BATCH_SUPERVISOR)) == {(str(Source.WORKER), str(WorkerReport.BATCH_FLEET_REPORT))}


@pytest.mark.parametrize("region", WORKERS)
def test_the_hub_sends_batch_fleet_commands_to_their_region(reference: Synthesized, region: str) -> None:
    reference.hub.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["spothub.hub"],
                "detail-type": Match.array_with([str(HubCommand.BATCH_FLEET_REQUESTED)]),
                "detail": {"region": [region]},
            },
            "Targets": [
                Match.object_like(
                    {
                        "Arn": {
                            "Fn::Join": [
                                "",
                                [f"arn:aws:events:{region}:", {"Ref": "AWS::AccountId"}, ":event-bus/spothub-worker"],
                            ]
                        },
                        "DeadLetterConfig": Match.any_value(),
                    }
                )
            ],
        },
    )


def test_jobs_topic_is_encrypted_and_mails_jobs_notify_email(
    reference: Synthesized, hub_as_worker: Synthesized
) -> None:
    topics = reference.resources(HUB, "AWS::SNS::Topic")
    (topic_id,) = [t for t in topics if t.startswith("BatchJobsTopic")]
    assert topics[topic_id]["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0].startswith("AlertsKey")
    reference.hub.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "jobs@example.com", "TopicArn": {"Ref": topic_id}}
    )
    # TLS only (enforce_ssl), as the alerts topic.
    policies = [
        p
        for p in reference.resources(HUB, "AWS::SNS::TopicPolicy").values()
        if {"Ref": topic_id} in p["Properties"]["Topics"]
    ]
    assert "aws:SecureTransport" in _text(policies)
    assert not [
        s
        for s in hub_as_worker.resources("gpu-prod-hub", "AWS::SNS::Subscription").values()
        if "BatchJobsTopic" in _text(s)
    ]


# --- the worker regions -----------------------------------------------------------------------------------


def _batch_template(synthesized: Synthesized, stack_name: str) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (logical_id, t["Properties"])
        for logical_id, t in synthesized.resources(stack_name, "AWS::EC2::LaunchTemplate").items()
        if t["Properties"]["LaunchTemplateName"].endswith("-batch")
    ]
    return found


def _instance_role(synthesized: Synthesized, stack_name: str) -> str:
    _, template = _batch_template(synthesized, stack_name)
    profile_id = template["LaunchTemplateData"]["IamInstanceProfile"]["Arn"]["Fn::GetAtt"][0]
    (role,) = _resources(synthesized, stack_name)[profile_id]["Properties"]["Roles"]
    return role["Ref"]


@pytest.mark.parametrize("region", WORKERS)
def test_batch_launch_template(reference: Synthesized, region: str) -> None:
    name = reference.config.worker_stack_name(region)
    _, template = _batch_template(reference, name)
    assert template["LaunchTemplateName"] == "spothub-batch"
    data = template["LaunchTemplateData"]
    assert data["MetadataOptions"] == {
        "HttpTokens": "required",
        "HttpPutResponseHopLimit": 1,
        "InstanceMetadataTags": "enabled",
    }
    assert data["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvda",
            "Ebs": {"Encrypted": True, "VolumeSize": 200, "VolumeType": "gp3", "DeleteOnTermination": True},
        }
    ]
    # The same ECS-optimized GPU AMI as the serving template.
    (gpu,) = [
        t["Properties"]["LaunchTemplateData"]
        for t in reference.resources(name, "AWS::EC2::LaunchTemplate").values()
        if t["Properties"]["LaunchTemplateName"] == "spothub-gpu"
    ]
    assert data["ImageId"] == gpu["ImageId"]
    (interface,) = data["NetworkInterfaces"]
    assert interface["AssociatePublicIpAddress"] is True
    (group,) = interface["Groups"]
    security_group = _resources(reference, name)[group["Fn::GetAtt"][0]]["Properties"]
    assert "SecurityGroupIngress" not in security_group
    assert security_group["SecurityGroupEgress"] == [
        {"CidrIp": "0.0.0.0/0", "Description": "Allow all outbound traffic by default", "IpProtocol": "-1"}
    ]
    assert not [
        i
        for i in reference.resources(name, "AWS::EC2::SecurityGroupIngress").values()
        if i["Properties"]["GroupId"] == group
    ]
    user_data = _text(data["UserData"])
    assert "systemctl disable --now ecs" in user_data
    assert "ECS_CLUSTER" not in user_data
    assert "aws s3 cp" in user_data
    assert "/opt/spothub-agent/install.sh" in user_data


def test_batch_workers_follow_the_serving_public_ip_choice(operator_vpc: Synthesized) -> None:
    for region in operator_vpc.config.deployed_worker_regions:
        _, template = _batch_template(operator_vpc, operator_vpc.config.worker_stack_name(region))
        (interface,) = template["LaunchTemplateData"]["NetworkInterfaces"]
        assert interface["AssociatePublicIpAddress"] is False


@pytest.mark.parametrize("region", WORKERS)
def test_batch_instance_role(reference: Synthesized, region: str) -> None:
    name = reference.config.worker_stack_name(region)
    role_id = _instance_role(reference, name)
    trust = _resources(reference, name)[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "ec2.amazonaws.com"}]
    statements = _role_statements(reference, name, role_id)
    by_sid = _by_sid(statements)
    assert set(by_sid) == {
        "CallWorkerRoutes",
        "ReadHubParameters",
        "LeaveJobGroup",
        "RegistryLogin",
        "PullImages",
        "HeartbeatMetric",
        "SessionManagerRegistration",
        "SessionManagerChannels",
        "ReadInputs",
        "WriteOutputs",
        "ReadAgentBundle",
    }
    routes = sorted(r["Fn::Join"][1][2] for r in by_sid["CallWorkerRoutes"]["Resource"])
    assert routes == [":*/*/GET/workers/*", ":*/*/POST/workers/*"]
    assert all(r["Fn::Join"][1][0] == "arn:aws:execute-api:us-east-1:" for r in by_sid["CallWorkerRoutes"]["Resource"])
    assert by_sid["ReadHubParameters"]["Action"] == "ssm:GetParameter"
    parameters = sorted(r["Fn::Join"][1][2] for r in by_sid["ReadHubParameters"]["Resource"])
    assert parameters == [":parameter/spothub/spothub/agent-config", ":parameter/spothub/spothub/api-url"]
    leave = by_sid["LeaveJobGroup"]
    assert leave["Action"] == "autoscaling:TerminateInstanceInAutoScalingGroup"
    assert leave["Resource"]["Fn::Join"][1] == [
        f"arn:aws:autoscaling:{region}:",
        {"Ref": "AWS::AccountId"},
        ":autoScalingGroup:*:autoScalingGroupName/spothub-job-*",
    ]
    assert leave["Condition"] == {"StringEquals": {"autoscaling:ResourceTag/spothub:prefix": "spothub"}}
    assert by_sid["RegistryLogin"] == {
        "Sid": "RegistryLogin",
        "Action": "ecr:GetAuthorizationToken",
        "Effect": "Allow",
        "Resource": "*",
    }
    assert sorted(by_sid["PullImages"]["Action"]) == ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    assert by_sid["PullImages"]["Resource"]["Fn::Join"][1] == [
        "arn:aws:ecr:*:",
        {"Ref": "AWS::AccountId"},
        ":repository/*",
    ]
    assert by_sid["HeartbeatMetric"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Spothub"}}
    assert by_sid["ReadInputs"]["Action"] == "s3:GetObject"
    assert by_sid["ReadInputs"]["Resource"] == ["arn:aws:s3:::spothub-inputs/*", "arn:aws:s3:::team.raw-data/*"]
    assert sorted(_as_list(by_sid["WriteOutputs"]["Action"])) == ["s3:AbortMultipartUpload", "s3:PutObject"]
    assert by_sid["WriteOutputs"]["Resource"] == "arn:aws:s3:::spothub-outputs/*"
    # Not the serving instance's: no agent routes, no events, no ECS, no lifecycle, no EFS.
    actions = _actions(statements)
    assert not {a for a in actions if a.split(":")[0] in {"events", "ecs", "elasticfilesystem", "ec2", "iam"}}
    assert "autoscaling:CompleteLifecycleAction" not in actions
    assert "/agents/" not in _text(statements)
    _assert_nothing_on_any_resource_that_could_be_scoped(statements, f"{name} batch instance role")


@pytest.mark.parametrize("region", WORKERS)
def test_batch_fleet_environment(reference: Synthesized, region: str) -> None:
    name = reference.config.worker_stack_name(region)
    env = _environment(reference, name, "batch_fleet")
    assert set(env) == COMMON_ENVIRONMENT | {
        "SPOTHUB_HUB_REGION",
        "SPOTHUB_WORKER_BUS",
        "SPOTHUB_BATCH_LAUNCH_TEMPLATE_ID",
        "SPOTHUB_BATCH_SUBNETS",
        "SPOTHUB_BATCH_INSTANCE_TYPES",
        "SPOTHUB_BATCH_MAX_WORKERS",
    }
    assert env["SPOTHUB_HUB_REGION"] == "us-east-1"
    assert env["SPOTHUB_WORKER_BUS"]["Ref"].startswith("WorkerBus")
    template_id, _ = _batch_template(reference, name)
    assert env["SPOTHUB_BATCH_LAUNCH_TEMPLATE_ID"] == {"Ref": template_id}
    subnets = env["SPOTHUB_BATCH_SUBNETS"]["Fn::Join"]
    assert subnets[0] == ","
    assert len(subnets[1]) == 3 and all(s["Ref"].startswith("NetworkVpcpublicSubnet") for s in subnets[1])
    assert env["SPOTHUB_BATCH_INSTANCE_TYPES"] == "g5.xlarge,g6.xlarge,g6e.xlarge"
    assert env["SPOTHUB_BATCH_MAX_WORKERS"] == "20"


def test_batch_fleet_environment_in_an_existing_vpc(hub_as_worker: Synthesized) -> None:
    env = _environment(hub_as_worker, "gpu-prod-worker-us-east-1", "batch_fleet")
    assert env["SPOTHUB_BATCH_SUBNETS"] == "subnet-0aaa1111,subnet-0bbb2222"
    assert env["SPOTHUB_BATCH_INSTANCE_TYPES"] == "p4d.24xlarge,p5.48xlarge"


@pytest.mark.parametrize("region", WORKERS)
def test_batch_fleet_grants(reference: Synthesized, region: str) -> None:
    name = reference.config.worker_stack_name(region)
    statements = _function_statements(reference, name, "batch_fleet")
    by_sid = _by_sid(statements)
    job_groups = [
        f"arn:aws:autoscaling:{region}:",
        {"Ref": "AWS::AccountId"},
        ":autoScalingGroup:*:autoScalingGroupName/spothub-job-*",
    ]
    create = by_sid["CreateJobGroups"]
    assert sorted(create["Action"]) == ["autoscaling:CreateAutoScalingGroup", "autoscaling:CreateOrUpdateTags"]
    assert create["Resource"]["Fn::Join"][1] == job_groups
    assert create["Condition"] == {"StringEquals": {"aws:RequestTag/spothub:prefix": "spothub"}}
    manage = by_sid["ManageJobGroups"]
    assert sorted(manage["Action"]) == [
        "autoscaling:CreateOrUpdateTags",
        "autoscaling:DeleteAutoScalingGroup",
        "autoscaling:SetDesiredCapacity",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
        "autoscaling:UpdateAutoScalingGroup",
    ]
    assert manage["Resource"]["Fn::Join"][1] == job_groups
    assert manage["Condition"] == {"StringEquals": {"autoscaling:ResourceTag/spothub:prefix": "spothub"}}
    assert sorted(by_sid["ReadGroups"]["Action"]) == [
        "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:DescribeScalingActivities",
        "ec2:DescribeLaunchTemplateVersions",
    ]
    template_id, _ = _batch_template(reference, name)
    launch = by_sid["UseBatchLaunchTemplate"]
    assert launch["Action"] == "ec2:RunInstances"
    assert launch["Condition"]["ArnLike"]["ec2:LaunchTemplate"]["Fn::Join"][1][-1] == {"Ref": template_id}
    # CreateTags has no ec2:LaunchTemplate key: only as part of a launch, on instances and volumes.
    tags = by_sid["UseBatchLaunchTemplateTags"]
    assert tags["Action"] == "ec2:CreateTags"
    assert tags["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
    assert [r["Fn::Join"][1][-1] for r in tags["Resource"]] == [":instance/*", ":volume/*"]
    pass_role = by_sid["PassBatchRole"]
    assert pass_role["Resource"] == {"Fn::GetAtt": [_instance_role(reference, name), "Arn"]}
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    assert by_sid["ReportOnWorkerBus"]["Action"] == "events:PutEvents"
    assert by_sid["ReportOnWorkerBus"]["Resource"]["Fn::GetAtt"][0].startswith("WorkerBus")
    # The GPU group and the serving role are not the fleet's.
    assert "spothub-gpu" not in _text(statements)
    assert "iam:CreateServiceLinkedRole" not in _actions(statements)
    _assert_nothing_on_any_resource_that_could_be_scoped(statements, f"{name} batch fleet")


@pytest.mark.parametrize("region", WORKERS)
def test_batch_fleet_consumes_fleet_commands_from_the_worker_bus(reference: Synthesized, region: str) -> None:
    name = reference.config.worker_stack_name(region)
    fleet_id, _ = _function(reference, name, "batch_fleet")
    rules = [
        r["Properties"]
        for r in reference.resources(name, "AWS::Events::Rule").values()
        if any(t["Arn"] == {"Fn::GetAtt": [fleet_id, "Arn"]} for t in r["Properties"]["Targets"])
    ]
    assert [r["EventPattern"] for r in rules] == [
        {"source": [str(Source.HUB)], "detail-type": [str(HubCommand.BATCH_FLEET_REQUESTED)]}
    ]
    (rule,) = rules
    assert rule["EventBusName"]["Ref"].startswith("WorkerBus")
    (target,) = rule["Targets"]
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 8, "MaximumEventAgeInSeconds": 7200}
    assert "DeadLetterConfig" in target
    assert {c.bus for c in consumed_by(Target.BATCH_FLEET).values()} == {Bus.WORKER}


@pytest.mark.parametrize("region", WORKERS)
def test_fleet_reports_are_forwarded_to_the_hub(reference: Synthesized, region: str) -> None:
    reference.worker(region).has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["spothub.worker"],
                "detail-type": Match.array_with([str(WorkerReport.BATCH_FLEET_REPORT)]),
            },
            "Targets": [
                Match.object_like(
                    {
                        "Arn": {
                            "Fn::Join": [
                                "",
                                ["arn:aws:events:us-east-1:", {"Ref": "AWS::AccountId"}, ":event-bus/spothub-hub"],
                            ]
                        }
                    }
                )
            ],
        },
    )


def test_a_worker_region_has_no_job_group_until_a_job_asks(reference: Synthesized) -> None:
    for region in WORKERS:
        groups = reference.resources(reference.config.worker_stack_name(region), "AWS::AutoScaling::AutoScalingGroup")
        names = [g["Properties"]["AutoScalingGroupName"] for g in groups.values()]
        # The serving group, and the model deployments' node groups (stacks/constructs/deployment_nodes.py).
        assert [n for n in names if not n.startswith("spothub-nodes-")] == ["spothub-gpu"]

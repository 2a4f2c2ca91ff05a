"""Template assertions for the hub stack."""

from __future__ import annotations

import json

from aws_cdk.assertions import Match

from tests.infrastructure.synth import Synthesized


def test_state_table_is_on_demand_encrypted_recoverable_and_expires_items(reference: Synthesized) -> None:
    reference.hub.has_resource(
        "AWS::DynamoDB::Table",
        {
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": Match.any_value()},
                "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
            },
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
        },
    )


def test_hub_bus_is_named_and_archived(reference: Synthesized) -> None:
    reference.hub.has_resource_properties("AWS::Events::EventBus", {"Name": "spothub-hub"})
    reference.hub.has_resource_properties(
        "AWS::Events::Archive",
        {"SourceArn": {"Fn::GetAtt": [Match.string_like_regexp("HubBus"), "Arn"]}, "RetentionDays": 30},
    )


def test_alerts_topic_is_encrypted_with_a_rotating_key_and_mails_the_operator(reference: Synthesized) -> None:
    reference.hub.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    reference.hub.has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [Match.string_like_regexp("AlertsKey"), "Arn"]}}
    )
    reference.hub.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "oncall@example.com"}
    )


def test_no_email_subscription_without_alert_email(hub_as_worker: Synthesized) -> None:
    hub_as_worker.hub.resource_count_is("AWS::SNS::Subscription", 0)


def test_every_topic_and_queue_is_encrypted(reference: Synthesized) -> None:
    for name in reference.templates:
        for topic in reference.resources(name, "AWS::SNS::Topic").values():
            assert "KmsMasterKeyId" in topic["Properties"], name
        for queue in reference.resources(name, "AWS::SQS::Queue").values():
            assert queue["Properties"].get("SqsManagedSseEnabled") is True, name


def test_parameters_are_published_under_the_prefix(reference: Synthesized) -> None:
    names = {
        p["Properties"]["Name"]
        for p in reference.resources(reference.config.hub_stack_name(), "AWS::SSM::Parameter").values()
    }
    assert names == {
        f"/spothub/spothub/{name}"
        for name in (
            "active-instance",
            "api-url",
            "hub-region",
            "hub-bus-arn",
            "state-table",
            "worker-regions",
            "instance-types",
            "capacity-fallback",
            "alerts-topic-arn",
            "endpoint-name",
            "model-api-key-secret",
            "serving-port",
            "agent-config",
        )
    }


def test_every_api_method_requires_iam_and_validates_requests(reference: Synthesized) -> None:
    methods = reference.resources(reference.config.hub_stack_name(), "AWS::ApiGateway::Method")
    assert methods, "the API has no methods"
    for logical_id, method in methods.items():
        assert method["Properties"]["AuthorizationType"] == "AWS_IAM", logical_id
        assert "RequestValidatorId" in method["Properties"], logical_id
    reference.hub.has_resource_properties(
        "AWS::ApiGateway::RequestValidator", {"ValidateRequestBody": True, "ValidateRequestParameters": True}
    )


def test_api_stage_logs_traces_and_throttles(reference: Synthesized) -> None:
    reference.hub.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": "v1",
            "TracingEnabled": True,
            "AccessLogSetting": {
                "DestinationArn": Match.any_value(),
                "Format": Match.string_like_regexp(r'"requestId":"\$context.requestId"'),
            },
            "MethodSettings": [
                Match.object_like({"ThrottlingRateLimit": 50, "ThrottlingBurstLimit": 100, "LoggingLevel": "ERROR"})
            ],
        },
    )
    reference.hub.has_resource_properties(
        "AWS::ApiGateway::RestApi", {"EndpointConfiguration": {"Types": ["REGIONAL"]}}
    )
    (access_logs,) = [
        logical_id
        for logical_id in reference.resources("spothub-hub", "AWS::Logs::LogGroup")
        if logical_id.startswith("RestApiAccessLogs")
    ]
    stage = next(iter(reference.resources("spothub-hub", "AWS::ApiGateway::Stage").values()))
    assert access_logs in json.dumps(stage["Properties"]["AccessLogSetting"]["DestinationArn"])


def test_status_route_reaches_the_status_function(reference: Synthesized) -> None:
    reference.hub.has_resource_properties("AWS::ApiGateway::Resource", {"PathPart": "status"})
    reference.hub.has_resource_properties(
        "AWS::ApiGateway::Method",
        {
            "HttpMethod": "GET",
            "Integration": {
                "Type": "AWS_PROXY",
                "Uri": {
                    "Fn::Join": [
                        "",
                        Match.array_with([{"Fn::GetAtt": [Match.string_like_regexp("PlatformStatus"), "Arn"]}]),
                    ]
                },
            },
        },
    )


def test_functions_share_runtime_architecture_tracing_layer_and_failure_path(reference: Synthesized) -> None:
    functions = reference.resources(reference.config.hub_stack_name(), "AWS::Lambda::Function")
    assert functions
    for logical_id, function in functions.items():
        props = function["Properties"]
        assert props["Runtime"] == "python3.14", logical_id
        assert props["Architectures"] == ["arm64"], logical_id
        assert props["TracingConfig"] == {"Mode": "Active"}, logical_id
        assert props["Handler"].endswith(".handler.lambda_handler"), logical_id
        assert len(props["Layers"]) == 1, logical_id
        assert "TargetArn" in props["DeadLetterConfig"], logical_id
        assert "LogGroup" in props["LoggingConfig"], logical_id
        env = props["Environment"]["Variables"]
        assert {"SPOTHUB_PREFIX", "SPOTHUB_VERSION", "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"} <= set(
            env
        )
    reference.hub.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig", {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600}
    )
    reference.hub.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 30})


def test_hub_functions_know_the_deployment(reference: Synthesized) -> None:
    reference.hub.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "SPOTHUB_HUB_REGION": "us-east-1",
                        "SPOTHUB_WORKER_REGIONS": "us-west-2,eu-west-1",
                        "SPOTHUB_CAPACITY_FALLBACK": "on-demand",
                        "SPOTHUB_STATE_TABLE": {"Ref": Match.string_like_regexp("StateTable")},
                    }
                )
            }
        },
    )


def test_layer_is_built_for_the_functions_platform(reference: Synthesized) -> None:
    reference.hub.has_resource_properties(
        "AWS::Lambda::LayerVersion",
        {"CompatibleRuntimes": ["python3.14"], "CompatibleArchitectures": ["arm64"]},
    )
    layer_dirs = [p for p in reference.outdir.glob("asset.*/python") if (p / "pydantic_core").is_dir()]
    assert len(layer_dirs) == 1
    site = layer_dirs[0]
    assert (site / "aws_lambda_powertools").is_dir()
    binaries = list((site / "pydantic_core").glob("_pydantic_core.*.so"))
    assert binaries and all("cpython-314-aarch64-linux-gnu" in b.name for b in binaries)
    assert not (site / "botocore").exists(), "the runtime provides botocore; the layer must not carry it"


def test_dead_letter_queues_alarm_on_the_alerts_topic(reference: Synthesized) -> None:
    for name in reference.templates:
        template = reference.template(name)
        template.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Threshold": 0,
                "ComparisonOperator": "GreaterThanThreshold",
                "AlarmActions": [{"Ref": Match.string_like_regexp("AlertsTopic")}],
            },
        )


def test_alarms_and_rules_of_this_account_may_publish_to_every_alerts_topic(reference: Synthesized) -> None:
    for name in reference.templates:
        policies = reference.resources(name, "AWS::SNS::TopicPolicy").values()
        statements = [st for p in policies for st in p["Properties"]["PolicyDocument"]["Statement"]]
        publishers = {
            st["Principal"]["Service"]
            for st in statements
            if st["Effect"] == "Allow" and st["Action"] == "sns:Publish" and "aws:SourceAccount" in json.dumps(st)
        }
        assert publishers == {"cloudwatch.amazonaws.com", "events.amazonaws.com"}, name


def test_spot_finder_knows_the_instance_types_and_regions(reference: Synthesized) -> None:
    reference.hub.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "spot_finder.handler.lambda_handler",
            "Timeout": 60,
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "SPOTHUB_INSTANCE_TYPES": "g5.xlarge,g6.xlarge,g6e.xlarge",
                        "SPOTHUB_WORKER_REGIONS": "us-west-2,eu-west-1",
                    }
                )
            },
        },
    )


def test_a_route_with_a_request_model_makes_api_gateway_check_the_body(tmp_path) -> None:
    from aws_cdk import App, Stack  # noqa: PLC0415
    from aws_cdk import aws_lambda as lambda_  # noqa: PLC0415
    from aws_cdk.assertions import Template  # noqa: PLC0415
    from pydantic import BaseModel  # noqa: PLC0415

    from stacks.constructs.log_retention import log_retention  # noqa: PLC0415
    from stacks.constructs.rest_api import SpothubRestApi  # noqa: PLC0415

    class ProvisioningRequest(BaseModel):
        action: str

    stack = Stack(App(outdir=str(tmp_path)), "Api")
    api = SpothubRestApi(stack, "RestApi", prefix="spothub", log_retention=log_retention(30))
    function = lambda_.Function(
        stack, "Fn", runtime=lambda_.Runtime.PYTHON_3_14, handler="h.h", code=lambda_.Code.from_inline("x")
    )
    api.add_route("POST", "/spot-provisioning", function, request_model=ProvisioningRequest)
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::ApiGateway::Model",
        {
            "Name": "ProvisioningRequest",
            "ContentType": "application/json",
            "Schema": Match.object_like({"$schema": "http://json-schema.org/draft-04/schema#", "required": ["action"]}),
        },
    )
    template.has_resource(
        "AWS::ApiGateway::Method",
        {
            "Properties": Match.object_like(
                {"HttpMethod": "POST", "RequestModels": {"application/json": "ProvisioningRequest"}}
            ),
            "DependsOn": Match.array_with([Match.string_like_regexp("RestApiModelProvisioningRequest")]),
        },
    )


def test_the_hub_archive_names_no_empty_kms_key(reference: Synthesized) -> None:
    # aws-cdk-lib writes KmsKeyIdentifier "" (an AWS-owned key); some regions refuse the empty string.
    (archive,) = reference.resources(reference.config.hub_stack_name(), "AWS::Events::Archive").values()
    assert "KmsKeyIdentifier" not in archive["Properties"]


def _statements_of(synthesized: Synthesized, stack_name: str, role_prefix: str) -> list[dict]:
    return [
        statement
        for logical_id, policy in synthesized.resources(stack_name, "AWS::IAM::Policy").items()
        if logical_id.startswith(role_prefix)
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_task_token_answers_are_granted_on_every_resource(reference: Synthesized) -> None:
    # SendTaskSuccess/Failure/Heartbeat support no resource-level permission (Service Authorization Reference):
    # scoped to the state machine's ARN, AWS denies them.
    statements = _statements_of(reference, reference.config.hub_stack_name(), "SpotProvisioningCapacityHandler")
    (answer,) = [s for s in statements if "states:SendTaskSuccess" in s["Action"]]
    assert sorted(answer["Action"]) == ["states:SendTaskFailure", "states:SendTaskHeartbeat", "states:SendTaskSuccess"]
    assert answer["Resource"] == "*"


def test_the_capacity_handler_may_alert_the_operator(reference: Synthesized) -> None:
    statements = _statements_of(reference, reference.config.hub_stack_name(), "SpotProvisioningCapacityHandler")
    (publish,) = [s for s in statements if s["Action"] == "sns:Publish"]
    assert publish["Resource"]["Ref"].startswith("AlertsTopic")
    (handler,) = [
        f
        for f in reference.resources(reference.config.hub_stack_name(), "AWS::Lambda::Function").values()
        if f["Properties"]["Handler"] == "capacity_handler.handler.lambda_handler"
    ]
    env = handler["Properties"]["Environment"]["Variables"]
    assert "AlertsTopic" in json.dumps(env["SPOTHUB_ALERTS_TOPIC_ARN"])
    assert env["SPOTHUB_INSTANCE_TYPES"] == ",".join(reference.config.instance_types)


def test_state_machine_logs_are_vended_log_groups(reference: Synthesized, hub_as_worker: Synthesized) -> None:
    # Outside /aws/vendedlogs/, each log group grows the account's CloudWatch Logs resource policy (5,120 characters).
    for synthesized in (reference, hub_as_worker):
        for name, template in synthesized.templates.items():
            resources = template["Resources"]
            for machine in synthesized.resources(name, "AWS::StepFunctions::StateMachine").values():
                properties = machine["Properties"]
                (destination,) = properties["LoggingConfiguration"]["Destinations"]
                log_group_id = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
                log_group_name = resources[log_group_id]["Properties"]["LogGroupName"]
                assert log_group_name == f"/aws/vendedlogs/states/{properties['StateMachineName']}", name

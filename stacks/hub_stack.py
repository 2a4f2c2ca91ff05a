"""The hub region: API, decisions and state. One per deployment."""

from __future__ import annotations

from typing import Any, cast

from aws_cdk import ArnFormat, CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from spothub_core import timings
from spothub_core.contracts import AWS_EVENT_SOURCES, AwsEvent, HubCommand, Source, WorkerReport
from spothub_core.models.agent import Heartbeat, Registration
from spothub_core.models.api import ToggleRequest
from stacks.config import SpothubConfig
from stacks.constructs.alerts_topic import AlertsTopic
from stacks.constructs.dependency_layer import DependencyLayer
from stacks.constructs.failure_queue import FailureQueue
from stacks.constructs.log_retention import log_retention
from stacks.constructs.python_function import ARCHITECTURE, RUNTIME, SpothubFunction
from stacks.constructs.rest_api import SpothubRestApi
from stacks.constructs.state_machine import SpothubStateMachine
from stacks.nag import acknowledge, invoke_versions_rule, nag_resource

EVENT_ARCHIVE_RETENTION = Duration.days(30)
# Named actions on the deployment's key, for writers of the state table and publishers to the topic.
KMS_READ_WRITE = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey")
# Why each has its value: spothub_core.timings, where they nest with the worker's and the agent's budgets.
ORCHESTRATOR_DURATIONS = {
    "LaunchHeartbeatSeconds": timings.LAUNCH_HEARTBEAT_SECONDS,
    "LaunchTimeoutSeconds": timings.LAUNCH_TIMEOUT_SECONDS,
    "TeardownTimeoutSeconds": timings.TEARDOWN_TIMEOUT_SECONDS,
    "CapacityRetrySeconds": timings.CAPACITY_RETRY_SECONDS,
    "SpotReturnSeconds": timings.SPOT_RETURN_SECONDS,
    # Loops per execution before it continues as a new one (execution history is capped at 25,000 events).
    "AttemptsPerExecution": 200,
}


class HubStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: SpothubConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        retention = log_retention(config.log_retention_days)

        self.alerts = AlertsTopic(self, "Alerts", prefix=config.prefix, alert_email=config.alert_email)

        self.state_table = dynamodb.Table(
            self,
            "StateTable",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.alerts.key,
            time_to_live_attribute="expires_at",
            # The source of truth outlives `cdk destroy`; delete it by hand when you mean it.
            removal_policy=RemovalPolicy.RETAIN,
        )

        self.bus = events.EventBus(self, "HubBus", event_bus_name=config.hub_bus_name)
        archive = self.bus.archive(
            "Archive",
            archive_name=f"{config.prefix}-hub-archive",
            description="Every event on the hub bus, for replay after an incident",
            event_pattern=events.EventPattern(account=[self.account]),
            retention=EVENT_ARCHIVE_RETENTION,
        )
        # aws-cdk-lib writes KmsKeyIdentifier "" for the AWS-owned key, which some regions refuse at deployment;
        # without the property the archive uses the AWS-owned key all the same.
        cast(events.CfnArchive, archive.node.default_child).add_property_deletion_override("KmsKeyIdentifier")

        self.failed_invocations = FailureQueue(
            self, "FailedInvocations", purpose="Lambda invocations that failed every retry", alerts=self.alerts.topic
        )
        self.layer = DependencyLayer(self, "Dependencies", runtime=RUNTIME, architecture=ARCHITECTURE).layer
        self.api = SpothubRestApi(self, "RestApi", prefix=config.prefix, log_retention=retention)

        status = self.hub_function(
            "PlatformStatus",
            concern="platform_status",
            description="GET /status: deployment shape and state store health",
        )
        # GetItem only: the status probe reads one key, it never scans or writes.
        self.state_table.grant(status.function, "dynamodb:GetItem")
        self.alerts.key.grant_decrypt(status.function)
        self.api.add_route("GET", "/status", status.function)

        finder = self.hub_function(
            "SpotFinder",
            concern="spot_finder",
            description="Rank the worker regions for a spot launch: placement score, price, exclusions",
            environment={"SPOTHUB_INSTANCE_TYPES": ",".join(config.instance_types)},
            timeout_seconds=60,
        )
        # Query only: exclusions are one partition; the finder never writes.
        self.state_table.grant(finder.function, "dynamodb:Query")
        self.alerts.key.grant_decrypt(finder.function)
        finder.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadSpotMarket",
                actions=["ec2:GetSpotPlacementScores", "ec2:DescribeSpotPriceHistory"],
                resources=["*"],
            )
        )
        self.spot_finder = finder
        # Read (switch, replicas) and nothing else: the finder decides, the capacity handler writes.
        self.state_table.grant(finder.function, "dynamodb:GetItem")

        self._add_spot_provisioning()
        self._publish_parameters()
        CfnOutput(self, "ApiUrl", value=self.api.url, description="Base URL of the spothub API (SigV4 signed)")
        CfnOutput(self, "StateTableName", value=self.state_table.table_name)
        CfnOutput(self, "HubBusArn", value=self.bus.event_bus_arn)
        CfnOutput(self, "AlertsTopicArn", value=self.alerts.topic.topic_arn)
        self._suppress_platform_findings()

    def hub_function(self, construct_id: str, *, concern: str, description: str, **kwargs: Any) -> SpothubFunction:
        """A function of the hub that knows the deployment's shape and its state table."""
        environment = {
            "SPOTHUB_HUB_REGION": self.config.hub_region,
            "SPOTHUB_WORKER_REGIONS": ",".join(self.config.deployed_worker_regions),
            "SPOTHUB_STATE_TABLE": self.state_table.table_name,
            "SPOTHUB_CAPACITY_FALLBACK": self.config.capacity_fallback,
            **kwargs.pop("environment", {}),
        }
        return SpothubFunction(
            self,
            construct_id,
            concern=concern,
            description=description,
            prefix=self.config.prefix,
            layer=self.layer,
            dead_letter_queue=self.failed_invocations.queue,
            log_retention=log_retention(self.config.log_retention_days),
            environment=environment,
            **kwargs,
        )

    def _add_spot_provisioning(self) -> None:
        """Toggle, instance details, capacity handler, the orchestrator, and the routes between regions."""
        config = self.config
        retention = log_retention(config.log_retention_days)
        orchestrator_name = f"{config.prefix}-spot-orchestrator"
        # Built from the name: the capacity handler starts the orchestrator that invokes it (no cycle).
        orchestrator_arn = self.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=orchestrator_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        orchestrator_executions = orchestrator_arn.replace(":stateMachine:", ":execution:")
        self.active_instance_parameter = ssm.StringParameter(
            self,
            "Param-active-instance",
            parameter_name=f"{config.ssm_prefix}/active-instance",
            string_value="none",
            description=f"spothub {config.prefix}: the serving instance (JSON), written by the capacity handler",
        )

        toggle = self.hub_function(
            "ToggleProvisioning",
            concern="toggle_provisioning",
            description="POST /spot-provisioning: enable or disable spot provisioning",
            environment={
                "SPOTHUB_INSTANCE_TYPES": ",".join(config.instance_types),
                "SPOTHUB_ORCHESTRATOR_ARN": orchestrator_arn,
                "SPOTHUB_HUB_BUS": self.bus.event_bus_name,
            },
        )
        self.state_table.grant(
            toggle.function, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"
        )
        self.alerts.key.grant(toggle.function, *KMS_READ_WRITE)
        self.bus.grant_put_events_to(toggle.function)
        toggle.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="StartOrchestrator", actions=["states:StartExecution"], resources=[orchestrator_arn]
            )
        )
        toggle.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="StopOrchestrator",
                actions=["states:StopExecution"],
                resources=[orchestrator_arn.replace(":stateMachine:", ":execution:") + ":*"],
            )
        )
        self.api.add_route("POST", "/spot-provisioning", toggle.function, request_model=ToggleRequest)

        details = self.hub_function(
            "InstanceDetails",
            concern="instance_details",
            description="GET /spot-instances: where the replicas run",
        )
        self.state_table.grant(details.function, "dynamodb:GetItem", "dynamodb:Query")
        self.alerts.key.grant_decrypt(details.function)
        self.api.add_route("GET", "/spot-instances", details.function)

        agents = self.hub_function(
            "AgentApi",
            concern="agent_api",
            description="POST /agents/{instance_id}/register and /heartbeat: the instances' agents check in",
        )
        self.state_table.grant(agents.function, "dynamodb:UpdateItem")
        self.alerts.key.grant(agents.function, *KMS_READ_WRITE)
        self.api.add_route("POST", "/agents/{instance_id}/register", agents.function, request_model=Registration)
        self.api.add_route("POST", "/agents/{instance_id}/heartbeat", agents.function, request_model=Heartbeat)

        handler_environment = {
            "SPOTHUB_HUB_BUS": self.bus.event_bus_name,
            "SPOTHUB_ORCHESTRATOR_ARN": orchestrator_arn,
            "SPOTHUB_ACTIVE_INSTANCE_PARAMETER": self.active_instance_parameter.parameter_name,
            "SPOTHUB_ALERTS_TOPIC_ARN": self.alerts.topic.topic_arn,
            "SPOTHUB_INSTANCE_TYPES": ",".join(config.instance_types),
        }
        if config.hosted_zone_id and config.endpoint_name:
            handler_environment["SPOTHUB_HOSTED_ZONE_ID"] = config.hosted_zone_id
            handler_environment["SPOTHUB_ENDPOINT_NAME"] = config.endpoint_name
        handler = self.hub_function(
            "CapacityHandler",
            concern="capacity_handler",
            description="Dispatch launches and teardowns to worker regions, consume their reports",
            environment=handler_environment,
        )
        self.capacity_handler = handler
        self.state_table.grant(
            handler.function, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"
        )
        self.alerts.key.grant(handler.function, *KMS_READ_WRITE)
        self.bus.grant_put_events_to(handler.function)
        self.active_instance_parameter.grant_write(handler.function)
        self._grant_answers_and_alerts(handler)
        handler.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="StartOrchestrator", actions=["states:StartExecution"], resources=[orchestrator_arn]
            )
        )
        if config.hosted_zone_id and config.endpoint_name:
            handler.function.add_to_role_policy(
                iam.PolicyStatement(
                    sid="MoveEndpoint",
                    actions=["route53:ChangeResourceRecordSets"],
                    resources=[
                        self.format_arn(
                            service="route53",
                            region="",
                            account="",
                            resource="hostedzone",
                            resource_name=config.hosted_zone_id,
                        )
                    ],
                    conditions={
                        "ForAllValues:StringEquals": {
                            "route53:ChangeResourceRecordSetsNormalizedRecordNames": [
                                config.endpoint_name.rstrip(".").lower()
                            ]
                        }
                    },
                )
            )

        self.orchestrator = SpothubStateMachine(
            self,
            "SpotOrchestrator",
            name="spot_orchestrator",
            state_machine_name=orchestrator_name,
            substitutions={
                "SpotFinderArn": self.spot_finder.function.function_arn,
                "CapacityHandlerArn": handler.function.function_arn,
                "AlertsTopicArn": self.alerts.topic.topic_arn,
            },
            numbers=ORCHESTRATOR_DURATIONS,
            log_retention=retention,
        ).state_machine
        self.spot_finder.function.grant_invoke(self.orchestrator)
        handler.function.grant_invoke(self.orchestrator)
        # Named actions, not grant_publish (which adds kms:GenerateDataKey* for the encrypted topic).
        self.orchestrator.add_to_role_policy(
            iam.PolicyStatement(sid="Alert", actions=["sns:Publish"], resources=[self.alerts.topic.topic_arn])
        )
        self.alerts.key.grant(self.orchestrator, *KMS_READ_WRITE)
        for function in (self.spot_finder.function, handler.function):
            acknowledge(
                self,
                invoke_versions_rule(function),
                "grant_invoke adds <function ARN>:* so the orchestrator may invoke this one function's versions.",
            )
        acknowledge(
            toggle,
            f"AwsSolutions-IAM5[Resource::{nag_resource(self, orchestrator_executions)}:*]",
            "StopExecution on the executions of this deployment's orchestrator only; their names are not known ahead.",
        )

        reports = events.Rule(
            self,
            "WorkerReports",
            event_bus=self.bus,
            description="Worker and agent reports and forwarded launch failures to the capacity handler",
            event_pattern=events.EventPattern(
                source=events.Match.any_of(
                    events.Match.exact_string(str(Source.WORKER)),
                    events.Match.exact_string(str(Source.AGENT)),
                    events.Match.exact_string(AWS_EVENT_SOURCES[AwsEvent.LAUNCH_UNSUCCESSFUL]),
                ),
                detail_type=[r.value for r in WorkerReport] + [AwsEvent.LAUNCH_UNSUCCESSFUL.value],
            ),
        )
        reports.add_target(
            targets.LambdaFunction(
                handler.function,
                dead_letter_queue=self.failed_invocations.queue,
                retry_attempts=8,
                max_event_age=Duration.hours(2),
            )
        )
        for region in config.deployed_worker_regions:
            worker_bus = events.EventBus.from_event_bus_arn(
                self,
                f"WorkerBus-{region}",
                self.format_arn(
                    service="events", region=region, resource="event-bus", resource_name=config.worker_bus_name
                ),
            )
            rule = events.Rule(
                self,
                f"CommandsTo-{region}",
                event_bus=self.bus,
                description=f"Launch and teardown commands for {region}",
                event_pattern=events.EventPattern(
                    source=[str(Source.HUB)],
                    detail_type=[c.value for c in HubCommand],
                    detail={"region": [region]},
                ),
            )
            rule.add_target(targets.EventBus(worker_bus, dead_letter_queue=self.failed_invocations.queue))

    def _grant_answers_and_alerts(self, handler: SpothubFunction) -> None:
        """The capacity handler answers the orchestrator's task tokens and alerts the operator of quotas."""
        # Task-token answers support no resource-level permission (Service Authorization Reference): scoped to
        # the orchestrator's ARN, AWS denies them. The token itself names the one task they answer.
        handler.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="AnswerOrchestrator",
                actions=["states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"],
                resources=["*"],
            )
        )
        # A quota that stops launches is the operator's to raise (the topic's key: KMS_READ_WRITE, granted above).
        handler.function.add_to_role_policy(
            iam.PolicyStatement(sid="AlertOperator", actions=["sns:Publish"], resources=[self.alerts.topic.topic_arn])
        )
        acknowledge(
            handler,
            "AwsSolutions-IAM5[Resource::*]",
            "states:SendTaskSuccess/SendTaskFailure/SendTaskHeartbeat support no resource-level permissions (the "
            "task token names the task); X-Ray PutTraceSegments/PutTelemetryRecords neither.",
        )

    def _publish_parameters(self) -> None:
        """The few values agents and operators read, under /spothub/<prefix>/."""
        values = {
            "api-url": self.api.url,
            "hub-region": self.config.hub_region,
            "hub-bus-arn": self.bus.event_bus_arn,
            "state-table": self.state_table.table_name,
            "worker-regions": ",".join(self.config.deployed_worker_regions),
            "instance-types": ",".join(self.config.instance_types),
            "capacity-fallback": self.config.capacity_fallback,
            "alerts-topic-arn": self.alerts.topic.topic_arn,
        }
        if self.config.endpoint_name:
            values["endpoint-name"] = self.config.endpoint_name
        for name, value in values.items():
            ssm.StringParameter(
                self,
                f"Param-{name}",
                parameter_name=f"{self.config.ssm_prefix}/{name}",
                string_value=value,
                description=f"spothub {self.config.prefix}: {name}",
            )

    def _suppress_platform_findings(self) -> None:
        acknowledge(
            self,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray PutTraceSegments/PutTelemetryRecords and EC2 GetSpotPlacementScores/DescribeSpotPriceHistory "
            "support no resource-level permissions.",
        )

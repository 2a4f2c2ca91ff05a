"""The hub region: API, decisions and state. One per deployment."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from stacks.config import SpothubConfig
from stacks.constructs.alerts_topic import AlertsTopic
from stacks.constructs.dependency_layer import DependencyLayer
from stacks.constructs.failure_queue import FailureQueue
from stacks.constructs.log_retention import log_retention
from stacks.constructs.python_function import ARCHITECTURE, RUNTIME, SpothubFunction
from stacks.constructs.rest_api import SpothubRestApi
from stacks.nag import acknowledge

EVENT_ARCHIVE_RETENTION = Duration.days(30)


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
        self.bus.archive(
            "Archive",
            archive_name=f"{config.prefix}-hub-archive",
            description="Every event on the hub bus, for replay after an incident",
            event_pattern=events.EventPattern(account=[self.account]),
            retention=EVENT_ARCHIVE_RETENTION,
        )

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

"""The hub region: API, decisions and state. One per deployment.

The stack holds what its parts share (the state table, the hub bus, the alerts topic and key, the dependency
layer, the API, the failure queue); each part is a construct that owns its functions, grants and state
machines: PlatformStatus (GET /status), SpotProvisioning (the switch, the finder, the capacity handler, the
orchestrator, their rules), AgentApi (the agents' routes), BatchJobs (the jobs table, the jobs and worker routes,
the listing state machine, the supervisor, the jobs topic), ModelDeployments (the deployments table, the
deployments and node routes, the controller, the deployment tasks' roles), and with searchVolumeId SearchService (the
search table, the search routes, the launcher state machine and its tasks, the monitor)."""

from __future__ import annotations

import json
from typing import Any, cast

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from spothub_core import timings
from stacks.config import SpothubConfig
from stacks.constructs.agent_api import AgentApi
from stacks.constructs.alerts_topic import AlertsTopic
from stacks.constructs.batch_jobs import BatchJobs
from stacks.constructs.dependency_layer import DependencyLayer
from stacks.constructs.failure_queue import FailureQueue
from stacks.constructs.log_retention import log_retention
from stacks.constructs.model_api_key import ModelApiKey
from stacks.constructs.model_deployments import ModelDeployments
from stacks.constructs.operations_dashboard import OperationsDashboard
from stacks.constructs.platform_status import PlatformStatus
from stacks.constructs.python_function import ARCHITECTURE, RUNTIME, FunctionDefaults
from stacks.constructs.rest_api import SpothubRestApi
from stacks.constructs.search_service import SearchService
from stacks.constructs.spot_provisioning import SpotProvisioning
from stacks.nag import acknowledge

EVENT_ARCHIVE_RETENTION = Duration.days(timings.EVENT_ARCHIVE_RETENTION_DAYS)
# Why each has its value: spothub_core.timings, where they nest with the worker's and the agent's budgets.
ORCHESTRATOR_DURATIONS = {
    "LaunchHeartbeatSeconds": timings.LAUNCH_HEARTBEAT_SECONDS,
    "LaunchTimeoutSeconds": timings.LAUNCH_TIMEOUT_SECONDS,
    "TeardownTimeoutSeconds": timings.TEARDOWN_TIMEOUT_SECONDS,
    "CapacityRetrySeconds": timings.CAPACITY_RETRY_SECONDS,
    "SpotReturnSeconds": timings.SPOT_RETURN_SECONDS,
    "AttemptsPerExecution": timings.ORCHESTRATOR_LOOPS_PER_EXECUTION,
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
        # Every hub function knows the deployment's shape and its state table.
        self.functions = FunctionDefaults(
            prefix=config.prefix,
            layer=self.layer,
            dead_letter_queue=self.failed_invocations.queue,
            log_retention=retention,
            environment={
                "SPOTHUB_HUB_REGION": config.hub_region,
                "SPOTHUB_WORKER_REGIONS": ",".join(config.deployed_worker_regions),
                "SPOTHUB_STATE_TABLE": self.state_table.table_name,
                "SPOTHUB_CAPACITY_FALLBACK": config.capacity_fallback,
            },
        )

        self.status = PlatformStatus(
            self,
            "PlatformStatus",
            functions=self.functions,
            state_table=self.state_table,
            key=self.alerts.key,
            api=self.api,
        )
        self.spot_provisioning = SpotProvisioning(
            self,
            "SpotProvisioning",
            config=config,
            functions=self.functions,
            state_table=self.state_table,
            bus=self.bus,
            alerts=self.alerts,
            failed_invocations=self.failed_invocations.queue,
            api=self.api,
            orchestrator_durations=ORCHESTRATOR_DURATIONS,
        )
        self.status.serve_regions(self.spot_provisioning.spot_finder.function)
        self.agent_api = AgentApi(
            self,
            "AgentApi",
            functions=self.functions,
            state_table=self.state_table,
            key=self.alerts.key,
            api=self.api,
        )

        self.batch = BatchJobs(
            self,
            "BatchJobs",
            config=config,
            functions=self.functions,
            key=self.alerts.key,
            bus=self.bus,
            failed_invocations=self.failed_invocations.queue,
            api=self.api,
            spot_finder=self.spot_provisioning.spot_finder.function,
        )

        self.deployments = ModelDeployments(
            self,
            "Deployments",
            config=config,
            functions=self.functions,
            state_table=self.state_table,
            key=self.alerts.key,
            bus=self.bus,
            failed_invocations=self.failed_invocations.queue,
            api=self.api,
            spot_finder=self.spot_provisioning.spot_finder.function,
        )

        # The search instance, only for a named volume: nothing of it exists otherwise.
        self.search: SearchService | None = None
        if config.search_enabled:
            self.search = SearchService(
                self,
                "Search",
                config=config,
                functions=self.functions,
                key=self.alerts.key,
                bus=self.bus,
                failed_invocations=self.failed_invocations.queue,
                api=self.api,
            )

        self.model_api_key = ModelApiKey(self, "ModelApiKey", config=config)
        # Every hub function and state machine, collected when the app is synthesized.
        self.dashboard = OperationsDashboard(
            self,
            "OperationsDashboard",
            config=config,
            orchestrator=self.spot_provisioning.orchestrator,
            dead_letter_queue=self.failed_invocations.queue,
        )

        self._publish_parameters()
        CfnOutput(self, "ApiUrl", value=self.api.url, description="Base URL of the spothub API (SigV4 signed)")
        CfnOutput(self, "StateTableName", value=self.state_table.table_name)
        CfnOutput(self, "HubBusArn", value=self.bus.event_bus_arn)
        CfnOutput(self, "AlertsTopicArn", value=self.alerts.topic.topic_arn)
        CfnOutput(self, "JobsTableName", value=self.batch.table.table_name)
        CfnOutput(self, "JobsTopicArn", value=self.batch.topic.topic_arn)
        CfnOutput(self, "DeploymentsTableName", value=self.deployments.table.table_name)
        if self.search is not None:
            CfnOutput(self, "SearchTableName", value=self.search.table.table_name)
        self._suppress_platform_findings()

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
            # Where the model API key is (a name, never the key): the CLI reads it for the operator.
            "model-api-key-secret": self.model_api_key.secret_name,
            "serving-port": str(self.config.serving_port),
            # What the agent on each instance reads (hub region, the instance role's ReadHubParameters): the
            # serving container's health, on servingPort and servingHealthPath.
            "agent-config": json.dumps({"health_url": self.config.serving_health_url}),
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

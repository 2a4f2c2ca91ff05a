"""A worker region: GPU capacity, batch capacity, the model deployments' nodes and the region-local automation. One
per worker region; the search region's (with searchVolumeId) also holds the search instance's mechanics
(SearchHost)."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_events as events
from constructs import Construct

from stacks.config import SpothubConfig
from stacks.constructs.alerts_topic import AlertsTopic
from stacks.constructs.batch_capacity import BatchCapacity
from stacks.constructs.dependency_layer import DependencyLayer
from stacks.constructs.deployment_nodes import DeploymentNodes
from stacks.constructs.event_forwarding import EventForwarding
from stacks.constructs.failure_queue import FailureQueue
from stacks.constructs.gpu_capacity import MODEL_CACHE_MOUNT, GpuCapacity
from stacks.constructs.instance_remediation import InstanceRemediation
from stacks.constructs.log_retention import log_retention
from stacks.constructs.python_function import ARCHITECTURE, RUNTIME, FunctionDefaults
from stacks.constructs.search_host import SearchHost
from stacks.constructs.serving_task import ServingTask
from stacks.constructs.worker_automation import WorkerAutomation
from stacks.constructs.worker_network import WorkerNetwork


class WorkerStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: SpothubConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        # Built from names, not a cross-stack reference: the hub lives in another region.
        self.hub_bus_arn = self.format_arn(
            service="events", region=config.hub_region, resource="event-bus", resource_name=config.hub_bus_name
        )

        self.alerts = AlertsTopic(self, "Alerts", prefix=config.prefix, alert_email=config.alert_email)
        self.network = WorkerNetwork(
            self,
            "Network",
            existing=config.vpcs.get(self.region),
            max_azs=config.max_azs,
            log_retention=log_retention(config.log_retention_days),
        )
        # Commands from the hub (launch, teardown) arrive here, routed cross-region by hub rules.
        self.bus = events.EventBus(self, "WorkerBus", event_bus_name=config.worker_bus_name)
        self.capacity = GpuCapacity(
            self,
            "GpuCapacity",
            config=config,
            vpc=self.network.vpc,
            subnets=self.network.subnets,
            hub_bus_arn=self.hub_bus_arn,
        )
        self.undelivered = FailureQueue(
            self, "UndeliveredEvents", purpose="events that could not reach the hub bus", alerts=self.alerts.topic
        )
        self.failed_invocations = FailureQueue(
            self, "FailedInvocations", purpose="Lambda invocations that failed every retry", alerts=self.alerts.topic
        )
        self.serving = ServingTask(
            self,
            "Serving",
            config=config,
            model_cache_mount=MODEL_CACHE_MOUNT,
            log_group=self.capacity.workload_logs,
        )
        layer = DependencyLayer(self, "Dependencies", runtime=RUNTIME, architecture=ARCHITECTURE).layer
        self.functions = FunctionDefaults(
            prefix=config.prefix,
            layer=layer,
            dead_letter_queue=self.failed_invocations.queue,
            log_retention=log_retention(config.log_retention_days),
        )
        self.automation = WorkerAutomation(
            self,
            "Automation",
            config=config,
            capacity=self.capacity,
            serving=self.serving,
            worker_bus=self.bus,
            hub_bus_arn=self.hub_bus_arn,
            alerts_topic=self.alerts.topic,
            functions=self.functions,
        )
        self.remediation = InstanceRemediation(
            self,
            "Remediation",
            config=config,
            group_name=self.capacity.group_name,
            worker_bus=self.bus,
            functions=self.functions,
        )
        # Batch jobs' groups, created per job by the batch fleet function; their reports reach the hub through
        # the automation's ReportsToHub rule (every worker report the hub consumes).
        self.batch = BatchCapacity(
            self,
            "BatchCapacity",
            config=config,
            vpc=self.network.vpc,
            subnets=self.network.subnets,
            worker_bus=self.bus,
            functions=self.functions,
        )
        # The model deployments' node groups (sized by the hub's deployment controller) and their tasks' logs.
        self.deployment_nodes = DeploymentNodes(
            self,
            "DeploymentNodes",
            config=config,
            vpc=self.network.vpc,
            subnets=self.network.subnets,
            capacity=self.capacity,
        )
        # The search instance's region (the volume's): its router, template, role, secret and parameters.
        is_search_region = config.search_enabled and self.region == config.search_region
        self.search: SearchHost | None = None
        if is_search_region:
            self.search = SearchHost(
                self,
                "Search",
                config=config,
                vpc=self.network.vpc,
                subnets=self.network.subnets,
                functions=self.functions,
                key=self.alerts.key,
            )
        EventForwarding(
            self,
            "ForwardToHub",
            hub_bus_arn=self.hub_bus_arn,
            auto_scaling_group_name=self.capacity.group_name,
            gpu_cluster_arn=self.capacity.cluster.cluster_arn,
            dead_letter_queue=self.undelivered.queue,
            search_region=is_search_region,
        )

        CfnOutput(self, "AutoScalingGroupName", value=self.capacity.group_name)
        CfnOutput(self, "ClusterName", value=self.capacity.cluster.cluster_name)
        CfnOutput(self, "ModelCacheFileSystemId", value=self.capacity.model_cache.file_system_id)
        CfnOutput(self, "WorkerBusArn", value=self.bus.event_bus_arn)
        CfnOutput(self, "ServingTaskFamily", value=self.serving.task_definition.family)
        CfnOutput(self, "AlertsTopicArn", value=self.alerts.topic.topic_arn)
        CfnOutput(self, "BatchLaunchTemplateId", value=self.batch.launch_template.launch_template_id or "")
        if self.search is not None:
            CfnOutput(self, "SearchLaunchTemplateId", value=self.search.launch_template.launch_template_id or "")
            CfnOutput(self, "SearchApiKeySecretArn", value=self.search.api_key.secret_arn)

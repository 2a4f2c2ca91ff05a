"""Model deployments in the hub: the deployments table (deployments, tasks, GPU nodes, tenants' reservations, node
group asks, scaling events, the controller's lease), the deployments API (POST/GET /deployments, /deployments/{id}/
status|restart|scale, DELETE /deployments/{id}, /resources/available, /nodes..., /gpu-utilization, /scaling/events,
/health), the deployment controller on a one-minute schedule and on what it consumes (the API's nudge, a deployment
task's state change forwarded from its worker region, a node agent's interruption notice), and the two IAM roles
every deployment task runs with (IAM is global: created once, here, with the names of
contracts.deployment_role_names).

The controller calls ECS and Auto Scaling in each worker region directly (as the search workload calls its region):
every grant is pinned to the worker regions' GPU cluster (`<prefix>-gpu`), its container instances and tasks, the
deployments' task definition families (`<prefix>-model-*`) and the node groups (`<prefix>-nodes-*`), and passes
exactly the two deployment roles, to ECS tasks only. The worker side (node groups, log group, forwarding) is
stacks/constructs/deployment_nodes.py.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spothub_core import timings
from spothub_core.consumers import Bus, Target
from spothub_core.contracts import (
    HubEvent,
    Source,
    deployment_log_group,
    deployment_role_names,
    deployment_task_family,
    gpu_cluster_name,
    node_group_name,
)
from spothub_core.models.deployment_api import DeploymentRequest, ScaleRequest
from stacks import config_deployments
from stacks.config import SpothubConfig
from stacks.constructs.alerts_topic import KMS_READ_WRITE
from stacks.constructs.consumer_rules import consuming_rules, entries
from stacks.constructs.python_function import FunctionDefaults, SpothubFunction
from stacks.constructs.rest_api import SpothubRestApi
from stacks.nag import acknowledge, nag_resource

ECS_TASKS = "ecs-tasks.amazonaws.com"
# The deployments table's actions, by function (dal/deployment_store.py). Transactions are authorized as the
# actions of their items (Put and Update here).
READ = ("dynamodb:GetItem", "dynamodb:Query")
WRITE = ("dynamodb:PutItem", "dynamodb:UpdateItem")
TABLE_ACTIONS = {
    # Create (the deployment and the tenant's reservation), scale, restart, delete, node operations, the views.
    "deployments_api": (*READ, *WRITE),
    # Everything else, and the lease's release (a conditional delete).
    "deployment_controller": (*READ, *WRITE, "dynamodb:DeleteItem"),
}
# The API's routes (models/deployment_api.py), with the request model API Gateway checks the body against. The node
# operations' body is optional: its model is the handler's alone.
ROUTES: tuple[tuple[str, str, type | None], ...] = (
    ("POST", "/deployments", DeploymentRequest),
    ("GET", "/deployments", None),
    ("GET", "/deployments/{deployment_id}/status", None),
    ("DELETE", "/deployments/{deployment_id}", None),
    ("POST", "/deployments/{deployment_id}/restart", None),
    ("POST", "/deployments/{deployment_id}/scale", ScaleRequest),
    ("GET", "/resources/available", None),
    ("GET", "/nodes", None),
    ("GET", "/nodes/{instance_id}", None),
    ("POST", "/nodes/{instance_id}/cordon", None),
    ("POST", "/nodes/{instance_id}/uncordon", None),
    ("POST", "/nodes/{instance_id}/drain", None),
    ("GET", "/gpu-utilization", None),
    ("GET", "/scaling/events", None),
    ("GET", "/health", None),
)
# ECR pulls of the deployments' images (an operator's own repositories; public images need none).
ECR_PULL = ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")


class ModelDeployments(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: SpothubConfig,
        functions: FunctionDefaults,
        state_table: dynamodb.ITable,
        key: kms.IKey,
        bus: events.IEventBus,
        failed_invocations: sqs.IQueue,
        api: SpothubRestApi,
        spot_finder: lambda_.IFunction,
    ) -> None:
        super().__init__(scope, construct_id)
        self._stack = Stack.of(self)
        self._config = config
        self._key = key
        self.table = self._deployments_table(config, key)
        self.execution_role, self.task_role = self._task_roles(config)

        environment = {
            "SPOTHUB_DEPLOYMENTS_TABLE": self.table.table_name,
            "SPOTHUB_HUB_BUS": bus.event_bus_name,
            **config_deployments.environment(
                config.deployment_node_classes,
                config.deployment_tenant_quotas,
                config.deployment_default_tenant_quota,
                config.deployment_image,
            ),
        }
        self.api = functions.function(
            self,
            "Api",
            concern="deployments_api",
            description="Model deployments, GPU nodes, GPUs and utilization, scaling events, health (/deployments, "
            "/nodes, /resources/available, /gpu-utilization, /scaling/events, /health)",
            environment=environment,
        )
        self.controller = functions.function(
            self,
            "Controller",
            concern="deployment_controller",
            description="Model deployments: nodes, task health and restarts, scaling, placement, node capacity",
            environment={
                **environment,
                "SPOTHUB_SPOT_FINDER_FUNCTION": spot_finder.function_name,
                "SPOTHUB_DEPLOYMENT_EXECUTION_ROLE_ARN": self.execution_role.role_arn,
                "SPOTHUB_DEPLOYMENT_TASK_ROLE_ARN": self.task_role.role_arn,
            },
            # A run holds the controller's lease at most this long.
            timeout_seconds=timings.DEPLOYMENT_CONTROLLER_LEASE_SECONDS,
        )
        for concern, function in self.functions.items():
            self._grant_table(function, TABLE_ACTIONS[concern])
        self._grant_api(bus)
        self._grant_controller(state_table, spot_finder)
        self._routes(api)
        self._triggers(bus, failed_invocations)

    @property
    def functions(self) -> dict[str, SpothubFunction]:
        return {"deployments_api": self.api, "deployment_controller": self.controller}

    def _deployments_table(self, config: SpothubConfig, key: kms.IKey) -> dynamodb.Table:
        """Everything of the deployments (spothub_core/models/deployment_records.py): encrypted, recoverable and kept
        like the state table; ended tasks, events and deleted deployments expire."""
        return dynamodb.Table(
            self,
            "Table",
            table_name=f"{config.prefix}-deployments",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            time_to_live_attribute="expires_at",
            # The GPU accounting outlives `cdk destroy` like the state table; delete it by hand when you mean it.
            removal_policy=RemovalPolicy.RETAIN,
        )

    # --- the deployment tasks' roles ---------------------------------------------------------------------------

    def _ecs_tasks_principal(self) -> iam.IPrincipal:
        """ECS tasks of this account, in any region (the tasks run in the worker regions)."""
        account = self._stack.account
        return iam.ServicePrincipal(ECS_TASKS).with_conditions(
            {
                "ArnLike": {"aws:SourceArn": f"arn:{self._stack.partition}:ecs:*:{account}:*"},
                "StringEquals": {"aws:SourceAccount": account},
            }
        )

    def _worker_arn(
        self, service: str, region: str, resource: str, name: str, arn_format: ArnFormat = ArnFormat.SLASH_RESOURCE_NAME
    ) -> str:
        return self._stack.format_arn(
            service=service, region=region, resource=resource, resource_name=name, arn_format=arn_format
        )

    def _task_roles(self, config: SpothubConfig) -> tuple[iam.Role, iam.Role]:
        """The execution role (the ECS agent pulls the image and writes the container's logs with it) and the task
        role (what the server itself may call: nothing), named so the controller may pass exactly these."""
        execution_name, task_name = deployment_role_names(config.prefix)
        execution = iam.Role(
            self,
            "ExecutionRole",
            role_name=execution_name,
            assumed_by=self._ecs_tasks_principal(),
            description=f"spothub {config.prefix} deployment tasks' execution role: image pull, container logs",
        )
        task = iam.Role(
            self,
            "TaskRole",
            role_name=task_name,
            assumed_by=self._ecs_tasks_principal(),
            description=f"spothub {config.prefix} deployment tasks: no AWS permissions (the inference server calls "
            "no AWS API; without a task role the SDKs in the container would look for the instance's)",
        )
        regions = sorted(set(config.all_regions) | set(config.deployed_worker_regions))
        repositories = [self._worker_arn("ecr", region, "repository", "*") for region in regions]
        # The streams (one per task, named when it starts) of the deployments' log group in each worker region.
        log_streams = [
            self._worker_arn(
                "logs",
                region,
                "log-group",
                f"{deployment_log_group(config.prefix)}:log-stream:*",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            for region in config.deployed_worker_regions
        ]
        for statement in (
            iam.PolicyStatement(sid="EcrAuthorization", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            iam.PolicyStatement(sid="PullImages", actions=list(ECR_PULL), resources=repositories),
            iam.PolicyStatement(
                sid="ContainerLogs", actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=log_streams
            ),
        ):
            execution.add_to_principal_policy(statement)
        reasons = {
            "*": "ecr:GetAuthorizationToken has no resource-level permissions.",
            **dict.fromkeys(
                repositories,
                "A deployment names its image at run time: the account's repositories in the deployment's regions "
                "(an image of another account or a public registry needs no grant).",
            ),
            **dict.fromkeys(
                log_streams, "The deployments' log group of each worker region; one stream per task, named at start."
            ),
        }
        for resource, reason in reasons.items():
            acknowledge(execution, f"AwsSolutions-IAM5[Resource::{self._nag(resource)}]", reason)
        return execution, task

    # --- grants -------------------------------------------------------------------------------------------------

    def _nag(self, arn: str) -> str:
        return arn if arn == "*" else nag_resource(self._stack, arn)

    def _grant_table(self, function: SpothubFunction, actions: tuple[str, ...]) -> None:
        """Named actions on the deployments table (no index: every list is one partition), and its key."""
        function.function.add_to_role_policy(
            iam.PolicyStatement(sid="DeploymentsTable", actions=list(actions), resources=[self.table.table_arn])
        )
        self._key.grant(function.function, *KMS_READ_WRITE)

    def _grant_api(self, bus: events.IEventBus) -> None:
        config = self._config
        function = self.api.function
        # The nudge to the controller after each change, and nothing else on the hub bus.
        function.add_to_role_policy(
            iam.PolicyStatement(
                sid="NudgeController",
                actions=["events:PutEvents"],
                resources=[bus.event_bus_arn],
                conditions={
                    "StringEquals": {
                        "events:source": Source.HUB.value,
                        "events:detail-type": HubEvent.DEPLOYMENTS_CHANGED.value,
                    }
                },
            )
        )
        # GET /health: the deployment's alarms (named `<prefix>-...`) firing in the hub region. Per-alarm
        # authorization returns the metric alarms of that name only (composite alarms need "*": spothub has none).
        alarms = self._stack.format_arn(
            service="cloudwatch",
            resource="alarm",
            resource_name=f"{config.prefix}-*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        function.add_to_role_policy(
            iam.PolicyStatement(sid="ReadAlarms", actions=["cloudwatch:DescribeAlarms"], resources=[alarms])
        )
        acknowledge(
            self.api,
            f"AwsSolutions-IAM5[Resource::{self._nag(alarms)}]",
            "GET /health lists the deployment's alarms in the hub region, named <prefix>-..., whose names are "
            "generated at deployment.",
        )

    def _grant_controller(self, state_table: dynamodb.ITable, spot_finder: lambda_.IFunction) -> None:
        config = self._config
        function = self.controller.function
        regions = config.deployed_worker_regions
        cluster = gpu_cluster_name(config.prefix)
        clusters = [self._worker_arn("ecs", r, "cluster", cluster) for r in regions]
        container_instances = [self._worker_arn("ecs", r, "container-instance", f"{cluster}/*") for r in regions]
        tasks = [self._worker_arn("ecs", r, "task", f"{cluster}/*") for r in regions]
        # Every revision of every deployment's family (`<prefix>-model-<deployment id>:<revision>`).
        families = [
            self._worker_arn("ecs", r, "task-definition", f"{deployment_task_family(config.prefix, '*')}:*")
            for r in regions
        ]
        groups = [
            self._worker_arn(
                "autoscaling",
                r,
                "autoScalingGroup",
                f"*:autoScalingGroupName/{node_group_name(config.prefix, '*')}",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            for r in regions
        ]
        on_the_cluster = {"ArnEquals": {"ecs:cluster": clusters}}
        role_arns = [self.execution_role.role_arn, self.task_role.role_arn]
        statements = [
            # The agents' heartbeats (GPU samples): the AGENT partition.
            iam.PolicyStatement(sid="ReadAgents", actions=["dynamodb:Query"], resources=[state_table.table_arn]),
            # The unqualified finder only (RequestResponse, no version or alias).
            iam.PolicyStatement(
                sid="RankRegions", actions=["lambda:InvokeFunction"], resources=[spot_finder.function_arn]
            ),
            # Nodes: the GPU cluster's container instances.
            iam.PolicyStatement(sid="ListNodes", actions=["ecs:ListContainerInstances"], resources=clusters),
            iam.PolicyStatement(
                sid="DescribeNodes", actions=["ecs:DescribeContainerInstances"], resources=container_instances
            ),
            # The deployments' task definitions, by family; tasks started only in the GPU cluster, with exactly the
            # deployment roles, tagged only as they are created.
            iam.PolicyStatement(
                sid="RegisterTaskDefinitions", actions=["ecs:RegisterTaskDefinition"], resources=families
            ),
            iam.PolicyStatement(
                sid="StartDeploymentTasks", actions=["ecs:StartTask"], resources=families, conditions=on_the_cluster
            ),
            iam.PolicyStatement(
                sid="DeploymentTasks",
                actions=["ecs:DescribeTasks", "ecs:StopTask"],
                resources=tasks,
                conditions=on_the_cluster,
            ),
            iam.PolicyStatement(
                sid="TagAtCreation",
                actions=["ecs:TagResource"],
                resources=[*families, *tasks],
                conditions={"StringEquals": {"ecs:CreateAction": ["RegisterTaskDefinition", "StartTask"]}},
            ),
            iam.PolicyStatement(
                sid="PassDeploymentRoles",
                actions=["iam:PassRole"],
                resources=role_arns,
                conditions={"StringEquals": {"iam:PassedToService": ECS_TASKS}},
            ),
            # No resource-level permissions: a family's latest revision (is it the deployment's already?), the nodes'
            # addresses and groups (DescribeInstances), the memory of a class's types (the task's reservation), the
            # groups' size, members and failed launches.
            iam.PolicyStatement(
                sid="DescribeNodeCapacity",
                actions=[
                    "ecs:DescribeTaskDefinition",
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceTypes",
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeScalingActivities",
                ],
                resources=["*"],
            ),
            iam.PolicyStatement(
                sid="ScaleNodeGroups",
                actions=[
                    "autoscaling:SetDesiredCapacity",
                    "autoscaling:UpdateAutoScalingGroup",
                    "autoscaling:TerminateInstanceInAutoScalingGroup",
                ],
                resources=groups,
            ),
        ]
        # The state table's key is the deployments table's (KMS_READ_WRITE, with the table).
        for statement in statements:
            function.add_to_role_policy(statement)
        reasons = {
            "*": "ecs:DescribeTaskDefinition, ec2:DescribeInstances/DescribeInstanceTypes and the Auto Scaling "
            "describes have no resource-level permissions; X-Ray.",
            **dict.fromkeys(
                container_instances,
                "Container instance ids are assigned at registration; the cluster name pins them to each worker "
                "region's GPU cluster.",
            ),
            **dict.fromkeys(
                tasks, "Task ids are assigned at start; the cluster name pins them to each worker region's GPU cluster."
            ),
            **dict.fromkeys(
                families,
                f"Each deployment registers its own family ({deployment_task_family(config.prefix, '<id>')}) in "
                "each region it runs in; every revision of those families and no other.",
            ),
            **dict.fromkeys(
                groups,
                f"The node groups ({node_group_name(config.prefix, '<class>')}) of each worker region; the group's "
                "ARN embeds a UUID unknown before deployment.",
            ),
        }
        for resource, reason in reasons.items():
            acknowledge(self.controller, f"AwsSolutions-IAM5[Resource::{self._nag(resource)}]", reason)

    # --- routes and triggers ------------------------------------------------------------------------------------

    def _routes(self, api: SpothubRestApi) -> None:
        for method, path, model in ROUTES:
            api.add_route(method, path, self.api.function, request_model=model)

    def _triggers(self, bus: events.IEventBus, failed_invocations: sqs.IQueue) -> None:
        """The controller's schedule, and what it consumes from the hub bus (spothub_core.consumers)."""
        interval = Duration.seconds(timings.DEPLOYMENT_CONTROLLER_INTERVAL_SECONDS)
        schedule = events.Rule(
            self,
            "ControllerSchedule",
            description="Model deployments: nodes, health, scaling, placement and capacity, once a minute",
            schedule=events.Schedule.rate(interval),
        )
        # A missed minute is caught up by the next one: a delivery older than a tick is not worth retrying. No input
        # of its own: the controller knows the schedule by EventBridge's Scheduled Event.
        schedule.add_target(
            targets.LambdaFunction(
                self.controller.function,
                dead_letter_queue=failed_invocations,
                retry_attempts=2,
                max_event_age=interval,
            )
        )
        consuming_rules(
            self,
            "ToDeploymentController",
            bus=bus,
            consumed=entries(bus=Bus.HUB, target=Target.DEPLOYMENT_CONTROLLER),
            function=self.controller.function,
            dead_letter_queue=failed_invocations,
            description="What the deployment controller consumes from {source}",
        )

"""Batch capacity of a worker region: the launch template batch workers start from, their instance role, and
the batch fleet function that keeps one Auto Scaling group per job (`<prefix>-job-…`, created on first use,
deleted when the job ends) on the hub's "Spothub Batch Fleet Requested" commands.

Nothing here costs anything while no job runs: a launch template, a role, a security group, a function and
a rule. A job's groups exist only while the job does.

A worker runs the agent in batch mode (its group tags it with the job id) and the job's container under
Docker on the bridge network: IMDSv2 with a hop limit of 1 leaves the container without the instance's
credentials, and the role itself may read the input buckets, write the output buckets, call the worker
routes of the hub API and remove its own instance from its job's group.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Fn, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from constructs import Construct

from spothub_core.consumers import Bus, Target
from spothub_core.contracts import METRICS_NAMESPACE, InstanceTag, job_group_name
from spothub_core.timings import MULTI_CALL_FUNCTION_TIMEOUT_SECONDS
from stacks.config import SpothubConfig
from stacks.constructs.consumer_rules import consuming_rules, entries
from stacks.constructs.instance_template import (
    agent_bundle,
    gpu_launch_template,
    grant_launch_template,
    install_agent,
    session_manager_statements,
)
from stacks.constructs.python_function import FunctionDefaults
from stacks.constructs.worker_network import subnet_ids
from stacks.nag import acknowledge, nag_resource


def job_groups_arn(stack: Stack, prefix: str) -> str:
    """Every batch job's Auto Scaling group of this deployment in the stack's region (contracts.job_group_name)."""
    return stack.format_arn(
        service="autoscaling",
        resource="autoScalingGroup",
        resource_name=f"*:autoScalingGroupName/{job_group_name(prefix, 'job-')}*",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )


class BatchCapacity(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: SpothubConfig,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        worker_bus: events.IEventBus,
        functions: FunctionDefaults,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self._stack = stack
        self.group_arn = job_groups_arn(stack, config.prefix)

        self.security_group = ec2.SecurityGroup(
            self,
            "InstanceSecurityGroup",
            vpc=vpc,
            description="spothub batch workers: no inbound at all (Session Manager for shell access)",
            allow_all_outbound=True,
        )
        self.role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="spothub batch worker: the agent in batch mode (S3 in and out, worker API), Session Manager",
        )
        wildcards = self._grant_worker(config)

        bundle = agent_bundle(self, self.role)
        user_data = ec2.UserData.for_linux()
        user_data.add_commands(
            "set -euo pipefail",
            # The ECS-optimized AMI starts the ECS agent after the user data, which would register the instance in
            # the "default" cluster: batch workers run their container with Docker, not ECS.
            "systemctl disable --now ecs",
            "systemctl enable --now docker",
            "dnf install -y awscli-2 unzip",
        )
        install_agent(user_data, bundle)
        self.launch_template = gpu_launch_template(
            self,
            name=f"{config.prefix}-batch",
            config=config,
            role=self.role,
            security_group=self.security_group,
            user_data=user_data,
        )

        self.spothub_function = functions.function(
            self,
            "BatchFleet",
            concern="batch_fleet",
            description="Batch jobs' Auto Scaling groups in this region: create, grow, release on hub commands",
            timeout_seconds=MULTI_CALL_FUNCTION_TIMEOUT_SECONDS,
            environment={
                "SPOTHUB_HUB_REGION": config.hub_region,
                "SPOTHUB_WORKER_BUS": worker_bus.event_bus_name,
                "SPOTHUB_BATCH_LAUNCH_TEMPLATE_ID": self.launch_template.launch_template_id or "",
                "SPOTHUB_BATCH_SUBNETS": Fn.join(",", subnet_ids(vpc, subnets)),
                "SPOTHUB_BATCH_INSTANCE_TYPES": ",".join(config.batch_worker_instance_types),
                "SPOTHUB_BATCH_MAX_WORKERS": str(config.batch_max_workers_per_region),
            },
        )
        self.function = self.spothub_function.function
        self._grant_fleet(config, worker_bus)

        consuming_rules(
            self,
            "HubBatchCommands",
            bus=worker_bus,
            consumed=entries(bus=Bus.WORKER, target=Target.BATCH_FLEET),
            function=self.function,
            dead_letter_queue=functions.dead_letter_queue,
            description="Batch fleet commands from the hub",
        )
        self._acknowledge(wildcards)

    def _objects_arn(self, bucket: str) -> str:
        return self._stack.format_arn(service="s3", region="", account="", resource=bucket, resource_name="*")

    def _grant_worker(self, config: SpothubConfig) -> dict[str, str]:
        """What the agent in batch mode calls; returns the ARNs that hold a wildcard, each with why."""
        stack = self._stack
        hub = config.hub_region
        # The hub's API id is not known here (another stack, another region): the worker routes' methods and
        # paths, of any API of the account in the hub region.
        worker_routes = {
            method: stack.format_arn(
                service="execute-api", region=hub, resource="*", resource_name=f"*/{method}/workers/*"
            )
            for method in ("POST", "GET")
        }
        api_url = stack.format_arn(
            service="ssm", region=hub, resource="parameter", resource_name=f"spothub/{config.prefix}/api-url"
        )
        agent_config = stack.format_arn(
            service="ssm", region=hub, resource="parameter", resource_name=f"spothub/{config.prefix}/agent-config"
        )
        # Images may be pulled from the account's registry in any region (the hub's, say).
        repositories = stack.format_arn(service="ecr", region="*", resource="repository", resource_name="*")
        any_instance = stack.format_arn(service="ec2", resource="instance", resource_name="*")
        statements = [
            iam.PolicyStatement(
                sid="CallWorkerRoutes", actions=["execute-api:Invoke"], resources=list(worker_routes.values())
            ),
            # The agent reads the API's URL and its own settings from the hub's parameters, by name.
            iam.PolicyStatement(
                sid="ReadHubParameters", actions=["ssm:GetParameter"], resources=[api_url, agent_config]
            ),
            # A worker leaves its job's group itself, decrementing the group's desired capacity.
            iam.PolicyStatement(
                sid="LeaveJobGroup",
                actions=["autoscaling:TerminateInstanceInAutoScalingGroup"],
                resources=[self.group_arn],
                conditions={"StringEquals": {f"autoscaling:ResourceTag/{InstanceTag.PREFIX}": config.prefix}},
            ),
            iam.PolicyStatement(sid="RegistryLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            iam.PolicyStatement(
                sid="PullImages", actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], resources=[repositories]
            ),
            iam.PolicyStatement(
                sid="HeartbeatMetric",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
            ),
            *session_manager_statements(any_instance),
        ]
        wildcards = {
            **{
                arn: f"The hub API's id is unknown to a worker stack (another region); only {method} on the worker "
                "routes (/workers/...) of the hub region's APIs, any stage."
                for method, arn in worker_routes.items()
            },
            self.group_arn: "Job groups are created per job (<prefix>-job-<id>); the name prefix and the "
            "spothub:prefix tag pin them to this deployment.",
            repositories: "Job images are named per job; pulls from the account's own repositories, in any region.",
            any_instance: "The instance ARN is unknown until launch; ssm:UpdateInstanceInformation registers the "
            "instance with Session Manager.",
        }
        if config.batch_input_buckets:
            statements.append(
                iam.PolicyStatement(
                    sid="ReadInputs",
                    actions=["s3:GetObject"],
                    resources=[self._objects_arn(bucket) for bucket in config.batch_input_buckets],
                )
            )
        if config.batch_output_buckets:
            # AbortMultipartUpload: a large output whose upload fails leaves no parts to pay for.
            statements.append(
                iam.PolicyStatement(
                    sid="WriteOutputs",
                    actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                    resources=[self._objects_arn(bucket) for bucket in config.batch_output_buckets],
                )
            )
        for bucket in config.batch_input_buckets:
            wildcards[self._objects_arn(bucket)] = (
                "A batch's input files: objects of a batch input bucket (batchInputBuckets), under the job's prefix."
            )
        for bucket in config.batch_output_buckets:
            wildcards[self._objects_arn(bucket)] = (
                "A batch's outputs: objects of a batch output bucket (batchOutputBuckets), under the job's prefix."
            )
        for statement in statements:
            self.role.add_to_principal_policy(statement)
        return wildcards

    def _grant_fleet(self, config: SpothubConfig, worker_bus: events.IEventBus) -> None:
        prefix_tag = str(InstanceTag.PREFIX)
        statements = [
            # A group is created with its tags (the agent reads the job id from them): only a request that tags it
            # as this deployment's.
            iam.PolicyStatement(
                sid="CreateJobGroups",
                actions=["autoscaling:CreateAutoScalingGroup", "autoscaling:CreateOrUpdateTags"],
                resources=[self.group_arn],
                conditions={"StringEquals": {f"aws:RequestTag/{prefix_tag}": config.prefix}},
            ),
            # Then only groups tagged as this deployment's (the request applied is recorded as a tag).
            iam.PolicyStatement(
                sid="ManageJobGroups",
                actions=[
                    "autoscaling:UpdateAutoScalingGroup",
                    "autoscaling:SetDesiredCapacity",
                    "autoscaling:TerminateInstanceInAutoScalingGroup",
                    "autoscaling:DeleteAutoScalingGroup",
                    "autoscaling:CreateOrUpdateTags",
                ],
                resources=[self.group_arn],
                conditions={"StringEquals": {f"autoscaling:ResourceTag/{prefix_tag}": config.prefix}},
            ),
            iam.PolicyStatement(
                sid="ReadGroups",
                actions=[
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeScalingActivities",
                    "ec2:DescribeLaunchTemplateVersions",
                ],
                resources=["*"],
            ),
            # Auto Scaling checks the caller's ec2:RunInstances (and CreateTags, for tags at launch) when a group is
            # created or updated from a launch template: only with the batch template.
            iam.PolicyStatement(
                sid="PassBatchRole",
                actions=["iam:PassRole"],
                resources=[self.role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            ),
            iam.PolicyStatement(
                sid="ReportOnWorkerBus", actions=["events:PutEvents"], resources=[worker_bus.event_bus_arn]
            ),
        ]
        for statement in statements:
            self.function.add_to_role_policy(statement)
        grant_launch_template(self.function, "UseBatchLaunchTemplate", self.launch_template)
        reasons = {
            "AwsSolutions-IAM5[Resource::*]": "Describe calls (groups, scaling activities, launch template "
            "versions) have no resource-level permissions; ec2:RunInstances/CreateTags only with this region's "
            "batch launch template; X-Ray.",
            f"AwsSolutions-IAM5[Resource::{nag_resource(self._stack, self.group_arn)}]": "Job groups are created "
            "per job (<prefix>-job-<id>); the name prefix and the spothub:prefix tag (request or resource) pin "
            "them to this deployment.",
        }
        for rule, reason in reasons.items():
            acknowledge(self.spothub_function, rule, reason)

    def _acknowledge(self, wildcards: dict[str, str]) -> None:
        reasons = {
            "AwsSolutions-IAM5[Resource::*]": "Actions without resource-level permissions: ecr:GetAuthorizationToken "
            "and the ssmmessages channels; cloudwatch:PutMetricData only in the Spothub namespace (condition).",
        }
        for arn, reason in wildcards.items():
            reasons[f"AwsSolutions-IAM5[Resource::{nag_resource(self._stack, arn)}]"] = reason
        for rule, reason in reasons.items():
            acknowledge(self.role, rule, reason)

"""GPU capacity of a worker region: launch template, spot Auto Scaling group, ECS cluster, model cache.

The group starts empty and is scaled by the control plane. Its own Capacity Rebalance is off, and
stays off: the hub replaces a replica make-before-break, in another region when that one has no
capacity, and only once the replacement's workload is healthy. The group's rebalancing can only
replace in its own region, does not wait for the model to load, and would terminate the old
instance on its own schedule: two mechanisms replacing one replica. For the same reason an
instance with an interruption warning enters Standby (decrementing), so the group does not
launch a replacement of its own when AWS reclaims it (worker capacity monitor).
"""

from __future__ import annotations

from typing import cast

from aws_cdk import ArnFormat, CfnResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_efs as efs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from spothub_core.contracts import METRICS_NAMESPACE, InstanceTag
from spothub_core.timings import LAUNCH_HOOK_TIMEOUT_SECONDS
from stacks.config import SpothubConfig
from stacks.constructs.instance_template import (
    agent_bundle,
    gpu_launch_template,
    install_agent,
    session_manager_statements,
    spot_group,
)
from stacks.constructs.log_retention import log_retention
from stacks.constructs.serving_task import SERVING_UID
from stacks.nag import acknowledge, nag_resource

LAUNCH_HOOK_NAME = "spothub-workload-healthy"
# Boot, then the agent's health budget (spothub_core.timings); a live agent extends it with heartbeats.
LAUNCH_HOOK_TIMEOUT = Duration.seconds(LAUNCH_HOOK_TIMEOUT_SECONDS)
MODEL_CACHE_MOUNT = "/mnt/model-cache"
HF_CACHE = f"{MODEL_CACHE_MOUNT}/huggingface"  # the serving container's HF_HOME, /model-cache/huggingface
# Memory the ECS agent leaves out of what it registers: the host's own processes (ECS and spothub agents,
# Docker, the EFS and SSM agents). Placement only: the serving container's reservation is soft.
ECS_RESERVED_MEMORY_MIB = 256
IMDS_ADDRESS = "169.254.169.254/32"
# Run at every boot by cloud-init (whose final stage the ECS agent starts after), and once by the user data.
IMDS_BLOCK_SCRIPT = "/var/lib/cloud/scripts/per-boot/10-spothub-block-imds.sh"


def block_imds_for_serving_user() -> list[str]:
    """User data lines that drop what the serving container's user sends to the instance metadata service.

    A host-network container shares the instance's network namespace: the hop limit of 1 does not stop it,
    and AWS's documented rule (`iptables -I DOCKER-USER --in-interface docker+ -d 169.254.169.254 -j DROP`)
    matches bridged traffic only, while ECS_AWSVPC_BLOCK_IMDS is for awsvpc tasks. What a host-network
    container sends is locally generated traffic: it goes through the OUTPUT chain, where iptables'
    `owner` match sees the sending process's UID (no user namespaces: the container's UID is the host's).
    So the container runs as SERVING_UID (not root, no-new-privileges: it cannot change its UID or the
    firewall) and this rule drops its packets to IMDS; the ECS agent and the spothub agent run as root and
    keep IMDS. The task's own credentials come from 169.254.170.2 (ECS_ENABLE_TASK_IAM_ROLE_NETWORK_HOST),
    redirected to the ECS agent before this filter. IMDS over IPv6 is off (the launch template's default).
    """
    rule = f"--destination {IMDS_ADDRESS} -m owner --uid-owner {SERVING_UID} --jump DROP"
    return [
        f"mkdir -p {IMDS_BLOCK_SCRIPT.rsplit('/', 1)[0]}",
        f"cat >{IMDS_BLOCK_SCRIPT} <<'IMDS'",
        "#!/bin/bash",
        f"iptables --check OUTPUT {rule} 2>/dev/null || iptables --insert OUTPUT 1 {rule}",
        "IMDS",
        f"chmod 755 {IMDS_BLOCK_SCRIPT}",
        IMDS_BLOCK_SCRIPT,
    ]


class GpuCapacity(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: SpothubConfig,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        hub_bus_arn: str,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.group_name = f"{config.prefix}-gpu"

        self.security_group = ec2.SecurityGroup(
            self,
            "InstanceSecurityGroup",
            vpc=vpc,
            # Immutable: a new description would replace the group, and with it the rule that lets the instances
            # of a live replica reach the model cache. Shell access is Session Manager's; the only inbound rules
            # are the model port's, from the configured sources (_allow_model_clients).
            description="spothub GPU instances: no inbound at all (Session Manager for shell access)",
            allow_all_outbound=True,
        )
        self._allow_model_clients(config, stack.region)

        self.model_cache = efs.FileSystem(
            self,
            "ModelCache",
            vpc=vpc,
            vpc_subnets=subnets,
            encrypted=True,
            performance_mode=efs.PerformanceMode.GENERAL_PURPOSE,
            throughput_mode=efs.ThroughputMode.ELASTIC,
            # Weights are downloaded again when missing; nothing here is the only copy.
            removal_policy=RemovalPolicy.DESTROY,
            enable_automatic_backups=False,
            allow_anonymous_access=False,
            # Cached weights no replica read for two weeks move to Infrequent Access ($0.016 instead of $0.30 a
            # GB-month in us-east-1: a 15 GB model costs $0.24 a month idle, not $4.50) and come back to Standard on
            # their first read, which a cold start pays once ($0.01 a GB).
            lifecycle_policy=efs.LifecyclePolicy.AFTER_14_DAYS,
            out_of_infrequent_access_policy=efs.OutOfInfrequentAccessPolicy.AFTER_1_ACCESS,
        )
        self.model_cache.connections.allow_default_port_from(self.security_group, "NFS from GPU instances")

        self.role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="spothub GPU instance: ECS agent, spothub agent, Session Manager",
        )
        wildcard_resources = self._grant_agent_permissions(config, stack, hub_bus_arn)
        self.model_cache.grant(self.role, "elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite")

        bundle = agent_bundle(self, self.role)

        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            cluster_name=f"{config.prefix}-gpu",
            vpc=vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )

        user_data = ec2.UserData.for_linux()
        user_data.add_commands(
            "set -euo pipefail",
            "cat >>/etc/ecs/ecs.config <<'ECS'",
            f"ECS_CLUSTER={self.cluster.cluster_name}",
            "ECS_ENABLE_GPU_SUPPORT=true",
            "ECS_ENABLE_TASK_IAM_ROLE=true",
            # The serving task uses host networking: without this, ECS does not give it its task role.
            "ECS_ENABLE_TASK_IAM_ROLE_NETWORK_HOST=true",
            f"ECS_RESERVED_MEMORY={ECS_RESERVED_MEMORY_MIB}",
            "ECS",
            "dnf install -y amazon-efs-utils awscli-2 unzip iptables-nft",
            *block_imds_for_serving_user(),
            f"mkdir -p {MODEL_CACHE_MOUNT}",
            f"echo '{self.model_cache.file_system_id}:/ {MODEL_CACHE_MOUNT} efs _netdev,tls,iam 0 0' >>/etc/fstab",
            f"mount {MODEL_CACHE_MOUNT}",
            # The serving container runs as SERVING_UID and writes the weights cache (earlier root-owned files too).
            f"install -d -o {SERVING_UID} -g {SERVING_UID} {HF_CACHE}",
            f"find {HF_CACHE} ! -user {SERVING_UID} -exec chown -h {SERVING_UID}:{SERVING_UID} {{}} +",
        )
        install_agent(user_data, bundle)
        # The deployments' node groups boot the same way (stacks/constructs/deployment_nodes.py).
        self.user_data = user_data
        self.launch_template = gpu_launch_template(
            self,
            name=f"{config.prefix}-gpu",
            config=config,
            role=self.role,
            security_group=self.security_group,
            user_data=user_data,
        )

        self.group = spot_group(
            self,
            "Group",
            name=self.group_name,
            vpc=vpc,
            subnets=subnets,
            max_capacity=config.max_instances_per_region,
            launch_template=self.launch_template,
            instance_types=list(config.instance_types),
            allocation=autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
            tags={
                InstanceTag.PREFIX.value: config.prefix,
                InstanceTag.HUB_REGION.value: config.hub_region,
                InstanceTag.LIFECYCLE_HOOK.value: LAUNCH_HOOK_NAME,
                InstanceTag.MODEL_CACHE.value: MODEL_CACHE_MOUNT,
            },
        )

        # Completed by the agent (CONTINUE) once the workload is healthy; ABANDON otherwise.
        self.group.add_lifecycle_hook(
            "WorkloadHealthy",
            lifecycle_hook_name=LAUNCH_HOOK_NAME,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_LAUNCHING,
            default_result=autoscaling.DefaultResult.ABANDON,
            heartbeat_timeout=LAUNCH_HOOK_TIMEOUT,
        )

        self.capacity_provider = ecs.AsgCapacityProvider(
            self,
            "CapacityProvider",
            capacity_provider_name=f"{config.prefix}-gpu",
            auto_scaling_group=self.group,
            # The control plane sets the group's size and drains through the agent.
            enable_managed_scaling=False,
            enable_managed_termination_protection=False,
            # Spot notices are drained by the agent; scale-in (teardown) by ECS managed draining,
            # AWS's own termination hook, rather than aws-cdk-lib's Node.js drain Lambda.
            spot_instance_draining=False,
            enable_managed_draining=True,
        )
        # aws-cdk-lib omits ManagedScaling when it is off; say so explicitly rather than rely on the API default.
        capacity_provider_resource = cast(
            CfnResource, self.capacity_provider.node.find_child(self.capacity_provider.node.id)
        )
        capacity_provider_resource.add_property_override("AutoScalingGroupProvider.ManagedScaling.Status", "DISABLED")
        # Associated here rather than with Cluster.add_asg_capacity_provider, which would also grant the
        # instance role logs:* on every log group; the ECS agent's permissions are granted below instead.
        ecs.CfnClusterCapacityProviderAssociations(
            self,
            "CapacityProviders",
            cluster=self.cluster.cluster_name,
            capacity_providers=[self.capacity_provider.capacity_provider_name],
            default_capacity_provider_strategy=[
                ecs.CfnClusterCapacityProviderAssociations.CapacityProviderStrategyProperty(
                    capacity_provider=self.capacity_provider.capacity_provider_name, weight=1
                )
            ],
        )
        self.workload_logs = logs.LogGroup(
            self,
            "WorkloadLogs",
            log_group_name=f"/spothub/{config.prefix}/workloads",
            retention=log_retention(config.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self._grant_ecs_agent_permissions()
        self.workload_logs.grant_write(self.role)
        self._acknowledge_findings(stack, wildcard_resources)

    def _allow_model_clients(self, config: SpothubConfig, region: str) -> None:
        """The model port (TCP), from exactly the configured sources: CIDR ranges, and this region's prefix lists
        and client security groups. Nothing else comes in; with no source configured, nothing at all."""
        port = ec2.Port.tcp(config.serving_port)
        peers: list[tuple[ec2.IPeer, str]] = [
            (ec2.Peer.ipv6(cidr) if ":" in cidr else ec2.Peer.ipv4(cidr), cidr) for cidr in config.serving_ingress_cidrs
        ]
        peers += [(ec2.Peer.prefix_list(pl), pl) for pl in config.serving_ingress_prefix_lists.get(region, [])]
        peers += [(ec2.Peer.security_group_id(sg), sg) for sg in config.serving_ingress_security_groups.get(region, [])]
        for peer, source in peers:
            self.security_group.add_ingress_rule(peer, port, f"model clients: {source}")

    def _acknowledge_findings(self, stack: Stack, wildcard_resources: dict[str, str]) -> None:
        reasons = {
            "AwsSolutions-IAM5[Resource::*]": "Actions without resource-level permissions: ecs:DiscoverPollEndpoint, "
            "ecr:GetAuthorizationToken, the ssmmessages channels; ecs:Poll, ecs:StartTelemetrySession, "
            "ecs:PutSystemLogEvents and cloudwatch:PutMetricData carry conditions limiting them to this cluster and "
            "the Spothub namespace.",
            "AwsSolutions-AS3": "Launch failures reach the hub as EventBridge events (EC2 Instance Launch "
            "Unsuccessful), which decides and alerts; e-mail notifications from the group would duplicate them.",
            "AwsSolutions-EC26": "The root volume is encrypted in the launch template (asserted by the infrastructure "
            "tests); the rule does not read block devices of a launch template in a mixed instances policy.",
        }
        for arn, reason in wildcard_resources.items():
            reasons[f"AwsSolutions-IAM5[Resource::{nag_resource(stack, arn)}]"] = reason
        for rule, reason in reasons.items():
            acknowledge(self, rule, reason)

    def _grant_ecs_agent_permissions(self) -> None:
        """What the ECS container agent calls, per the AmazonEC2ContainerServiceforEC2Role policy,
        narrowed to this cluster."""
        cluster_arn = self.cluster.cluster_arn
        stack = Stack.of(self)
        self.container_instances_arn = stack.format_arn(
            service="ecs", resource="container-instance", resource_name=f"{self.cluster.cluster_name}/*"
        )
        acknowledge(
            self,
            f"AwsSolutions-IAM5[Resource::{nag_resource(stack, self.container_instances_arn)}]",
            "Container instance ids are assigned at registration; the cluster name pins them to this cluster.",
        )
        for statement in (
            iam.PolicyStatement(
                sid="EcsAgentOwnCluster",
                actions=[
                    "ecs:RegisterContainerInstance",
                    "ecs:DeregisterContainerInstance",
                    "ecs:SubmitContainerStateChange",
                    "ecs:SubmitTaskStateChange",
                    "ecs:SubmitAttachmentStateChanges",
                ],
                resources=[cluster_arn],
            ),
            iam.PolicyStatement(
                sid="EcsAgentPollOwnCluster",
                actions=["ecs:Poll", "ecs:StartTelemetrySession"],
                resources=["*"],
                conditions={"ArnEquals": {"ecs:cluster": cluster_arn}},
            ),
            # PutSystemLogEvents is authorized on the cluster AND the container instance, and the cluster
            # carries no ecs:cluster key: a condition on it would refuse every call.
            iam.PolicyStatement(
                sid="EcsAgentSystemLogs",
                actions=["ecs:PutSystemLogEvents"],
                resources=[cluster_arn, self.container_instances_arn],
            ),
            iam.PolicyStatement(
                sid="EcsAgentDiscovery",
                actions=["ecs:DiscoverPollEndpoint", "ecr:GetAuthorizationToken"],
                resources=["*"],
            ),
        ):
            self.role.add_to_principal_policy(statement)

    def _grant_agent_permissions(self, config: SpothubConfig, stack: Stack, hub_bus_arn: str) -> dict[str, str]:
        """Grant what the agent calls; returns the ARNs that hold a wildcard, each with why."""
        group_arn = stack.format_arn(
            service="autoscaling",
            resource="autoScalingGroup",
            resource_name=f"*:autoScalingGroupName/{self.group_name}",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        any_instance = stack.format_arn(service="ec2", resource="instance", resource_name="*")
        hub_parameters = stack.format_arn(
            service="ssm", region=config.hub_region, resource="parameter", resource_name=f"spothub/{config.prefix}/*"
        )
        # GetParametersByPath is authorized against the path itself, not the names below it.
        hub_parameter_path = stack.format_arn(
            service="ssm", region=config.hub_region, resource="parameter", resource_name=f"spothub/{config.prefix}"
        )
        # The hub's API id is not known here (another stack, another region): any API of the account in the
        # hub region, but only the agent routes' method and path.
        agent_routes = stack.format_arn(
            service="execute-api", region=config.hub_region, resource="*", resource_name="*/POST/agents/*"
        )
        statements = [
            iam.PolicyStatement(
                sid="CompleteOwnLaunchLifecycle",
                actions=["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"],
                resources=[group_arn],
            ),
            iam.PolicyStatement(sid="ReportToHub", actions=["events:PutEvents"], resources=[hub_bus_arn]),
            iam.PolicyStatement(sid="CheckInWithHub", actions=["execute-api:Invoke"], resources=[agent_routes]),
            iam.PolicyStatement(
                sid="ReadHubParameters",
                actions=["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
                resources=[hub_parameters, hub_parameter_path],
            ),
            iam.PolicyStatement(
                sid="HeartbeatMetric",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
            ),
            *session_manager_statements(any_instance),
        ]
        for statement in statements:
            self.role.add_to_principal_policy(statement)
        return {
            group_arn: "The group's ARN embeds a UUID unknown before deployment; the name pins it to this "
            "region's spothub group.",
            any_instance: "The instance ARN is unknown until launch; ssm:UpdateInstanceInformation registers the "
            "instance with Session Manager.",
            hub_parameters: "Read-only access to this deployment's published parameters in the hub region, and "
            "no others.",
            agent_routes: "The hub API's id is unknown to a worker stack (another region); only POST on the agent "
            "routes (register, heartbeat) of the hub region's APIs, any stage.",
        }

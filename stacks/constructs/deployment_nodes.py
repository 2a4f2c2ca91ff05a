"""The model deployments' GPU nodes of a worker region: one Auto Scaling group per node class
(`<prefix>-nodes-<class>`, deploymentNodeClasses), the log group of the deployments' containers, and the nodes'
security group.

A node boots like a serving instance (the ECS-optimized GPU AMI, GpuCapacity's user data: it joins the GPU cluster
`<prefix>-gpu` with ECS_ENABLE_GPU_SUPPORT, mounts the model cache, installs the agent) with the serving instances'
role (the ECS agent's and the spothub agent's permissions), and is told apart by its tags: Service=model-node puts
the agent in node mode (register, heartbeat with the GPU sample, capacity notices; no workload of its own, no
lifecycle hook). The hub's deployment controller sizes the groups (desired capacity, never in the template: a
deploy leaves the controller's setting alone) and starts the deployments' tasks on the nodes it allocated.

Each group is spot only (capacity-optimized over the class's types) and has no Capacity Rebalance: the controller
replaces a node's tasks make-before-break on an interruption notice, and sets a group on-demand itself when no spot
region is left.

The tasks' endpoints are `http://<node private address>:<host port>` (bridge network, a dynamic host port): the
nodes take connections on ECS's dynamic port range from exactly the model clients the serving port admits
(servingIngressCidrs, servingIngressPrefixLists, servingIngressSecurityGroups), and nothing else.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from spothub_core.contracts import MODEL_NODE_SERVICE, InstanceTag, SearchTag, deployment_log_group, node_group_name
from stacks.config import SpothubConfig
from stacks.constructs.gpu_capacity import GpuCapacity
from stacks.constructs.instance_template import gpu_launch_template, spot_group
from stacks.constructs.log_retention import log_retention
from stacks.nag import acknowledge

# The host ports ECS gives a container port mapped to host port 0: the agent's default range is the kernel's
# ephemeral range (32768-60999 on Amazon Linux 2023), or 49153-65535 where it cannot read it.
DYNAMIC_HOST_PORTS = (32768, 65535)


class DeploymentNodes(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: SpothubConfig,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        capacity: GpuCapacity,
    ) -> None:
        super().__init__(scope, construct_id)
        region = Stack.of(self).region
        self.security_group = ec2.SecurityGroup(
            self,
            "NodeSecurityGroup",
            vpc=vpc,
            description="spothub deployment nodes: the dynamic host ports of deployment tasks from model clients only",
            allow_all_outbound=True,
        )
        self._allow_model_clients(config, region)
        # The user data mounts the model cache (as a serving instance's does).
        capacity.model_cache.connections.allow_default_port_from(self.security_group, "NFS from deployment nodes")

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=deployment_log_group(config.prefix),
            retention=log_retention(config.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        # On EC2 the awslogs driver writes with the instance's credentials (the ECS agent's Docker daemon).
        self.log_group.grant_write(capacity.role)

        self.launch_template = gpu_launch_template(
            self,
            name=f"{config.prefix}-nodes",
            config=config,
            role=capacity.role,
            security_group=self.security_group,
            user_data=capacity.user_data,
        )
        self.groups: dict[str, autoscaling.AutoScalingGroup] = {}
        for node_class, spec in sorted(config.deployment_node_classes.items()):
            group = spot_group(
                self,
                f"Group-{node_class}",
                name=node_group_name(config.prefix, node_class),
                vpc=vpc,
                subnets=subnets,
                max_capacity=spec.max_nodes,
                launch_template=self.launch_template,
                instance_types=list(spec.instance_types),
                allocation=autoscaling.SpotAllocationStrategy.CAPACITY_OPTIMIZED,
                tags={
                    SearchTag.SERVICE.value: MODEL_NODE_SERVICE,
                    InstanceTag.PREFIX.value: config.prefix,
                    InstanceTag.HUB_REGION.value: config.hub_region,
                },
            )
            self.groups[node_class] = group
        acknowledge(
            self,
            "AwsSolutions-AS3",
            "The controller watches its node groups (nodes registering in ECS, asks timing out) and alerts through "
            "the deployment's status and GET /health; e-mail notifications from the groups would duplicate them.",
        )
        acknowledge(
            self,
            "AwsSolutions-EC26",
            "The root volume is encrypted in the launch template (asserted by the infrastructure tests); the rule "
            "does not read block devices of a launch template in a mixed instances policy.",
        )

    def _allow_model_clients(self, config: SpothubConfig, region: str) -> None:
        """The dynamic host ports (TCP) from exactly the sources servingPort admits; none configured, none."""
        low, high = DYNAMIC_HOST_PORTS
        ports = ec2.Port.tcp_range(low, high)
        peers: list[tuple[ec2.IPeer, str]] = [
            (ec2.Peer.ipv6(cidr) if ":" in cidr else ec2.Peer.ipv4(cidr), cidr) for cidr in config.serving_ingress_cidrs
        ]
        peers += [(ec2.Peer.prefix_list(pl), pl) for pl in config.serving_ingress_prefix_lists.get(region, [])]
        peers += [(ec2.Peer.security_group_id(sg), sg) for sg in config.serving_ingress_security_groups.get(region, [])]
        for peer, source in peers:
            self.security_group.add_ingress_rule(peer, ports, f"deployment endpoints' clients: {source}")

"""The search instance's region-local mechanics (only in the search region's worker stack, only with
searchVolumeId): the router function in the VPC, the two security groups, the instance role and launch template,
the embedding API key's secret, the parameters the hub and the agent read, and the forwarding of spot interruption
warnings to the hub (EventForwarding, search_region=True).

The hub decides and launches (stacks/constructs/search_service.py); what it needs from here it reads by name: the
router (contracts.search_router_name), the host parameter (SearchHost: the launch template, the instance's
security group, the subnets) and the instance role (config.search_instance_role_name, for iam:PassRole).

Nothing here costs anything while no instance runs: a template, a role, two security groups, a function, a secret
and two parameters. Nothing reaches the instance but the router: the service port is open to the router's
security group only, and nothing else comes in (Session Manager for a shell).
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from spothub_core.contracts import search_router_name, search_template_name
from spothub_core.models.search_records import SearchAgentConfig
from stacks.config import SpothubConfig
from stacks.constructs.instance_template import (
    agent_bundle,
    gpu_launch_template,
    install_agent,
    session_manager_statements,
)
from stacks.constructs.python_function import FunctionDefaults, FunctionNetwork
from stacks.constructs.worker_network import subnet_ids
from stacks.nag import acknowledge, nag_resource

# Letters and digits only, as the model API key: a placeholder until the operator puts the provider's key.
API_KEY_PLACEHOLDER_LENGTH = 40


class SearchHost(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: SpothubConfig,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        functions: FunctionDefaults,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self._stack = stack
        port = ec2.Port.tcp(config.search_port)

        self.router_security_group = ec2.SecurityGroup(
            self,
            "RouterSecurityGroup",
            vpc=vpc,
            description="spothub search router: out to the service port of the search instance only",
            allow_all_outbound=False,
        )
        self.instance_security_group = ec2.SecurityGroup(
            self,
            "InstanceSecurityGroup",
            vpc=vpc,
            description="spothub search instance: the service port from the search router only",
            # Out to the image registry, the volume's AWS APIs, Secrets Manager and SSM.
            allow_all_outbound=True,
        )
        # The one inbound rule, and the router's one outbound rule.
        self.instance_security_group.add_ingress_rule(
            self.router_security_group, port, "search queries from the router"
        )
        self.router_security_group.add_egress_rule(self.instance_security_group, port, "search queries to the instance")

        self.api_key = secretsmanager.Secret(
            self,
            "ApiKey",
            secret_name=config.search_api_key_secret_name,
            description=f"spothub {config.prefix}: the search service's embedding API key (SEARCH_API_KEY); "
            "a generated placeholder until you put the provider's key",
            encryption_key=key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                exclude_punctuation=True, password_length=API_KEY_PLACEHOLDER_LENGTH
            ),
        )
        acknowledge(
            self.api_key,
            "AwsSolutions-SMG4",
            "The embedding provider issues this key: a rotation Lambda cannot make a new one. The container reads it "
            "when it starts; put a new value (aws secretsmanager put-secret-value) and the next instance uses it.",
        )

        self.agent_config = SearchAgentConfig(
            image=config.search_image or "",
            port=config.search_port,
            health_path=config.search_health_path,
            api_key_secret_name=config.search_api_key_secret_name,
        )
        self.role = iam.Role(
            self,
            "InstanceRole",
            # Named: the hub's launcher passes it (iam:PassRole) from another region.
            role_name=config.search_instance_role_name,
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="spothub search instance: the agent in search mode (its config, the API key), Session Manager",
        )
        self._grant_instance(config, key)

        bundle = agent_bundle(self, self.role)
        user_data = ec2.UserData.for_linux()
        user_data.add_commands(
            "set -euo pipefail",
            # The ECS-optimized AMI starts the ECS agent after the user data, which would register the instance in
            # the "default" cluster: the search container runs under Docker, not ECS.
            "systemctl disable --now ecs",
            "systemctl enable --now docker",
            "dnf install -y awscli-2 unzip",
        )
        install_agent(user_data, bundle)
        self.launch_template = gpu_launch_template(
            self,
            name=search_template_name(config.prefix),
            config=config,
            role=self.role,
            security_group=self.instance_security_group,
            user_data=user_data,
        )

        self.router = functions.function(
            self,
            "Router",
            concern="search_router",
            description="Forward a search query or health check from the hub to the search instance's private IP",
            # Named: the hub's search functions invoke it by ARN from another region.
            function_name=search_router_name(config.prefix),
            # In the VPC, in the security group the instance lets in. The worker VPC's subnets are public and have
            # no NAT gateway: the router reaches the instance's private address and nothing else (it calls no
            # AWS API).
            network=FunctionNetwork(
                vpc=vpc, subnets=subnets, security_groups=(self.router_security_group,), public_subnets=True
            ),
        )
        self._grant_network_interfaces()
        self._publish(config, vpc, subnets)

    def _arn(self, service: str, resource: str, name: str) -> str:
        return self._stack.format_arn(service=service, resource=resource, resource_name=name)

    def _grant_instance(self, config: SpothubConfig, key: kms.IKey) -> None:
        """What the agent in search mode calls (worker_agent/spothub_agent/search.py): its config and the API key;
        and Session Manager. No heartbeat and no hub API: the hub checks the service through the router."""
        stack = self._stack
        search_config = self._arn("ssm", "parameter", config.search_config_parameter.lstrip("/"))
        any_instance = self._arn("ec2", "instance", "*")
        statements = [
            iam.PolicyStatement(sid="ReadSearchConfig", actions=["ssm:GetParameter"], resources=[search_config]),
            iam.PolicyStatement(
                sid="ReadSearchApiKey", actions=["secretsmanager:GetSecretValue"], resources=[self.api_key.secret_arn]
            ),
            # The secret's key, only as Secrets Manager decrypts the secret for the instance.
            iam.PolicyStatement(
                sid="DecryptSearchApiKey",
                actions=["kms:Decrypt"],
                resources=[key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"secretsmanager.{stack.region}.amazonaws.com"}},
            ),
            *session_manager_statements(any_instance),
        ]
        for statement in statements:
            self.role.add_to_principal_policy(statement)
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "The ssmmessages channels of Session Manager have no resource-level permissions.",
        )
        acknowledge(
            self.role,
            f"AwsSolutions-IAM5[Resource::{nag_resource(stack, any_instance)}]",
            "The instance ARN is unknown until launch; ssm:UpdateInstanceInformation registers the instance with "
            "Session Manager.",
        )

    def _grant_network_interfaces(self) -> None:
        """What Lambda does with the router's role to place it in the VPC (AWSLambdaVPCAccessExecutionRole's
        actions): create, describe and delete its network interfaces and their addresses."""
        interfaces = self._arn("ec2", "network-interface", "*")
        statements = [
            # Lambda checks these on "*" when the function is created or updated.
            iam.PolicyStatement(
                sid="PlaceInVpc",
                actions=["ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"],
                resources=["*"],
            ),
            iam.PolicyStatement(
                sid="ManageVpcInterfaces",
                actions=[
                    "ec2:DeleteNetworkInterface",
                    "ec2:AssignPrivateIpAddresses",
                    "ec2:UnassignPrivateIpAddresses",
                ],
                resources=[interfaces],
            ),
        ]
        for statement in statements:
            self.router.role.add_to_principal_policy(statement)
        acknowledge(
            self.router,
            "AwsSolutions-IAM5[Resource::*]",
            "Lambda places the router in the VPC with its role: ec2:CreateNetworkInterface, DescribeNetworkInterfaces "
            "and DescribeSubnets are checked on all resources; X-Ray.",
        )
        acknowledge(
            self.router,
            f"AwsSolutions-IAM5[Resource::{nag_resource(self._stack, interfaces)}]",
            "The router's network interfaces are created by Lambda with ids unknown ahead; deleting them and their "
            "addresses is what Lambda does when it scales in.",
        )

    def _publish(self, config: SpothubConfig, vpc: ec2.IVpc, subnets: ec2.SubnetSelection) -> None:
        """SearchHost for the hub's search functions, SearchAgentConfig for the agent on the instance."""
        stack = self._stack
        host = {
            "region": stack.region,
            "launch_template_id": self.launch_template.launch_template_id,
            "security_group_id": self.instance_security_group.security_group_id,
            "subnet_ids": subnet_ids(vpc, subnets),
        }
        self.host_parameter = ssm.StringParameter(
            self,
            "HostParameter",
            parameter_name=config.search_host_parameter,
            string_value=stack.to_json_string(host),
            description=f"spothub {config.prefix}: where the hub launches the search instance (SearchHost)",
        )
        self.config_parameter = ssm.StringParameter(
            self,
            "ConfigParameter",
            parameter_name=config.search_config_parameter,
            string_value=self.agent_config.model_dump_json(),
            description=f"spothub {config.prefix}: what the agent on the search instance runs (SearchAgentConfig)",
        )

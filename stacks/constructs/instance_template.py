"""What every spothub instance shares, serving or batch: the agent's bundle (an S3 asset only the instance's
role may read), its installation at boot, and the launch template's settings (the ECS-optimized GPU AMI,
IMDSv2 with a hop limit of 1, instance metadata tags, an encrypted root volume)."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack, Tags
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from stacks.agent_bundle import stage_agent_bundle
from stacks.config import SpothubConfig
from stacks.nag import acknowledge, nag_resource

AGENT_HOME = "/opt/spothub-agent"


def agent_bundle(scope: Construct, role: iam.IRole) -> s3_assets.Asset:
    """The agent's bundle as an asset; the role may read that one object, not the whole bootstrap bucket
    (what Asset.grant_read would give)."""
    bundle = s3_assets.Asset(scope, "AgentBundle", path=str(stage_agent_bundle()))
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid="ReadAgentBundle",
            actions=["s3:GetObject"],
            resources=[bundle.bucket.arn_for_objects(bundle.s3_object_key)],
        )
    )
    return bundle


def install_agent(user_data: ec2.UserData, bundle: s3_assets.Asset) -> None:
    """User data lines that download the bundle and install the agent as its systemd service."""
    bundle_file = user_data.add_s3_download_command(
        bucket=bundle.bucket, bucket_key=bundle.s3_object_key, local_file=f"{AGENT_HOME}.zip"
    )
    user_data.add_commands(
        f"mkdir -p {AGENT_HOME}",
        f"unzip -o {bundle_file} -d {AGENT_HOME}",
        f"bash {AGENT_HOME}/install.sh",
    )


def gpu_launch_template(
    scope: Construct,
    *,
    name: str,
    config: SpothubConfig,
    role: iam.IRole,
    security_group: ec2.ISecurityGroup,
    user_data: ec2.UserData,
) -> ec2.LaunchTemplate:
    return ec2.LaunchTemplate(
        scope,
        "LaunchTemplate",
        launch_template_name=name,
        # Docker and the NVIDIA container toolkit come with it.
        machine_image=ecs.EcsOptimizedImage.amazon_linux2023(ecs.AmiHardwareType.GPU),
        role=role,
        security_group=security_group,
        user_data=user_data,
        require_imdsv2=True,
        # Containers (one hop further) cannot reach the instance's credentials.
        http_put_response_hop_limit=1,
        instance_metadata_tags=True,
        # servingPublicIp: the serving endpoint's address, and the way out to image registries, S3 and AWS APIs
        # in a VPC without a NAT gateway (spothub's own); false needs the operator's VPC (config.py checks).
        associate_public_ip_address=config.serving_public_ip,
        block_devices=[
            ec2.BlockDevice(
                device_name="/dev/xvda",
                volume=ec2.BlockDeviceVolume.ebs(
                    config.root_volume_gib,
                    encrypted=True,
                    volume_type=ec2.EbsDeviceVolumeType.GP3,
                    delete_on_termination=True,
                ),
            )
        ],
    )


def grant_launch_template(grantee: lambda_.Function, sid: str, template: ec2.LaunchTemplate) -> None:
    """What Auto Scaling checks of whoever creates or updates a group from `template`: ec2:RunInstances with that
    template, and ec2:CreateTags for the tags it puts on the instances and volumes at launch. CreateTags has no
    ec2:LaunchTemplate key; ec2:CreateAction limits it to tagging as part of a launch."""
    stack = Stack.of(grantee)
    tagged = [
        stack.format_arn(service="ec2", resource=kind, resource_name="*", arn_format=ArnFormat.SLASH_RESOURCE_NAME)
        for kind in ("instance", "volume")
    ]
    template_arn = stack.format_arn(
        service="ec2", resource="launch-template", resource_name=template.launch_template_id or "*"
    )
    grantee.add_to_role_policy(
        iam.PolicyStatement(
            sid=sid,
            actions=["ec2:RunInstances"],
            resources=["*"],
            conditions={"ArnLike": {"ec2:LaunchTemplate": template_arn}},
        )
    )
    grantee.add_to_role_policy(
        iam.PolicyStatement(
            sid=f"{sid}Tags",
            actions=["ec2:CreateTags"],
            resources=tagged,
            conditions={"StringEquals": {"ec2:CreateAction": "RunInstances"}},
        )
    )
    for arn in tagged:
        acknowledge(
            grantee.role or grantee,
            f"AwsSolutions-IAM5[Resource::{nag_resource(stack, arn)}]",
            "Tags at launch on the instances and volumes the group launches, unknown ahead; only as part of "
            "RunInstances (ec2:CreateAction).",
        )


def session_manager_statements(any_instance: str) -> list[iam.PolicyStatement]:
    """What an instance role needs for Session Manager (shell access without SSH): registering the instance (on the
    instances of this account and region, `any_instance`) and its channels (no resource-level permissions)."""
    return [
        iam.PolicyStatement(
            sid="SessionManagerRegistration", actions=["ssm:UpdateInstanceInformation"], resources=[any_instance]
        ),
        iam.PolicyStatement(
            sid="SessionManagerChannels",
            actions=[
                "ssmmessages:CreateControlChannel",
                "ssmmessages:CreateDataChannel",
                "ssmmessages:OpenControlChannel",
                "ssmmessages:OpenDataChannel",
            ],
            resources=["*"],
        ),
    ]


def spot_group(
    scope: Construct,
    construct_id: str,
    *,
    name: str,
    vpc: ec2.IVpc,
    subnets: ec2.SubnetSelection,
    max_capacity: int,
    launch_template: ec2.LaunchTemplate,
    instance_types: list[str],
    allocation: autoscaling.SpotAllocationStrategy,
    tags: dict[str, str],
) -> autoscaling.AutoScalingGroup:
    """A spot-only group of GPU instances the control plane sizes: min 0, no desired capacity in the template (it
    starts at the minimum and a later `cdk deploy` leaves the control plane's setting alone instead of resetting it),
    the launch template over `instance_types`, no Capacity Rebalance (the control plane replaces), and `tags` on the
    group and every instance it launches."""
    group = autoscaling.AutoScalingGroup(
        scope,
        construct_id,
        auto_scaling_group_name=name,
        vpc=vpc,
        vpc_subnets=subnets,
        min_capacity=0,
        max_capacity=max_capacity,
        mixed_instances_policy=autoscaling.MixedInstancesPolicy(
            launch_template=launch_template,
            launch_template_overrides=[
                autoscaling.LaunchTemplateOverrides(instance_type=ec2.InstanceType(t)) for t in instance_types
            ],
            instances_distribution=autoscaling.InstancesDistribution(
                on_demand_base_capacity=0,
                on_demand_percentage_above_base_capacity=0,
                spot_allocation_strategy=allocation,
            ),
        ),
        capacity_rebalance=False,
    )
    for key, value in tags.items():
        Tags.of(group).add(key, value, apply_to_launched_instances=True)
    return group

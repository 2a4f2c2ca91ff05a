"""The worker region's network: a new VPC with public subnets only (no NAT gateway to pay for while
idle), or the operator's VPC and subnets named in context, imported without any AWS lookup."""

from __future__ import annotations

from aws_cdk import Fn, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import ExistingVpc


class WorkerNetwork(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        existing: ExistingVpc | None,
        max_azs: int,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        if existing is not None:
            self.vpc: ec2.IVpc = ec2.Vpc.from_vpc_attributes(
                self,
                "Vpc",
                vpc_id=existing.vpc_id,
                availability_zones=[Fn.select(i, Fn.get_azs()) for i in range(len(existing.subnet_ids))],
                public_subnet_ids=list(existing.subnet_ids),
            )
            self.subnets = ec2.SubnetSelection(
                subnets=[ec2.Subnet.from_subnet_id(self, f"Subnet{i}", s) for i, s in enumerate(existing.subnet_ids)]
            )
            return
        vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.64.0.0/16"),
            # Zones are chosen by CloudFormation (Fn::GetAZs) at deploy time: no lookup at synth.
            availability_zones=[Fn.select(i, Fn.get_azs()) for i in range(max_azs)],
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=20)
            ],
            # Nothing is placed in the default security group; restricting it would take a
            # custom-resource Lambda in every worker region.
            restrict_default_security_group=False,
        )
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        vpc.add_flow_log(
            "Rejected",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        self.vpc = vpc
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC)


def subnet_ids(vpc: ec2.IVpc, selection: ec2.SubnetSelection) -> list[str]:
    """The ids of the worker subnets (the GPU group's; job groups and the search instance launch into the same ones).
    Named subnets (an existing VPC's) are taken as they are: selecting them would ask for zones an imported subnet
    does not have."""
    if selection.subnets:
        return [subnet.subnet_id for subnet in selection.subnets]
    return vpc.select_subnets(
        subnet_type=selection.subnet_type, subnet_group_name=selection.subnet_group_name
    ).subnet_ids

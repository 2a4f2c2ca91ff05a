"""Template assertions for the worker stacks."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

from stacks.constructs.gpu_capacity import LAUNCH_HOOK_NAME
from tests.infrastructure.synth import Synthesized

WORKERS = ["us-west-2", "eu-west-1"]
GPU_AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"


def test_one_worker_stack_per_region_plus_the_hub(reference: Synthesized) -> None:
    assert set(reference.templates) == {"spothub-hub", "spothub-worker-us-west-2", "spothub-worker-eu-west-1"}


@pytest.mark.parametrize("region", WORKERS)
def test_new_vpc_has_public_subnets_and_no_nat_gateway(reference: Synthesized, region: str) -> None:
    worker = reference.worker(region)
    worker.resource_count_is("AWS::EC2::VPC", 1)
    worker.resource_count_is("AWS::EC2::NatGateway", 0)
    worker.resource_count_is("AWS::EC2::Subnet", 3)
    worker.has_resource_properties("AWS::EC2::FlowLog", {"TrafficType": "REJECT"})


@pytest.mark.parametrize("region", WORKERS)
def test_launch_template_requires_imdsv2_encrypts_root_and_uses_the_public_gpu_ami(
    reference: Synthesized, region: str
) -> None:
    worker = reference.worker(region)
    worker.has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {
            "LaunchTemplateData": Match.object_like(
                {
                    "MetadataOptions": {
                        "HttpTokens": "required",
                        "HttpPutResponseHopLimit": 1,
                        "InstanceMetadataTags": "enabled",
                    },
                    "BlockDeviceMappings": [
                        {
                            "DeviceName": "/dev/xvda",
                            "Ebs": {
                                "Encrypted": True,
                                "VolumeSize": 200,
                                "VolumeType": "gp3",
                                "DeleteOnTermination": True,
                            },
                        }
                    ],
                    "ImageId": {"Ref": Match.string_like_regexp("SsmParameterValue")},
                }
            )
        },
    )
    parameters = reference.templates[reference.config.worker_stack_name(region)]["Parameters"]
    assert any(
        p.get("Type") == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>" and p.get("Default") == GPU_AMI_PARAMETER
        for p in parameters.values()
    )


@pytest.mark.parametrize("region", WORKERS)
def test_user_data_joins_the_cluster_mounts_the_cache_and_installs_the_agent(
    reference: Synthesized, region: str
) -> None:
    (template,) = [
        t
        for t in reference.resources(reference.config.worker_stack_name(region), "AWS::EC2::LaunchTemplate").values()
        if t["Properties"]["LaunchTemplateName"] == "spothub-gpu"
    ]
    user_data = json.dumps(template["Properties"]["LaunchTemplateData"]["UserData"])
    assert "ECS_CLUSTER=" in user_data
    assert "ECS_ENABLE_GPU_SUPPORT=true" in user_data
    assert "efs _netdev,tls,iam" in user_data
    assert "aws s3 cp" in user_data
    assert "/opt/spothub-agent/install.sh" in user_data


@pytest.mark.parametrize("region", WORKERS)
def test_group_is_spot_only_price_capacity_optimized_and_starts_empty(reference: Synthesized, region: str) -> None:
    reference.worker(region).has_resource(
        "AWS::AutoScaling::AutoScalingGroup",
        {
            "Properties": {
                "AutoScalingGroupName": "spothub-gpu",
                "MinSize": "0",
                "MaxSize": "2",
                # Absent on purpose: a deploy must not reset the size the control plane set.
                "DesiredCapacity": Match.absent(),
                "CapacityRebalance": False,
                "MixedInstancesPolicy": {
                    "InstancesDistribution": {
                        "OnDemandBaseCapacity": 0,
                        "OnDemandPercentageAboveBaseCapacity": 0,
                        "SpotAllocationStrategy": "price-capacity-optimized",
                    },
                    "LaunchTemplate": {
                        "LaunchTemplateSpecification": Match.any_value(),
                        "Overrides": [
                            {"InstanceType": "g5.xlarge"},
                            {"InstanceType": "g6.xlarge"},
                            {"InstanceType": "g6e.xlarge"},
                        ],
                    },
                },
                "Tags": Match.array_with(
                    [
                        {"Key": "spothub:hub-region", "PropagateAtLaunch": True, "Value": "us-east-1"},
                        {"Key": "spothub:lifecycle-hook", "PropagateAtLaunch": True, "Value": LAUNCH_HOOK_NAME},
                    ]
                ),
            }
        },
    )


@pytest.mark.parametrize("region", WORKERS)
def test_launch_lifecycle_hook_abandons_by_default(reference: Synthesized, region: str) -> None:
    reference.worker(region).has_resource_properties(
        "AWS::AutoScaling::LifecycleHook",
        {
            "LifecycleHookName": LAUNCH_HOOK_NAME,
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "DefaultResult": "ABANDON",
            "HeartbeatTimeout": 1800,
        },
    )


@pytest.mark.parametrize("region", WORKERS)
def test_ecs_cluster_uses_the_group_as_its_capacity_provider(reference: Synthesized, region: str) -> None:
    worker = reference.worker(region)
    worker.has_resource_properties(
        "AWS::ECS::CapacityProvider",
        {
            "AutoScalingGroupProvider": Match.object_like(
                {
                    "ManagedScaling": {"Status": "DISABLED"},
                    "ManagedTerminationProtection": "DISABLED",
                    "ManagedDraining": "ENABLED",
                }
            )
        },
    )
    worker.has_resource_properties(
        "AWS::ECS::ClusterCapacityProviderAssociations",
        {"CapacityProviders": [{"Ref": Match.string_like_regexp("CapacityProvider")}]},
    )
    worker.has_resource_properties("AWS::ECS::Cluster", {"ClusterName": "spothub-gpu"})


@pytest.mark.parametrize("region", WORKERS)
def test_model_cache_is_encrypted_and_reachable_only_from_the_instances(reference: Synthesized, region: str) -> None:
    worker = reference.worker(region)
    worker.has_resource_properties(
        "AWS::EFS::FileSystem",
        {
            "Encrypted": True,
            "ThroughputMode": "elastic",
            # Idle weights cost the Infrequent Access price; a read brings them back.
            "LifecyclePolicies": [
                {"TransitionToIA": "AFTER_14_DAYS"},
                {"TransitionToPrimaryStorageClass": "AFTER_1_ACCESS"},
            ],
        },
    )
    worker.has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {
            "IpProtocol": "tcp",
            "FromPort": 2049,
            "ToPort": 2049,
            "SourceSecurityGroupId": {"Fn::GetAtt": [Match.string_like_regexp("InstanceSecurityGroup"), "GroupId"]},
        },
    )


def test_no_security_group_is_open_to_the_world_or_to_ssh(
    reference: Synthesized, hub_as_worker: Synthesized, search: Synthesized, search_in_hub: Synthesized
) -> None:
    for synthesized in (reference, hub_as_worker, search, search_in_hub):
        for name in synthesized.templates:
            for kind in ("AWS::EC2::SecurityGroup", "AWS::EC2::SecurityGroupIngress"):
                for logical_id, group in synthesized.resources(name, kind).items():
                    rules = group["Properties"].get("SecurityGroupIngress", [group["Properties"]])
                    for rule in rules:
                        assert rule.get("CidrIp") != "0.0.0.0/0", logical_id
                        assert rule.get("CidrIpv6") != "::/0", logical_id
                        assert not (rule.get("FromPort", -1) <= 22 <= rule.get("ToPort", -1)), logical_id


@pytest.mark.parametrize("region", WORKERS)
def test_aws_events_are_forwarded_to_the_hub_bus(reference: Synthesized, region: str) -> None:
    worker = reference.worker(region)
    name = reference.config.worker_stack_name(region)
    hub_bus = {"Fn::Join": ["", ["arn:aws:events:us-east-1:", {"Ref": "AWS::AccountId"}, ":event-bus/spothub-hub"]]}
    target = Match.array_with(
        [Match.object_like({"Arn": hub_bus, "RoleArn": Match.any_value(), "DeadLetterConfig": Match.any_value()})]
    )
    # Spot notices go to the hub bus raw, unfiltered (the hub tells its instances by its records); an interruption
    # warning also starts the capacity monitor (Standby for the group's own instances).
    for notice in ("EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation"):
        worker.has_resource_properties(
            "AWS::Events::Rule",
            {"EventPattern": {"source": ["aws.ec2"], "detail-type": [notice]}, "Targets": target},
        )
    rules = worker.find_resources("AWS::Events::Rule", {"Properties": {"EventPattern": {"source": ["aws.ec2"]}}})
    to_monitor = [r for r in rules.values() if "CapacityMonitor" in json.dumps(r["Properties"]["Targets"])]
    assert [r["Properties"]["EventPattern"]["detail-type"] for r in to_monitor] == [
        ["EC2 Spot Instance Interruption Warning"]
    ], "only an interruption starts the capacity monitor"
    # The worker's reports that the hub consumes (spothub_core.consumers), and nothing else of the worker bus.
    worker.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["spothub.worker"],
                "detail-type": [
                    "Spothub Batch Fleet Report",
                    "Spothub Instance Unhealthy",
                    "Spothub Launch Failed",
                    "Spothub Launch Progress",
                    "Spothub Launch Succeeded",
                    "Spothub Teardown Completed",
                ],
            },
            "Targets": target,
        },
    )
    worker.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.autoscaling"],
                "detail-type": ["EC2 Instance Launch Unsuccessful"],
                "detail": {"AutoScalingGroupName": ["spothub-gpu"]},
            },
            "Targets": target,
        },
    )
    # ECS task changes: only the model deployments' tasks (the GPU cluster's, started by the controller).
    patterns = [r["Properties"]["EventPattern"] for r in reference.resources(name, "AWS::Events::Rule").values()]
    (cluster,) = reference.resources(name, "AWS::ECS::Cluster")
    assert [p for p in patterns if "aws.ecs" in p["source"]] == [
        {
            "source": ["aws.ecs"],
            "detail-type": ["ECS Task State Change"],
            "detail": {"clusterArn": [{"Fn::GetAtt": [cluster, "Arn"]}], "startedBy": ["spothub-deployments"]},
        }
    ]
    worker.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": [{"Action": "events:PutEvents", "Effect": "Allow", "Resource": hub_bus}],
                "Version": "2012-10-17",
            }
        },
    )


def test_hub_as_worker_deploys_a_worker_in_the_hub_region_into_the_named_vpc(hub_as_worker: Synthesized) -> None:
    assert set(hub_as_worker.templates) == {"gpu-prod-hub", "gpu-prod-worker-us-east-1"}
    worker = hub_as_worker.worker("us-east-1")
    worker.resource_count_is("AWS::EC2::VPC", 0)
    worker.resource_count_is("AWS::EC2::Subnet", 0)
    worker.has_resource_properties(
        "AWS::AutoScaling::AutoScalingGroup",
        {
            "VPCZoneIdentifier": ["subnet-0aaa1111", "subnet-0bbb2222"],
            "MixedInstancesPolicy": Match.object_like(
                {
                    "LaunchTemplate": Match.object_like(
                        {"Overrides": [{"InstanceType": "p4d.24xlarge"}, {"InstanceType": "p5.48xlarge"}]}
                    )
                }
            ),
        },
    )
    worker.has_resource_properties("AWS::EC2::SecurityGroup", {"VpcId": "vpc-0123456789abcdef0"})
    worker.has_resource_properties("AWS::EFS::MountTarget", {"SubnetId": "subnet-0aaa1111"})
    hub_as_worker.hub.has_resource_properties(
        "AWS::SSM::Parameter", {"Name": "/spothub/gpu-prod/capacity-fallback", "Value": "none"}
    )

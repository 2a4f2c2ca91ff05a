"""The sandbox's addition to moto for UpdateAutoScalingGroup with part of a mixed instances policy: moto alone
fails (a loud sign when an upgrade of moto changes it), patched it merges the part as AWS does."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from spothub.sandbox import autoscaling_updates

REGION = "us-west-2"
POLICY = {
    "LaunchTemplate": {
        "LaunchTemplateSpecification": {"LaunchTemplateName": "nodes", "Version": "$Latest"},
        "Overrides": [{"InstanceType": "g5.12xlarge"}, {"InstanceType": "g6.12xlarge"}],
    },
    "InstancesDistribution": {
        "OnDemandBaseCapacity": 0,
        "OnDemandPercentageAboveBaseCapacity": 0,
        "SpotAllocationStrategy": "capacity-optimized",
    },
}


@pytest.fixture
def autoscaling() -> Iterator[object]:
    with mock_aws():
        boto3.client("ec2", REGION).create_launch_template(
            LaunchTemplateName="nodes", LaunchTemplateData={"ImageId": "ami-12345678"}
        )
        client = boto3.client("autoscaling", REGION)
        client.create_auto_scaling_group(
            AutoScalingGroupName="nodes",
            MinSize=0,
            MaxSize=2,
            AvailabilityZones=[f"{REGION}a"],
            MixedInstancesPolicy=POLICY,
        )
        yield client


def policy(client: object) -> dict:
    return client.describe_auto_scaling_groups(AutoScalingGroupNames=["nodes"])["AutoScalingGroups"][0][  # type: ignore[attr-defined]
        "MixedInstancesPolicy"
    ]


def test_moto_alone_fails_on_an_update_naming_only_the_distribution(autoscaling: object) -> None:
    with pytest.raises(KeyError):
        autoscaling.update_auto_scaling_group(  # type: ignore[attr-defined]
            AutoScalingGroupName="nodes", MixedInstancesPolicy={"InstancesDistribution": {"OnDemandBaseCapacity": 2}}
        )


def test_patched_the_distribution_changes_and_the_template_and_overrides_stay(autoscaling: object) -> None:
    autoscaling_updates.apply()
    try:
        autoscaling.update_auto_scaling_group(  # type: ignore[attr-defined]
            AutoScalingGroupName="nodes", MixedInstancesPolicy={"InstancesDistribution": {"OnDemandBaseCapacity": 2}}
        )
        after = policy(autoscaling)
        assert after["InstancesDistribution"] == {**POLICY["InstancesDistribution"], "OnDemandBaseCapacity": 2}
        assert [o["InstanceType"] for o in after["LaunchTemplate"]["Overrides"]] == ["g5.12xlarge", "g6.12xlarge"]
        assert after["LaunchTemplate"]["LaunchTemplateSpecification"]["LaunchTemplateName"] == "nodes"
        autoscaling.update_auto_scaling_group(AutoScalingGroupName="nodes", MaxSize=3)  # type: ignore[attr-defined]
        assert policy(autoscaling) == after  # an update naming no policy keeps it
    finally:
        autoscaling_updates.undo()

"""The capacity_monitor state machine's task through the worker function's entry point: is a noticed instance
one of ours, and on an interruption, out of the group's count."""

from __future__ import annotations

from types import ModuleType

import boto3

from tests.integration.worker_region.region import LAUNCH_ID, REGION, ec2_instance, group, in_service, launched, run

# --- capacity_monitor: identify ---------------------------------------------------------------------


def test_identify_on_an_interruption_takes_the_instance_out_of_the_group(handler: ModuleType) -> None:
    instance_id = launched(handler)
    result = run(handler, "identify", instance_id=instance_id, kind="interruption")
    assert result == {"ours": True, "replica_id": "replica-0", "launch_id": LAUNCH_ID, "kind": "interruption"}
    member = next(m for m in group()["Instances"] if m["InstanceId"] == instance_id)
    assert member["LifecycleState"] == "Standby"
    assert group()["DesiredCapacity"] == 0


def test_identify_on_a_rebalance_leaves_the_instance_in_service(handler: ModuleType) -> None:
    instance_id = launched(handler)
    result = run(handler, "identify", instance_id=instance_id, kind="rebalance")
    assert (result["ours"], result["replica_id"], result["kind"]) == (True, "replica-0", "rebalance")
    assert instance_id in in_service()
    assert group()["DesiredCapacity"] == 1


def test_identify_an_instance_outside_the_group(handler: ModuleType) -> None:
    stranger = boto3.client("ec2", region_name=REGION).run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="g5.xlarge"
    )["Instances"][0]["InstanceId"]
    assert run(handler, "identify", instance_id=stranger, kind="interruption") == {"ours": False}
    assert ec2_instance(stranger)["State"]["Name"] == "running"

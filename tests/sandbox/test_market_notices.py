"""The market's notices: capacity falling in steps interrupts only what is beyond it, and instances
left in a pool with no free capacity are warned first with a rebalance recommendation."""

from __future__ import annotations

from spothub.sandbox.sandbox import ACCOUNT, Sandbox

REGION = "us-west-2"


def test_stepwise_capacity_drops_interrupt_only_the_excess_and_warn_the_rest(fresh_sandbox: Sandbox) -> None:
    market, fleet = fresh_sandbox.market, fresh_sandbox.fleet
    assert market is not None and fleet is not None
    autoscaling = fresh_sandbox.client("autoscaling", REGION)
    (group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["spothub-gpu"])["AutoScalingGroups"]
    serving_types = {o["InstanceType"] for o in group["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]}
    pools = market.pools(REGION)
    # One pool the serving group launches into (the market also holds the node classes' types).
    only = next(p for p in pools if p.instance_type in serving_types)
    for pool in pools:
        if pool is not only:
            market.set_zone(pool.zone, pool.instance_type, capacity=0)
    market.set_zone(only.zone, only.instance_type, capacity=2)
    autoscaling.set_desired_capacity(AutoScalingGroupName="spothub-gpu", DesiredCapacity=2)
    running = fresh_sandbox.wait_for(lambda: len(fleet.running(REGION)) == 2 and fleet.running(REGION), timeout_s=15)
    assert {(i.zone, i.instance_type) for i in running} == {(only.zone, only.instance_type)}

    market.set_zone(only.zone, only.instance_type, capacity=1)
    market.set_zone(only.zone, only.instance_type, capacity=1)  # the same level again: nothing more
    states = sorted(i.state for i in fleet.running(REGION))
    assert states == ["interrupting", "running"]
    survivor = next(i for i in fleet.running(REGION) if i.state == "running")
    assert survivor.rebalance_sent, "the pool has no free capacity left: the survivor is at elevated risk"
    assert survivor.imds.lookup("/latest/meta-data/events/recommendations/rebalance")
    # EC2 puts its notices on the region's default bus (the capacity monitor decides what reaches the hub).
    default_bus = f"{REGION}:{ACCOUNT}:event-bus/default"
    assert len(fresh_sandbox.events(default_bus, "EC2 Spot Instance Interruption Warning")) == 1
    assert len(fresh_sandbox.events(default_bus, "EC2 Instance Rebalance Recommendation")) == 1

    market.set_zone(only.zone, only.instance_type, capacity=0)
    assert len(fresh_sandbox.events(default_bus, "EC2 Spot Instance Interruption Warning")) == 2

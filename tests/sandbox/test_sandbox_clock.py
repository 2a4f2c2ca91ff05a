"""One clock in the sandbox, at speed: the deployed handlers, the agents, Step Functions' waits and DynamoDB TTL all
follow the sandbox clock (spothub/sandbox/shared_clock.py, emulator_patches, ttl_sweeper.py), so what takes
minutes or an hour on AWS happens in seconds when the clock is advanced. Each test uses the session's sandbox.

The clock only moves forward: each advance here stays for the rest of the session (every later test sees the same
later time everywhere, so nothing depends on the real date).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from spothub.sandbox.sandbox import Sandbox
from spothub.sandbox.shared_clock import real_time
from spothub_core.dal.exclusions import ExclusionStore
from spothub_core.timings import (
    CAPACITY_EXCLUSION_SECONDS,
    LAUNCH_HEARTBEAT_SECONDS,
    SPOT_RETURN_SECONDS,
    TIMEOUT_EXCLUSION_SECONDS,
)
from tests.sandbox.test_spot_provisioning import (
    STOPPED,
    eventually,
    executions,
    items,
    launches,
    ranked_regions,
    running_orchestrators,
    serving,
    set_region,
    toggle,
    trail,
)


def _state_table(sandbox: Sandbox) -> Any:
    return boto3.resource(
        "dynamodb", region_name=sandbox.hub.region, endpoint_url=sandbox.aws_endpoint_url, **sandbox.credentials()
    ).Table(sandbox.hub.outputs["StateTableName"])


def _region_states(sandbox: Sandbox) -> dict[str, str]:
    answer = sandbox.request("GET", "regions")
    assert answer.status_code == 200, answer.text
    return {r["region"]: r["state"] for r in answer.json()["regions"]}


def test_this_process_reads_the_sandbox_clock_as_its_wall_clock(fresh_sandbox: Sandbox) -> None:
    clock = fresh_sandbox.clock
    ahead = clock.now() - real_time()
    fresh_sandbox.clock.advance(3600)
    assert time.time() == pytest.approx(clock.now(), abs=1.0)
    assert clock.now() - real_time() == pytest.approx(ahead + 3600, abs=5.0)
    # Signed with the sandbox clock (hours ahead of the real time) or with the real time (the CLI, curl): both pass.
    assert fresh_sandbox.request("GET", "regions").status_code == 200


def test_a_region_exclusion_ends_when_the_clock_passes_it(fresh_sandbox: Sandbox) -> None:
    _west, eu = (w.region for w in fresh_sandbox.workers)
    until = fresh_sandbox.clock.now() + CAPACITY_EXCLUSION_SECONDS
    assert ExclusionStore(_state_table(fresh_sandbox)).exclude(eu, until, "capacity: test", kind="capacity")
    assert _region_states(fresh_sandbox)[eu] == "excluded"

    fresh_sandbox.clock.advance(CAPACITY_EXCLUSION_SECONDS - 60)
    assert _region_states(fresh_sandbox)[eu] == "excluded", "a minute is left"
    fresh_sandbox.clock.advance(61)
    assert _region_states(fresh_sandbox)[eu] == "ok", "the platform status function sees the exclusion ended"


def test_an_item_past_its_ttl_is_deleted_when_the_clock_passes_it(fresh_sandbox: Sandbox) -> None:
    dynamodb = fresh_sandbox.client("dynamodb", fresh_sandbox.hub.region)
    name = fresh_sandbox.hub.outputs["StateTableName"]
    described = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert described == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}, "as the template sets it"
    now = int(fresh_sandbox.clock.now())
    table = _state_table(fresh_sandbox)
    for sk, expires_at in (("soon", now + 120), ("later", now + 3600)):
        table.put_item(Item={"pk": "TTL-TEST", "sk": sk, "expires_at": expires_at})
    table.put_item(Item={"pk": "TTL-TEST", "sk": "never"})

    def kept() -> list[str]:
        found = table.query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": "TTL-TEST"})
        return sorted(item["sk"] for item in found["Items"])

    time.sleep(2.5)  # a periodic sweep or more: nothing has expired
    assert kept() == ["later", "never", "soon"]
    fresh_sandbox.clock.advance(121)  # swept at once
    assert kept() == ["later", "never"]


def test_a_replica_on_on_demand_returns_to_spot_when_capacity_comes_back(spot: Sandbox) -> None:
    assert spot.market is not None
    for region in (w.region for w in spot.workers):
        set_region(spot, region, capacity=0)
    toggle(spot, action="enable")
    on_demand = serving(spot, lambda d: d["instances"][0]["capacity_type"] == "on-demand", "the replica on on-demand")
    (old,) = [i["instance_id"] for i in on_demand["instances"]]

    # Spot capacity is back, but the regions stay excluded for a quarter of an hour (their capacity errors); the
    # orchestrator looks again every SpotReturnSeconds. Past both, its next look finds spot and it moves back.
    spot.market.restore()
    advanced_at = real_time()
    spot.clock.advance(CAPACITY_EXCLUSION_SECONDS + SPOT_RETURN_SECONDS)
    back = serving(
        spot,
        lambda d: [(i["capacity_type"], i["instance_id"] == old) for i in d["instances"]] == [("spot", False)],
        "the replica back on spot, alone",
    )
    (replica,) = back["replicas"]
    assert replica["capacity_type"] == "spot", replica
    assert spot.fleet is not None
    eventually(spot, lambda: spot.fleet.instances[old].state == "terminated", "the on-demand instance goes")  # type: ignore[union-attr]
    # The new instance's agent (its own process) recorded its lifecycle verdict by the sandbox clock, well past the
    # real time.
    (new,) = [i["instance_id"] for i in back["instances"]]
    state = json.loads((Path(spot.options.state_dir) / "work" / "instances" / new / "state.json").read_text())
    ahead = CAPACITY_EXCLUSION_SECONDS + SPOT_RETURN_SECONDS
    assert state["lifecycle"]["at"] - advanced_at > ahead, state["lifecycle"]
    assert state["lifecycle"]["at"] <= spot.clock.now()


def test_a_launch_whose_worker_falls_silent_is_abandoned_at_its_heartbeat_timeout(spot: Sandbox) -> None:
    best, second = ranked_regions(spot)
    toggle(spot, action="enable")

    def worker_launch() -> list[str]:
        return [arn for arn, status in executions(spot).items() if status == "RUNNING" and f":{best}:" in arn]

    (lost, *_) = eventually(spot, worker_launch, f"the launch runs in {best}")
    # The worker is lost: it reports nothing more, not even a heartbeat.
    sfn = spot.client("stepfunctions", best)
    sfn.stop_execution(executionArn=lost, cause="the worker is lost")
    STOPPED.add(lost)
    # Its reports so far (the scale-out's progress) reach the hub before the clock jumps: each is a heartbeat of
    # the launch's task token, and one consumed after the jump would restart the heartbeat's 55 minutes there. A
    # report its task was putting as the stop came is put once the execution has ended (ABORTED), then consumed.
    eventually(
        spot,
        lambda: sfn.describe_execution(executionArn=lost)["status"] == "ABORTED",
        "the lost launch ends",
        evidence=lambda: sfn.describe_execution(executionArn=lost)["status"],
    )
    spot.wait_for_async_invocations()
    (first,) = launches(spot)
    assert first["region"] == best

    spot.clock.advance(LAUNCH_HEARTBEAT_SECONDS - 60)
    time.sleep(1.0)
    assert items(spot, "LAUNCH")[first["launch_id"]]["status"] == "pending", "a minute of the heartbeat is left"
    abandoned_at = spot.clock.now() + 60
    spot.clock.advance(61)

    launch = eventually(
        spot,
        lambda: (record := items(spot, "LAUNCH")[first["launch_id"]])["status"] == "abandoned" and record,
        "the orchestrator abandons the launch",
        evidence=lambda: items(spot, "LAUNCH"),
        # The 55-minute advance fired every scheduled rule inside it (about 220 invocations, one at a time): the
        # abandon's own invocation may wait behind them on a loaded machine.
        timeout_s=90,
    )
    orchestrators = {arn: trail(spot, arn, last=30) for arn in running_orchestrators(spot)}
    if launch["error"] != "States.HeartbeatTimeout":
        pytest.fail(f"abandoned for {launch['error']}, not the heartbeat: {json.dumps(orchestrators, indent=1)}")
    excluded = items(spot, "EXCLUSION")[best]
    assert excluded["kind"] == "timeout", excluded
    assert float(excluded["until"]) >= abandoned_at + TIMEOUT_EXCLUSION_SECONDS - 5, (
        f"excluded from the sandbox clock's now: {excluded}"
    )
    eventually(spot, lambda: [launch["region"] for launch in launches(spot)][1:] == [second], f"it tries {second}")


def test_timestamp_waits_task_timeouts_and_retry_intervals_follow_the_clock(fresh_sandbox: Sandbox) -> None:
    sfn = fresh_sandbox.client("stepfunctions")
    sqs = fresh_sandbox.client("sqs")
    queue_url = sqs.create_queue(QueueName="clock-tokens")["QueueUrl"]
    iam = fresh_sandbox.client("iam")
    role = iam.create_role(RoleName="clock-waits", AssumeRolePolicyDocument="{}")["Role"]
    iam.put_role_policy(
        RoleName="clock-waits",
        PolicyName="send",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}]}
        ),
    )
    hour = 3600
    definition = {
        "StartAt": "Until",
        "States": {
            "Until": {"Type": "Wait", "TimestampPath": "$.until", "Next": "Token"},
            "Token": {  # nobody answers: the task times out after an hour of the clock
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {"QueueUrl": queue_url, "MessageBody": {"token.$": "$$.Task.Token"}},
                "TimeoutSeconds": hour,
                "Catch": [{"ErrorEquals": ["States.Timeout"], "ResultPath": "$.timeout", "Next": "Missing"}],
            },
            "Missing": {  # fails, is retried an hour of the clock later, fails again
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage",
                "Parameters": {"QueueUrl": queue_url + "-missing", "MessageBody": "x"},
                "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": hour, "MaxAttempts": 1}],
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.missing", "Next": "Done"}],
            },
            "Done": {"Type": "Succeed"},
        },
    }
    machine = sfn.create_state_machine(name="clock-waits", roleArn=role["Arn"], definition=json.dumps(definition))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(fresh_sandbox.clock.now() + hour))
    execution = sfn.start_execution(stateMachineArn=machine["stateMachineArn"], input=json.dumps({"until": until}))

    def entered() -> list[str]:
        events = sfn.get_execution_history(executionArn=execution["executionArn"])["events"]
        return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]

    def failures() -> int:
        events = sfn.get_execution_history(executionArn=execution["executionArn"])["events"]
        return sum(1 for e in events if e["type"] == "TaskFailed")

    time.sleep(1.0)
    assert entered() == ["Until"], "waiting for the timestamp, an hour away"
    fresh_sandbox.clock.advance(hour + 1)
    fresh_sandbox.wait_for(lambda: entered() == ["Until", "Token"])
    time.sleep(1.0)
    assert entered() == ["Until", "Token"], "waiting for the token"
    fresh_sandbox.clock.advance(hour + 1)
    fresh_sandbox.wait_for(lambda: failures() == 1)
    time.sleep(1.0)
    assert failures() == 1, "the retry waits its interval"
    fresh_sandbox.clock.advance(hour + 1)
    fresh_sandbox.wait_for(
        lambda: sfn.describe_execution(executionArn=execution["executionArn"])["status"] == "SUCCEEDED"
    )
    events = sfn.get_execution_history(executionArn=execution["executionArn"])["events"]
    assert [e["taskTimedOutEventDetails"]["error"] for e in events if e["type"] == "TaskTimedOut"] == ["States.Timeout"]
    assert entered() == ["Until", "Token", "Missing", "Done"]
    assert failures() == 2

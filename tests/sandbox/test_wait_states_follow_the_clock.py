"""A state machine's Wait state waits on the sandbox clock: advancing it ends the wait."""

from __future__ import annotations

import json
import time

from spothub.sandbox.sandbox import Sandbox


def _status(sandbox: Sandbox, execution: str) -> str:
    return sandbox.client("stepfunctions").describe_execution(executionArn=execution)["status"]


def test_a_ten_minute_wait_ends_when_the_clock_is_advanced(fresh_sandbox: Sandbox) -> None:
    sfn = fresh_sandbox.client("stepfunctions")
    role = fresh_sandbox.client("iam").create_role(RoleName="wait-clock", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    definition = {
        "StartAt": "Wait",
        "States": {"Wait": {"Type": "Wait", "Seconds": 600, "Next": "Done"}, "Done": {"Type": "Succeed"}},
    }
    machine = sfn.create_state_machine(name="wait-clock", roleArn=role, definition=json.dumps(definition))
    execution = sfn.start_execution(stateMachineArn=machine["stateMachineArn"], input="{}")["executionArn"]

    time.sleep(0.5)
    assert _status(fresh_sandbox, execution) == "RUNNING"
    fresh_sandbox.clock.advance(590)  # real time moves the clock too (speed 1)
    time.sleep(0.5)
    assert _status(fresh_sandbox, execution) == "RUNNING"
    fresh_sandbox.clock.advance(15)
    assert fresh_sandbox.wait_for(lambda: _status(fresh_sandbox, execution) == "SUCCEEDED", timeout_s=5)

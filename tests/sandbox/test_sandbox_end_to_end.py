"""The sandbox end to end, on the session's sandbox: deployed assets and handlers, Step Functions
error handling, EventBridge rule targets, scheduled rules, the signed API, the spot market and
fleet reaching the hub bus, and the control surface over HTTP.

Every resource a test creates in the emulator has a unique name and is deleted when the test ends:
the sandbox is shared by the whole session, and its reset empties queues and tables but keeps rules.
"""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from spothub.sandbox.sandbox import ACCESS_KEY_ID, ACCOUNT, SECRET_ACCESS_KEY, Sandbox
from tests.lambda_events import rest_proxy_event

OTHER_REGION = "us-west-2"  # a region other than the hub's, for cross-region delivery
FULL_REGION = "us-west-2"
EMPTY_REGION = "eu-west-1"
GROUP = "spothub-gpu"
POLL_S = 15.0

# Test functions, run in-process by the sandbox's Lambda runtime. Each records what it received on
# the queue named by RECORD_QUEUE_URL, through the emulator (AWS_ENDPOINT_URL is in its environment).
HANDLERS = """
import json
import os

import boto3


class SpotCapacityError(Exception):
    pass


def _record(event):
    queue_url = os.environ.get("RECORD_QUEUE_URL")
    if queue_url:
        boto3.client("sqs").send_message(QueueUrl=queue_url, MessageBody=json.dumps(event))


def echo(event, context):
    _record(event)
    return event


def fail(event, context):
    _record(event)
    raise SpotCapacityError("no spot capacity in any pool")
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def handler_zip(function_name: str) -> bytes:
    # Code of its own per function: functions sharing a zip share an unpacked copy, and unpacking it for
    # two first invocations at once races (see test_units.py::test_concurrent_first_invocations_...).
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("probe.py", f"# {function_name}\n{HANDLERS}")
    return buffer.getvalue()


class Resources:
    """Creates test resources in the sandbox's emulator and deletes them, newest first, at teardown."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._undo: list[Callable[[], Any]] = []
        self._role_arn: str | None = None

    def close(self) -> None:
        for undo in reversed(self._undo):
            try:
                undo()
            except Exception as exc:  # teardown goes on: the emulator may have dropped it already
                print(f"cleanup: {exc}")

    def role_arn(self) -> str:
        if self._role_arn is None:
            iam = self.sandbox.client("iam")
            name = unique("spothub-test-role")
            self._role_arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
            # These tests exercise the sandbox's mechanics, not least privilege (test_iam_enforcement.py).
            everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            iam.put_role_policy(RoleName=name, PolicyName="everything", PolicyDocument=json.dumps(everything))
            self._undo.append(lambda: iam.delete_role_policy(RoleName=name, PolicyName="everything"))
            self._undo.append(lambda: iam.delete_role(RoleName=name))
        return self._role_arn

    def queue(self, region: str | None = None) -> tuple[str, str]:
        """A queue's URL and ARN."""
        sqs = self.sandbox.client("sqs", region)
        url = sqs.create_queue(QueueName=unique("spothub-test"))["QueueUrl"]
        self._undo.append(lambda: sqs.delete_queue(QueueUrl=url))
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        # EventBridge sends to a queue (a target, a dead-letter queue) only where the queue's policy lets it.
        from_rules = {"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage"}
        policy = {"Version": "2012-10-17", "Statement": [{**from_rules, "Resource": arn}]}
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
        return url, arn

    def function(self, handler: str, record_queue_url: str | None = None, region: str | None = None) -> str:
        """A function running `probe.<handler>` from HANDLERS; returns its ARN."""
        client = self.sandbox.client("lambda", region)
        name = unique(f"spothub-test-{handler}")
        environment = {"RECORD_QUEUE_URL": record_queue_url} if record_queue_url else {}
        arn = client.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=self.role_arn(),
            Handler=f"probe.{handler}",
            Code={"ZipFile": handler_zip(name)},
            Environment={"Variables": environment},
            Timeout=30,
        )["FunctionArn"]
        self._undo.append(lambda: client.delete_function(FunctionName=name))
        # EventBridge invokes a function only where the function's policy lets it.
        client.add_permission(
            FunctionName=name, StatementId="events", Action="lambda:InvokeFunction", Principal="events.amazonaws.com"
        )
        return arn

    def state_machine(self, definition: dict[str, Any], region: str | None = None) -> str:
        client = self.sandbox.client("stepfunctions", region)
        arn = client.create_state_machine(
            name=unique("spothub-test"), definition=json.dumps(definition), roleArn=self.role_arn()
        )["stateMachineArn"]
        self._undo.append(lambda: client.delete_state_machine(stateMachineArn=arn))
        return arn

    def bus(self, region: str | None = None) -> tuple[str, str]:
        """An event bus's name and ARN."""
        events = self.sandbox.client("events", region)
        name = unique("spothub-test")
        arn = events.create_event_bus(Name=name)["EventBusArn"]
        self._undo.append(lambda: events.delete_event_bus(Name=name))
        return name, arn

    def rule(
        self,
        targets: list[dict[str, Any]],
        *,
        bus: str = "default",
        pattern: dict[str, Any] | None = None,
        schedule: str | None = None,
        region: str | None = None,
    ) -> str:
        """A rule with these targets (Ids added); returns its ARN."""
        events = self.sandbox.client("events", region)
        name = unique("spothub-test")
        if schedule:
            arn = events.put_rule(Name=name, EventBusName=bus, ScheduleExpression=schedule)["RuleArn"]
        else:
            arn = events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(pattern))["RuleArn"]
        ids = [f"t{i}" for i in range(len(targets))]
        self._undo.append(lambda: events.delete_rule(Name=name, EventBusName=bus))
        self._undo.append(lambda: events.remove_targets(Rule=name, EventBusName=bus, Ids=ids))
        events.put_targets(
            Rule=name, EventBusName=bus, Targets=[{"Id": i, **t} for i, t in zip(ids, targets, strict=True)]
        )
        return arn


@pytest.fixture
def resources(fresh_sandbox: Sandbox) -> Iterator[Resources]:
    created = Resources(fresh_sandbox)
    try:
        yield created
    finally:
        created.close()


def received(
    sandbox: Sandbox, queue_url: str, count: int = 1, timeout_s: float = POLL_S, region: str | None = None
) -> list[Any]:
    """The JSON bodies of the first `count` messages on a queue (fewer only if the timeout passes)."""
    return _drain(sandbox.client("sqs", region), queue_url, count, timeout_s)


def _drain(sqs: Any, queue_url: str, count: int, timeout_s: float) -> list[Any]:
    bodies: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(bodies) < count and time.monotonic() < deadline:
        wait = max(0, min(1, int(deadline - time.monotonic())))
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait).get(
            "Messages", []
        ):
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        if wait == 0:
            time.sleep(0.1)
    return bodies


def finished(sandbox: Sandbox, execution_arn: str, timeout_s: float = POLL_S) -> dict[str, Any]:
    sfn = sandbox.client("stepfunctions")

    def done() -> dict[str, Any] | None:
        described = sfn.describe_execution(executionArn=execution_arn)
        return None if described["status"] == "RUNNING" else described

    return sandbox.wait_for(done, timeout_s=timeout_s)


def put_event(sandbox: Sandbox, detail: dict[str, Any], *, bus: str = "default", source: str = "spothub.test") -> None:
    answer = sandbox.client("events").put_events(
        Entries=[{"Source": source, "DetailType": "Probe", "Detail": json.dumps(detail), "EventBusName": bus}]
    )
    assert answer["FailedEntryCount"] == 0, answer


def hub_bus(sandbox: Sandbox) -> str:
    return ":event-bus/" + sandbox.hub.outputs["HubBusArn"].rsplit("/", 1)[-1]


def test_the_sandbox_resets_twice_within_a_minute(sandbox: Sandbox) -> None:
    # Tests follow each other within a minute; AWS's one-PurgeQueue-a-minute limit must not stop a reset.
    sandbox.reset()
    sandbox.reset()


PATTERN = {"source": ["spothub.test"], "detail-type": ["Probe"]}


# --- a: assets and handlers ---------------------------------------------------------------------------


def _stack_template(sandbox: Sandbox) -> dict[str, Any]:
    body = sandbox.client("cloudformation").get_template(StackName=sandbox.hub.stack_name)["TemplateBody"]
    return json.loads(body) if isinstance(body, str) else body


def test_hub_lambda_code_is_in_the_cdk_asset_bucket(fresh_sandbox: Sandbox) -> None:
    template = _stack_template(fresh_sandbox)
    s3 = fresh_sandbox.client("s3")
    expected_bucket = f"cdk-hnb659fds-assets-{ACCOUNT}-{fresh_sandbox.hub.region}"
    assert expected_bucket == "cdk-hnb659fds-assets-123456789012-us-east-1"
    referenced = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Lambda::Function":
            referenced[logical_id] = (resource["Properties"]["Code"], resource["Properties"]["Handler"])
        elif resource["Type"] == "AWS::Lambda::LayerVersion":
            referenced[logical_id] = (resource["Properties"]["Content"], None)
    assert any(handler for _code, handler in referenced.values()), "the hub has no functions"
    assert any(handler is None for _code, handler in referenced.values()), "the hub has no layer"
    for logical_id, (code, handler) in referenced.items():
        bucket = code["S3Bucket"]["Fn::Sub"].replace("${AWS::AccountId}", ACCOUNT)
        assert bucket == expected_bucket, logical_id
        archive = zipfile.ZipFile(io.BytesIO(s3.get_object(Bucket=bucket, Key=code["S3Key"])["Body"].read()))
        names = archive.namelist()
        if handler is None:
            assert any(name.startswith("python/") for name in names), f"{logical_id}: no python/ in the layer"
        else:
            module = handler.rpartition(".")[0].replace(".", "/") + ".py"
            assert module in names, f"{logical_id}: {module} is not in {code['S3Key']}"


def test_the_hub_status_function_answers_through_the_lambda_api(fresh_sandbox: Sandbox) -> None:
    resources = fresh_sandbox.client("cloudformation").list_stack_resources(StackName=fresh_sandbox.hub.stack_name)
    (function_name,) = [
        r["PhysicalResourceId"]
        for r in resources["StackResourceSummaries"]
        if r["ResourceType"] == "AWS::Lambda::Function" and "PlatformStatus" in r["LogicalResourceId"]
    ]
    answer = fresh_sandbox.client("lambda").invoke(
        FunctionName=function_name, Payload=json.dumps(rest_proxy_event("GET", "/status")).encode()
    )
    payload = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, payload
    assert payload["statusCode"] == 200, payload
    assert json.loads(payload["body"])["state_table"] == "reachable"


# --- b: a handler's exception as Step Functions sees it ----------------------------------------------------


def _task_definition(function_arn: str, *, retry: bool, catch_error: str) -> dict[str, Any]:
    task: dict[str, Any] = {
        "Type": "Task",
        "Resource": function_arn,
        "Catch": [{"ErrorEquals": [catch_error], "ResultPath": "$.error", "Next": "Caught"}],
        "End": True,
    }
    if retry:
        task["Retry"] = [
            {"ErrorEquals": ["SpotCapacityError"], "MaxAttempts": 2, "IntervalSeconds": 1, "BackoffRate": 1.0}
        ]
    return {
        "StartAt": "Launch",
        "States": {
            "Launch": task,
            "Caught": {"Type": "Pass", "Result": "caught", "ResultPath": "$.outcome", "End": True},
        },
    }


def run_to_end(sandbox: Sandbox, machine: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Start an execution of `machine` and wait until it is no longer running."""
    execution = sandbox.client("stepfunctions").start_execution(
        stateMachineArn=machine, name=unique("run"), input=json.dumps(payload)
    )["executionArn"]
    return execution, finished(sandbox, execution)


def test_a_catch_on_the_error_name_handles_a_handler_exception(fresh_sandbox: Sandbox, resources: Resources) -> None:
    attempts_url, _ = resources.queue()
    function = resources.function("fail", record_queue_url=attempts_url)
    machine = resources.state_machine(_task_definition(function, retry=False, catch_error="SpotCapacityError"))
    execution, described = run_to_end(fresh_sandbox, machine, {"job": "j-1"})
    assert described["status"] == "SUCCEEDED", described
    output = json.loads(described["output"])
    assert output["outcome"] == "caught"
    assert output["job"] == "j-1"
    assert output["error"]["Error"] == "SpotCapacityError"
    assert json.loads(output["error"]["Cause"])["errorMessage"] == "no spot capacity in any pool"
    assert received(fresh_sandbox, attempts_url) == [{"job": "j-1"}]
    history = fresh_sandbox.client("stepfunctions").get_execution_history(executionArn=execution)["events"]
    kinds = [event["type"] for event in history]
    assert kinds.count("LambdaFunctionFailed") == 1
    assert "PassStateEntered" in kinds
    assert kinds[-1] == "ExecutionSucceeded"


def test_a_catch_on_another_error_name_lets_the_execution_fail(fresh_sandbox: Sandbox, resources: Resources) -> None:
    function = resources.function("fail")
    machine = resources.state_machine(_task_definition(function, retry=False, catch_error="QuotaExceededError"))
    _, described = run_to_end(fresh_sandbox, machine, {})
    assert described["status"] == "FAILED", described
    assert described["error"] == "SpotCapacityError"


def test_a_retry_reinvokes_the_handler_then_the_catch_handles_it(fresh_sandbox: Sandbox, resources: Resources) -> None:
    attempts_url, _ = resources.queue()
    function = resources.function("fail", record_queue_url=attempts_url)
    machine = resources.state_machine(_task_definition(function, retry=True, catch_error="SpotCapacityError"))
    _, described = run_to_end(fresh_sandbox, machine, {"job": "j-2"})
    assert described["status"] == "SUCCEEDED", described
    assert json.loads(described["output"])["outcome"] == "caught"
    # The first attempt and MaxAttempts=2 retries; then nothing more.
    assert received(fresh_sandbox, attempts_url, count=4, timeout_s=1.5) == [{"job": "j-2"}] * 3


# --- c: rule targets ------------------------------------------------------------------------------------

TargetCheck = Callable[[dict[str, Any]], None]


def _lambda_target(sandbox: Sandbox, resources: Resources) -> tuple[dict[str, Any], TargetCheck]:
    queue_url, _ = resources.queue()
    target = {"Arn": resources.function("echo", record_queue_url=queue_url)}

    def check(detail: dict[str, Any]) -> None:
        events = received(sandbox, queue_url)
        assert [e["detail"] for e in events] == [detail]
        assert events[0]["source"] == "spothub.test"
        assert events[0]["detail-type"] == "Probe"
        assert events[0]["region"] == sandbox.hub.region

    return target, check


def _state_machine_target(sandbox: Sandbox, resources: Resources) -> tuple[dict[str, Any], TargetCheck]:
    machine = resources.state_machine({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    target = {
        "Arn": machine,
        "RoleArn": resources.role_arn(),
        "Input": json.dumps({"kind": "constant input"}),
    }
    sfn = sandbox.client("stepfunctions")

    def check(_detail: dict[str, Any]) -> None:
        executions = sandbox.wait_for(lambda: sfn.list_executions(stateMachineArn=machine)["executions"], POLL_S)
        assert len(executions) == 1, executions
        described = finished(sandbox, executions[0]["executionArn"])
        assert json.loads(described["input"]) == {"kind": "constant input"}
        assert described["status"] == "SUCCEEDED"

    return target, check


def _sqs_target(sandbox: Sandbox, resources: Resources) -> tuple[dict[str, Any], TargetCheck]:
    queue_url, queue_arn = resources.queue()
    target = {
        "Arn": queue_arn,
        "InputTransformer": {
            "InputPathsMap": {"job": "$.detail.job", "source": "$.source"},
            "InputTemplate": '{"job": "<job>", "from": "<source>"}',
        },
    }

    def check(detail: dict[str, Any]) -> None:
        assert received(sandbox, queue_url, count=2, timeout_s=1.5) == [{"job": detail["job"], "from": "spothub.test"}]

    return target, check


def _cross_region_bus_target(sandbox: Sandbox, resources: Resources) -> tuple[dict[str, Any], TargetCheck]:
    # The other region's bus has a rule of its own, delivering to a function there.
    queue_url, _ = resources.queue(OTHER_REGION)
    function = resources.function("echo", record_queue_url=queue_url, region=OTHER_REGION)
    bus_name, bus_arn = resources.bus(OTHER_REGION)
    resources.rule([{"Arn": function}], bus=bus_name, pattern=PATTERN, region=OTHER_REGION)
    target = {"Arn": bus_arn, "RoleArn": resources.role_arn()}

    def check(detail: dict[str, Any]) -> None:
        events = received(sandbox, queue_url, region=OTHER_REGION)
        assert [e["detail"] for e in events] == [detail]
        assert events[0]["source"] == "spothub.test"
        # Forwarded across regions, the event keeps the region it was put in (the hub's, here).
        assert events[0]["region"] == sandbox.hub.region

    return target, check


TARGET_KINDS: dict[str, Callable[[Sandbox, Resources], tuple[dict[str, Any], TargetCheck]]] = {
    "lambda": _lambda_target,
    "step-functions": _state_machine_target,
    "sqs": _sqs_target,
    "cross-region-bus": _cross_region_bus_target,
}


@pytest.mark.parametrize("kind", sorted(TARGET_KINDS))
def test_a_rule_delivers_a_matching_event_to_its_target(
    fresh_sandbox: Sandbox, resources: Resources, kind: str
) -> None:
    bus, _ = resources.bus()
    target, check = TARGET_KINDS[kind](fresh_sandbox, resources)
    resources.rule([target], bus=bus, pattern=PATTERN)
    put_event(fresh_sandbox, {"job": "unmatched"}, bus=bus, source="spothub.other")
    detail = {"job": f"j-{kind}"}
    put_event(fresh_sandbox, detail, bus=bus)
    check(detail)
    assert [e for e in fresh_sandbox.timeline if e.kind == "failure"] == []


def test_one_rule_delivers_to_every_target_kind(fresh_sandbox: Sandbox, resources: Resources) -> None:
    bus, _ = resources.bus()
    built = [TARGET_KINDS[kind](fresh_sandbox, resources) for kind in sorted(TARGET_KINDS)]
    resources.rule([target for target, _check in built], bus=bus, pattern=PATTERN)
    detail = {"job": "j-all"}
    put_event(fresh_sandbox, detail, bus=bus)
    for _target, check in built:
        check(detail)
    assert [e.summary for e in fresh_sandbox.timeline if e.kind == "failure"] == []


def test_a_cross_region_bus_target_reaches_a_queue_in_that_region(fresh_sandbox: Sandbox, resources: Resources) -> None:
    queue_url, queue_arn = resources.queue(OTHER_REGION)
    bus_name, bus_arn = resources.bus(OTHER_REGION)
    resources.rule([{"Arn": queue_arn}], bus=bus_name, pattern=PATTERN, region=OTHER_REGION)
    resources.rule([{"Arn": bus_arn, "RoleArn": resources.role_arn()}], pattern=PATTERN)
    put_event(fresh_sandbox, {"job": "j-west"})
    events = received(fresh_sandbox, queue_url, region=OTHER_REGION, timeout_s=3)
    assert [e["detail"] for e in events] == [{"job": "j-west"}]


# --- d: scheduled rules and the clock ---------------------------------------------------------------------


def test_a_scheduled_rule_fires_when_the_clock_passes_it(fresh_sandbox: Sandbox, resources: Resources) -> None:
    queue_url, _ = resources.queue()
    function = resources.function("echo", record_queue_url=queue_url)
    rule_arn = resources.rule([{"Arn": function}], schedule="rate(5 minutes)")
    # A second of real time: the scheduler sees the rule, and nothing fires before five simulated minutes.
    assert received(fresh_sandbox, queue_url, timeout_s=1.2) == []
    fresh_sandbox.clock.advance(300)
    # One delivery (a cold start of the function, then its own SQS call), and no second one within the wait.
    (event,) = received(fresh_sandbox, queue_url, count=2, timeout_s=5)
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["resources"] == [rule_arn]
    assert event["detail"] == {}
    assert [e.details["rule"] for e in fresh_sandbox.timeline if e.kind == "schedule"].count(rule_arn) == 1


def test_a_scheduled_rule_delivers_to_an_sqs_queue(fresh_sandbox: Sandbox, resources: Resources) -> None:
    queue_url, queue_arn = resources.queue()
    resources.rule([{"Arn": queue_arn}], schedule="rate(5 minutes)")
    # A scheduled rule has no event pattern, and gets no event of its bus (moto alone gives it every one).
    put_event(fresh_sandbox, {"unrelated": True})
    assert received(fresh_sandbox, queue_url, timeout_s=1.2) == []
    fresh_sandbox.clock.advance(300)
    events = received(fresh_sandbox, queue_url, timeout_s=3)
    assert [(e["source"], e["detail-type"]) for e in events] == [("aws.events", "Scheduled Event")]


# --- e: the signed API -----------------------------------------------------------------------------------


def _signed_headers(sandbox: Sandbox, method: str, url: str, body: bytes) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), "execute-api", sandbox.hub.region).add_auth(request)
    return dict(request.headers.items())


def test_the_api_answers_only_correctly_signed_requests(fresh_sandbox: Sandbox) -> None:
    assert fresh_sandbox.request("GET", "status").status_code == 200
    unsigned = fresh_sandbox.request("GET", "status", signed=False)
    assert unsigned.status_code == 403
    assert unsigned.json()["error"] == "Missing Authentication Token"
    wrong_secret = fresh_sandbox.request("GET", "status", secret="not-the-secret")
    assert wrong_secret.status_code == 403
    assert "signature" in wrong_secret.json()["error"]


@pytest.mark.parametrize("tampering", ["body", "path", "query", "method"])
def test_a_request_changed_after_signing_is_refused(fresh_sandbox: Sandbox, tampering: str) -> None:
    url = fresh_sandbox.api_url + "status"
    body = b'{"job": "j-1"}'
    headers = _signed_headers(fresh_sandbox, "GET", url, body)
    sent_url, sent_body, sent_method = url, body, "GET"
    if tampering == "body":
        sent_body = b'{"job": "j-2"}'
    elif tampering == "path":
        headers = _signed_headers(fresh_sandbox, "GET", fresh_sandbox.api_url + "instances", body)
    elif tampering == "query":
        sent_url = url + "?verbose=true"
    elif tampering == "method":
        headers = _signed_headers(fresh_sandbox, "POST", url, body)
    answer = requests.request(sent_method, sent_url, data=sent_body, headers=headers, timeout=30)
    assert answer.status_code == 403, answer.text
    assert "signature we calculated does not match" in answer.json()["error"]
    # The same signature on the request it was made for passes.
    if tampering == "body":
        assert requests.get(url, data=body, headers=headers, timeout=30).status_code == 200


# --- f: the market's capacity reaches the hub --------------------------------------------------------------


def test_no_spot_capacity_fails_the_launch_and_the_hub_hears_of_it(fresh_sandbox: Sandbox) -> None:
    market, fleet = fresh_sandbox.market, fresh_sandbox.fleet
    assert market is not None
    assert fleet is not None
    pools = market.pools(EMPTY_REGION)
    assert pools
    for pool in pools:
        market.set_zone(pool.zone, pool.instance_type, capacity=0)
    fresh_sandbox.client("autoscaling", EMPTY_REGION).set_desired_capacity(
        AutoScalingGroupName=GROUP, DesiredCapacity=1
    )
    (event, *_) = fresh_sandbox.wait_for(
        lambda: fresh_sandbox.events(hub_bus(fresh_sandbox), "EC2 Instance Launch Unsuccessful"), POLL_S
    )
    assert event.details["event"]["detail"]["AutoScalingGroupName"] == GROUP
    assert event.details["event"]["source"] == "aws.autoscaling"
    assert "InsufficientInstanceCapacity" in event.details["event"]["detail"]["StatusMessage"]
    assert f":autoscaling:{EMPTY_REGION}:" in event.details["event"]["resources"][0]
    assert fleet.running(EMPTY_REGION) == []
    reservations = fresh_sandbox.client("ec2", EMPTY_REGION).describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )["Reservations"]
    assert reservations == []


def test_the_market_taking_a_pool_away_interrupts_its_instance(fresh_sandbox: Sandbox) -> None:
    market, fleet = fresh_sandbox.market, fresh_sandbox.fleet
    assert market is not None
    assert fleet is not None
    fresh_sandbox.client("autoscaling", FULL_REGION).set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    instance = fresh_sandbox.wait_for(lambda: next(iter(fleet.running(FULL_REGION)), None), POLL_S)
    assert instance.capacity_type == "spot"
    assert instance.imds.lookup("/latest/meta-data/spot/instance-action") is None
    started = fresh_sandbox.clock.now()

    market.set_zone(instance.zone, instance.instance_type, capacity=0)

    (warning, *_) = fresh_sandbox.wait_for(
        lambda: fresh_sandbox.events(
            f"{FULL_REGION}:{ACCOUNT}:event-bus/default", "EC2 Spot Instance Interruption Warning"
        ),
        POLL_S,
    )
    assert warning.details["event"]["detail"] == {"instance-id": instance.instance_id, "instance-action": "terminate"}
    # The region's capacity monitor finds the instance in spothub's group and reports it to the hub.
    (notice, *_) = fresh_sandbox.wait_for(
        lambda: fresh_sandbox.events(hub_bus(fresh_sandbox), "Spothub Capacity Notice"), POLL_S
    )
    assert notice.details["event"]["detail"]["instance_id"] == instance.instance_id
    assert notice.details["event"]["detail"]["kind"] == "interruption"
    action = json.loads(instance.imds.lookup("/latest/meta-data/spot/instance-action") or "{}")
    assert action["action"] == "terminate"
    assert instance.state == "interrupting"
    assert instance.terminate_at is not None
    assert instance.terminate_at - started == pytest.approx(120, abs=5)

    fresh_sandbox.clock.advance(120)
    fresh_sandbox.wait_for(lambda: instance.state == "terminated", POLL_S)
    ec2 = fresh_sandbox.client("ec2", FULL_REGION)
    (reservation,) = ec2.describe_instances(InstanceIds=[instance.instance_id])["Reservations"]
    assert reservation["Instances"][0]["State"]["Name"] == "terminated"
    # The pool is free again for others: nothing of it is in use.
    (pool,) = [
        p for p in market.pools(FULL_REGION) if (p.zone, p.instance_type) == (instance.zone, instance.instance_type)
    ]
    assert pool.in_use == 0


# --- g: the control surface over HTTP ------------------------------------------------------------------------


def _control(sandbox: Sandbox, method: str, path: str, body: Any = None, raw: bytes | None = None) -> requests.Response:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    return requests.request(method, sandbox.control_url + path, data=data, timeout=30)


def test_the_control_surface_drives_market_clock_and_instances(fresh_sandbox: Sandbox) -> None:
    market = _control(fresh_sandbox, "GET", "market")
    assert market.status_code == 200
    pools = market.json()
    assert {p["zone"][:-1] for p in pools} == {w.region for w in fresh_sandbox.workers}
    first = next(p for p in pools if p["zone"] == f"{FULL_REGION}a")
    assert first["free"] == first["capacity"] - first["in_use"]

    changed = _control(
        fresh_sandbox,
        "POST",
        "market/zone",
        {"zone": first["zone"], "instance_type": first["instance_type"], "spot_price": 0.123, "placement_score": 7},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["spot_price"] == 0.123
    assert changed.json()["placement_score"] == 7
    after = next(
        p
        for p in _control(fresh_sandbox, "GET", "market").json()
        if (p["zone"], p["instance_type"]) == (first["zone"], first["instance_type"])
    )
    assert after["spot_price"] == 0.123
    history = fresh_sandbox.client("ec2", FULL_REGION).describe_spot_price_history(
        InstanceTypes=[first["instance_type"]], Filters=[{"Name": "availability-zone", "Values": [first["zone"]]}]
    )["SpotPriceHistory"]
    assert [float(h["SpotPrice"]) for h in history] == [0.123]

    fresh_sandbox.client("autoscaling", FULL_REGION).set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    fleet = fresh_sandbox.fleet
    assert fleet is not None
    instance = fresh_sandbox.wait_for(lambda: next(iter(fleet.running(FULL_REGION)), None), POLL_S)
    listed = _control(fresh_sandbox, "GET", "instances").json()
    # Instances terminated earlier in the session are listed too, as terminated.
    assert [i["instance_id"] for i in listed if i["state"] != "terminated"] == [instance.instance_id]
    (described,) = [i for i in listed if i["instance_id"] == instance.instance_id]
    assert described["state"] == "running"
    assert described["availability_zone"] == instance.zone
    assert described["capacity_type"] == "spot"

    before = fresh_sandbox.clock.now()
    advanced = _control(fresh_sandbox, "POST", "clock/advance", {"seconds": 30})
    assert advanced.status_code == 200
    assert fresh_sandbox.clock.now() - before >= 30
    assert advanced.json()["now"] == pytest.approx(fresh_sandbox.clock.now() - fresh_sandbox.origin, abs=2)

    rebalance = _control(fresh_sandbox, "POST", f"instances/{instance.instance_id}/rebalance")
    assert rebalance.status_code == 200, rebalance.text
    assert any("rebalance" in notice for notice in rebalance.json()["notices"])
    token = requests.put(
        instance.imds.endpoint + "/latest/api/token",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        timeout=10,
    ).text
    notice = requests.get(
        instance.imds.endpoint + "/latest/meta-data/events/recommendations/rebalance",
        headers={"X-aws-ec2-metadata-token": token},
        timeout=10,
    )
    assert notice.status_code == 200
    assert "noticeTime" in notice.json()
    (sent, *_) = fresh_sandbox.wait_for(
        lambda: fresh_sandbox.events(
            f"{instance.region}:{ACCOUNT}:event-bus/default", "EC2 Instance Rebalance Recommendation"
        ),
        POLL_S,
    )
    assert sent.details["event"]["detail"] == {"instance-id": instance.instance_id}
    # The region's capacity monitor reports it to the hub as one of spothub's instances.
    (reported, *_) = fresh_sandbox.wait_for(
        lambda: fresh_sandbox.events(hub_bus(fresh_sandbox), "Spothub Capacity Notice"), POLL_S
    )
    assert reported.details["event"]["detail"]["instance_id"] == instance.instance_id
    assert reported.details["event"]["detail"]["kind"] == "rebalance"

    timeline = _control(fresh_sandbox, "GET", "timeline").json()
    kinds = [entry["kind"] for entry in timeline]
    assert "launched" in kinds
    assert "rebalance" in kinds
    assert all(set(entry) == {"t", "kind", "summary", "details"} for entry in timeline)
    # Entries from the rebalance on: the clock moved 30 s between the launch and the rebalance.
    since = next(entry["t"] for entry in timeline if entry["kind"] == "rebalance") - 1
    later = [entry["kind"] for entry in _control(fresh_sandbox, "GET", f"timeline?since={since}").json()]
    assert "rebalance" in later
    assert "launched" not in later


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "no-such-control", None, 404),
        ("DELETE", "market", None, 404),
        ("POST", "instances/i-0123456789abcdef0/explode", None, 404),
        ("POST", "clock/advance", {}, 400),
        ("POST", "clock/advance", {"seconds": -5}, 400),
        ("POST", "clock/advance", b"not json", 400),
        ("POST", "clock/speed", {"speed": 0}, 400),
        ("POST", "market/zone", {"zone": "us-west-2a"}, 400),
        ("POST", "market/zone", {"zone": "mars-north-1a", "instance_type": "g5.xlarge", "capacity": 1}, 400),
        ("POST", "market/zone", {"zone": "us-west-2a", "instance_type": "g5.xlarge", "capacity": -1}, 400),
        ("POST", "instances/i-0123456789abcdef0/rebalance", None, 400),
    ],
)
def test_the_control_surface_refuses_unknown_paths_and_bad_bodies(
    fresh_sandbox: Sandbox, method: str, path: str, body: Any, status: int
) -> None:
    raw = body if isinstance(body, bytes) else None
    answer = _control(fresh_sandbox, method, path, None if raw else body, raw=raw)
    assert answer.status_code == status, answer.text
    assert answer.json()["message"]

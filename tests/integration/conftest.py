"""Fixtures shared by the integration tests: the state table in moto's DynamoDB; for the handler tests, the
hub's environment, a fresh import of a handler, EventBridge events, and recorders of AWS calls and bus events."""

from __future__ import annotations

import copy
import importlib
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from stacks.paths import STATEMACHINES_DIR

ACCOUNT = "123456789012"
STATE_TABLE_KEYS = {
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ],
    "BillingMode": "PAY_PER_REQUEST",
}


@pytest.fixture
def table() -> Iterator[Any]:
    """An empty state table (pk/sk, as the hub stack defines it), as a boto3 Table resource."""
    with mock_aws():
        boto3.client("dynamodb", region_name="us-east-1").create_table(TableName="state", **STATE_TABLE_KEYS)
        yield boto3.resource("dynamodb", region_name="us-east-1").Table("state")


# --- shared by the handler tests (test_*_handler.py) ------------------------------------------------

HUB_REGION = "us-east-1"
WORKER_REGIONS = ["us-west-2", "eu-west-1"]
HUB_ENVIRONMENT = {
    "SPOTHUB_PREFIX": "spothub",
    "SPOTHUB_VERSION": "0.1.0",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "Spothub",
    "SPOTHUB_HUB_REGION": HUB_REGION,
    "SPOTHUB_WORKER_REGIONS": ",".join(WORKER_REGIONS),
    "SPOTHUB_STATE_TABLE": "spothub-state",
    "SPOTHUB_CAPACITY_FALLBACK": "on-demand",
}
# How the deployment serves, as the stacks tell the capacity handler, instance details and toggle functions.
SERVING_PORT = 8000
SERVING_ENVIRONMENT = {"SPOTHUB_SERVING_PORT": str(SERVING_PORT), "SPOTHUB_SERVING_PUBLIC_IP": "true"}
# A definition moto accepts; executions are not run (moto's default), only recorded with their input.
IDLE_DEFINITION = json.dumps({"StartAt": "Idle", "States": {"Idle": {"Type": "Pass", "End": True}}})


def set_environment(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> None:
    for key, value in environment.items():
        monkeypatch.setenv(key, value)


def create_state_machine(name: str, region: str = HUB_REGION) -> str:
    """A state machine in moto; returns its ARN."""
    return boto3.client("stepfunctions", region_name=region).create_state_machine(
        name=name, definition=IDLE_DEFINITION, roleArn=f"arn:aws:iam::{ACCOUNT}:role/spothub-states"
    )["stateMachineArn"]


def executions(state_machine_arn: str) -> dict[str, dict[str, Any]]:
    """The executions of a state machine in moto by name: status and decoded input."""
    sfn = boto3.client("stepfunctions", region_name=state_machine_arn.split(":")[3])
    found = {}
    for execution in sfn.list_executions(stateMachineArn=state_machine_arn)["executions"]:
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        found[execution["name"]] = {"status": described["status"], "input": json.loads(described["input"])}
    return found


def load_handler(module_name: str) -> ModuleType:
    """Import a Lambda handler module afresh, as a cold start does: its settings and boto3 clients are read
    at import, so call it inside `mock_aws()` with the environment already set."""
    sys.modules.pop(module_name, None)
    return importlib.import_module(module_name)


def eventbridge_event(
    source: str, detail_type: str, detail: dict[str, Any], *, region: str = HUB_REGION, event_id: str | None = None
) -> dict[str, Any]:
    """An event as EventBridge delivers it to a Lambda target."""
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": ACCOUNT,
        "time": "2023-11-14T22:13:20Z",
        "region": region,
        "resources": [],
        "detail": detail,
    }


class BusRecorder:
    """Every event put on an EventBridge bus in moto, caught by a rule that matches all of them and sends
    them to an SQS queue."""

    def __init__(self, bus_name: str, region: str = HUB_REGION) -> None:
        events = boto3.client("events", region_name=region)
        self._sqs = boto3.client("sqs", region_name=region)
        self._queue = self._sqs.create_queue(QueueName=f"recorder-{bus_name}")["QueueUrl"]
        queue_arn = self._sqs.get_queue_attributes(QueueUrl=self._queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events.put_rule(
            Name=f"record-{bus_name}", EventBusName=bus_name, EventPattern=json.dumps({"account": [ACCOUNT]})
        )
        events.put_targets(
            Rule=f"record-{bus_name}", EventBusName=bus_name, Targets=[{"Id": "queue", "Arn": queue_arn}]
        )

    def events(self) -> list[dict[str, Any]]:
        """The events put since the last call, oldest first."""
        received: list[dict[str, Any]] = []
        while True:
            messages = self._sqs.receive_message(QueueUrl=self._queue, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return received
            for message in messages:
                received.append(json.loads(message["Body"]))
                self._sqs.delete_message(QueueUrl=self._queue, ReceiptHandle=message["ReceiptHandle"])


class ApiCalls:
    """The calls one boto3 client makes to some operations, with the parameters the code passed.

    The calls still reach moto, unless `answer` gives the operation a response or an error of its own
    (for operations moto does not implement, or AWS answers moto cannot give)."""

    def __init__(self, client: Any, *operations: str) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._client = client
        self._replies: dict[str, Callable[..., Any]] = {}
        self._service = client.meta.service_model.service_id.hyphenize()
        for operation in operations:
            client.meta.events.register(
                f"before-parameter-build.{self._service}.{operation}", self._recorder(operation)
            )

    def _recorder(self, operation: str) -> Callable[..., None]:
        def record(params: dict[str, Any], **_: Any) -> None:
            self.calls.append((operation, copy.deepcopy(params)))

        return record

    def of(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == operation]

    def answer(
        self, operation: str, response: dict[str, Any] | None = None, *, error: tuple[str, str] | None = None
    ) -> None:
        """From now on, answer `operation` with `response`, or fail it with `error` (code, message), instead of
        the answer given before."""

        def reply(**_: Any) -> tuple[Any, dict[str, Any]]:
            if error is not None:
                code, message = error
                return SimpleNamespace(status_code=400), {
                    "Error": {"Code": code, "Message": message},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                }
            return SimpleNamespace(status_code=200), {**(response or {}), "ResponseMetadata": {"HTTPStatusCode": 200}}

        self.forget(operation)
        self._replies[operation] = reply
        self._client.meta.events.register(f"before-call.{self._service}.{operation}", reply)

    def forget(self, operation: str) -> None:
        """From now on, let `operation` reach moto again."""
        if operation in self._replies:
            self._client.meta.events.unregister(
                f"before-call.{self._service}.{operation}", self._replies.pop(operation)
            )


def asl_actions(machine: str) -> set[str]:
    """The `action` of every Lambda task payload in statemachines/<machine>.asl.json."""
    return set(_actions(json.loads((STATEMACHINES_DIR / f"{machine}.asl.json").read_text(encoding="utf-8"))))


def _actions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("Payload"), dict) and "action" in node["Payload"]:
            yield node["Payload"]["action"]
        for value in node.values():
            yield from _actions(value)
    elif isinstance(node, list):
        for value in node:
            yield from _actions(value)


def hub_services(table: Any, **overrides: Any) -> Any:
    """The hub's services for capacity logic tests: the real state-table stores, AWS clients as mocks."""
    from unittest.mock import MagicMock  # noqa: PLC0415

    from spothub_core.dal.exclusions import ExclusionStore  # noqa: PLC0415
    from spothub_core.dal.instance_health import InstanceHealthStore  # noqa: PLC0415
    from spothub_core.dal.provisioning import ProvisioningStore  # noqa: PLC0415
    from spothub_core.logic.hub_services import HubServices  # noqa: PLC0415

    events = MagicMock(name="events")
    events.put_events.return_value = {"FailedEntryCount": 0, "Entries": [{"EventId": "e1"}]}
    settings = {
        "store": ProvisioningStore(table),
        "exclusions": ExclusionStore(table),
        "health": InstanceHealthStore(table),
        "sfn": MagicMock(name="sfn"),
        "events": events,
        "ssm": MagicMock(name="ssm"),
        "route53": MagicMock(name="route53"),
        "bus_name": "spothub-hub",
        "orchestrator_arn": "arn:aws:states:us-east-1:123456789012:stateMachine:spothub-orchestrator",
        "active_instance_parameter": "/spothub/active-instance",
    }
    return HubServices(**{**settings, **overrides})


def orchestrator_task(name: str) -> Callable[..., dict[str, Any]]:
    """An orchestrator action as its ASL task sees it: a JSON input read into the action's model, its output
    model answered as JSON (as the capacity handler does), without the Lambda around it."""
    from spothub_core.logic.orchestrator_tasks import TASKS  # noqa: PLC0415

    model, run = TASKS[name]

    def task(hub: Any, request: dict[str, Any], *, now: float) -> dict[str, Any]:
        return run(hub, model.model_validate(request), now=now).model_dump(mode="json")

    return task


def config(**fields: Any) -> Any:
    """The provisioning switch as a record, for write_config."""
    from spothub_core.models.records import ProvisioningConfig  # noqa: PLC0415

    return ProvisioningConfig.model_validate(fields)

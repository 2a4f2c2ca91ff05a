"""The instance_remediation function through its entry point: an ALARM of one of spothub's instance alarms asks
the hub to replace the instance; an alarm that outlived its instance is deleted; anything else is ignored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError

from spothub_core.consumers import Target, consumed_by
from spothub_core.contracts import (
    AWS_EVENT_SOURCES,
    AlarmStateChangeDetail,
    AwsEvent,
    InstanceUnhealthy,
    Source,
    WorkerReport,
)
from spothub_core.logic.instance_alarms import alarm_definitions
from tests.integration.conftest import ApiCalls, eventbridge_event, load_handler, set_environment
from tests.integration.worker_region.conftest import WORKER_ENVIRONMENT
from tests.integration.worker_region.region import GROUP, LAUNCH_ID, REGION, alarms, create_group, tag
from tests.lambda_events import FakeLambdaContext

WORKER_BUS = "spothub-worker"
FIRED_AT = "2030-01-01T00:00:00.000+0000"


@pytest.fixture
def remediation(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    with mock_aws():
        set_environment(
            monkeypatch,
            {
                **WORKER_ENVIRONMENT,
                "POWERTOOLS_SERVICE_NAME": "spothub-instance-remediation",
                "SPOTHUB_GROUP_NAME": GROUP,
                "SPOTHUB_WORKER_BUS": WORKER_BUS,
            },
        )
        create_group()
        boto3.client("events", region_name=REGION).create_event_bus(Name=WORKER_BUS)
        yield load_handler("instance_remediation.handler")


def member() -> str:
    """An instance of the group, claimed by a launch, watched by its alarms."""
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    autoscaling.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    instance_id = str(autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"][0]["InstanceId"])
    tag(instance_id, LAUNCH_ID, "replica-0")
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    for alarm in alarm_definitions("spothub", instance_id, []):
        cloudwatch.put_metric_alarm(**alarm)
    return instance_id


def alarm_changed(name: str, value: str = "ALARM", reason: str = "Threshold Crossed: 3 datapoints") -> dict[str, Any]:
    detail = {"alarmName": name, "state": {"value": value, "reason": reason, "timestamp": FIRED_AT}}
    source = AWS_EVENT_SOURCES[AwsEvent.ALARM_STATE_CHANGE]
    return eventbridge_event(source, AwsEvent.ALARM_STATE_CHANGE, detail, region=REGION)


def consume(handler: ModuleType, event: dict[str, Any]) -> str:
    return str(handler.lambda_handler(event, FakeLambdaContext())["outcome"])


def test_every_event_remediation_consumes_has_a_function(remediation: ModuleType) -> None:
    assert remediation.alarms.unregistered() == []
    assert [c.model for c in consumed_by(Target.INSTANCE_REMEDIATION).values()] == [AlarmStateChangeDetail]


def test_an_alarm_on_a_live_instance_asks_the_hub_to_replace_it(remediation: ModuleType) -> None:
    instance_id = member()
    calls = ApiCalls(remediation.events, "PutEvents")
    name = f"spothub-agent-heartbeat-{instance_id}"
    outcome = consume(remediation, alarm_changed(name))
    assert outcome == "replacement asked: the agent stopped sending heartbeats: Threshold Crossed: 3 datapoints"
    (call,) = calls.of("PutEvents")
    (entry,) = call["Entries"]
    assert (entry["EventBusName"], entry["Source"], entry["DetailType"]) == (
        WORKER_BUS,
        Source.WORKER,
        WorkerReport.INSTANCE_UNHEALTHY,
    )
    report = InstanceUnhealthy.model_validate(json.loads(entry["Detail"]))
    assert (report.region, report.instance_id, report.alarm_name) == (REGION, instance_id, name)
    assert report.notice_id == f"{name}@{FIRED_AT}"
    assert (report.replica_id, report.launch_id) == ("replica-0", LAUNCH_ID)
    assert len(alarms()) == 2


def test_an_alarm_that_outlived_its_instance_is_deleted(remediation: ModuleType) -> None:
    instance_id = member()
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=[instance_id])
    calls = ApiCalls(remediation.events, "PutEvents")
    outcome = consume(remediation, alarm_changed(f"spothub-agent-gpu-{instance_id}"))
    assert outcome == "ignored: the instance is gone; its alarms are deleted"
    assert alarms() == {}
    assert calls.of("PutEvents") == []


@pytest.mark.parametrize(
    ("name", "value", "outcome"),
    [
        pytest.param("spothub-agent-heartbeat-{}", "OK", "ignored: OK", id="back-to-ok"),
        pytest.param("other-agent-heartbeat-{}", "ALARM", "ignored: not an instance alarm", id="another-deployment"),
        pytest.param("spothub-agent-disk-{}", "ALARM", "ignored: not an instance alarm", id="another-kind"),
    ],
)
def test_any_other_alarm_change_asks_for_nothing(remediation: ModuleType, name: str, value: str, outcome: str) -> None:
    instance_id = member()
    calls = ApiCalls(remediation.events, "PutEvents")
    assert consume(remediation, alarm_changed(name.format(instance_id), value)).startswith(outcome)
    assert calls.of("PutEvents") == []
    assert len(alarms()) == 2


def test_an_event_remediation_does_not_consume_is_ignored(remediation: ModuleType) -> None:
    event = eventbridge_event("aws.ec2", AwsEvent.SPOT_INTERRUPTION_WARNING, {"instance-id": "i-0"}, region=REGION)
    assert consume(remediation, event) == "ignored: unknown kind"


def test_an_alarm_change_without_a_state_raises_naming_the_field(remediation: ModuleType) -> None:
    event = alarm_changed("spothub-agent-heartbeat-i-0123456789abcdef0")
    del event["detail"]["state"]
    with pytest.raises(ValidationError) as raised:
        remediation.lambda_handler(event, FakeLambdaContext())
    assert "state" in {str(error["loc"][0]) for error in raised.value.errors()}

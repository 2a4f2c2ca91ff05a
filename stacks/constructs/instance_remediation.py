"""A worker region's remediation: instance alarms (created per instance by the launch, see
lambdas/spothub_core/logic/instance_alarms.py) that go to ALARM reach this function through the default
bus; it asks the hub to replace the instance. The alarms also notify the alerts topic themselves."""

from __future__ import annotations

from typing import Any

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from constructs import Construct

from spothub_core.consumers import Bus, Target
from spothub_core.contracts import AwsEvent, alarm_name_prefix
from stacks.config import SpothubConfig
from stacks.constructs.consumer_rules import aws_event_id, entries, lambda_delivery, only_pattern
from stacks.constructs.python_function import FunctionDefaults
from stacks.nag import acknowledge, nag_resource


def instance_alarms_arn(stack: Stack, prefix: str) -> str:
    """Every per-instance alarm of this deployment in the stack's region."""
    return stack.format_arn(
        service="cloudwatch",
        resource="alarm",
        resource_name=f"{alarm_name_prefix(prefix)}*",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )


def detail_filters(prefix: str) -> dict[AwsEvent, dict[str, Any]]:
    """Which of the region's events are this deployment's, by detail-type: a remediation entry without one
    would take every such event in the region."""
    return {
        AwsEvent.ALARM_STATE_CHANGE: {
            "alarmName": events.Match.prefix(alarm_name_prefix(prefix)),
            "state": {"value": ["ALARM"]},
        }
    }


class InstanceRemediation(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: SpothubConfig,
        group_name: str,
        worker_bus: events.IEventBus,
        functions: FunctionDefaults,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.spothub_function = functions.function(
            self,
            "Function",
            concern="instance_remediation",
            description="An instance alarm fired: ask the hub to replace the instance",
            environment={"SPOTHUB_GROUP_NAME": group_name, "SPOTHUB_WORKER_BUS": worker_bus.event_bus_name},
        )
        function = self.spothub_function.function
        alarms = instance_alarms_arn(stack, config.prefix)
        for statement in (
            iam.PolicyStatement(
                sid="ReadInstances",
                actions=["autoscaling:DescribeAutoScalingInstances", "ec2:DescribeInstances"],
                resources=["*"],
            ),
            iam.PolicyStatement(
                sid="DeleteGoneInstancesAlarms", actions=["cloudwatch:DeleteAlarms"], resources=[alarms]
            ),
        ):
            function.add_to_role_policy(statement)
        worker_bus.grant_put_events_to(function)
        acknowledge(
            self.spothub_function,
            "AwsSolutions-IAM5[Resource::*]",
            "DescribeAutoScalingInstances and DescribeInstances have no resource-level permissions; X-Ray.",
        )
        acknowledge(
            self.spothub_function,
            f"AwsSolutions-IAM5[Resource::{nag_resource(stack, alarms)}]",
            "Per-instance alarms are named by instance id, unknown ahead; the name prefix pins them to this "
            "deployment.",
        )
        filters = detail_filters(config.prefix)
        for entry in entries(bus=Bus.WORKER_DEFAULT, target=Target.INSTANCE_REMEDIATION):
            rule = events.Rule(
                self,
                aws_event_id(entry),
                description="This deployment's instance alarms going to ALARM",
                event_pattern=only_pattern([entry], detail=filters[AwsEvent(entry.detail_type)]),
            )
            rule.add_target(lambda_delivery(function, functions.dead_letter_queue))

"""A worker region's remediation: instance alarms (created per instance by the launch, see
lambdas/spothub_core/logic/instance_alarms.py) that go to ALARM reach this function through the default
bus; it asks the hub to replace the instance. The alarms also notify the alerts topic themselves."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spothub_core.contracts import AWS_EVENT_SOURCES, AwsEvent, alarm_name_prefix
from stacks.config import SpothubConfig
from stacks.constructs.python_function import SpothubFunction
from stacks.nag import acknowledge, nag_resource


def instance_alarms_arn(stack: Stack, prefix: str) -> str:
    """Every per-instance alarm of this deployment in the stack's region."""
    return stack.format_arn(
        service="cloudwatch",
        resource="alarm",
        resource_name=f"{alarm_name_prefix(prefix)}*",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )


class InstanceRemediation(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: SpothubConfig,
        group_name: str,
        worker_bus: events.IEventBus,
        layer: lambda_.ILayerVersion,
        dead_letter_queue: sqs.IQueue,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.spothub_function = SpothubFunction(
            self,
            "Function",
            concern="instance_remediation",
            description="An instance alarm fired: ask the hub to replace the instance",
            prefix=config.prefix,
            layer=layer,
            dead_letter_queue=dead_letter_queue,
            log_retention=log_retention,
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
        rule = events.Rule(
            self,
            "InstanceAlarms",
            description="This deployment's instance alarms going to ALARM",
            event_pattern=events.EventPattern(
                source=[AWS_EVENT_SOURCES[AwsEvent.ALARM_STATE_CHANGE]],
                detail_type=[AwsEvent.ALARM_STATE_CHANGE.value],
                detail={
                    "alarmName": events.Match.prefix(alarm_name_prefix(config.prefix)),
                    "state": {"value": ["ALARM"]},
                },
            ),
        )
        rule.add_target(
            targets.LambdaFunction(
                function, dead_letter_queue=dead_letter_queue, retry_attempts=8, max_event_age=Duration.hours(2)
            )
        )

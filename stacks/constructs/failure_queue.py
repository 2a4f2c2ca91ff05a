"""An encrypted SQS queue that keeps what could not be delivered or processed, with an alarm.

Used as the dead-letter queue of asynchronous Lambda invocations and of EventBridge targets:
nothing is lost silently, and the first message in it pages the alerts topic.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spothub_core.timings import DEAD_LETTER_RETENTION_DAYS
from stacks.nag import acknowledge


class FailureQueue(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, purpose: str, alerts: sns.ITopic) -> None:
        super().__init__(scope, construct_id)
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(DEAD_LETTER_RETENTION_DAYS),
        )
        acknowledge(
            self.queue,
            "AwsSolutions-SQS3",
            "This queue is itself a dead-letter queue; nothing consumes it to fail again.",
        )
        alarm = cloudwatch.Alarm(
            self,
            "NotEmpty",
            alarm_description=f"{purpose}: messages are waiting in {construct_id}; inspect and redrive them",
            metric=self.queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5), statistic="Maximum"
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(alerts))

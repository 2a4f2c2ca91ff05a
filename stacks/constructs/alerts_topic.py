"""The alerts topic of a region: encrypted with a rotating key that CloudWatch and EventBridge may use."""

from __future__ import annotations

from aws_cdk import ArnFormat, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

# Named actions on the key, for writers of state it encrypts and publishers to the topic.
KMS_READ_WRITE = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey")


class AlertsTopic(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, prefix: str, alert_email: str | None) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description=f"{prefix}: encrypts the alerts topic and spothub state at rest",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # Alarms and rules publish to the encrypted topic as these services, so they need the key.
        for service in ("cloudwatch.amazonaws.com", "events.amazonaws.com"):
            self.key.add_to_resource_policy(
                iam.PolicyStatement(
                    actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                    principals=[iam.ServicePrincipal(service)],
                    resources=["*"],  # in a key policy "*" means this key
                )
            )
        self.topic = sns.Topic(self, "Topic", display_name=f"{prefix} alerts", master_key=self.key, enforce_ssl=True)
        # A topic policy replaces SNS's default one, so the services that page through this topic are
        # allowed by name, for this account's alarms and rules only.
        account = Stack.of(self).account
        for service, source_arn in (
            (
                "cloudwatch.amazonaws.com",
                Stack.of(self).format_arn(
                    service="cloudwatch", resource="alarm", resource_name="*", arn_format=ArnFormat.COLON_RESOURCE_NAME
                ),
            ),
            ("events.amazonaws.com", Stack.of(self).format_arn(service="events", resource="rule", resource_name="*")),
        ):
            self.topic.add_to_resource_policy(
                iam.PolicyStatement(
                    sid=f"Allow{service.split('.')[0].capitalize()}Publish",
                    actions=["sns:Publish"],
                    principals=[iam.ServicePrincipal(service)],
                    resources=[self.topic.topic_arn],
                    conditions={
                        "StringEquals": {"aws:SourceAccount": account},
                        "ArnLike": {"aws:SourceArn": source_arn},
                    },
                )
            )
        if alert_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alert_email))

"""Alerting the operator: one message on the deployment's alerts topic (SNS, e-mail subscribers)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import DependencyUnavailable


def publish_alert(sns: Any, topic_arn: str, subject: str, message: str) -> str:
    """Publish one alert; returns its message id. Raises DependencyUnavailable when SNS refuses it."""
    try:
        response = sns.publish(TopicArn=topic_arn, Subject=subject, Message=message)
    except (ClientError, BotoCoreError) as exc:
        raise DependencyUnavailable(f"could not publish the alert {subject!r}: {reason_of(exc)}") from exc
    return str(response.get("MessageId", ""))

"""Telling people a batch job ended: a message on the jobs topic (SNS; each job's notify_email is subscribed with
a filter policy on the `job_id` message attribute), and an e-mail through SES where the deployment has a sender."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import DependencyUnavailable

SUBJECT_MAX = 100  # SNS's limit for an e-mail subject


def publish_job_message(sns: Any, topic_arn: str, job_id: str, subject: str, message: str) -> str:
    """Publish on the jobs topic with the job's id as a message attribute; returns the message id."""
    try:
        response = sns.publish(
            TopicArn=topic_arn,
            Subject=subject[:SUBJECT_MAX],
            Message=message,
            MessageAttributes={"job_id": {"DataType": "String", "StringValue": job_id}},
        )
    except (ClientError, BotoCoreError) as exc:
        raise DependencyUnavailable(f"could not publish the end of {job_id}: {reason_of(exc)}") from exc
    return str(response.get("MessageId", ""))


def send_email(ses: Any, sender: str, recipient: str, subject: str, body: str) -> str:
    """One plain-text e-mail through SES; returns its message id."""
    try:
        response = ses.send_email(
            Source=sender,
            Destination={"ToAddresses": [recipient]},
            Message={"Subject": {"Data": subject[:SUBJECT_MAX]}, "Body": {"Text": {"Data": body}}},
        )
    except (ClientError, BotoCoreError) as exc:
        raise DependencyUnavailable(f"could not e-mail {recipient}: {reason_of(exc)}") from exc
    return str(response.get("MessageId", ""))

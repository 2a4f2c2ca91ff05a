"""E-mail subscriptions to the jobs topic: a job's notify_email hears of that job only.

The supervisor publishes a job's notification with the message attribute job_id; each e-mail subscription
carries a filter policy {"job_id": [<the jobs it asked about>]}. SNS keeps one subscription per topic, protocol
and address, and refuses a second Subscribe with other attributes ("Subscription already exists with different
attributes"), so a second job for the same address adds its id to the existing subscription's policy.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import DependencyUnavailable

JOB_ATTRIBUTE = "job_id"
# SNS allows 150 values in one filter policy; the newest jobs of an address are the ones still running.
MAX_JOBS_PER_ADDRESS = 100
PENDING = "PendingConfirmation"


def subscribe_job(sns: Any, topic_arn: str, email: str, job_id: str) -> str:
    """Have `email` hear of `job_id`; returns what SNS did: "subscribed" (a confirmation mail goes out),
    "added" (to the address's confirmed subscription), "unfiltered" (it hears of every job already) or
    "pending" (the address has not confirmed an earlier subscription: SNS keeps that one's policy)."""
    try:
        existing = _existing(sns, topic_arn, email)
        if existing is None:
            policy = json.dumps({JOB_ATTRIBUTE: [job_id]})
            sns.subscribe(TopicArn=topic_arn, Protocol="email", Endpoint=email, Attributes={"FilterPolicy": policy})
            return "subscribed"
        if existing == PENDING:
            return "pending"
        return _add_job(sns, existing, job_id)
    except ClientError as exc:
        if "already exists" in str(exc.response.get("Error", {}).get("Message", "")):
            return "pending"  # an unconfirmed subscription of the address, listed without its ARN
        raise DependencyUnavailable(f"could not subscribe {email} to the job's notification: {reason_of(exc)}") from exc
    except BotoCoreError as exc:
        raise DependencyUnavailable(f"could not subscribe {email} to the job's notification: {reason_of(exc)}") from exc


def _existing(sns: Any, topic_arn: str, email: str) -> str | None:
    """The ARN of the address's subscription to the topic, PENDING when it awaits confirmation, None if none."""
    found: str | None = None
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
        for subscription in page.get("Subscriptions", []):
            if subscription.get("Protocol") == "email" and subscription.get("Endpoint") == email:
                arn = str(subscription.get("SubscriptionArn", ""))
                if arn.startswith("arn:"):
                    return arn
                found = PENDING
    return found


def _add_job(sns: Any, subscription_arn: str, job_id: str) -> str:
    attributes = sns.get_subscription_attributes(SubscriptionArn=subscription_arn).get("Attributes", {})
    policy = json.loads(attributes.get("FilterPolicy") or "{}")
    jobs = policy.get(JOB_ATTRIBUTE)
    if not isinstance(jobs, list):
        return "unfiltered"  # no policy on job_id (the deployment's own address): it hears of every job
    if job_id not in jobs:
        policy[JOB_ATTRIBUTE] = [*jobs, job_id][-MAX_JOBS_PER_ADDRESS:]
        sns.set_subscription_attributes(
            SubscriptionArn=subscription_arn, AttributeName="FilterPolicy", AttributeValue=json.dumps(policy)
        )
    return "added"

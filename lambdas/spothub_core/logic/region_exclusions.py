"""Leaving a region out of the ranking after a failed launch, for as long as the failure's class says,
and telling the operator of a quota once per exclusion (retrying cannot help there; they can)."""

from __future__ import annotations

import logging

from spothub_core.dal.alerts import publish_alert
from spothub_core.errors import DependencyUnavailable
from spothub_core.logic.hub_services import HubServices
from spothub_core.logic.launch_errors import LaunchFailure
from spothub_core.logic.quotas import quota_alert
from spothub_core.timings import EXCLUSION_SECONDS

logger = logging.getLogger(__name__)


def exclude_after_failure(
    hub: HubServices,
    region: str,
    error_class: str,
    code: str,
    message: str,
    *,
    now: float,
    capacity_type: str | None = None,
) -> None:
    """Leave the region out for as long as its failure's class says; tell the operator of a quota, once per
    exclusion (the worker's report and Auto Scaling's event of one failure find the same exclusion)."""
    if error_class not in EXCLUSION_SECONDS:
        return
    reason = f"{error_class}: {code} {message}"[:300]
    until = now + EXCLUSION_SECONDS[error_class]
    if error_class != LaunchFailure.QUOTA:
        hub.exclusions.exclude(region, until, reason, kind=error_class)
        return
    if not hub.exclusions.exclude_once(region, until, reason, kind=error_class, now=now):
        return
    alert = quota_alert(
        hub.prefix,
        region,
        capacity_type=capacity_type,
        instance_types=list(hub.instance_types),
        code=code,
        message=message,
        now=now,
    )
    if hub.alerts is None or not hub.alerts_topic_arn:
        logger.error("quota alert (no alerts topic)", extra={"subject": alert.subject, "alert": alert.message})
        return
    try:
        publish_alert(hub.alerts, hub.alerts_topic_arn, alert.subject, alert.message)
    except DependencyUnavailable:
        # The exclusion stands either way; a retried report would find it and not alert, so say it here.
        logger.exception("quota alert not published", extra={"subject": alert.subject, "alert": alert.message})


def exclude_after_timeout(hub: HubServices, region: str, launch_id: str, *, now: float) -> None:
    """The orchestrator gave up on a silent launch: the region may be fine, the worker may not be."""
    hub.exclusions.exclude(region, now + EXCLUSION_SECONDS["timeout"], f"launch {launch_id} timed out", kind="timeout")

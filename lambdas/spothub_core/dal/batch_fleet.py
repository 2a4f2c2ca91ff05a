"""A batch job's capacity in each worker region, in the jobs table: pk=JOB#<job_id>, sk=FLEET#<region>
(RegionFleet): what the hub asked of the region, what the region last reported, and the job's exclusion of it.

Requests and reports cross EventBridge and may arrive twice, late or out of order; each write says which race
its condition closes. Items expire with the job's other items (a TTL set once the group is released).
"""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.conditions import Key

from spothub_core.contracts import BatchFleetReport, CapacityType
from spothub_core.dal.batch_table import JOBS_PK
from spothub_core.dal.state_table import (
    PARTITION_KEY,
    SORT_KEY,
    TTL_ATTRIBUTE,
    conditional_write,
    plain_item,
    query_all,
    to_number,
)
from spothub_core.models.batch_records import RegionFleet
from spothub_core.timings import BATCH_RECORD_TTL_SECONDS

FLEET_PREFIX = "FLEET#"


def fleet_key(job_id: str, region: str) -> dict[str, str]:
    return {PARTITION_KEY: JOBS_PK.format(job_id=job_id), SORT_KEY: f"{FLEET_PREFIX}{region}"}


class FleetStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def list(self, job_id: str) -> list[RegionFleet]:
        """Every region the job asked for capacity (strongly consistent: the supervisor acts on it)."""
        items = query_all(
            self._table,
            f"read the fleet of {job_id}",
            KeyConditionExpression=Key(PARTITION_KEY).eq(JOBS_PK.format(job_id=job_id))
            & Key(SORT_KEY).begins_with(FLEET_PREFIX),
            ConsistentRead=True,
        )
        return [RegionFleet.model_validate(plain_item(item)) for item in items]

    def request(
        self,
        job_id: str,
        region: str,
        *,
        requested_at: float,
        desired: int | None = None,
        capacity_type: CapacityType = "spot",
    ) -> bool:
        """Record a request sent to the region: a growth (`desired` given) or a look or release (none). False when
        a later request is recorded already (this one's record is then left out)."""
        at = to_number(requested_at)
        fields: dict[str, Any] = {"job_id": job_id, "region": region, "requested_at": at}
        if desired is not None:
            fields.update({"desired": desired, "capacity_type": capacity_type, "grown_at": at})
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        response = conditional_write(
            f"record the fleet request of {job_id} in {region}",
            self._table.update_item,
            Key=fleet_key(job_id, region),
            UpdateExpression="SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(fields))),
            # Two supervisors at once (the schedule, the listing's last step, a report's run): the later request
            # is the one the region applies last, so its record must be the one that stays.
            ConditionExpression="attribute_not_exists(#at) OR #at <= :at",
            ExpressionAttributeNames={**names, "#at": "requested_at"},
            ExpressionAttributeValues={**{f":f{i}": v for i, v in enumerate(fields.values())}, ":at": at},
        )
        return response is not None

    def record_report(self, report: BatchFleetReport, now: float) -> RegionFleet | None:
        """Record what the region said; None when a report of a later request is recorded already."""
        fields: dict[str, Any] = {
            "job_id": report.job_id,
            "region": report.region,
            "in_service": report.in_service,
            "group_desired": report.desired,
            "instance_ids": report.instance_ids,
            "error": report.error,
            "error_class": report.error_class,
            "reported_at": to_number(now),
            "reported_for": to_number(report.requested_at),
        }
        # Reports delivered out of order: an older one must not overwrite what a newer one said (a duplicate, the
        # same request's, writes the same again).
        condition = "(attribute_not_exists(#for) OR #for <= :for)"
        names = {"#for": "reported_for"}
        values: dict[str, Any] = {":for": to_number(report.requested_at)}
        if report.released:
            fields.update({"released": True, TTL_ATTRIBUTE: int(now) + BATCH_RECORD_TTL_SECONDS})
        else:
            # A release is final: no report of the group as it was before undoes it.
            condition += " AND NOT #released = :true"
            names["#released"] = "released"
            values[":true"] = True
        response = conditional_write(
            f"record the fleet report of {report.job_id} in {report.region}",
            self._table.update_item,
            Key=fleet_key(report.job_id, report.region),
            UpdateExpression="SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(fields))),
            ConditionExpression=condition,
            ExpressionAttributeNames={**{f"#f{i}": name for i, name in enumerate(fields)}, **names},
            ExpressionAttributeValues={**{f":f{i}": v for i, v in enumerate(fields.values())}, **values},
            ReturnValues="ALL_NEW",
        )
        return None if response is None else RegionFleet.model_validate(plain_item(response["Attributes"]))

    def exclude(
        self, job_id: str, region: str, until: float, reason: str, *, capacity_type: CapacityType = "spot"
    ) -> bool:
        """No more of the job's workers of this capacity type asked of the region until `until`; False when a
        longer exclusion stands."""
        attribute = "excluded_until" if capacity_type == "spot" else "on_demand_excluded_until"
        response = conditional_write(
            f"exclude {region} for {job_id}",
            self._table.update_item,
            Key=fleet_key(job_id, region),
            UpdateExpression="SET #until = :until, #reason = :reason, job_id = :job, #region = :region",
            # A late or repeated report of an older failure must not shorten an exclusion a newer one set.
            ConditionExpression="attribute_not_exists(#until) OR #until < :until",
            ExpressionAttributeNames={"#until": attribute, "#reason": "error", "#region": "region"},
            ExpressionAttributeValues={
                ":until": to_number(until),
                ":reason": reason[:1000],
                ":job": job_id,
                ":region": region,
            },
        )
        return response is not None

"""Publishing where the model serves: an SSM parameter naming the last instance recorded healthy (always),
and, with a hosted zone and an endpoint name, one multivalue-answer A record per replica (its SetIdentifier
is the replica's id), so the name answers every serving replica's address wherever it was placed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import DependencyUnavailable
from spothub_core.timings import ENDPOINT_DNS_TTL_SECONDS

# Route 53's answer to a DELETE whose record set is gone, or no longer holds the values given.
RECORD_NOT_AS_GIVEN = "InvalidChangeBatch"


@dataclass(frozen=True)
class ActiveInstance:
    region: str
    instance_id: str
    public_ip: str | None = None
    private_ip: str | None = None


@dataclass(frozen=True)
class EndpointRecord:
    """The endpoint name's A record of one replica."""

    hosted_zone_id: str
    name: str
    replica_id: str
    address: str


def publish_active_instance(
    ssm: Any, route53: Any, *, parameter: str, active: ActiveInstance, record: EndpointRecord | None
) -> None:
    """Write the parameter; upsert the replica's A record (one change: its old value is replaced, never
    removed first, so the name never lacks this replica while it moves)."""
    value = json.dumps(
        {
            "region": active.region,
            "instance_id": active.instance_id,
            "public_ip": active.public_ip,
            "private_ip": active.private_ip,
        }
    )
    try:
        ssm.put_parameter(Name=parameter, Value=value, Type="String", Overwrite=True)
        if record:
            _change(
                route53, "UPSERT", record, f"spothub: {record.replica_id} on {active.instance_id} in {active.region}"
            )
    except (ClientError, BotoCoreError) as exc:
        raise DependencyUnavailable(f"could not publish the active instance: {reason_of(exc)}") from exc


def withdraw_endpoint_record(route53: Any, record: EndpointRecord, *, instance_id: str) -> bool:
    """Delete the replica's A record if it still holds `record.address`; False when there was nothing to
    delete: the record is gone already, or names another instance now (Route 53 refuses a DELETE whose values
    differ from the record's, so a replacement published meanwhile is never removed)."""
    try:
        _change(route53, "DELETE", record, f"spothub: {record.replica_id} left {instance_id}")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == RECORD_NOT_AS_GIVEN:
            return False
        raise DependencyUnavailable(f"could not withdraw the endpoint record: {reason_of(exc)}") from exc
    except BotoCoreError as exc:
        raise DependencyUnavailable(f"could not withdraw the endpoint record: {reason_of(exc)}") from exc
    return True


def _change(route53: Any, action: str, record: EndpointRecord, comment: str) -> None:
    route53.change_resource_record_sets(
        HostedZoneId=record.hosted_zone_id,
        ChangeBatch={
            "Comment": comment,
            "Changes": [
                {
                    "Action": action,
                    # A DELETE must repeat every value of the record set: the same shape as the UPSERT's.
                    "ResourceRecordSet": {
                        "Name": record.name,
                        "Type": "A",
                        "SetIdentifier": record.replica_id,
                        "MultiValueAnswer": True,
                        "TTL": ENDPOINT_DNS_TTL_SECONDS,
                        "ResourceRecords": [{"Value": record.address}],
                    },
                }
            ],
        },
    )

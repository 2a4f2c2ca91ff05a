"""Publishing the instance that serves: an SSM parameter (always) and the endpoint's DNS record (with a
hosted zone), so clients find the replica wherever it was placed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import DependencyUnavailable
from spothub_core.timings import ENDPOINT_DNS_TTL_SECONDS


@dataclass(frozen=True)
class ActiveInstance:
    region: str
    instance_id: str
    public_ip: str | None = None
    private_ip: str | None = None


def publish_active_instance(
    ssm: Any,
    route53: Any,
    *,
    parameter: str,
    hosted_zone_id: str | None,
    endpoint_name: str | None,
    active: ActiveInstance,
) -> None:
    """Write the parameter; upsert the endpoint's A record when there is a zone, a name and an address."""
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
        address = active.public_ip or active.private_ip
        if hosted_zone_id and endpoint_name and address:
            route53.change_resource_record_sets(
                HostedZoneId=hosted_zone_id,
                ChangeBatch={
                    "Comment": f"spothub: {active.instance_id} in {active.region}",
                    "Changes": [
                        {
                            "Action": "UPSERT",
                            "ResourceRecordSet": {
                                "Name": endpoint_name,
                                "Type": "A",
                                "TTL": ENDPOINT_DNS_TTL_SECONDS,
                                "ResourceRecords": [{"Value": address}],
                            },
                        }
                    ],
                },
            )
    except (ClientError, BotoCoreError) as exc:
        raise DependencyUnavailable(f"could not publish the active instance: {reason_of(exc)}") from exc

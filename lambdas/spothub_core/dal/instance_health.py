"""What the agents on the instances say, and what was done about unhealthy instances.

Items (pk / sk):
  AGENT / <instance_id>                   registration and the latest heartbeat: last_seen, ready,
                                          workload, gpu, drain; expires two days after the last heartbeat
  REMEDIATION / <instance_id>#<notice_id> one remediation (an alarm fired on the instance) and its reason
"""

from __future__ import annotations

from typing import Any

from spothub_core.dal.state_table import (
    PARTITION_KEY,
    SORT_KEY,
    TTL_ATTRIBUTE,
    conditional_write,
    plain_item,
    query_partition,
    to_item_value,
    to_number,
    update_fields,
)

AGENT = "AGENT"
REMEDIATION = "REMEDIATION"
AGENT_TTL_SECONDS = 2 * 86400
REMEDIATION_TTL_SECONDS = 30 * 86400


class InstanceHealthStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def register(self, instance_id: str, fields: dict[str, Any], *, now: float) -> None:
        self._set(instance_id, {**fields, "registered_at": to_number(now)}, now=now, condition=None)

    def heartbeat(self, instance_id: str, fields: dict[str, Any], *, now: float) -> bool:
        """Record a heartbeat; False when the agent is not registered (it registers, then beats again)."""
        return self._set(
            instance_id,
            fields,
            now=now,
            # An agent the control plane does not know (never registered, or its record expired) must
            # register first, so a heartbeat never creates a record without the instance's facts.
            # A heartbeat delayed behind a newer one must not roll last_seen back.
            condition="attribute_exists(pk) AND (attribute_not_exists(last_seen) OR last_seen <= :now)",
        )

    def record_drain(self, instance_id: str, drain: dict[str, Any], *, now: float) -> None:
        self._set(instance_id, {"drain": drain}, now=now, condition=None, touch=False)

    def agents(self) -> dict[str, dict[str, Any]]:
        return {str(i[SORT_KEY]): plain_item(i) for i in query_partition(self._table, AGENT, "read agent records")}

    def record_remediation(self, instance_id: str, notice_id: str, fields: dict[str, Any], *, now: float) -> bool:
        """Record one remediation; False when this firing of the alarm was recorded already."""
        written = conditional_write(
            f"record the remediation of {instance_id}",
            self._table.put_item,
            Item={
                PARTITION_KEY: REMEDIATION,
                SORT_KEY: f"{instance_id}#{notice_id}",
                "instance_id": instance_id,
                "notice_id": notice_id,
                "at": to_number(now),
                TTL_ATTRIBUTE: int(now) + REMEDIATION_TTL_SECONDS,
                **to_item_value(fields),
            },
            # The alarm's event delivered twice (or by two paths) records, and so remediates, once.
            ConditionExpression="attribute_not_exists(pk)",
        )
        return written is not None

    def remediations(self) -> list[dict[str, Any]]:
        items = query_partition(self._table, REMEDIATION, "read remediations")
        return sorted((plain_item(i) for i in items), key=lambda r: r.get("at", 0))

    def _set(
        self, instance_id: str, fields: dict[str, Any], *, now: float, condition: str | None, touch: bool = True
    ) -> bool:
        values = {**to_item_value(fields), TTL_ATTRIBUTE: int(now) + AGENT_TTL_SECONDS}
        if touch:
            values["last_seen"] = to_number(now)
        written = update_fields(
            self._table,
            {PARTITION_KEY: AGENT, SORT_KEY: instance_id},
            values,
            what=f"write the agent record of {instance_id}",
            condition=condition,
            values={":now": to_number(now)} if condition else None,
        )
        return written is not None

"""What the agents on the instances say, and what was done about unhealthy instances.

Items (pk / sk), read as the records of models/records.py:
  AGENT / <instance_id>                   AgentRecord: the registration and the latest heartbeat (last_seen,
                                          ready, workload, gpu), the drain; expires two days after the last heartbeat
  REMEDIATION / <instance_id>#<notice_id> Remediation: one alarm fired on the instance, and its reason
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
from spothub_core.models.agent import Heartbeat, Registration
from spothub_core.models.records import AgentRecord, AgentStatus, Remediation
from spothub_core.timings import AGENT_RECORD_TTL_SECONDS, REMEDIATION_RECORD_TTL_SECONDS

AGENT = "AGENT"
REMEDIATION = "REMEDIATION"


class InstanceHealthStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def register(self, instance_id: str, registration: Registration, *, now: float) -> None:
        """Record the agent's registration; what its heartbeats said (and its drain) is kept."""
        fields = {**registration.model_dump(), "status": AgentStatus.REGISTERED.value, "registered_at": to_number(now)}
        self._set(instance_id, fields, now=now, condition=None)

    def heartbeat(self, instance_id: str, beat: Heartbeat, *, now: float) -> bool:
        """Record a heartbeat; False when the agent is not registered (it registers, then beats again)."""
        return self._set(
            instance_id,
            beat.model_dump(),
            now=now,
            # An agent the control plane does not know (never registered, or its record expired) must
            # register first, so a heartbeat never creates a record without the instance's facts.
            # A heartbeat delayed behind a newer one must not roll last_seen back.
            condition="attribute_exists(pk) AND (attribute_not_exists(last_seen) OR last_seen <= :now)",
        )

    def record_drain(self, instance_id: str, drain: dict[str, Any], *, now: float) -> None:
        self._set(instance_id, {"drain": drain}, now=now, condition=None, touch=False)

    def agents(self) -> dict[str, AgentRecord]:
        """The agents' records by instance id."""
        items = query_partition(self._table, AGENT, "read agent records")
        return {
            str(i[SORT_KEY]): AgentRecord.model_validate({**plain_item(i), "instance_id": i[SORT_KEY]}) for i in items
        }

    def record_remediation(self, remediation: Remediation) -> bool:
        """Record one remediation; False when this firing of the alarm was recorded already."""
        written = conditional_write(
            f"record the remediation of {remediation.instance_id}",
            self._table.put_item,
            Item={
                **to_item_value(remediation.model_dump(mode="json")),
                PARTITION_KEY: REMEDIATION,
                SORT_KEY: f"{remediation.instance_id}#{remediation.notice_id}",
                "at": to_number(remediation.at),
                TTL_ATTRIBUTE: int(remediation.at) + REMEDIATION_RECORD_TTL_SECONDS,
            },
            # The alarm's event delivered twice (or by two paths) records, and so remediates, once.
            ConditionExpression="attribute_not_exists(pk)",
        )
        return written is not None

    def remediations(self) -> list[Remediation]:
        """Every remediation still kept, oldest first."""
        items = query_partition(self._table, REMEDIATION, "read remediations")
        return sorted((Remediation.model_validate(plain_item(i)) for i in items), key=lambda r: r.at)

    def _set(
        self, instance_id: str, fields: dict[str, Any], *, now: float, condition: str | None, touch: bool = True
    ) -> bool:
        values = {**to_item_value(fields), TTL_ATTRIBUTE: int(now) + AGENT_RECORD_TTL_SECONDS}
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

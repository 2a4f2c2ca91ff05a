"""Spot provisioning state in the state table: the switch, the replicas, launches, instances, teardowns.

Items (pk / sk):
  PROVISIONING / CONFIG        status enabled|disabled, generation, replicas, instance types, regions
  REPLICA / <replica_id>       where a replica is: status placing|serving|replacing|stopped, region, instance
  LAUNCH / <launch_id>         one launch request to a worker region; holds the orchestrator's task token
  TEARDOWN / <teardown_id>     one teardown request; holds the waiting task token, if any
  INSTANCE / <instance_id>     an instance spothub placed, with what GET /spot-instances shows
  RESERVATION / <region>       the replica that holds a region (held|released): from before its launch is
                               dispatched there until it leaves, its launch fails, or it stops

Task tokens never leave this table except to Step Functions: a worker's report names a launch, the
token is looked up here, and a conditional status change decides which report uses it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from spothub_core.dal.state_table import (
    PARTITION_KEY,
    SORT_KEY,
    TTL_ATTRIBUTE,
    call,
    conditional_write,
    plain_item,
    query_partition,
    to_number,
    update_fields,
)

CONFIG_KEY = {PARTITION_KEY: "PROVISIONING", SORT_KEY: "CONFIG"}
REPLICA = "REPLICA"
LAUNCH = "LAUNCH"
TEARDOWN = "TEARDOWN"
INSTANCE = "INSTANCE"
RESERVATION = "RESERVATION"
# Launch and teardown records are kept a week for the operator's questions, then expire.
RECORD_TTL_SECONDS = 7 * 86400
PENDING = "pending"
# Attribute names written as placeholders in condition expressions.
CONDITION_NAMES = {"#status": "status", "#execution": "execution"}


class ReservationStatus(StrEnum):
    HELD = "held"
    RELEASED = "released"


class ProvisioningStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    # --- the switch ----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        item = call("read the provisioning switch", self._table.get_item, Key=CONFIG_KEY).get("Item")
        return plain_item(item) if item else {"status": "disabled", "generation": 0}

    def write_config(self, config: dict[str, Any], *, expected_generation: int) -> bool:
        """Replace the switch; False when another toggle changed it since it was read."""
        written = conditional_write(
            "write the provisioning switch",
            self._table.put_item,
            Item={**CONFIG_KEY, **config},
            # Two toggles racing: only the one that read the current generation writes.
            ConditionExpression="attribute_not_exists(pk) OR generation = :expected",
            ExpressionAttributeValues={":expected": expected_generation},
        )
        return written is not None

    # --- replicas ------------------------------------------------------------------------------

    def replicas(self) -> list[dict[str, Any]]:
        return [{"replica_id": i[SORT_KEY], **plain_item(i)} for i in self._query(REPLICA)]

    def replica(self, replica_id: str) -> dict[str, Any] | None:
        item = self._get(REPLICA, replica_id)
        return {"replica_id": replica_id, **item} if item else None

    def start_placing(self, replica_id: str, *, generation: int, execution: str, now: float) -> bool:
        """Mark a replica as being placed by `execution`; False when it is already placed or placing
        in this generation (a second enable, or two enables at once)."""
        return (
            self._update(
                REPLICA,
                replica_id,
                {"status": "placing", "generation": generation, "execution": execution, "updated_at": to_number(now)},
                # Closes the race of two enables: only one claims a replica per generation. An update, not a put:
                # a replica re-placed under new settings keeps the instance it serves on until it is replaced.
                condition="attribute_not_exists(pk) OR generation < :generation OR #status = :stopped",
                values={":generation": generation, ":stopped": "stopped"},
            )
            is not None
        )

    def start_replacing(self, replica_id: str, *, instance_id: str, execution: str, now: float) -> bool:
        """Mark a serving replica as being replaced; False when it is not serving on that instance
        (a duplicate or late notice, or a notice for an instance already replaced)."""
        return (
            self._update(
                REPLICA,
                replica_id,
                {"status": "replacing", "execution": execution, "updated_at": to_number(now)},
                # Two notices for one instance (rebalance then interruption, or a redelivery) start one replacement.
                condition="#status = :serving AND instance_id = :instance",
                values={":serving": "serving", ":instance": instance_id},
            )
            is not None
        )

    def replica_serving(self, replica_id: str, *, generation: int, fields: dict[str, Any]) -> bool:
        """The replica's new instance is healthy; False when provisioning moved on (disabled since)."""
        return (
            self._update(
                REPLICA,
                replica_id,
                {"status": "serving", **fields},
                # A disable (status stopped) or a new enable (newer generation) while the launch ran must not
                # be undone by its success.
                condition="generation = :generation AND #status IN (:placing, :replacing)",
                values={":generation": generation, ":placing": "placing", ":replacing": "replacing"},
            )
            is not None
        )

    def keep_serving(
        self, replica_id: str, *, generation: int, instance_id: str, execution: str, watch: str, fields: dict[str, Any]
    ) -> bool:
        """A spot-only replacement (`execution`) found no spot: the replica serves on `instance_id` again, now
        watched by `watch`. True also when this was done before (a retry); False when the replica moved on."""
        return (
            self._update(
                REPLICA,
                replica_id,
                {"status": "serving", "execution": watch, **fields},
                # The race: while the spot-only replacement ran, the operator may have disabled (stopped) or
                # re-enabled (placing, a newer generation, another execution), or the replacement failed (failed).
                # Unconditionally, such a replica would be put back to serving and watched again. Only the
                # replacement that still holds the replica hands it back, on the instance it was replacing; a
                # retry of this write finds it handed back already (serving, under the watch's name).
                condition=(
                    "generation = :generation AND instance_id = :instance"
                    " AND ((#status = :replacing AND #execution = :execution)"
                    " OR (#status = :serving AND #execution = :watch))"
                ),
                values={
                    ":generation": generation,
                    ":instance": instance_id,
                    ":replacing": "replacing",
                    ":serving": "serving",
                    ":execution": execution,
                    ":watch": watch,
                },
            )
            is not None
        )

    def replica_status(self, replica_id: str, status: str, fields: dict[str, Any] | None = None) -> None:
        self.update_replica(replica_id, {"status": status, **(fields or {})})

    def update_replica(self, replica_id: str, fields: dict[str, Any]) -> None:
        self._update(REPLICA, replica_id, fields, condition=None, values={})

    def stop_replicas(self, now: float) -> list[dict[str, Any]]:
        stopped = []
        for replica in self.replicas():
            if replica.get("status") != "stopped":
                self.replica_status(replica["replica_id"], "stopped", {"updated_at": to_number(now)})
                stopped.append(replica)
        return stopped

    # --- launches and teardowns (hold task tokens) -----------------------------------------------

    def put_request(self, kind: str, request_id: str, fields: dict[str, Any], *, token: str, now: float) -> bool:
        """Record a launch or teardown request with the task token that waits for it; a retried
        dispatch of a still-pending request refreshes its token. False when it was already resolved."""
        return self._conditional_put(
            kind,
            request_id,
            {
                **fields,
                "status": PENDING,
                "task_token": token,
                "created_at": to_number(now),
                TTL_ATTRIBUTE: int(now) + RECORD_TTL_SECONDS,
            },
            # A late retry of the dispatch must not reopen a request a worker already answered.
            condition="attribute_not_exists(pk) OR #status = :pending",
            values={":pending": PENDING},
        )

    def resolve_request(self, kind: str, request_id: str, status: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Move a pending request to `status`; returns it (with its token) when this call did so,
        None when it was not pending: a duplicate, late or out-of-order report changes nothing."""
        # Exactly one report resolves a request: the first; the token is used once.
        return self._update(
            kind,
            request_id,
            {"status": status, **fields},
            condition="#status = :pending",
            values={":pending": PENDING},
        )

    def request(self, kind: str, request_id: str) -> dict[str, Any] | None:
        return self._get(kind, request_id)

    def pending(self, kind: str) -> list[dict[str, Any]]:
        return [{"id": i[SORT_KEY], **plain_item(i)} for i in self._query(kind) if i.get("status") == PENDING]

    # --- instances -------------------------------------------------------------------------------

    def put_instance(self, instance_id: str, fields: dict[str, Any]) -> None:
        self._update(INSTANCE, instance_id, fields, condition=None, values={})

    def instance(self, instance_id: str) -> dict[str, Any] | None:
        return self._get(INSTANCE, instance_id)

    def instances(self) -> list[dict[str, Any]]:
        return [{"instance_id": i[SORT_KEY], **plain_item(i)} for i in self._query(INSTANCE)]

    # --- region reservations: one replica per region, also while launches are in flight -------------

    def reserve_region(
        self, region: str, *, replica_id: str, launch_id: str, now: float, taking_over: str | None = None
    ) -> bool:
        """Hold `region` for `replica_id`'s launch `launch_id`; False when another replica holds it.
        `taking_over`: the launch of a reservation left behind (its replica stopped), replaced only as it was."""
        condition = "attribute_not_exists(pk) OR #status = :released OR replica_id = :replica"
        values: dict[str, Any] = {":released": ReservationStatus.RELEASED.value, ":replica": replica_id}
        if taking_over is not None:
            condition += " OR launch_id = :stale"
            values[":stale"] = taking_over
        return (
            self._update(
                RESERVATION,
                region,
                {
                    "status": ReservationStatus.HELD.value,
                    "replica_id": replica_id,
                    "launch_id": launch_id,
                    "reserved_at": to_number(now),
                },
                # Replicas that ranked at once target the same best region: only the first holds it, the others
                # look again. The holder renews its own (a retried dispatch, a replacement where it serves); two
                # takeovers of one left-behind reservation: only the first still finds the launch it names.
                condition=condition,
                values=values,
            )
            is not None
        )

    def release_region(self, region: str, *, launch_id: str, now: float) -> bool:
        """Let other replicas have `region`, if `launch_id` still holds it; False when it does not."""
        return (
            self._update(
                RESERVATION,
                region,
                {"status": ReservationStatus.RELEASED.value, "released_at": to_number(now)},
                # A late or duplicate release must not free a region reserved again since (a newer launch,
                # another replica).
                condition="#status = :held AND launch_id = :launch",
                values={":held": ReservationStatus.HELD.value, ":launch": launch_id},
            )
            is not None
        )

    def release_regions(self, replica_id: str, *, now: float, keep: str | None = None) -> list[str]:
        """Release every region `replica_id` holds but `keep`; the regions released."""
        held = self.reservations().items()
        return [
            region
            for region, reservation in held
            if reservation["replica_id"] == replica_id
            and region != keep
            and self.release_region(region, launch_id=reservation["launch_id"], now=now)
        ]

    def reservations(self) -> dict[str, dict[str, Any]]:
        """The regions held, each with its replica and launch."""
        return {
            i[SORT_KEY]: plain_item(i)
            for i in self._query(RESERVATION)
            if i.get("status") == ReservationStatus.HELD.value
        }

    def reservation(self, region: str) -> dict[str, Any] | None:
        return self._get(RESERVATION, region)

    # --- internals -------------------------------------------------------------------------------

    def _get(self, kind: str, key: str) -> dict[str, Any] | None:
        item = call(f"read {kind.lower()} {key}", self._table.get_item, Key={PARTITION_KEY: kind, SORT_KEY: key}).get(
            "Item"
        )
        return plain_item(item) if item else None

    def _query(self, kind: str) -> list[dict[str, Any]]:
        return query_partition(self._table, kind, f"read {kind.lower()} records")

    def _conditional_put(
        self, kind: str, key: str, fields: dict[str, Any], *, condition: str, values: dict[str, Any]
    ) -> bool:
        arguments: dict[str, Any] = {
            "Item": {PARTITION_KEY: kind, SORT_KEY: key, **fields},
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if "#status" in condition:
            arguments["ExpressionAttributeNames"] = {"#status": "status"}
        return conditional_write(f"write {kind.lower()} {key}", self._table.put_item, **arguments) is not None

    def _update(
        self, kind: str, key: str, fields: dict[str, Any], *, condition: str | None, values: dict[str, Any]
    ) -> dict[str, Any] | None:
        """SET `fields` (under `condition`); the item as it is now, None when the condition failed."""
        return update_fields(
            self._table,
            {PARTITION_KEY: kind, SORT_KEY: key},
            fields,
            what=f"write {kind.lower()} {key}",
            condition=condition,
            names={k: v for k, v in CONDITION_NAMES.items() if k in (condition or "")} or None,
            values=values,
        )

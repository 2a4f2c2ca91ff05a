"""Spot provisioning state in the state table: the switch, the replicas, launches, instances, teardowns.

Items (pk / sk), each read into its record of spothub_core.models.records:
  PROVISIONING / CONFIG        ProvisioningConfig: the switch, its generation and the operator's settings
  REPLICA / <replica_id>       Replica: where a replica is (placing|serving|replacing|failed|stopped)
  LAUNCH / <launch_id>         LaunchRecord: one launch request to a worker region; holds the task token
  TEARDOWN / <teardown_id>     TeardownRecord: one teardown request; holds the waiting task token, if any
  INSTANCE / <instance_id>     InstanceRecord: an instance spothub placed, with what GET /spot-instances shows
  RESERVATION / <region>       Reservation: the replica that holds a region (held|released): from before its
                               launch is dispatched there until it leaves, its launch fails, or it stops

Task tokens never leave this table except to Step Functions: a worker's report names a launch, the
token is looked up here, and a conditional status change decides which report uses it.

Partial updates name record fields (checked against the record's model); whole items are written from records.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from spothub_core.dal.state_table import (
    PARTITION_KEY,
    SORT_KEY,
    TTL_ATTRIBUTE,
    call,
    conditional_write,
    plain_item,
    query_partition,
    to_item_value,
    to_number,
    update_fields,
)
from spothub_core.models.records import (
    InstanceRecord,
    LaunchRecord,
    ProvisioningConfig,
    Replica,
    ReplicaStatus,
    RequestStatus,
    Reservation,
    ReservationStatus,
    TeardownRecord,
)
from spothub_core.timings import REQUEST_RECORD_TTL_SECONDS

CONFIG_KEY = {PARTITION_KEY: "PROVISIONING", SORT_KEY: "CONFIG"}
REPLICA = "REPLICA"
INSTANCE = "INSTANCE"
RESERVATION = "RESERVATION"
# Attribute names written as placeholders in condition expressions.
CONDITION_NAMES = {"#status": "status", "#execution": "execution"}

Request = TypeVar("Request", LaunchRecord, TeardownRecord)


@dataclass(frozen=True)
class RequestKind(Generic[Request]):
    """Launches and teardowns are stored alike: a partition, the record they read into, its id field."""

    partition: str
    model: type[Request]
    id_field: str

    def read(self, request_id: str, item: dict[str, Any]) -> Request:
        return self.model.model_validate({**plain_item(item), self.id_field: request_id})


LAUNCH: RequestKind[LaunchRecord] = RequestKind("LAUNCH", LaunchRecord, "launch_id")
TEARDOWN: RequestKind[TeardownRecord] = RequestKind("TEARDOWN", TeardownRecord, "teardown_id")


class ProvisioningStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    # --- the switch ----------------------------------------------------------------------------

    def config(self) -> ProvisioningConfig:
        item = call("read the provisioning switch", self._table.get_item, Key=CONFIG_KEY).get("Item")
        return ProvisioningConfig.model_validate(plain_item(item)) if item else ProvisioningConfig()

    def write_config(self, config: ProvisioningConfig, *, expected_generation: int) -> bool:
        """Replace the switch; False when another toggle changed it since it was read."""
        written = conditional_write(
            "write the provisioning switch",
            self._table.put_item,
            Item={**CONFIG_KEY, **_item(config)},
            # Two toggles racing: only the one that read the current generation writes.
            ConditionExpression="attribute_not_exists(pk) OR generation = :expected",
            ExpressionAttributeValues={":expected": expected_generation},
        )
        return written is not None

    # --- replicas ------------------------------------------------------------------------------

    def replicas(self) -> list[Replica]:
        return [Replica.model_validate({**plain_item(i), "replica_id": i[SORT_KEY]}) for i in self._query(REPLICA)]

    def replica(self, replica_id: str) -> Replica | None:
        item = self._get(REPLICA, replica_id)
        return Replica.model_validate({**item, "replica_id": replica_id}) if item else None

    def start_placing(self, replica_id: str, *, generation: int, execution: str, now: float) -> bool:
        """Mark a replica as being placed by `execution`; False when it is already placed or placing
        in this generation (a second enable, or two enables at once)."""
        return (
            self._update(
                REPLICA,
                replica_id,
                {
                    "status": ReplicaStatus.PLACING,
                    "generation": generation,
                    "execution": execution,
                    "updated_at": to_number(now),
                },
                # Closes the race of two enables: only one claims a replica per generation. An update, not a put:
                # a replica re-placed under new settings keeps the instance it serves on until it is replaced.
                condition="attribute_not_exists(pk) OR generation < :generation OR #status = :stopped",
                values={":generation": generation, ":stopped": ReplicaStatus.STOPPED.value},
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
                {"status": ReplicaStatus.REPLACING, "execution": execution, "updated_at": to_number(now)},
                # Two notices for one instance (rebalance then interruption, or a redelivery) start one replacement.
                condition="#status = :serving AND instance_id = :instance",
                values={":serving": ReplicaStatus.SERVING.value, ":instance": instance_id},
            )
            is not None
        )

    def replica_serving(self, replica_id: str, *, generation: int, fields: dict[str, Any]) -> bool:
        """The replica's new instance is healthy; False when provisioning moved on (disabled since)."""
        return (
            self._update(
                REPLICA,
                replica_id,
                {"status": ReplicaStatus.SERVING, **_fields(Replica, fields)},
                # A disable (status stopped) or a new enable (newer generation) while the launch ran must not
                # be undone by its success.
                condition="generation = :generation AND #status IN (:placing, :replacing)",
                values={
                    ":generation": generation,
                    ":placing": ReplicaStatus.PLACING.value,
                    ":replacing": ReplicaStatus.REPLACING.value,
                },
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
                {"status": ReplicaStatus.SERVING, "execution": watch, **_fields(Replica, fields)},
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
                    ":replacing": ReplicaStatus.REPLACING.value,
                    ":serving": ReplicaStatus.SERVING.value,
                    ":execution": execution,
                    ":watch": watch,
                },
            )
            is not None
        )

    def replica_status(self, replica_id: str, status: ReplicaStatus, fields: dict[str, Any] | None = None) -> None:
        self.update_replica(replica_id, {"status": status, **(fields or {})})

    def update_replica(self, replica_id: str, fields: dict[str, Any]) -> None:
        self._update(REPLICA, replica_id, _fields(Replica, fields), condition=None, values={})

    def stop_replicas(self, now: float) -> list[Replica]:
        """Stop every replica not stopped yet; those stopped, as they were before."""
        stopped = []
        for replica in self.replicas():
            if replica.status != ReplicaStatus.STOPPED:
                self.replica_status(replica.replica_id, ReplicaStatus.STOPPED, {"updated_at": to_number(now)})
                stopped.append(replica)
        return stopped

    # --- launches and teardowns (hold task tokens) -----------------------------------------------

    def put_request(self, kind: RequestKind[Request], request: Request, *, token: str, now: float) -> bool:
        """Record a launch or teardown request with the task token that waits for it; a retried
        dispatch of a still-pending request refreshes its token. False when it was already resolved."""
        request_id = getattr(request, kind.id_field)
        return self._conditional_put(
            kind.partition,
            request_id,
            {
                **_item(request, exclude={"status", "task_token", "created_at", "resolved_at"}),
                "status": RequestStatus.PENDING.value,
                "task_token": token,
                "created_at": to_number(now),
                TTL_ATTRIBUTE: int(now) + REQUEST_RECORD_TTL_SECONDS,
            },
            # A late retry of the dispatch must not reopen a request a worker already answered.
            condition="attribute_not_exists(pk) OR #status = :pending",
            values={":pending": RequestStatus.PENDING.value},
        )

    def resolve_request(
        self,
        kind: RequestKind[Request],
        request_id: str,
        status: RequestStatus,
        *,
        resolved_at: float | None = None,
        error: str | None = None,
        instance_id: str | None = None,
    ) -> Request | None:
        """Move a pending request to `status`; returns it (with its token) when this call did so,
        None when it was not pending: a duplicate, late or out-of-order report changes nothing."""
        given = {
            "resolved_at": None if resolved_at is None else int(resolved_at),
            "error": error,
            "instance_id": instance_id,
        }
        fields = {name: value for name, value in given.items() if value is not None}
        # Exactly one report resolves a request: the first; the token is used once.
        item = self._update(
            kind.partition,
            request_id,
            {"status": status, **_fields(kind.model, fields)},
            condition="#status = :pending",
            values={":pending": RequestStatus.PENDING.value},
        )
        return None if item is None else kind.read(request_id, item)

    def request(self, kind: RequestKind[Request], request_id: str) -> Request | None:
        item = self._get(kind.partition, request_id)
        return None if item is None else kind.read(request_id, item)

    def requests(self, kind: RequestKind[Request]) -> list[Request]:
        """Every request of the kind still kept (they expire REQUEST_RECORD_TTL_SECONDS after they resolve)."""
        return [kind.read(i[SORT_KEY], i) for i in self._query(kind.partition)]

    def pending(self, kind: RequestKind[Request]) -> list[Request]:
        return [r for r in self.requests(kind) if r.status == RequestStatus.PENDING]

    # --- instances -------------------------------------------------------------------------------

    def put_instance(self, instance_id: str, fields: dict[str, Any]) -> None:
        self._update(INSTANCE, instance_id, _fields(InstanceRecord, fields), condition=None, values={})

    def instance(self, instance_id: str) -> InstanceRecord | None:
        item = self._get(INSTANCE, instance_id)
        return InstanceRecord.model_validate({**item, "instance_id": instance_id}) if item else None

    def instances(self) -> list[InstanceRecord]:
        return [
            InstanceRecord.model_validate({**plain_item(i), "instance_id": i[SORT_KEY]}) for i in self._query(INSTANCE)
        ]

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
                    "status": ReservationStatus.HELD,
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
                {"status": ReservationStatus.RELEASED, "released_at": to_number(now)},
                # A late or duplicate release must not free a region reserved again since (a newer launch,
                # another replica).
                condition="#status = :held AND launch_id = :launch",
                values={":held": ReservationStatus.HELD.value, ":launch": launch_id},
            )
            is not None
        )

    def release_regions(self, replica_id: str, *, now: float, keep: str | None = None) -> list[str]:
        """Release every region `replica_id` holds but `keep`; the regions released."""
        return [
            held.region
            for held in self.reservations()
            if held.replica_id == replica_id
            and held.region != keep
            and self.release_region(held.region, launch_id=held.launch_id, now=now)
        ]

    def reservations(self) -> list[Reservation]:
        """The regions held, each with its replica and launch."""
        found = [Reservation.model_validate({**plain_item(i), "region": i[SORT_KEY]}) for i in self._query(RESERVATION)]
        return [r for r in found if r.status == ReservationStatus.HELD]

    def reservation(self, region: str) -> Reservation | None:
        item = self._get(RESERVATION, region)
        return Reservation.model_validate({**item, "region": region}) if item else None

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
            {name: value.value if isinstance(value, Enum) else value for name, value in fields.items()},
            what=f"write {kind.lower()} {key}",
            condition=condition,
            names={k: v for k, v in CONDITION_NAMES.items() if k in (condition or "")} or None,
            values=values,
        )


def _fields(model: type[BaseModel], fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` of a partial update, each a field of the record it updates (a misspelt name is an error)."""
    unknown = set(fields) - set(model.model_fields)
    if unknown:
        raise ValueError(f"not fields of {model.__name__}: {', '.join(sorted(unknown))}")
    return fields


def _item(record: BaseModel, *, exclude: set[str] | None = None) -> dict[str, Any]:
    """A whole record as DynamoDB takes it: JSON values (enums as their names), floats as Decimals, None left out."""
    return to_item_value(record.model_dump(mode="json", exclude_none=True, exclude=exclude))

"""The warm standby's state in the state table: capacity signals, zone score samples, each replica's standby,
and the one write that moves a replica onto its standby.

Items (pk / sk), each read into its record of spothub_core.models.standby_records:
  SIGNAL / <region>#<signal_id>   CapacitySignalRecord: keyed by its source (a notice's instance and kind, a failed
                                  launch), not by its arrival, so a notice delivered twice is one item; expires
                                  (TTL) a day after the rules stop reading it
  SCORE / <zone>#<at>             ZoneScoreRecord: one placement score of a zone; expires an hour after the score
                                  window (the partition is read whole: kept short)
  STANDBY / <replica_id>          StandbyRecord: the replica's standby, launching or ready; gone once promoted or
                                  released
  STANDBY_ENDED / <launch_id>     EndedStandby: a standby that went (promoted, released, failed), how and why;
                                  expires (TTL) a week later, as launch and teardown requests do
The operator's switch is the `warm_standby` attribute of the provisioning switch's item (PROVISIONING / CONFIG),
absent (off) until set. The replica's switch to its standby is a conditional update of its REPLICA item
(spothub_core.dal.provisioning's layout), kept here beside the standby's own writes it goes with.

Readers filter on `at`: TTL deletion lags by hours.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from boto3.dynamodb.conditions import Attr, Key

from spothub_core.dal.provisioning import CONFIG_KEY, REPLICA
from spothub_core.dal.state_table import (
    PARTITION_KEY,
    SORT_KEY,
    TTL_ATTRIBUTE,
    call,
    conditional_write,
    plain_item,
    query_all,
    to_item_value,
    to_number,
    update_fields,
)
from spothub_core.models.records import Replica, ReplicaStatus
from spothub_core.models.standby_records import (
    STANDBY,
    STANDBY_ENDED,
    CapacitySignalRecord,
    EndedStandby,
    StandbyRecord,
    StandbyStatus,
    ZoneScoreRecord,
)
from spothub_core.timings import (
    DAY_SECONDS,
    HOUR_SECONDS,
    REQUEST_RECORD_TTL_SECONDS,
    STANDBY_NOTICE_WINDOW_SECONDS,
    STANDBY_RETRY_SECONDS,
    STANDBY_SCORE_WINDOW_SECONDS,
)

SIGNAL = "SIGNAL"
SCORE = "SCORE"
# How long a signal is read (the notice window, or the retry interval if longer) and a score sample is kept.
SIGNAL_READ_SECONDS = max(STANDBY_NOTICE_WINDOW_SECONDS, STANDBY_RETRY_SECONDS)
SCORE_KEEP_SECONDS = STANDBY_SCORE_WINDOW_SECONDS + HOUR_SECONDS


class StandbyStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def switched_on(self) -> bool:
        """Whether the operator keeps warm standbys (`warm_standby` on the provisioning switch; off when absent)."""
        item = call(
            "read the warm standby switch",
            self._table.get_item,
            Key=CONFIG_KEY,
            ProjectionExpression="warm_standby",
        ).get("Item")
        return bool(item and item.get("warm_standby"))

    # --- capacity signals ------------------------------------------------------------------------------

    def record_signal(self, signal: CapacitySignalRecord) -> bool:
        """Record a signal; False when its source was recorded before (a duplicate, late or retried report)."""
        item = {
            PARTITION_KEY: SIGNAL,
            SORT_KEY: f"{signal.region}#{signal.signal_id}",
            **_item(signal),
            TTL_ATTRIBUTE: int(signal.at) + SIGNAL_READ_SECONDS + DAY_SECONDS,
        }
        written = conditional_write(
            f"record the signal {signal.signal_id}",
            self._table.put_item,
            Item=item,
            # A notice delivered twice, or late: the first arrival's time stands. A later time would keep the
            # region at risk longer than the one event it is.
            ConditionExpression="attribute_not_exists(pk)",
        )
        return written is not None

    def signals(self, *, since: float) -> list[CapacitySignalRecord]:
        """Every signal of the deployment at `since` or later, every region."""
        items = query_all(
            self._table,
            "read capacity signals",
            KeyConditionExpression=Key(PARTITION_KEY).eq(SIGNAL),
            FilterExpression=Attr("at").gte(to_number(since)),
        )
        return [CapacitySignalRecord.model_validate(plain_item(i)) for i in items]

    # --- zone placement scores -------------------------------------------------------------------------

    def record_scores(self, samples: Iterable[ZoneScoreRecord]) -> int:
        """Record placement score samples (a retried call rewrites the same items); how many."""
        written = 0
        for sample in samples:
            call(
                f"record the placement score of {sample.zone}",
                self._table.put_item,
                Item={
                    PARTITION_KEY: SCORE,
                    SORT_KEY: f"{sample.zone}#{sample.at:014.3f}",
                    **_item(sample),
                    TTL_ATTRIBUTE: int(sample.at) + SCORE_KEEP_SECONDS,
                },
            )
            written += 1
        return written

    def scores(self, *, since: float) -> list[ZoneScoreRecord]:
        items = query_all(
            self._table,
            "read placement score samples",
            KeyConditionExpression=Key(PARTITION_KEY).eq(SCORE),
            FilterExpression=Attr("at").gte(to_number(since)),
        )
        return [ZoneScoreRecord.model_validate(plain_item(i)) for i in items]

    # --- the replica's standby -------------------------------------------------------------------------

    def standby(self, replica_id: str) -> StandbyRecord | None:
        item = call(
            f"read the standby of {replica_id}",
            self._table.get_item,
            Key={PARTITION_KEY: STANDBY, SORT_KEY: replica_id},
        ).get("Item")
        return _standby(item) if item else None

    def standbys(self) -> list[StandbyRecord]:
        items = query_all(self._table, "read standbys", KeyConditionExpression=Key(PARTITION_KEY).eq(STANDBY))
        return [_standby(i) for i in items]

    def by_launch(self, launch_id: str) -> StandbyRecord | None:
        """The standby whose launch is `launch_id` (one item per replica: a small partition)."""
        return next((s for s in self.standbys() if s.launch_id == launch_id), None)

    def by_instance(self, instance_id: str) -> StandbyRecord | None:
        return next((s for s in self.standbys() if s.instance_id == instance_id), None)

    def claim(self, standby: StandbyRecord) -> bool:
        """Hold a standby for the replica before its launch is dispatched; False when it holds one already."""
        written = conditional_write(
            f"claim a standby for {standby.replica_id}",
            self._table.put_item,
            Item={PARTITION_KEY: STANDBY, SORT_KEY: standby.replica_id, **_item(standby)},
            # Two checks at once (the minute's and a notice's) start one standby, not two.
            ConditionExpression="attribute_not_exists(pk)",
        )
        return written is not None

    def mark_ready(
        self,
        replica_id: str,
        *,
        launch_id: str,
        instance_id: str,
        zone: str | None,
        public_ip: str | None,
        private_ip: str | None,
        now: float,
    ) -> StandbyRecord | None:
        """The standby's launch succeeded; None when `launch_id` is not the replica's launching standby."""
        fields: dict[str, Any] = {
            "status": StandbyStatus.READY.value,
            "instance_id": instance_id,
            "ready_at": to_number(now),
            "public_ip": public_ip,
            "private_ip": private_ip,
        }
        if zone:
            fields["zone"] = zone
        item = update_fields(
            self._table,
            {PARTITION_KEY: STANDBY, SORT_KEY: replica_id},
            fields,
            what=f"mark the standby of {replica_id} ready",
            # A duplicate success changes nothing; the success of a standby released since (or of an older one,
            # replaced by a newer launch) must not mark the current one ready with another instance.
            condition="launch_id = :launch AND #status = :launching",
            names={"#status": "status"},
            values={":launch": launch_id, ":launching": StandbyStatus.LAUNCHING.value},
        )
        return None if item is None else _standby(item, replica_id)

    def adopt(self, replica_id: str, *, launch_id: str, replacing: str) -> StandbyRecord | None:
        """The standby is to replace the serving instance `replacing` (a notice came for it): at once when ready,
        when its launch succeeds otherwise. None when it is gone, or adopted for another instance."""
        item = update_fields(
            self._table,
            {PARTITION_KEY: STANDBY, SORT_KEY: replica_id},
            {"adopted_for": replacing},
            what=f"adopt the standby of {replica_id}",
            # A notice delivered twice (or rebalance then interruption) adopts once, and a retry finds its own
            # adoption; a standby released or promoted meanwhile (item gone, or another launch) is not adopted.
            condition="launch_id = :launch AND (attribute_not_exists(adopted_for) OR adopted_for = :replacing)",
            values={":launch": launch_id, ":replacing": replacing},
        )
        return None if item is None else _standby(item, replica_id)

    def clear(self, replica_id: str, *, launch_id: str) -> StandbyRecord | None:
        """Forget the replica's standby (promoted or released); it as it was when this call removed it, None when
        another call did (or a newer standby stands: kept)."""
        response = conditional_write(
            f"clear the standby of {replica_id}",
            self._table.delete_item,
            Key={PARTITION_KEY: STANDBY, SORT_KEY: replica_id},
            # A late report of an old standby's launch, or a second release racing the first, must not remove a
            # newer standby; of two racing clears (promotion and release) exactly one gets the record.
            ConditionExpression="launch_id = :launch",
            ExpressionAttributeValues={":launch": launch_id},
            ReturnValues="ALL_OLD",
        )
        old = (response or {}).get("Attributes")
        return _standby(old) if old else None

    def record_end(self, ended: EndedStandby) -> None:
        """Keep a standby that went for the timeline; keyed by its launch, so a retry writes the same item."""
        call(
            f"record the end of standby {ended.launch_id}",
            self._table.put_item,
            Item={
                PARTITION_KEY: STANDBY_ENDED,
                SORT_KEY: ended.launch_id,
                **_item(ended),
                TTL_ATTRIBUTE: int(ended.ended_at) + REQUEST_RECORD_TTL_SECONDS,
            },
        )

    def ended(self) -> list[EndedStandby]:
        items = query_all(
            self._table, "read ended standbys", KeyConditionExpression=Key(PARTITION_KEY).eq(STANDBY_ENDED)
        )
        return [EndedStandby.model_validate(plain_item(i)) for i in items]

    # --- the replica moves onto its standby ------------------------------------------------------------

    def switch_replica(self, replica_id: str, *, standby: StandbyRecord, adoption: str, now: float) -> Replica | None:
        """The replica serves on its standby now, in place of the instance it was adopted for; None when the
        replica moved on. `adoption`: the execution name under which a standby adopted while launching holds the
        replica (`replacing`); a ready standby's replica is still `serving` on the old instance."""
        fields = {
            "status": ReplicaStatus.SERVING.value,
            "region": standby.region,
            "instance_id": standby.instance_id,
            "capacity_type": standby.capacity_type,
            "launch_id": standby.launch_id,
            "target_region": None,
            "placed_at": int(now),
            "reason": f"standby promoted in place of {standby.adopted_for}",
            "updated_at": int(now),
        }
        item = update_fields(
            self._table,
            {PARTITION_KEY: REPLICA, SORT_KEY: replica_id},
            fields,
            what=f"move {replica_id} onto its standby",
            # Only from the instance the standby was adopted for, while nothing else holds the replica: a replacement
            # started first (replacing under another execution), a disable (stopped) or a re-enable (placing) is not
            # overtaken. A retry after a switch that broke off finds it serving on the standby and writes it again.
            condition=(
                "(instance_id = :old AND (#status = :serving OR (#status = :replacing AND #execution = :adoption)))"
                " OR (instance_id = :new AND #status = :serving)"
            ),
            names={"#status": "status", "#execution": "execution"},
            values={
                ":old": standby.adopted_for,
                ":new": standby.instance_id,
                ":serving": ReplicaStatus.SERVING.value,
                ":replacing": ReplicaStatus.REPLACING.value,
                ":adoption": adoption,
            },
        )
        return None if item is None else Replica.model_validate({**item, "replica_id": replica_id})


def _standby(item: dict[str, Any], replica_id: str | None = None) -> StandbyRecord:
    """A STANDBY item as read (keys and all) or as an update returns it (no keys: `replica_id` given)."""
    return StandbyRecord.model_validate({**plain_item(item), "replica_id": replica_id or item[SORT_KEY]})


def _item(record: Any) -> dict[str, Any]:
    return to_item_value(record.model_dump(mode="json", exclude_none=True))

"""The interruption watch: polls IMDS for a spot interruption warning (`spot/instance-action`) and a
rebalance recommendation (`events/recommendations/rebalance`) every poll_s (5 s, as AWS recommends).

Each notice is published once to the hub bus as `Spothub Capacity Notice`: its id is a hash of the
instance, the kind and the notice's own time from IMDS, and the state file records it once the bus
accepted it, so polling again, or a restarted agent, does not publish it again (a crash between the
two can repeat it; the hub's consumers are idempotent on notice_id). A notice the bus refused is
tried again at the next poll. An interruption warning also starts the drain, before the publish, so
the publish never takes time from the two minutes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from botocore.exceptions import BotoCoreError, ClientError

from spothub_agent.aws import error_code
from spothub_agent.imds import Imds, ImdsError
from spothub_agent.logs import log_event, warn
from spothub_agent.publisher import Publisher, PublishError
from spothub_agent.state import AgentState
from spothub_core.contracts import CapacityNotice, InstanceTag, NoticeKind

NOTICE_PATHS: dict[NoticeKind, str] = {
    NoticeKind.INTERRUPTION: "spot/instance-action",
    NoticeKind.REBALANCE: "events/recommendations/rebalance",
}


@dataclass(frozen=True)
class Notice:
    kind: NoticeKind
    notice_id: str
    time: str  # the notice's own time: the interruption's action time, the recommendation's noticeTime
    action: str = ""  # terminate, stop or hibernate (interruptions)

    def action_epoch(self) -> float | None:
        """The interruption's action time as epoch seconds, when IMDS gave a parseable one."""
        try:
            return datetime.fromisoformat(self.time.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None


def parse_notice(kind: NoticeKind, raw: str, instance_id: str) -> Notice:
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        document = {}
    if kind == "interruption":
        time, action = str(document.get("time", "")), str(document.get("action", ""))
    else:
        time, action = str(document.get("noticeTime", "")), ""
    # Stable for one notice, whatever the polling; the raw text stands in for a time IMDS did not give.
    digest = hashlib.sha256(f"{instance_id}|{kind}|{time or raw.strip()}".encode()).hexdigest()[:24]
    return Notice(kind=kind, notice_id=f"{kind}-{digest}", time=time, action=action)


class Drainer(Protocol):
    def begin(self, notice: Notice) -> None: ...


class NoticeWatch:
    def __init__(
        self,
        imds: Imds,
        state: AgentState,
        publisher: Publisher,
        drainer: Drainer,
        *,
        instance_id: str,
        region: str,
        poll_s: float,
    ) -> None:
        self._imds = imds
        self._instance_id = instance_id
        self._region = region
        self._state = state
        self._publisher = publisher
        self._drainer = drainer
        self._poll_s = poll_s
        self._imds_failing = False

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.poll_once()
            stop.wait(self._poll_s)

    def poll_once(self) -> list[Notice]:
        notices = []
        for kind, path in NOTICE_PATHS.items():
            raw = self._read(path)
            if raw is None or not raw.strip():
                continue
            notice = parse_notice(kind, raw, self._instance_id)
            notices.append(notice)
            if kind == "interruption":
                self._drainer.begin(notice)
            if not self._state.notice_published(notice.notice_id):
                self._publish(notice)
        return notices

    def _read(self, path: str) -> str | None:
        try:
            value = self._imds.get(path)
        except (ImdsError, OSError) as exc:
            if not self._imds_failing:
                warn("imds_unreachable", path=path, reason=str(exc))
            self._imds_failing = True
            return None
        if self._imds_failing:
            log_event("imds_reachable")
            self._imds_failing = False
        return value

    def _publish(self, notice: Notice) -> None:
        tags = self._tags()
        detail = CapacityNotice(
            region=self._region,
            instance_id=self._instance_id,
            kind=notice.kind,
            notice_id=notice.notice_id,
            replica_id=tags.get(InstanceTag.REPLICA) or None,
            launch_id=tags.get(InstanceTag.LAUNCH) or None,
        )
        try:
            event_id = self._publisher.publish(detail)
        except (PublishError, BotoCoreError, ClientError) as exc:
            warn("notice_publish_failed", notice_id=notice.notice_id, error=error_code(exc), reason=str(exc)[:300])
            return
        self._state.record_notice(notice.notice_id, {"kind": notice.kind, "time": notice.time, "event_id": event_id})
        log_event("notice_published", event_id=event_id, notice_time=notice.time, **detail.model_dump(mode="json"))

    def _tags(self) -> dict[str, str]:
        """The instance's tags now: the replica and launch may have been tagged after the agent started."""
        try:
            return self._imds.tags()
        except (ImdsError, OSError) as exc:
            warn("tags_unreadable", reason=str(exc))
            return {}

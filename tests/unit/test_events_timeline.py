"""The timeline's order (spothub_core.logic.events_timeline): newest first by the records' own times (the view
shows whole seconds), and at one same moment causes before effects."""

from __future__ import annotations

from spothub_core.logic.events_timeline import SAME_MOMENT_ORDER, timeline
from spothub_core.models.api import EventKind, EventsView
from spothub_core.models.records import TeardownRecord
from spothub_core.models.standby_records import EndedStandby, StandbyOutcome, StandbyRecord

AT = 1_800_000_000.0


def _ended(launch_id: str, *, launched_at: float, ready_at: float, ended_at: float) -> EndedStandby:
    return EndedStandby(
        replica_id="replica-0",
        launch_id=launch_id,
        region="eu-west-1",
        zone="eu-west-1b",
        instance_id=f"i-{launch_id}",
        launched_at=launched_at,
        ready_at=ready_at,
        ended_at=ended_at,
        outcome=StandbyOutcome.PROMOTED,
        why="serves in place of i-1",
    )


def _oldest_first(view: EventsView) -> list[tuple[EventKind, str | None]]:
    return [(e.kind, e.instance_id) for e in reversed(view.events)]


def test_every_event_kind_has_its_place_at_one_moment() -> None:
    assert set(SAME_MOMENT_ORDER) == set(EventKind)


def test_events_within_one_second_keep_their_records_order() -> None:
    """A standby seen ready, promoted on the warning and the old instance's teardown asked, all within a second."""
    promoted = _ended("sb-1", launched_at=AT - 30, ready_at=AT + 0.1, ended_at=AT + 0.6)
    retired = TeardownRecord(teardown_id="retire-i-1", region="us-west-2", instance_id="i-1", created_at=AT + 0.9)
    view = timeline(
        launches=[], teardowns=[retired], instances=[], remediations=[], exclusions=[], standbys=[promoted], now=AT + 5
    )
    assert _oldest_first(view) == [
        (EventKind.STANDBY_STARTED, None),
        (EventKind.STANDBY_READY, "i-sb-1"),
        (EventKind.STANDBY_PROMOTED, "i-sb-1"),
        (EventKind.TEARDOWN, "i-1"),
    ]
    assert {e.at for e in view.events[:3]} == {"2027-01-15T08:00:00Z"}


def test_at_one_moment_a_standby_is_ready_before_promoted_and_the_next_starts_after() -> None:
    """Adopted while launching, it is promoted as its launch reports (ready and promoted at one moment), and the
    check after the promotion starts the next standby at that moment too."""
    adopted = _ended("sb-1", launched_at=AT - 30, ready_at=AT, ended_at=AT)
    following = StandbyRecord(replica_id="replica-0", launch_id="sb-2", region="us-west-2", launched_at=AT)
    view = timeline(
        launches=[], teardowns=[], instances=[], remediations=[], exclusions=[], standbys=[following, adopted], now=AT
    )
    assert [kind for kind, _ in _oldest_first(view)] == [
        EventKind.STANDBY_STARTED,
        EventKind.STANDBY_READY,
        EventKind.STANDBY_PROMOTED,
        EventKind.STANDBY_STARTED,
    ]
    assert view.events[0].summary == "standby of replica-0 started (spot in us-west-2)"

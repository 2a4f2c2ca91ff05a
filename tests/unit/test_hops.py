"""The sandbox's hop recorder (spothub/sandbox/hops.py) without a sandbox: what a path to a hop is."""

from __future__ import annotations

import threading

from spothub.sandbox.hops import HopKind, HopRecorder, Recording, acting_as, carry, current


def test_a_path_is_the_chain_of_causes_and_the_invocations_its_states_waited_for() -> None:
    recorder = HopRecorder()
    with recorder.recording() as recording:
        with recording.origin("warning") as warning:
            delivery = recorder.record(HopKind.DELIVERY, "rule -> state machine")
        first = recorder.record(HopKind.TRANSITION, "Identify", cause=delivery.number)
        waited = recorder.record(HopKind.INVOCATION, "identify", cause=first.number)
        recorder.record(HopKind.INVOCATION, "something else", cause=None)
        second = recorder.record(HopKind.TRANSITION, "Report", cause=first.number)
        late = recorder.record(HopKind.INVOCATION, "after the next state began", cause=first.number)
        call = recorder.record(HopKind.CALL, "autoscaling:SetDesiredCapacity", cause=second.number)
    path = recording.path_to(call)
    assert [hop.what for hop in path] == [
        "warning",
        "rule -> state machine",
        "Identify",
        "identify",
        "Report",
        call.what,
    ]
    assert delivery.cause == warning.number, "the origin is what its thread did meanwhile"
    assert late not in path and waited in path
    assert Recording.count(path, HopKind.INVOCATION) == 1
    assert [hop.number for hop in recording.between(second, call)] == [second.number, late.number, call.number]


def test_what_an_origin_set_going_is_everything_it_caused_and_nothing_else() -> None:
    recorder = HopRecorder()
    with recorder.recording() as recording:
        with recording.origin("rebalance recommendation") as origin:
            delivery = recorder.record(HopKind.DELIVERY, "rule -> capacity handler")
        handler = recorder.record(HopKind.INVOCATION, "capacity handler", cause=delivery.number)
        schedule = recorder.record(HopKind.INVOCATION, "a schedule's function", cause=None)
        recorder.record(HopKind.TRANSITION, "the schedule's state", cause=schedule.number)
        started = recorder.record(HopKind.TRANSITION, "orchestrator: Begin", cause=handler.number)
        recorder.record(HopKind.INVOCATION, "an agent's report", cause=None)
        later = recorder.record(HopKind.TRANSITION, "orchestrator: Retire", cause=started.number)
    assert [hop.number for hop in recording.descendants(origin)] == [
        origin.number,
        delivery.number,
        handler.number,
        started.number,
        later.number,
    ]


def test_nothing_is_recorded_outside_a_recording_and_a_carried_function_keeps_its_cause() -> None:
    recorder = HopRecorder()
    assert not recorder.active
    seen: list[int | None] = []
    with acting_as(7):
        carried = carry(lambda: seen.append(current()))
    thread = threading.Thread(target=carried)
    thread.start()
    thread.join()
    assert seen == [7]
    assert current() is None

"""Hops in the sandbox: every EventBridge delivery, Lambda invocation and Step Functions state transition, with
the hop that caused it, so that a path (a spot interruption warning to the replacement's launch call) can be
counted and shown.

What causes what is carried along the way the sandbox's work travels:
- in a thread, the hop being worked on now (a Lambda invocation runs its handler in one thread; a state
  machine's states run in its execution's thread);
- across the emulator's HTTP API, in a request header this module adds to every request a hop sends
  (botocore's Endpoint._send) and reads back where the emulator serves it (BaseResponse.call_action);
- to a new execution's thread (its start captures the hop that started it), and to the sandbox's asynchronous
  work (`carry`: a rule's Lambda target runs on the executor).

A hop without a cause comes from outside the sandbox's in-process work: an agent's process, the test itself.
Nothing is recorded while no recording is open (`HopRecorder.recording`), so the recorder costs nothing
otherwise. The hooks in emulator_patches.py and lambda_runtime.py call `put`, `delivery`, `invocation` and
`carry`; `install` patches what belongs to the emulator (moto) and botocore, once.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

HEADER = "x-spothub-sandbox-hop"


class HopKind(StrEnum):
    ORIGIN = "origin"  # where a recorded path starts: named by the caller (an interruption warning)
    PUT = "put"  # events put on a bus (PutEvents): not a hop by itself, the cause of the deliveries
    DELIVERY = "delivery"  # an EventBridge rule delivering to a target (a Lambda, a state machine, a bus, a queue)
    INVOCATION = "invocation"  # a Lambda function invoked
    TRANSITION = "transition"  # a Step Functions state entered
    CALL = "call"  # an AWS call that changes capacity (LAUNCH_CALLS and the like)


# (service, operation) of the calls recorded as CALL hops: those that ask for capacity, or give it back.
CAPACITY_CALLS = frozenset(
    {
        ("autoscaling", "SetDesiredCapacity"),
        ("autoscaling", "UpdateAutoScalingGroup"),
        ("autoscaling", "EnterStandby"),
        ("autoscaling", "TerminateInstanceInAutoScalingGroup"),
        ("ec2", "RunInstances"),
        ("ec2", "CreateFleet"),
    }
)


@dataclass(frozen=True)
class Hop:
    number: int
    kind: HopKind
    what: str
    cause: int | None
    at: float  # time.monotonic()
    details: dict[str, Any] = field(default_factory=dict)

    def line(self, origin: float | None = None) -> str:
        offset = f"+{(self.at - origin) * 1000:7.1f} ms " if origin is not None else ""
        cause = f"<-#{self.cause}" if self.cause is not None else "<-outside"
        return f"{offset}#{self.number:<5} {self.kind.value:<10} {self.what}  ({cause})"


class Recording:
    """The hops recorded while it was open, in the order they happened."""

    def __init__(self, recorder: HopRecorder) -> None:
        self._recorder = recorder
        self.hops: list[Hop] = []
        self._by_number: dict[int, Hop] = {}
        self._changed = threading.Condition()

    def _add(self, hop: Hop) -> None:
        with self._changed:
            self.hops.append(hop)
            self._by_number[hop.number] = hop
            self._changed.notify_all()

    @contextlib.contextmanager
    def origin(self, what: str, **details: Any) -> Iterator[Hop]:
        """A hop with no cause that what this thread does meanwhile comes from (the test's own action)."""
        hop = self._recorder.record(HopKind.ORIGIN, what, cause=None, **details)
        with acting_as(hop.number):
            yield hop

    def wait_for(self, predicate: Callable[[Hop], bool], timeout_s: float = 30.0) -> Hop:
        """The first recorded hop for which `predicate` holds; TimeoutError with the hops so far if none comes."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = next((hop for hop in self.hops if predicate(hop)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no such hop within {timeout_s:.0f}s; recorded:\n{self.report(self.hops)}")
                self._changed.wait(left)

    def path_to(self, hop: Hop) -> list[Hop]:
        """The hops that led to `hop`, cause first, ending with it: its chain of causes, and the invocations a
        state on that chain waited for (a task's Lambda function, which answered before the next state began)."""
        chain = [hop]
        while chain[-1].cause is not None and chain[-1].cause in self._by_number:
            chain.append(self._by_number[chain[-1].cause])
        chain.reverse()
        after = {step.number: following.number for step, following in itertools.pairwise(chain)}
        waited_for = [
            other
            for other in self.hops
            if other.kind == HopKind.INVOCATION
            and other.cause in after
            and self._by_number[other.cause].kind == HopKind.TRANSITION
            and other.number < after[other.cause]
            and other not in chain
        ]
        return sorted(chain + waited_for, key=lambda step: step.number)

    def descendants(self, root: Hop) -> list[Hop]:
        """`root` and every hop it caused, directly or through others (a cause is recorded before what it
        causes): what one action set going, without the schedules and agents that ran meanwhile."""
        caused = {root.number}
        found = [root]
        for hop in list(self.hops):
            if hop.cause in caused and hop.number not in caused:
                caused.add(hop.number)
                found.append(hop)
        return found

    def between(self, first: Hop, last: Hop) -> list[Hop]:
        """Every hop recorded from `first` to `last`, both included, whatever caused it."""
        return [hop for hop in self.hops if first.number <= hop.number <= last.number]

    @staticmethod
    def count(hops: list[Hop], kind: HopKind) -> int:
        return sum(1 for hop in hops if hop.kind == kind)

    @staticmethod
    def report(hops: list[Hop]) -> str:
        origin = hops[0].at if hops else None
        return "\n".join(hop.line(origin) for hop in hops)


class HopRecorder:
    """Numbers the hops and hands them to the recordings open now."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._open: list[Recording] = []

    @property
    def active(self) -> bool:
        return bool(self._open)

    def record(self, kind: HopKind, what: str, *, cause: int | object | None = ..., **details: Any) -> Hop:
        hop = Hop(
            number=next(self._numbers),
            kind=kind,
            what=what,
            cause=current() if cause is ... else cause,  # type: ignore[arg-type]
            at=time.monotonic(),
            details=details,
        )
        with self._lock:
            recordings = list(self._open)
        for recording in recordings:
            recording._add(hop)
        return hop

    @contextlib.contextmanager
    def recording(self) -> Iterator[Recording]:
        """Record every hop until the block ends."""
        opened = Recording(self)
        with self._lock:
            self._open.append(opened)
        try:
            yield opened
        finally:
            with self._lock:
                self._open.remove(opened)


RECORDER = HopRecorder()
_THREAD = threading.local()


def current() -> int | None:
    """The hop this thread works on now, if any."""
    return getattr(_THREAD, "hop", None)


@contextlib.contextmanager
def acting_as(number: int | None) -> Iterator[None]:
    outer = current()
    _THREAD.hop = number
    try:
        yield
    finally:
        _THREAD.hop = outer


@contextlib.contextmanager
def _hop(kind: HopKind, what: str, **details: Any) -> Iterator[None]:
    if not RECORDER.active:
        yield
        return
    hop = RECORDER.record(kind, what, **details)
    with acting_as(hop.number):
        yield


# --- the hooks: called from emulator_patches.py and lambda_runtime.py --------------------------------------


def _name(arn: str) -> str:
    return arn.rsplit(":", 1)[-1].rsplit("/", 1)[-1]


def put(bus_arn: str, entries: list[dict[str, Any]]) -> contextlib.AbstractContextManager[None]:
    """Events put on a bus; what its rules deliver meanwhile was caused by this put."""
    kinds = ", ".join(sorted({f"{e.get('Source')}/{e.get('DetailType')}" for e in entries}))
    return _hop(HopKind.PUT, f"{_name(bus_arn)} <- {kinds}", bus=bus_arn)


def delivery(rule_arn: str, target_arn: str, event: dict[str, Any]) -> contextlib.AbstractContextManager[None]:
    """A rule delivering `event` to one target; what the target starts meanwhile was caused by this delivery."""
    service = target_arn.split(":")[2]
    return _hop(
        HopKind.DELIVERY,
        f"{_name(rule_arn)} -> {service}:{_name(target_arn)} [{event.get('source')}/{event.get('detail-type')}]",
        rule=rule_arn,
        target=target_arn,
        event_id=event.get("id"),
    )


def invocation(function_name: str, event: Any) -> contextlib.AbstractContextManager[None]:
    """A Lambda function's handler running on `event`; the calls it makes were caused by this invocation."""
    about = ""
    if isinstance(event, dict):
        about = str(event.get("action") or event.get("detail-type") or "")
    return _hop(HopKind.INVOCATION, f"{function_name} ({about})" if about else function_name, function=function_name)


def carry(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` to run in another thread as caused by the hop this thread works on now."""
    cause = current()
    if cause is None:
        return function

    def carried(*arguments: Any, **keywords: Any) -> Any:
        with acting_as(cause):
            return function(*arguments, **keywords)

    return carried


# --- install: the emulator's and botocore's side ------------------------------------------------------------

_installed = False


def install() -> None:
    """Carry the hop across HTTP requests to the emulator and into executions; record state transitions and
    capacity calls. Idempotent."""
    global _installed  # noqa: PLW0603
    if _installed:
        return
    _send_the_hop_along()
    _serve_as_the_hop()
    _executions_follow_their_start()
    _record_transitions()
    _tasks_follow_their_state()
    _installed = True


def _send_the_hop_along() -> None:
    from botocore.endpoint import Endpoint  # noqa: PLC0415

    original = Endpoint._send

    def send(self: Any, request: Any) -> Any:
        hop = current()
        if hop is not None:
            request.headers[HEADER] = str(hop)  # after signing: SigV4 signs only the headers it names
        return original(self, request)

    Endpoint._send = send  # type: ignore[method-assign]


def _serve_as_the_hop() -> None:
    from moto.core.responses import BaseResponse  # noqa: PLC0415

    original = BaseResponse.call_action

    def call_action(self: Any) -> Any:
        sent = str(self.headers.get(HEADER, "") or "")
        cause = int(sent) if sent.isdigit() else None
        with acting_as(cause):
            if RECORDER.active:
                _record_capacity_call(self)
            return original(self)

    BaseResponse.call_action = call_action  # type: ignore[method-assign]


def _record_capacity_call(response: Any) -> None:
    service = str(getattr(response, "service_name", "") or "")
    try:
        operation = response._get_action()
    except Exception:
        return
    if (service, operation) not in CAPACITY_CALLS:
        return
    params = {
        key: response._get_param(key)
        for key in ("AutoScalingGroupName", "DesiredCapacity", "InstanceId", "MinCount", "MaxCount")
        if response._get_param(key) is not None
    }
    region = str(getattr(response, "region", "") or "")
    shown = " ".join(f"{key}={value}" for key, value in params.items())
    RECORDER.record(HopKind.CALL, f"{service}:{operation} in {region} {shown}".strip(), region=region, **params)


def _executions_follow_their_start() -> None:
    """An execution's first state is caused by what started it (a rule's delivery, a function's StartExecution,
    another execution's task): the hop of the thread that starts it goes with it to its own threads."""
    from moto.stepfunctions.parser.backend.execution import Execution  # noqa: PLC0415
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker  # noqa: PLC0415

    original_worker = Execution._get_start_execution_worker
    original_environment = ExecutionWorker._get_evaluation_environment

    def start_worker(self: Any) -> Any:
        worker = original_worker(self)
        worker.spothub_hop = current()
        return worker

    def environment(self: Any) -> Any:
        env = original_environment(self)
        env.spothub_hop = getattr(self, "spothub_hop", None)
        return env

    Execution._get_start_execution_worker = start_worker  # type: ignore[method-assign]
    ExecutionWorker._get_evaluation_environment = environment  # type: ignore[method-assign]


def _record_transitions() -> None:
    """Each state entered is a transition, caused by the state before it (the first, by the execution's start)."""
    from moto.stepfunctions.parser.asl.component.state.state import CommonStateField  # noqa: PLC0415

    original = CommonStateField._eval_body

    def eval_body(self: Any, env: Any) -> None:
        if not RECORDER.active:
            original(self, env)
            return
        context = env.states.context_object.context_object_data
        machine = str(context.get("StateMachine", {}).get("Name", "?"))
        execution = str(context.get("Execution", {}).get("Name", "?"))
        hop = RECORDER.record(
            HopKind.TRANSITION,
            f"{machine}/{execution}: {self.name}",
            cause=getattr(env, "spothub_hop", None),
            state_machine=machine,
            execution=execution,
            state=self.name,
        )
        env.spothub_hop = hop.number
        with acting_as(hop.number):
            original(self, env)

    CommonStateField._eval_body = eval_body  # type: ignore[method-assign]


def _tasks_follow_their_state() -> None:
    """A task state runs its work (a Lambda invoke, an SDK call) in a thread of its own (moto's ExecutionState, for
    its TimeoutSeconds): that thread works on the state's transition."""
    import threading as threads  # noqa: PLC0415

    from moto.stepfunctions.parser.asl.component.state.exec import execute_state  # noqa: PLC0415

    class CarryingThread(threads.Thread):
        def __init__(self, *arguments: Any, target: Callable[..., Any] | None = None, **keywords: Any) -> None:
            super().__init__(*arguments, target=carry(target) if target else None, **keywords)

    execute_state.Thread = CarryingThread  # type: ignore[attr-defined,misc]

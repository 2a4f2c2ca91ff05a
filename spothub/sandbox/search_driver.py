"""The search workload in the sandbox, as a user and an operator see it: the /search routes, the search table's
launch records, the search instances in EC2, the volume, and the monitor's sweep fired by hand. Used by the search
end-to-end tests (and the demo's search chapter may use it).

Time: everything follows the sandbox clock (the hub's search functions' idleness and last_used, the launcher's
Wait states, the monitor's schedule rate(searchHealthInterval)); `search_pace` speeds the clock up so a launch takes
seconds. The schedule sweeps on its own too (once a real minute at speed 1, every 12 s at the search
pace): `sweep` fires one now and returns once a sweep begun after that is over; what waits for a record waits for an
effect, never for "the" sweep.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import requests
from botocore.config import Config

from spothub.sandbox.search_server import Document, SearchIndex
from spothub.sandbox.search_volume import CORPUS
from spothub_core.contracts import SEARCH_SERVICE, SearchTag
from spothub_core.dal.search_store import SearchStore
from spothub_core.models.search_records import SearchInstance, SearchSlot

if TYPE_CHECKING:
    from spothub.sandbox.sandbox import Sandbox

# The monitor's schedule rule (stacks/constructs/search_service.py): Sandbox.fire_schedule fires it by this name.
SWEEP_RULE = "SweepSchedule"
# Simulated seconds per real second while the search workload is driven: the launcher's Wait states (it looks at the
# starting service every SEARCH_START_POLL_SECONDS of the clock) pass five times as fast, so a launch takes a few
# real seconds instead of a dozen. Idleness is measured by the sandbox clock too (the hub's functions read it).
SEARCH_SPEED = 5.0


class SearchDriverError(AssertionError):
    pass


# --- the API -------------------------------------------------------------------------------------------------


def query(sandbox: Sandbox, text: str, *, top_k: int = 5, wait_s: int = 0) -> requests.Response:
    """POST /search/query (signed, as the sandbox's user)."""
    body: dict[str, Any] = {"query": text, "top_k": top_k}
    if wait_s:
        body["wait_s"] = wait_s
    return sandbox.request("POST", "search/query", body)


def status(sandbox: Sandbox) -> dict[str, Any]:
    """GET /search/status (raises unless 200)."""
    answer = sandbox.request("GET", "search/status")
    if answer.status_code != 200:  # noqa: PLR2004
        raise SearchDriverError(f"GET /search/status answered {answer.status_code}: {answer.text}")
    return dict(answer.json())


def scale_up(sandbox: Sandbox, count: int = 1) -> requests.Response:
    return sandbox.request("POST", f"search/scale-up?count={count}")


def scale_down(sandbox: Sandbox, count: int = 1) -> requests.Response:
    return sandbox.request("POST", f"search/scale-down?count={count}")


def terminate(sandbox: Sandbox, instance_id: str) -> requests.Response:
    return sandbox.request("DELETE", f"search/instances/{instance_id}")


@contextlib.contextmanager
def search_pace(sandbox: Sandbox, speed: float = SEARCH_SPEED) -> Iterator[None]:
    """The sandbox clock at `speed` while the search workload is driven, back to what it was after. The monitor's
    schedule then sweeps more often on its own (every searchHealthInterval of the clock)."""
    before = sandbox.clock.speed
    sandbox.clock.set_speed(speed)
    try:
        yield
    finally:
        sandbox.clock.set_speed(before)


# --- the search table (read and written as the hub's search functions do: their SearchStore) ------------------------


def store(sandbox: Sandbox) -> SearchStore:
    """The hub's search table, through the store the search functions use."""
    dynamodb = boto3.resource(
        "dynamodb",
        region_name=sandbox.hub.region,
        endpoint_url=sandbox.aws_endpoint_url,
        config=Config(retries={"max_attempts": 1}),
        **sandbox.credentials(),
    )
    return SearchStore(dynamodb.Table(sandbox.hub.outputs["SearchTableName"]))


def records(sandbox: Sandbox) -> list[SearchInstance]:
    """Every launch record, oldest first (launch ids sort by time)."""
    return store(sandbox).all()


def record(sandbox: Sandbox, launch_id: str) -> SearchInstance | None:
    return store(sandbox).get(launch_id)


def slot(sandbox: Sandbox) -> SearchSlot:
    return store(sandbox).slot()


def holder(sandbox: Sandbox) -> SearchInstance | None:
    """The launch record holding the volume's slot (None: the slot is free)."""
    launch_id = slot(sandbox).launch_id
    return record(sandbox, launch_id) if launch_id else None


def begin_query(sandbox: Sandbox, launch_id: str) -> SearchInstance:
    """Count a query in on the instance (busy), as the search API does before it routes one: a query held in flight.
    (The sandbox runs one function invocation at a time, so a real query cannot stay open while the API answers
    another request.)"""
    counted = store(sandbox).begin_request(launch_id, time.time())
    if counted is None:
        raise SearchDriverError(f"{launch_id} takes no query: it is not routable")
    return counted


def end_query(sandbox: Sandbox, launch_id: str) -> SearchInstance:
    """Count that query out (idle once none is left, last_used stamped), as the search API does after it."""
    ended = store(sandbox).end_request(launch_id, time.time())
    if ended is None:
        raise SearchDriverError(f"{launch_id} has no record")
    return ended


# --- waiting ----------------------------------------------------------------------------------------------------


def wait_for_record(
    sandbox: Sandbox,
    check: Callable[[SearchInstance], bool],
    *,
    launch_id: str | None = None,
    timeout_s: float = 60.0,
    interval_s: float = 0.25,
) -> SearchInstance:
    """Poll the search table (real time) until a record (that launch's, or the slot holder's) passes `check`."""
    seen: list[SearchInstance | None] = [None]

    def found() -> SearchInstance | None:
        current = record(sandbox, launch_id) if launch_id else holder(sandbox)
        seen[0] = current
        return current if current is not None and check(current) else None

    try:
        return sandbox.wait_for(found, timeout_s=timeout_s, interval_s=interval_s)  # type: ignore[no-any-return]
    except Exception as exc:
        last = seen[0]
        brief = "none" if last is None else last.model_dump_json(exclude_none=True)
        raise SearchDriverError(f"no search record as wanted within {timeout_s}s; last seen: {brief}") from exc


def serving(record: SearchInstance) -> bool:
    """Queries are routed to it: ready, busy or idle, with its instance's address."""
    return record.status.routable and bool(record.instance_id and record.private_ip)


def wait_until_serving(sandbox: Sandbox, *, launch_id: str | None = None, timeout_s: float = 60.0) -> SearchInstance:
    """The launch (or the slot holder) ready to take queries."""
    return wait_for_record(sandbox, serving, launch_id=launch_id, timeout_s=timeout_s)


def sweep(sandbox: Sandbox, *, timeout_s: float = 30.0) -> None:
    """Fire the search monitor's schedule now, and return once a sweep begun after the firing has finished
    (the rule's target is invoked asynchronously, as EventBridge does)."""
    function = monitor_function(sandbox)
    fired_at = time.time()
    if sandbox.fire_schedule(SWEEP_RULE) != 1:
        raise SearchDriverError(f"no enabled scheduled rule named like {SWEEP_RULE}")
    # What the sandbox's Lambda runtime has run: the only sign that an asynchronous invocation is over.
    runtime = sandbox._started_hooks().lambda_runtime

    def done() -> bool:
        return any(
            i.function_name == function and i.started - i.duration_ms / 1000 >= fired_at
            for i in list(runtime.invocations)
        )

    sandbox.wait_for(done, timeout_s=timeout_s, interval_s=0.1)


def _monitor(sandbox: Sandbox) -> Any:
    from moto.awslambda.models import lambda_backends  # noqa: PLC0415

    from spothub.sandbox.sandbox import ACCOUNT  # noqa: PLC0415

    for function in lambda_backends[ACCOUNT][sandbox.hub.region]._lambdas.all():
        if function.handler.startswith("search_monitor."):
            return function
    raise SearchDriverError("the hub has no search monitor function")


def monitor_function(sandbox: Sandbox) -> str:
    """The search monitor's function name (the hub's function whose handler is search_monitor.handler)."""
    return str(_monitor(sandbox).function_name)


def settings(sandbox: Sandbox) -> dict[str, str]:
    """The deployed search functions' environment (SPOTHUB_SEARCH_INSTANCE_TYPE, SPOTHUB_SEARCH_IDLE_TIMEOUT...)."""
    return {k: str(v) for k, v in (_monitor(sandbox).environment_vars or {}).items()}


def instance_type(sandbox: Sandbox) -> str:
    """The search instance's type, as the deployment launches it."""
    return settings(sandbox)["SPOTHUB_SEARCH_INSTANCE_TYPE"]


# --- EC2 and the volume ------------------------------------------------------------------------------------------


def instance(sandbox: Sandbox, instance_id: str) -> dict[str, Any]:
    """DescribeInstances of one instance in the search region."""
    ec2 = sandbox.client("ec2", sandbox.search_region)
    return dict(ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0])


def instance_state(sandbox: Sandbox, instance_id: str) -> str:
    return str(instance(sandbox, instance_id)["State"]["Name"])


def tags(sandbox: Sandbox, instance_id: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance(sandbox, instance_id).get("Tags", [])}


def search_instance_ids(sandbox: Sandbox) -> list[str]:
    """The search instances EC2 has (any state but terminated), by their Service tag."""
    ec2 = sandbox.client("ec2", sandbox.search_region)
    reservations = ec2.describe_instances(Filters=[{"Name": f"tag:{SearchTag.SERVICE}", "Values": [SEARCH_SERVICE]}])[
        "Reservations"
    ]
    return [i["InstanceId"] for r in reservations for i in r["Instances"] if i["State"]["Name"] != "terminated"]


def volume(sandbox: Sandbox) -> dict[str, Any]:
    """DescribeVolumes of the deployment's search volume."""
    ec2 = sandbox.client("ec2", sandbox.search_region)
    return dict(ec2.describe_volumes(VolumeIds=[sandbox.search_volume_id])["Volumes"][0])


def volume_holder(sandbox: Sandbox) -> str | None:
    """The instance the search volume is attached to, None while it is available."""
    attachments = volume(sandbox).get("Attachments", [])
    return str(attachments[0]["InstanceId"]) if attachments else None


def launches(sandbox: Sandbox) -> list[dict[str, Any]]:
    """The search launcher's executions (one per launch, named by its launch id), oldest first."""
    sfn = sandbox.client("stepfunctions", sandbox.hub.region)
    machine = settings(sandbox)["SPOTHUB_SEARCH_LAUNCHER_ARN"]
    return sorted(sfn.list_executions(stateMachineArn=machine)["executions"], key=lambda e: e["startDate"])


def launch_steps(sandbox: Sandbox, launch_id: str) -> list[str]:
    """The states a launch's execution entered so far, in order (Place, LaunchSpot, LaunchOnDemand, Attach...)."""
    execution = next(e for e in launches(sandbox) if e["name"] == launch_id)
    sfn = sandbox.client("stepfunctions", sandbox.hub.region)
    events = sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"]
    return [
        e["stateEnteredEventDetails"]["name"]
        for e in sorted(events, key=lambda e: e["id"])
        if "stateEnteredEventDetails" in e
    ]


def launch_error(sandbox: Sandbox, launch_id: str, state: str) -> str | None:
    """The error a launch's execution caught leaving `state` (a Task's failure), None when it left it cleanly."""
    execution = next(e for e in launches(sandbox) if e["name"] == launch_id)
    sfn = sandbox.client("stepfunctions", sandbox.hub.region)
    events = sorted(
        sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"],
        key=lambda e: e["id"],
    )
    inside = False
    for event in events:
        entered = event.get("stateEnteredEventDetails", {}).get("name")
        if entered is not None:
            inside = entered == state
        elif inside and event["type"].endswith("Failed"):
            details = next((v for k, v in event.items() if k.endswith("EventDetails")), {})
            return str(details.get("error"))
    return None


# --- the corpus --------------------------------------------------------------------------------------------------


@cache
def _corpus_index(corpus: Path) -> SearchIndex:
    return SearchIndex(
        [
            Document(str(d["id"]), str(d.get("title", "")), str(d.get("text", "")))
            for d in (json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip())
        ]
    )


def expected_ranking(text: str, top_k: int = 5, corpus: Path = CORPUS) -> list[str]:
    """The document ids a BM25 search of the sandbox's corpus ranks first for `text`, as the stand-in does."""
    return [hit["id"] for hit in _corpus_index(corpus).search(text, top_k)]

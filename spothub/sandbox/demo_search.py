"""The demo's search chapters: one GPU instance bound to the index volume, started by the first queries, found
ranked answers, replaced after three failed health checks, and retired once idle.

The idle timeout is a minute of the sandbox clock in the sandbox's deployment: the first chapter ends with a healthy
replacement, the batch chapter runs, and the last chapter advances the clock past the timeout and finds the
instance retired.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from spothub.sandbox.sandbox import SEARCH_IDLE_TIMEOUT_SECONDS, Sandbox, SandboxError
from spothub_core.contracts import MANAGED_BY, SEARCH_SERVICE, SearchTag

if TYPE_CHECKING:
    from spothub.sandbox.demo import Narrator

CONCURRENT_CALLS = 20
QUERY = "spot interruption warning"
# The corpus document (spothub/sandbox/search_corpus.jsonl) that answers QUERY best.
EXPECTED_TOP_HIT = "spot-interruption-notice"
SWEEP_RULE = "SweepSchedule"
READY_TIMEOUT_S = 90.0
ROUTABLE = {"ready", "busy", "idle"}


def search_chapter(n: Narrator, sandbox: Sandbox) -> str | None:
    """From zero to a replaced instance; returns the healthy replacement's instance id."""
    if sandbox.search_volume_id is None:
        n.chapter("Search: (no search volume in this deployment)")
        return None
    volume_zone = _volume_zone(sandbox)
    n.chapter(f"Search: the index on {sandbox.search_volume_id} ({volume_zone}); {CONCURRENT_CALLS} queries from zero")
    # The serving chapters took spot capacity away; a later hour would find it back.
    sandbox.market.restore()  # type: ignore[union-attr]
    with ThreadPoolExecutor(CONCURRENT_CALLS) as pool:
        answers = list(pool.map(lambda _: _query(sandbox), range(CONCURRENT_CALLS)))
    unavailable = [a for a in answers if a.status_code == HTTPStatus.SERVICE_UNAVAILABLE]
    retry_after = {a.headers.get("Retry-After") for a in unavailable}
    n.expect(
        len(unavailable) == CONCURRENT_CALLS and None not in retry_after,
        f"every one of {CONCURRENT_CALLS} concurrent queries from zero is a 503 with Retry-After",
        f"Retry-After {', '.join(sorted(str(r) for r in retry_after))}; {answers[0].text[:100]}",
    )
    status = _status(sandbox)
    n.expect(
        status.get("total_instances") == 1 and status.get("launching_instances") == 1,
        "they started exactly one launch",
        _summary(status),
    )
    with ThreadPoolExecutor(CONCURRENT_CALLS) as pool:
        scale_ups = list(
            pool.map(lambda _: sandbox.request("POST", "search/scale-up?count=1"), range(CONCURRENT_CALLS))
        )
    conflicts = [s for s in scale_ups if s.status_code == HTTPStatus.CONFLICT]
    n.expect(
        len(conflicts) == CONCURRENT_CALLS
        and all("already" in s.json().get("error", "") for s in conflicts)
        and _status(sandbox).get("total_instances") == 1,
        f"{CONCURRENT_CALLS} concurrent scale-ups meanwhile are each a 409; still one instance",
        conflicts[0].json().get("error", "") if conflicts else scale_ups[0].text[:100],
    )

    first = _ready(n, sandbox, "the instance comes up, passes its health check and is ready")
    if first is None:
        return None
    tags = _tags(sandbox, first["instance_id"])
    n.expect(
        first.get("availability_zone") == volume_zone and first.get("capacity_type") == "spot",
        f"it runs in the volume's zone, {volume_zone}, on spot",
        f"{first['instance_id']} {first.get('instance_type')} {first.get('availability_zone')} "
        f"{first.get('capacity_type')}",
    )
    n.expect(
        tags.get(SearchTag.SERVICE) == SEARCH_SERVICE
        and tags.get(SearchTag.MANAGED_BY) == MANAGED_BY
        and tags.get(SearchTag.VOLUME) == sandbox.search_volume_id
        and tags.get(SearchTag.NAME, "").startswith(f"{SEARCH_SERVICE}-"),
        "it carries the discovery tags",
        ", ".join(f"{k}={tags.get(k)}" for k in SearchTag),
    )
    _answers(n, sandbox, first["instance_id"])

    n.chapter(f"Search: {first['instance_id']}'s service fails three health checks in a row")
    sandbox.search_health(first["instance_id"], healthy=False)
    for miss in range(1, 4):
        sandbox.fire_schedule(SWEEP_RULE)
        seen = _wait(sandbox, lambda m=miss: _missed(sandbox, first["instance_id"], m), timeout_s=20)
        if seen is None:
            n.expect(False, f"health check {miss} is missed", _summary(_status(sandbox)))
            return None
    n.expect(True, "three sweeps, three missed health checks: the instance is failed, never routed to again")
    replacement = _ready(n, sandbox, "a replacement is launched and ready", exclude=first["instance_id"])
    if replacement is None:
        return None
    gone = _wait(sandbox, lambda: first["instance_id"] not in _alive(sandbox), timeout_s=20)
    n.expect(gone is not None, f"the failed instance {first['instance_id']} is terminated")
    holders = [a["InstanceId"] for a in _volume(sandbox).get("Attachments", [])]
    n.expect(
        holders == [replacement["instance_id"]] and _alive(sandbox) == {replacement["instance_id"]},
        "the volume is attached to the replacement, the only search instance running",
        f"{replacement['instance_id']} ({replacement.get('capacity_type')}), attached: {', '.join(holders) or 'none'}",
    )
    _answers(n, sandbox, replacement["instance_id"])
    return str(replacement["instance_id"])


def search_idle_chapter(n: Narrator, sandbox: Sandbox, instance_id: str | None) -> None:
    """The replacement has not been queried since the first chapter: past the idle timeout it is retired."""
    if instance_id is None:
        return
    n.chapter(f"Search: nobody has searched for {SEARCH_IDLE_TIMEOUT_SECONDS} s")
    record = next((i for i in _status(sandbox).get("instances", []) if i.get("instance_id") == instance_id), None)
    if record is not None and record.get("status") in ROUTABLE:
        sandbox.clock.advance(max(0.0, SEARCH_IDLE_TIMEOUT_SECONDS + 1 - _idle_seconds(sandbox, instance_id)))
        sandbox.fire_schedule(SWEEP_RULE)
    retired = _wait(sandbox, lambda: instance_id not in _alive(sandbox), timeout_s=30)
    n.expect(retired is not None, f"the next sweep terminates {instance_id}, idle past the timeout")
    sandbox.fire_schedule(SWEEP_RULE)  # the sweep after it sees the instance gone and closes its record
    empty = _wait(sandbox, lambda: _status(sandbox).get("total_instances") == 0, timeout_s=30)
    n.expect(empty is not None, "GET /search/status: no instance", _summary(_status(sandbox)))
    _wait(sandbox, lambda: _volume_state(sandbox) == "available", timeout_s=20)
    n.expect(_volume_state(sandbox) == "available", f"{sandbox.search_volume_id} is available: only the volume costs")


def _answers(n: Narrator, sandbox: Sandbox, instance_id: str) -> None:
    answer = _query(sandbox)
    body = answer.json() if answer.status_code == HTTPStatus.OK else {}
    hits = body.get("results") or []
    n.expect(
        bool(hits) and hits[0].get("id") == EXPECTED_TOP_HIT and body.get("instance_id") == instance_id,
        f'"{QUERY}" returns ranked results from {instance_id}',
        ", ".join(f"{h.get('id')} {h.get('score')}" for h in hits[:3])
        + f"; {body.get('timings', {}).get('total_ms')} ms"
        if hits
        else answer.text[:200],
    )


def _query(sandbox: Sandbox) -> Any:
    return sandbox.request("POST", "search/query", {"query": QUERY, "top_k": 3})


def _status(sandbox: Sandbox) -> dict[str, Any]:
    answer = sandbox.request("GET", "search/status")
    return answer.json() if answer.status_code == HTTPStatus.OK else {}


def _summary(status: dict[str, Any]) -> str:
    instances = status.get("instances") or []
    return ", ".join(f"{i.get('instance_id') or i.get('launch_id')} {i.get('status')}" for i in instances) or "none"


def _ready(n: Narrator, sandbox: Sandbox, claim: str, *, exclude: str | None = None) -> dict[str, Any] | None:
    def check() -> dict[str, Any] | None:
        return next(
            (
                i
                for i in _status(sandbox).get("instances", [])
                if i.get("status") in ROUTABLE and i.get("instance_id") != exclude
            ),
            None,
        )

    started = time.monotonic()
    found = _wait(sandbox, check, timeout_s=READY_TIMEOUT_S)
    n.expect(found is not None, claim, f"after {time.monotonic() - started:.0f} s" if found else "timed out")
    return found


def _missed(sandbox: Sandbox, instance_id: str, misses: int) -> bool:
    for instance in _status(sandbox).get("instances", []):
        if instance.get("instance_id") == instance_id:
            return instance.get("health_failures", 0) >= misses or instance.get("status") not in ROUTABLE
    return True


def _idle_seconds(sandbox: Sandbox, instance_id: str) -> float:
    """How long ago the instance was last used (or became ready), from its record."""
    table = sandbox.client("dynamodb", sandbox.hub.region)
    name = f"{sandbox.prefix}-search"
    items = table.query(
        TableName=name, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": "SEARCH"}}
    )["Items"]
    for item in items:
        if item.get("instance_id", {}).get("S") == instance_id:
            stamp = item.get("last_used") or item.get("ready_at") or item.get("created_at")
            return time.time() - float(stamp["N"]) if stamp else 0.0
    return 0.0


def _alive(sandbox: Sandbox) -> set[str]:
    return {i.instance_id for i in sandbox.search_instances()}


def _tags(sandbox: Sandbox, instance_id: str) -> dict[str, str]:
    ec2 = sandbox.client("ec2", sandbox.search_region)
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return {t["Key"]: t["Value"] for r in reservations for i in r["Instances"] for t in i.get("Tags", [])}


def _volume(sandbox: Sandbox) -> dict[str, Any]:
    ec2 = sandbox.client("ec2", sandbox.search_region)
    return ec2.describe_volumes(VolumeIds=[sandbox.search_volume_id])["Volumes"][0]


def _volume_zone(sandbox: Sandbox) -> str:
    return str(_volume(sandbox)["AvailabilityZone"])


def _volume_state(sandbox: Sandbox) -> str:
    return str(_volume(sandbox)["State"])


def _wait(sandbox: Sandbox, check: Any, *, timeout_s: float) -> Any:
    try:
        return sandbox.wait_for(check, timeout_s=timeout_s, interval_s=0.5)
    except SandboxError:
        return None

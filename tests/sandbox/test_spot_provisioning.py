"""Spot provisioning end to end in the sandbox: the real orchestrator, launch, teardown and capacity
monitor state machines in the emulator's Step Functions interpreter, the real handlers, the simulated
spot market and fleet. One test per path: a placement, failover on a capacity error, on-demand
fallback, a launch whose transient retries run out, make-before-break replacement, duplicate and late
worker reports, disable with teardown.

Every test drives the product only through what an operator or AWS would touch (the signed API, the
market, spot notices, the hub bus); the state table, Step Functions, Auto Scaling, ECS and SSM are only
read, except where a test says what it injects and why.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from moto.core.exceptions import ServiceException
from moto.ecs.models import EC2ContainerServiceBackend
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

from spothub.sandbox.lambda_runtime import LambdaRuntime
from spothub.sandbox.sandbox import Sandbox, SandboxError
from stacks.paths import STATEMACHINES_DIR

# Simulated seconds per real second: the workers' 15 s polls pass in about 4 s.
SPEED = 4.0
PLACEMENT_S = 90.0  # real seconds a placement (or a replacement) may take before a test gives up
SETTLE_S = 30.0  # real seconds for what follows from one event (a teardown, a report reaching the hub)
REPLICA = "replica-0"
WORKER = "spothub.worker"


# --- the sandbox as a test needs it ---------------------------------------------------------------


# Executions this module stopped. The emulator keeps an execution that waits on a task token RUNNING
# after StopExecution (its thread stays blocked in the wait), though it goes no further.
STOPPED: set[str] = set()


def stop_running_executions(sandbox: Sandbox) -> int:
    """Stop every running execution in the hub and worker regions; how many were stopped."""
    stopped = 0
    for deployment in sandbox.deployments:
        sfn = sandbox.client("stepfunctions", deployment.region)
        for machine in sfn.list_state_machines()["stateMachines"]:
            pages = sfn.get_paginator("list_executions").paginate(
                stateMachineArn=machine["stateMachineArn"], statusFilter="RUNNING"
            )
            for execution in [e for page in pages for e in page["executions"]]:
                if execution["executionArn"] in STOPPED:
                    continue
                sfn.stop_execution(executionArn=execution["executionArn"], cause="end of a test")
                STOPPED.add(execution["executionArn"])
                stopped += 1
    return stopped


def state_table(sandbox: Sandbox) -> Any:
    return boto3.resource(
        "dynamodb", region_name=sandbox.hub.region, endpoint_url=sandbox.aws_endpoint_url, **sandbox.credentials()
    ).Table(sandbox.hub.outputs["StateTableName"])


def eventually(
    sandbox: Sandbox,
    check: Callable[[], Any],
    what: str,
    *,
    timeout_s: float = SETTLE_S,
    interval_s: float = 0.1,
    evidence: Callable[[], Any] | None = None,
) -> Any:
    """`check()`'s first truthy value; on timeout, fail saying what did not happen, with evidence."""
    try:
        return sandbox.wait_for(check, timeout_s=timeout_s, interval_s=interval_s)
    except SandboxError:
        shown = evidence() if evidence else spot_instances(sandbox)
        pytest.fail(f"{what}: not within {timeout_s:.0f}s; evidence: {json.dumps(shown, default=str)[:1500]}")


def spot_instances(sandbox: Sandbox) -> dict[str, Any]:
    answer = sandbox.request("GET", "spot-instances")
    assert answer.status_code == 200, f"GET /spot-instances: {answer.status_code} {answer.text}"
    return answer.json()


def toggle(sandbox: Sandbox, **body: Any) -> None:
    answer = sandbox.request("POST", "spot-provisioning", body)
    assert answer.status_code == 200, f"POST /spot-provisioning {body}: {answer.status_code} {answer.text}"
    assert answer.json()["message"] == f"Spot provisioning {body['action']}d successfully"


def serving(
    sandbox: Sandbox, where: Callable[[dict[str, Any]], bool] = lambda _d: True, what: str = "the replica serves"
) -> dict[str, Any]:
    """GET /spot-instances once the replica serves (and `where` holds)."""

    def check() -> dict[str, Any] | None:
        details = spot_instances(sandbox)
        return details if details["state"] == "serving" and details["instances"] and where(details) else None

    return eventually(sandbox, check, what, timeout_s=PLACEMENT_S, interval_s=0.25)


def orchestrators_done(sandbox: Sandbox) -> None:
    """Wait until no orchestrator runs (a spot placement or replacement ends once recorded and retired)."""
    eventually(
        sandbox,
        lambda: not running_orchestrators(sandbox),
        "the orchestrator finishes",
        evidence=lambda: {arn: trail(sandbox, arn) for arn in running_orchestrators(sandbox)},
    )


def ranked_regions(sandbox: Sandbox) -> list[str]:
    """The worker regions as the spot finder ranks them in the market as it is: score, then price, then name."""
    assert sandbox.market is not None
    types = sorted({p.instance_type for p in sandbox.market.pools()})
    regions = [w.region for w in sandbox.workers]
    scores = {s["Region"]: s["Score"] for s in sandbox.market.placement_scores(types, 1, regions, False)}
    price = {r: min(p.spot_price for p in sandbox.market.pools(r)) for r in regions}
    return sorted(regions, key=lambda r: (-scores[r], price[r], r))


def set_region(
    sandbox: Sandbox, region: str, *, capacity: int | None = None, placement_score: int | None = None
) -> None:
    assert sandbox.market is not None
    for pool in sandbox.market.pools(region):
        sandbox.market.set_zone(pool.zone, pool.instance_type, capacity=capacity, placement_score=placement_score)


def hub_bus(sandbox: Sandbox) -> str:
    return ":event-bus/" + sandbox.hub.outputs["HubBusArn"].rsplit("/", 1)[-1]


def hub_events(sandbox: Sandbox, detail_type: str) -> list[tuple[float, dict[str, Any]]]:
    """(simulated time, detail) of each event of this type that reached the hub bus, oldest first."""
    return [(e.at, e.details["event"]["detail"]) for e in sandbox.events(hub_bus(sandbox), detail_type)]


def launches(sandbox: Sandbox) -> list[dict[str, Any]]:
    """The launch commands the hub sent, oldest first."""
    return [detail for _at, detail in hub_events(sandbox, "Spothub Launch Requested")]


def worker(sandbox: Sandbox, region: str) -> Any:
    return next(w for w in sandbox.workers if w.region == region)


def desired(sandbox: Sandbox, region: str) -> int:
    group = worker(sandbox, region).outputs["AutoScalingGroupName"]
    (described,) = sandbox.client("autoscaling", region).describe_auto_scaling_groups(AutoScalingGroupNames=[group])[
        "AutoScalingGroups"
    ]
    return int(described["DesiredCapacity"])


def running_tasks(sandbox: Sandbox, region: str) -> list[str]:
    """ECS tasks in the region's cluster that are meant to run."""
    pages = (
        sandbox.client("ecs", region)
        .get_paginator("list_tasks")
        .paginate(cluster=worker(sandbox, region).outputs["ClusterName"], desiredStatus="RUNNING")
    )
    return [arn for page in pages for arn in page["taskArns"]]


def live_instances(sandbox: Sandbox, region: str | None = None) -> list[str]:
    assert sandbox.fleet is not None
    return [i.instance_id for i in sandbox.fleet.running(region)]


def items(sandbox: Sandbox, partition: str) -> dict[str, dict[str, Any]]:
    found = state_table(sandbox).query(
        KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": partition}, ConsistentRead=True
    )["Items"]
    return {item["sk"]: item for item in found}


def executions(sandbox: Sandbox) -> dict[str, str]:
    """Every execution in the hub and worker regions but those stopped by earlier tests: ARN -> status."""
    found = {}
    for deployment in sandbox.deployments:
        sfn = sandbox.client("stepfunctions", deployment.region)
        for machine in sfn.list_state_machines()["stateMachines"]:
            pages = sfn.get_paginator("list_executions").paginate(stateMachineArn=machine["stateMachineArn"])
            for execution in [e for page in pages for e in page["executions"]]:
                if execution["executionArn"] not in STOPPED:
                    found[execution["executionArn"]] = execution["status"]
    return found


def running_orchestrators(sandbox: Sandbox) -> list[str]:
    return [arn for arn, status in executions(sandbox).items() if status == "RUNNING" and "spot-orchestrator" in arn]


def trail(sandbox: Sandbox, execution_arn: str, last: int = 12) -> list[str]:
    """An execution's latest history events, newest first: type, and the state or error they concern."""
    events = sandbox.client("stepfunctions", execution_arn.split(":")[3]).get_execution_history(
        executionArn=execution_arn
    )["events"]
    trail = []
    for event in sorted(events, key=lambda e: -e["id"])[:last]:
        details = next((v for k, v in event.items() if k.endswith("EventDetails")), {})
        trail.append(f"{event['type']} {details.get('name') or details.get('error') or ''}".strip())
    return trail


def failures(sandbox: Sandbox) -> list[str]:
    """What the sandbox recorded as failing: async invocations that failed, rule deliveries, ticks."""
    return [e.summary for e in sandbox.timeline if e.kind == "failure"]


def find_regions(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    """Ask the deployed spot finder, as the orchestrator does."""
    function = next(
        r["PhysicalResourceId"]
        for r in sandbox.client("cloudformation").list_stack_resources(StackName=sandbox.hub.stack_name)[
            "StackResourceSummaries"
        ]
        if r["ResourceType"] == "AWS::Lambda::Function" and "SpotFinder" in r["LogicalResourceId"]
    )
    answer = sandbox.client("lambda").invoke(FunctionName=function, Payload=json.dumps(request).encode())
    payload = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, payload
    return payload


def place(sandbox: Sandbox) -> dict[str, Any]:
    """Enable, and wait until the replica serves on spot and its orchestrator is done; GET /spot-instances then."""
    toggle(sandbox, action="enable")
    details = serving(sandbox)
    orchestrators_done(sandbox)
    return details


@pytest.fixture
def invocations(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every function invocation in the sandbox from now on: function name, event, answer, error."""
    recorded: list[dict[str, Any]] = []
    original = LambdaRuntime.invoke

    def recording(runtime: LambdaRuntime, function: Any, event: Any, **keywords: Any) -> tuple[bytes, str | None]:
        payload, error = original(runtime, function, event, **keywords)
        try:
            answer = json.loads(payload or b"null")
        except ValueError:
            answer = payload.decode(errors="replace")
        recorded.append({"function": function.function_name, "event": event, "answer": answer, "error": error})
        return payload, error

    monkeypatch.setattr(LambdaRuntime, "invoke", recording)
    return recorded


def answered(invocations: list[dict[str, Any]], event_ids: list[str]) -> list[dict[str, Any]] | None:
    """The capacity handler's invocations for these hub bus events, once it has answered all of them."""
    by_id = {
        i["event"]["id"]: i
        for i in list(invocations)
        if "CapacityHandler" in i["function"] and isinstance(i["event"], dict) and "id" in i["event"]
    }
    return [by_id[e] for e in event_ids] if all(e in by_id for e in event_ids) else None


# --- 1. a replica is placed -------------------------------------------------------------------------


def test_enable_places_a_replica_and_publishes_where_it_runs(spot: Sandbox) -> None:
    details = place(spot)

    regions = [w.region for w in spot.workers]
    assert details["region"] in regions, f"GET names no worker region: {details}"
    assert details["provisioning"] == "enabled", details
    assert len(details["instances"]) == 1, f"one replica, one instance: {details['instances']}"
    (instance,) = details["instances"]
    assert instance["instance_id"].startswith("i-"), instance
    assert instance["capacity_type"] == "spot", instance
    assert instance["status"] == "serving", instance
    assert instance["region"] == details["region"], instance
    (replica,) = details["replicas"]
    assert replica["status"] == "serving", replica
    assert replica["instance_id"] == instance["instance_id"], replica
    assert replica["reason"].startswith("score "), f"the replica says why its region was chosen: {replica}"

    assert live_instances(spot) == [instance["instance_id"]], "the fleet runs exactly the instance GET names"
    assert len(running_tasks(spot, details["region"])) == 1, "the serving task runs on it"
    parameter = "/spothub/spothub/active-instance"  # /spothub/<prefix>/active-instance, default prefix
    active = json.loads(spot.client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"])
    assert active["instance_id"] == instance["instance_id"], f"{parameter} names the serving instance: {active}"
    assert active["region"] == details["region"], active
    assert failures(spot) == []


def test_two_replicas_enabled_at_once_serve_in_two_regions(spot: Sandbox) -> None:
    regions = sorted(w.region for w in spot.workers)
    assert len(regions) == 2, f"this test needs two worker regions: {regions}"
    # Both orchestrators rank the regions before either holds one: both find the same best region.
    toggle(spot, action="enable", replicas=2)

    def both_serve() -> dict[str, Any] | None:
        details = spot_instances(spot)
        placed = [r for r in details["replicas"] if r["status"] == "serving" and r["instance_id"]]
        return details if len(placed) == 2 else None

    details = eventually(spot, both_serve, "both replicas serve", timeout_s=PLACEMENT_S, interval_s=0.25)
    orchestrators_done(spot)

    replicas = {r["replica_id"]: r for r in details["replicas"]}
    assert sorted(r["region"] for r in replicas.values()) == regions, f"one replica per region: {replicas}"
    assert len({r["instance_id"] for r in replicas.values()}) == 2, replicas
    assert sorted(live_instances(spot)) == sorted(r["instance_id"] for r in replicas.values()), "nothing else runs"
    for region in regions:
        assert desired(spot, region) == 1, f"{region}'s group holds one instance: {desired(spot, region)}"
    # Each region is reserved by the replica that serves there.
    reserved = {region: item["replica_id"] for region, item in items(spot, "RESERVATION").items()}
    assert reserved == {r["region"]: replica_id for replica_id, r in replicas.items()}, reserved
    assert failures(spot) == []


# --- 2. a capacity error moves the replica to the next region -------------------------------------------


def test_a_capacity_error_excludes_the_best_region_and_the_replica_lands_in_the_next(spot: Sandbox) -> None:
    best, second = ranked_regions(spot)
    # The placement score still says 10: the launch's failure, not the score, has the last word.
    set_region(spot, best, capacity=0, placement_score=10)
    assert ranked_regions(spot) == [best, second], "the empty region still ranks first"

    details = place(spot)

    assert details["region"] == second, f"the replica serves in {second}: {details}"
    assert [i["region"] for i in details["instances"]] == [second], details["instances"]
    tried = [(launch["region"], launch["capacity_type"]) for launch in launches(spot)]
    assert tried == [(best, "spot"), (second, "spot")], f"first {best}, then {second}: {tried}"
    excluded = items(spot, "EXCLUSION").get(best)
    assert excluded is not None, f"{best} is excluded after its capacity error"
    assert "InsufficientInstanceCapacity" in excluded["reason"], excluded
    assert float(excluded["until"]) > time.time() + 600, f"a capacity exclusion lasts about 15 minutes: {excluded}"
    left_out = {o["region"]: o["reason"] for o in find_regions(spot, {"replica_id": REPLICA})["left_out"]}
    assert left_out.get(best, "").startswith("excluded for"), f"the ranking leaves {best} out, saying why: {left_out}"
    # The failed launch left nothing behind in the first region.
    eventually(
        spot, lambda: desired(spot, best) == 0, f"{best}'s group is back at 0", evidence=lambda: desired(spot, best)
    )
    assert live_instances(spot, best) == []
    assert failures(spot) == []


# --- 3. no spot region left: on-demand ------------------------------------------------------------------


def test_with_no_spot_capacity_anywhere_the_replica_runs_on_demand(spot: Sandbox) -> None:
    regions = [w.region for w in spot.workers]
    # cdk.json sets no capacityFallback: the default (stacks/config.py) allows on-demand.
    fallback = spot.client("ssm").get_parameter(Name="/spothub/spothub/capacity-fallback")["Parameter"]["Value"]
    assert fallback == "on-demand", f"this deployment's capacityFallback is {fallback!r}"
    for region in regions:
        set_region(spot, region, capacity=0)

    toggle(spot, action="enable")
    details = serving(spot)

    (instance,) = details["instances"]
    assert instance["capacity_type"] == "on-demand", instance
    (replica,) = details["replicas"]
    assert replica["capacity_type"] == "on-demand", replica
    assert "no spot region left" in replica["reason"], replica
    assert all(region in replica["reason"] for region in regions), f"the reason names each region left out: {replica}"
    tried = launches(spot)
    first_on_demand = next(n for n, launch in enumerate(tried) if launch["capacity_type"] == "on-demand")
    spot_attempts = sorted(launch["region"] for launch in tried[:first_on_demand])
    assert spot_attempts == sorted(regions), f"every region was tried for spot before on-demand: {tried}"
    assert tried[first_on_demand]["region"] == details["region"], tried
    assert set(items(spot, "EXCLUSION")) == set(regions), "every spot region is excluded"
    assert failures(spot) == []


# --- 4. transient errors: bounded retries, then cleanup and a report ---------------------------------------


class ThrottlingException(ServiceException):
    code = "ThrottlingException"
    message = "Rate exceeded"


class _ClockSleep:
    """moto's retrier sleeps in real seconds; for this test its waits follow the sandbox clock."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._clock = sandbox.clock

    def sleep(self, seconds: float) -> None:
        deadline = self._clock.now() + seconds
        while self._clock.now() < deadline:
            time.sleep(0.02)


def _retries(state: str, error: str) -> int:
    definition = json.loads((STATEMACHINES_DIR / "launch_instance.asl.json").read_text())
    return next(r["MaxAttempts"] for r in definition["States"][state]["Retry"] if error in r["ErrorEquals"])


# moto warns that ECS's service model names no ThrottlingException; AWS's ECS answers with it all the same.
@pytest.mark.filterwarnings("ignore:Exception\\(ThrottlingException\\):UserWarning")
def test_transient_errors_past_the_retries_clean_up_and_report_to_the_hub(
    spot: Sandbox, monkeypatch: pytest.MonkeyPatch, invocations: list[dict[str, Any]]
) -> None:
    best, second = ranked_regions(spot)
    original = EC2ContainerServiceBackend.describe_tasks
    throttling = [True]

    def throttled(backend: Any, *args: Any, **kwargs: Any) -> Any:
        # ECS throttles the worker's health checks of the serving task in the first region, and only there.
        if throttling[0] and backend.region_name == best:
            raise ThrottlingException
        return original(backend, *args, **kwargs)

    monkeypatch.setattr(EC2ContainerServiceBackend, "describe_tasks", throttled)
    monkeypatch.setattr(retrier_decl, "time", _ClockSleep(spot))

    toggle(spot, action="enable")

    def failed_report() -> dict[str, Any] | None:
        reports = [d for _at, d in hub_events(spot, "Spothub Launch Failed") if d["region"] == best]
        if not reports:
            spot.clock.advance(20)  # the retries' backoff waits (5 s doubling, jittered) pass on the clock
        return reports[0] if reports else None

    report = eventually(spot, failed_report, f"a Launch Failed report from {best} reaches the hub", interval_s=0.2)
    throttling[0] = False  # ECS answers again, this test's own questions included

    (first, *_) = launches(spot)
    assert first["region"] == best, first
    assert report["launch_id"] == first["launch_id"], report
    assert report["error_class"] == "transient", report
    assert report["code"] == "TransientError", report
    assert "ThrottlingException" in report["message"], report
    health_checks = [
        i
        for i in invocations
        if f"-worker-{best}-" in i["function"]
        and isinstance(i["event"], dict)
        and i["event"].get("action") == "workload_status"
    ]
    assert [i["error"] for i in health_checks] == ["Unhandled"] * (1 + _retries("WorkloadStatus", "TransientError")), (
        f"the health check failed once and on each retry, then no more: {[i['answer'] for i in health_checks]}"
    )
    assert all(i["answer"]["errorType"] == "TransientError" for i in health_checks), health_checks
    # Cleanup: the serving task stopped, the claimed instance terminated, the group back where it was.
    assert running_tasks(spot, best) == [], "no ECS task is left running in the region"
    assert live_instances(spot, best) == [], "the launch's instance is terminated"
    assert desired(spot, best) == 0, "the group is back at 0"
    # The report is on the hub bus; the capacity handler consumes it (one function at a time) a moment later.
    eventually(
        spot,
        lambda: items(spot, "LAUNCH")[first["launch_id"]]["status"] == "failed",
        "the hub records the launch as failed",
        evidence=lambda: items(spot, "LAUNCH")[first["launch_id"]],
    )
    # The capacity handler resolves the launch before it writes the exclusion: the exclusion may follow a moment later.
    eventually(
        spot,
        lambda: items(spot, "EXCLUSION").get(best, {}).get("reason", "").startswith("transient"),
        "the region is excluded for a while",
        evidence=lambda: items(spot, "EXCLUSION"),
    )
    eventually(
        spot,
        lambda: len(launches(spot)) > 1,
        "the orchestrator tries the next region",
        evidence=lambda: launches(spot),
    )
    assert launches(spot)[1]["region"] == second, launches(spot)
    assert failures(spot) == []


# --- 5. make before break ----------------------------------------------------------------------------------


@pytest.mark.parametrize("notice", ["rebalance", "interruption"])
def test_a_spot_notice_replaces_the_instance_before_the_old_one_goes(spot: Sandbox, notice: str) -> None:
    assert spot.fleet is not None
    before = place(spot)
    old_region = before["region"]
    (old,) = before["instances"]
    (new_region,) = [w.region for w in spot.workers if w.region != old_region]
    # The old region's pools are now at risk: the replacement has a better place to go.
    set_region(spot, old_region, placement_score=2)

    if notice == "rebalance":
        spot.fleet.send_rebalance_recommendation(old["instance_id"])
    else:
        spot.fleet.send_interruption_warning(old["instance_id"])
    after = serving(
        spot,
        lambda d: d["region"] == new_region and old["instance_id"] not in [i["instance_id"] for i in d["instances"]],
        what=f"GET /spot-instances shows the replacement in {new_region} and not the old instance",
    )

    (new,) = after["instances"]
    assert new["instance_id"] != old["instance_id"], after
    assert new["region"] == new_region, new
    assert new["status"] == "serving", new
    healthy = [
        at
        for at, d in hub_events(spot, "Spothub Launch Succeeded")
        if d["instance"]["instance_id"] == new["instance_id"]
    ]
    assert healthy, f"the replacement {new['instance_id']} was reported healthy"
    told = [
        at for at, d in hub_events(spot, "Spothub Teardown Requested") if d.get("instance_id") == old["instance_id"]
    ]
    assert told, f"the hub asked for {old['instance_id']} to be torn down"
    gone = eventually(
        spot,
        lambda: [
            e.at for e in spot.timeline if e.kind == "terminated" and e.details["instance_id"] == old["instance_id"]
        ],
        f"the old instance {old['instance_id']} is terminated",
    )
    assert healthy[0] <= told[0], "the teardown of the old instance was asked for only once its replacement was healthy"
    assert healthy[0] <= gone[0], "the old instance was still there when its replacement became healthy"
    assert live_instances(spot) == [new["instance_id"]], "one instance runs: the replacement"
    assert running_tasks(spot, old_region) == [], "no task is left in the old region"
    assert desired(spot, old_region) == 0, "the old region's group is back at 0"
    assert failures(spot) == []


# --- 6. duplicate and late reports ------------------------------------------------------------------------


# An instance in GET /spot-instances, as placement decides it (the README's fields); what its agent last
# said (heartbeats) moves on its own.
PLACEMENT_FIELDS = (
    "instance_id",
    "public_ip",
    "private_ip",
    "capacity_type",
    "availability_zone",
    "instance_type",
    "launched_at",
    "status",
    "region",
)


def _snapshot(sandbox: Sandbox) -> dict[str, Any]:
    details = spot_instances(sandbox)
    return {
        "GET /spot-instances": {
            **{k: v for k, v in details.items() if k != "instances"},
            "instances": [{f: i.get(f) for f in PLACEMENT_FIELDS} for i in details["instances"]],
        },
        "replicas": items(sandbox, "REPLICA"),
        "instances": items(sandbox, "INSTANCE"),
        "launches": items(sandbox, "LAUNCH"),
        "executions": executions(sandbox),
        "fleet": live_instances(sandbox),
    }


def _late_failure(succeeded: dict[str, Any]) -> dict[str, Any]:
    """A Launch Failed report for a launch that succeeded, as a late or out-of-order delivery brings it."""
    return {
        "launch_id": succeeded["launch_id"],
        "region": succeeded["region"],
        "error_class": "capacity",
        "code": "InsufficientInstanceCapacity",
        "message": "a late report of a launch that succeeded",
    }


def _put_reports(sandbox: Sandbox, reports: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Put worker reports on the hub bus, as the worker bus's forwarding rule does; their event ids."""
    answer = sandbox.client("events").put_events(
        Entries=[
            {
                "Source": WORKER,
                "DetailType": detail_type,
                "Detail": json.dumps(detail),
                "EventBusName": sandbox.hub.outputs["HubBusArn"],
            }
            for detail_type, detail in reports
        ]
    )
    assert answer["FailedEntryCount"] == 0, answer
    return [entry["EventId"] for entry in answer["Entries"]]


def test_duplicate_and_late_worker_reports_change_nothing(spot: Sandbox, invocations: list[dict[str, Any]]) -> None:
    place(spot)
    ((_at, succeeded),) = hub_events(spot, "Spothub Launch Succeeded")
    before = _snapshot(spot)

    ids = _put_reports(
        spot,
        [
            ("Spothub Launch Succeeded", succeeded),  # the same report, delivered twice more
            ("Spothub Launch Succeeded", succeeded),
            ("Spothub Launch Failed", _late_failure(succeeded)),
        ],
    )
    consumed = eventually(
        spot,
        lambda: answered(invocations, ids),
        "the capacity handler consumes the three reports",
        evidence=lambda: [i for i in invocations if "CapacityHandler" in i["function"]],
    )

    for invocation in consumed:
        assert invocation["error"] is None, f"a report raised in the capacity handler: {invocation}"
        outcome = invocation["answer"]["outcome"]
        assert outcome.startswith("ignored"), f"a duplicate or late report was acted on: {invocation}"
    time.sleep(1)  # anything the reports might have started gets its chance to show
    after = _snapshot(spot)
    for key, value in before.items():
        assert after[key] == value, f"{key} changed after duplicate and late reports"
    assert hub_events(spot, "Spothub Teardown Requested") == [], "no teardown was asked for"
    assert failures(spot) == []


def test_a_late_failure_report_does_not_exclude_the_region_where_its_launch_succeeded(
    spot: Sandbox, invocations: list[dict[str, Any]]
) -> None:
    details = place(spot)
    ((_at, succeeded),) = hub_events(spot, "Spothub Launch Succeeded")
    assert items(spot, "EXCLUSION") == {}, "nothing is excluded after a clean placement"

    (event_id,) = _put_reports(spot, [("Spothub Launch Failed", _late_failure(succeeded))])
    (consumed,) = eventually(
        spot, lambda: answered(invocations, [event_id]), "the capacity handler consumes the report"
    )
    assert consumed["answer"]["outcome"].startswith("ignored"), consumed

    left_out = {o["region"]: o["reason"] for o in find_regions(spot, {"replica_id": REPLICA})["left_out"]}
    assert details["region"] not in left_out, (
        f"a failure report for a launch that had succeeded left {details['region']}, where the replica serves, "
        f"out of the ranking: {left_out}"
    )
    assert items(spot, "EXCLUSION") == {}, "the late report wrote an exclusion"


# --- 7. disable with teardown -------------------------------------------------------------------------------


def test_disable_with_teardown_leaves_nothing_running(spot: Sandbox) -> None:
    details = place(spot)
    assert live_instances(spot), details

    toggle(spot, action="disable", teardown=True)

    regions = [w.region for w in spot.workers]
    eventually(
        spot, lambda: not live_instances(spot), "every instance is terminated", evidence=lambda: live_instances(spot)
    )
    eventually(
        spot,
        lambda: all(desired(spot, r) == 0 for r in regions),
        "every worker group is at desired 0",
        evidence=lambda: {r: desired(spot, r) for r in regions},
    )
    assert {r: running_tasks(spot, r) for r in regions} == {r: [] for r in regions}, "no ECS task runs"

    def emptied() -> dict[str, Any] | None:
        answer = spot_instances(spot)
        return answer if answer["instances"] == [] else None

    after = eventually(spot, emptied, "GET /spot-instances shows no instance")
    assert (after["provisioning"], after["state"]) == ("disabled", "idle"), after
    assert all(r["status"] == "stopped" for r in after["replicas"]), after["replicas"]
    assert all(r["instance_id"] is None for r in after["replicas"]), "a torn-down replica points at no instance"
    assert running_orchestrators(spot) == [], "no orchestrator runs after the disable"
    assert failures(spot) == []

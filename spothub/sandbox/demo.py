"""`spothub sandbox demo`: a narrated scenario on a fresh sandbox, every expectation checked.

Each chapter narrates what happens as a timeline (one line per event, simulated time) and checks
what it claims. Capability issues add their chapters here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TextIO

import requests

from spothub.sandbox import batch_driver as batch
from spothub.sandbox.demo_deployments import deployments_chapters
from spothub.sandbox.demo_search import search_chapter, search_idle_chapter
from spothub.sandbox.demo_standby import warm_standby_chapter
from spothub.sandbox.model_client import RecordWatch
from spothub.sandbox.model_server import INSTANCE_HEADER
from spothub.sandbox.sandbox import OUTSIDE_ADDRESS, Sandbox, SandboxError


@dataclass
class Narrator:
    sandbox: Sandbox
    out: TextIO = sys.stdout
    failures: list[str] = field(default_factory=list)
    _shown: int = 0

    def chapter(self, title: str) -> None:
        self.show_timeline()
        print(f"\n== {title}", file=self.out)

    def show_timeline(self) -> None:
        entries = self.sandbox.timeline[self._shown :]
        self._shown += len(entries)
        for entry in entries:
            print("   " + entry.line(self.sandbox.origin), file=self.out)

    def expect(self, ok: bool, claim: str, evidence: str = "") -> bool:
        self.show_timeline()
        mark = "ok  " if ok else "FAIL"
        print(f"   [{mark}] {claim}" + (f"  ({evidence})" if evidence else ""), file=self.out)
        if not ok:
            self.failures.append(claim)
        return ok

    def eventually(self, check: Callable[[], object], claim: str, timeout_s: float = 15.0) -> bool:
        try:
            value = self.sandbox.wait_for(check, timeout_s=timeout_s)
        except SandboxError:
            return self.expect(False, claim, "timed out")
        evidence = f"{len(value)} seen" if isinstance(value, list) else ""
        return self.expect(True, claim, evidence)


def run_demo(sandbox: Sandbox, out: TextIO = sys.stdout) -> list[str]:  # noqa: PLR0915 (one narrated story)
    """Play the scenario on a started sandbox; returns the expectations that failed."""
    n = Narrator(sandbox, out)
    hub_region = sandbox.hub.region
    west = sandbox.workers[0].region
    if sandbox.fleet is None or sandbox.market is None:
        raise SandboxError("the demo needs the sandbox's market and fleet")

    n.chapter("The synthesized stacks run in the embedded emulator")
    for deployment in sandbox.deployments:
        print("   " + deployment.report().replace("\n", "\n   "), file=out)
    n.expect(
        len(sandbox.workers) >= 1, "a hub and its worker stacks are deployed", f"{len(sandbox.deployments)} stacks"
    )
    n.expect(bool(sandbox.hub.outputs.get("ApiUrl")), "the hub publishes its API URL", sandbox.api_url)

    n.chapter("The API answers only SigV4-signed requests")
    unsigned = sandbox.request("GET", "status", signed=False)
    n.expect(unsigned.status_code == HTTPStatus.FORBIDDEN, "an unsigned GET /status is refused with 403", unsigned.text)
    wrong = sandbox.request("GET", "status", secret="not-the-secret")  # noqa: S106 (a wrong secret, on purpose)
    n.expect(wrong.status_code == HTTPStatus.FORBIDDEN, "a request signed with the wrong secret is refused with 403")
    signed = sandbox.request("GET", "status")
    body = signed.json() if signed.headers.get("Content-Type", "").startswith("application/json") else {}
    n.expect(
        signed.status_code == HTTPStatus.OK and body.get("state_table") == "reachable",
        "a signed GET /status runs the real handler against the state table",
        json.dumps(body),
    )

    n.chapter("The spot market answers EC2 as AWS would")
    scores = sandbox.client("ec2", hub_region).get_spot_placement_scores(
        InstanceTypes=[sandbox.market.pools(west)[0].instance_type],
        TargetCapacity=1,
        RegionNames=[w.region for w in sandbox.workers],
    )["SpotPlacementScores"]
    n.expect(
        {s["Region"] for s in scores} == {w.region for w in sandbox.workers},
        "GetSpotPlacementScores scores every worker region",
        ", ".join(f"{s['Region']}={s['Score']}" for s in scores),
    )
    prices = sandbox.client("ec2", west).describe_spot_price_history(InstanceTypes=["g5.xlarge"])["SpotPriceHistory"]
    n.expect(bool(prices), "DescribeSpotPriceHistory gives the market's prices", f"{len(prices)} zone prices")

    # Slow enough that a replacement's boot and model load fit inside an interruption's two minutes.
    sandbox.clock.set_speed(DEMO_SPEED)
    best, second = _ranked_regions(sandbox)

    n.chapter(f"Enable: {best} ranks first but has no spot capacity left; the replica lands in {second}")
    for pool in sandbox.market.pools(best):
        # The placement score still says 10: launch failures, not scores, are the last word.
        sandbox.market.set_zone(pool.zone, pool.instance_type, capacity=0, placement_score=10)
    enabled = sandbox.request("POST", "spot-provisioning", {"action": "enable"})
    n.expect(enabled.status_code == HTTPStatus.OK, "POST /spot-provisioning enable answers 200", enabled.text)
    placed = _serving(n, sandbox, "the replica is serving")
    first = placed["instances"][0] if placed else {}
    n.expect(placed.get("region") == second, f"GET /spot-instances shows it in {second}", _where(placed))
    excluded = (
        sandbox.client("dynamodb")
        .get_item(TableName=sandbox.hub.outputs["StateTableName"], Key={"pk": {"S": "EXCLUSION"}, "sk": {"S": best}})
        .get("Item", {})
    )
    n.expect(
        bool(excluded),
        f"the launch in {best} failed for capacity and {best} is excluded for a while",
        excluded.get("reason", {}).get("S", "")[:120],
    )
    again = sandbox.request("POST", "spot-provisioning", {"action": "enable"})
    n.expect(
        again.status_code == HTTPStatus.OK and len(_live(sandbox)) == 1,
        "enabling again keeps one replica",
        f"{len(_live(sandbox))} running",
    )
    bad = sandbox.request("POST", "spot-provisioning", {"action": "start"})
    n.expect(
        bad.status_code == HTTPStatus.BAD_REQUEST and "enable" in bad.text,
        "an unknown action is a 400 naming the allowed values",
        bad.text[:160],
    )

    endpoint, key = _model_endpoint_chapter(n, sandbox, placed)

    old = first.get("instance_id", "")
    old_region = placed.get("region") or second
    n.chapter(
        f"{old_region} loses its capacity: interruption warning, a replacement in {best} (on-demand, since {best} "
        "is still excluded for spot), then the old one goes"
    )
    name = sandbox.endpoint_settings().get("SPOTHUB_ENDPOINT_NAME", "")
    with RecordWatch(sandbox, name) as watch:
        for pool in sandbox.market.pools(old_region):
            sandbox.market.set_zone(pool.zone, pool.instance_type, capacity=0)
        moved = _serving(n, sandbox, "a replacement is serving", lambda d: d.get("region") not in (None, old_region))
        n.expect(moved.get("region") == best, f"GET /spot-instances shows the new region, {best}", _where(moved))
        n.eventually(
            lambda: sandbox.fleet.instances[old].state == "terminated", "the interrupted instance is gone", timeout_s=30
        )
    n.expect(_healthy_before_gone(sandbox, old), "the replacement was healthy before the old instance was gone")
    _endpoint_after_failover(n, sandbox=sandbox, watch=watch, endpoint=endpoint, key=key, old=old, moved=moved)

    _instance_health_chapters(n, sandbox, moved)

    n.chapter("Disable with teardown: no instance, every group at 0")
    disabled = sandbox.request("POST", "spot-provisioning", {"action": "disable", "teardown": True})
    n.expect(disabled.status_code == HTTPStatus.OK, "POST /spot-provisioning disable answers 200", disabled.text)
    n.eventually(lambda: not sandbox.fleet.running(), "every instance is terminated", timeout_s=30)
    n.eventually(
        lambda: all(_desired(sandbox, w.region) == 0 for w in sandbox.workers),
        "every worker group is at 0",
        timeout_s=30,
    )
    n.eventually(
        lambda: sandbox.request("GET", "spot-instances").json().get("instances") == [],
        "GET /spot-instances shows no instance",
        timeout_s=30,
    )
    after = sandbox.request("GET", "spot-instances").json()
    n.expect(
        (after.get("provisioning"), after.get("state")) == ("disabled", "idle"),
        "GET /spot-instances shows provisioning disabled and idle",
        f"{after.get('provisioning')}, {after.get('state')}",
    )

    warm_standby_chapter(n, sandbox)
    search_instance = search_chapter(n, sandbox)
    _batch_chapter(n, sandbox)
    search_idle_chapter(n, sandbox, search_instance)
    deployments_chapters(n, sandbox)
    n.show_timeline()
    print(
        f"\n{'all expectations met' if not n.failures else f'{len(n.failures)} expectations failed'}",
        file=out,
    )
    return n.failures


# The generated key's length (stacks/constructs/model_api_key.py).
API_KEY_LENGTH = 40


def _model_endpoint_chapter(n: Narrator, sandbox: Sandbox, placed: dict) -> tuple[str, str]:
    """A client at the address the ingress lets in reaches the model by its name, with the key only."""
    endpoint = placed.get("endpoint") or ""
    instance_id = (placed.get("instances") or [{}])[0].get("instance_id", "")
    instance = sandbox.fleet.instances.get(instance_id) if sandbox.fleet else None
    n.chapter(f"A client at {sandbox.state()['client_address']} calls the model at {endpoint or '(no endpoint)'}")
    settings = sandbox.endpoint_settings()
    n.expect(
        bool(settings) and endpoint == f"http://{settings.get('SPOTHUB_ENDPOINT_NAME')}:{sandbox.serving_port()}",
        "GET /spot-instances answers the endpoint's stable name and port",
        endpoint,
    )
    key = ""
    try:
        key = sandbox.api_key()
    except Exception as exc:
        n.expect(False, "`spothub api-key` reads the generated key from Secrets Manager", str(exc))
    else:
        n.expect(
            len(key) == API_KEY_LENGTH,
            "`spothub api-key` reads the generated key from Secrets Manager",
            f"{len(key)} characters",
        )
    public_ip = instance.public_ip if instance else None
    values = sandbox.resolve(settings.get("SPOTHUB_ENDPOINT_NAME", "")) if settings else []
    n.expect(
        bool(public_ip) and values == [public_ip],
        "the Route 53 record names the instance's public address",
        f"{','.join(values)} for {instance_id}",
    )
    chat = {"messages": [{"role": "user", "content": "Hello?"}]}
    answer = _call(sandbox, endpoint, "/v1/chat/completions", chat, key=key)
    body = (
        answer.json()
        if answer is not None and answer.headers.get("Content-Type", "").startswith("application/json")
        else {}
    )
    n.expect(
        answer is not None and answer.status_code == HTTPStatus.OK and body.get("object") == "chat.completion",
        "with the key, POST /v1/chat/completions gets an OpenAI-shaped completion from the stand-in server",
        f"model {body.get('model')}, answered by {answer.headers.get(INSTANCE_HEADER) if answer is not None else '?'}",
    )
    refused = _call(sandbox, endpoint, "/v1/chat/completions", chat)
    n.expect(
        refused is not None and refused.status_code == HTTPStatus.UNAUTHORIZED,
        "without the key the server refuses it with 401",
        refused.text[:120] if refused is not None else "no answer",
    )
    try:
        sandbox.model_request(endpoint, "/v1/models", key=key, source_ip=OUTSIDE_ADDRESS)
    except requests.exceptions.ConnectTimeout as exc:
        n.expect(True, f"from {OUTSIDE_ADDRESS}, outside the ingress, the connection times out", str(exc)[:160])
    else:
        n.expect(False, f"from {OUTSIDE_ADDRESS}, outside the ingress, the connection times out", "it connected")
    return endpoint, key


def _endpoint_after_failover(
    n: Narrator, *, sandbox: Sandbox, watch: RecordWatch, endpoint: str, key: str, old: str, moved: dict
) -> None:
    new = (moved.get("instances") or [{}])[0].get("instance_id", "")
    fleet = sandbox.fleet
    new_ip = fleet.instances[new].public_ip if fleet and new in fleet.instances else None
    gone = [e.at for e in sandbox.timeline if e.kind == "terminated" and e.details.get("instance_id") == old]
    named = watch.first_naming(new_ip or "")
    n.expect(
        named is not None and bool(gone) and named <= gone[0],
        "the Route 53 record named the new instance before the old one was gone",
        watch.history(sandbox.origin),
    )
    answer = _call(sandbox, endpoint, "/v1/chat/completions", {"messages": []}, key=key)
    by = answer.headers.get(INSTANCE_HEADER) if answer is not None else None
    n.expect(
        answer is not None and answer.status_code == HTTPStatus.OK and by == new,
        "the same endpoint name, with the same key, answers from the new instance",
        f"answered by {by}",
    )


def _call(sandbox: Sandbox, endpoint: str, path: str, body: object, key: str | None = None) -> requests.Response | None:
    try:
        return sandbox.model_request(endpoint, path, body, key=key)
    except requests.exceptions.RequestException:
        return None


DEMO_SPEED = 4.0
# Fast enough that three silent minutes pass in seconds, while the clock runs (a jump is not silence).
SILENCE_SPEED = 60.0


def _instance_health_chapters(n: Narrator, sandbox: Sandbox, placed: dict) -> None:
    instance_id = (placed.get("instances") or [{}])[0].get("instance_id", "")
    n.chapter("Every instance enters service only once its workload is healthy")
    launched = [e for e in sandbox.timeline if e.kind == "launched" and instance_id in e.summary]
    completed = [e for e in sandbox.timeline if e.kind == "lifecycle" and instance_id in e.summary]
    n.expect(
        bool(launched) and "Pending:Wait" in launched[0].summary,
        "the group held the new instance on its launch lifecycle hook (Pending:Wait)",
    )
    n.expect(
        bool(completed) and "CONTINUE" in completed[0].summary,
        "its agent completed the lifecycle action once the workload answered its health check",
        completed[0].summary if completed else "",
    )
    n.eventually(
        lambda: _agent_seen(sandbox, instance_id),
        "GET /spot-instances shows the agent's last heartbeat and its GPU health",
        timeout_s=30,
    )

    n.chapter(f"The agent on {instance_id} goes silent: alarm, remediation, a replacement")
    sandbox.fleet.kill_agent(instance_id)  # type: ignore[union-attr]
    sandbox.clock.set_speed(SILENCE_SPEED)
    try:
        n.eventually(
            lambda: [
                e
                for e in sandbox.timeline
                if e.kind == "alarm" and instance_id in e.summary and "-> ALARM" in e.summary
            ],
            "the heartbeat alarm fires after three silent minutes",
            timeout_s=40,
        )
    finally:
        sandbox.clock.set_speed(DEMO_SPEED)
    replaced = _serving(
        n,
        sandbox,
        "a replacement is serving",
        lambda d: (d.get("instances") or [{}])[0].get("instance_id") != instance_id,
        timeout_s=240,
    )
    reasons = [r for r in replaced.get("remediations", []) if r.get("instance_id") == instance_id]
    n.expect(
        bool(reasons) and "heartbeats" in reasons[0].get("reason", ""),
        "the remediation is recorded with its reason",
        reasons[0].get("reason", "") if reasons else "",
    )
    n.eventually(
        lambda: sandbox.fleet.instances[instance_id].state == "terminated",  # type: ignore[union-attr]
        "the silent instance is gone",
        timeout_s=60,
    )


def _agent_seen(sandbox: Sandbox, instance_id: str) -> dict | None:
    instances = sandbox.request("GET", "spot-instances").json().get("instances") or []
    mine = next((i for i in instances if i.get("instance_id") == instance_id), {})
    return {k: mine.get(k) for k in ("last_seen", "ready", "gpu")} if mine.get("last_seen") else None


def _ranked_regions(sandbox: Sandbox) -> tuple[str, str]:
    """The worker regions in the order the spot finder would rank them now (score, then price)."""
    scores = {
        s["Region"]: s["Score"]
        for s in sandbox.market.placement_scores(
            [p.instance_type for p in sandbox.market.pools()], 1, [w.region for w in sandbox.workers], False
        )
    }
    price = {w.region: min(p.spot_price for p in sandbox.market.pools(w.region)) for w in sandbox.workers}
    ordered = sorted(scores, key=lambda r: (-scores[r], price.get(r, 0.0), r))
    return ordered[0], ordered[1]


def _serving(
    n: Narrator,
    sandbox: Sandbox,
    claim: str,
    extra: Callable[[dict], bool] = lambda _d: True,
    timeout_s: float = 90,
) -> dict:
    def check() -> dict | None:
        details = sandbox.request("GET", "spot-instances").json()
        return details if details.get("state") == "serving" and extra(details) else None

    try:
        details = sandbox.wait_for(check, timeout_s=timeout_s, interval_s=0.3)
    except SandboxError:
        n.expect(False, claim, json.dumps(sandbox.request("GET", "spot-instances").json())[:400])
        return {}
    n.expect(True, claim, (details.get("replicas") or [{}])[0].get("reason") or "")
    return details


def _where(details: dict) -> str:
    instances = details.get("instances") or [{}]
    return f"{details.get('region')}: {instances[0].get('instance_id')} {instances[0].get('capacity_type')}"


def _live(sandbox: Sandbox) -> list:
    return [i for i in sandbox.fleet.running() if i.state == "running"] if sandbox.fleet else []


def _desired(sandbox: Sandbox, region: str) -> int:
    groups = sandbox.client("autoscaling", region).describe_auto_scaling_groups()["AutoScalingGroups"]
    return sum(int(g["DesiredCapacity"]) for g in groups)


def _healthy_before_gone(sandbox: Sandbox, old: str) -> bool:
    succeeded = [e.at for e in sandbox.events(f":event-bus/{_hub_bus(sandbox)}", "Spothub Launch Succeeded")]
    gone = [e.at for e in sandbox.timeline if e.kind == "terminated" and e.details.get("instance_id") == old]
    return len(succeeded) >= 2 and bool(gone) and succeeded[-1] <= gone[0]  # noqa: PLR2004


def _hub_bus(sandbox: Sandbox) -> str:
    return sandbox.hub.outputs["HubBusArn"].rsplit("/", 1)[-1]


def _read(path: object) -> str:
    try:
        return open(path).read()  # type: ignore[call-overload]
    except OSError:
        return ""


# The batch chapter: 200 files in batches of 10 on three workers; each file takes a moment, so that a worker is
# caught mid-batch. The silent worker's batch comes back at the processing timeout (seconds of the sandbox clock,
# which runs at 20x in this chapter: 15 real seconds).
BATCH_FILES = 200
BATCH_SIZE = 10
BATCH_WORKERS = 3
BATCH_PROCESSING_TIMEOUT_S = 300
BATCH_COMMAND = ["transform", "--seconds-per-file", "0.2"]


def _batch_chapter(n: Narrator, sandbox: Sandbox) -> None:
    n.chapter(f"Batch: {BATCH_FILES} files, {BATCH_WORKERS} spot workers; one interrupted, one agent killed mid-batch")
    # The serving chapters took the spot capacity away and left the regions excluded for spot for a while: both are
    # put back, as a later hour would find them (lifting the exclusions costs less than advancing the clock past them,
    # which would fire a quarter of an hour of scheduled rules).
    sandbox.market.restore()  # type: ignore[union-attr]
    lifted = _lift_exclusions(sandbox)
    n.expect(True, "the spot market is back to its configured capacity", f"serving exclusions lifted: {lifted}")
    files = batch.input_files(BATCH_FILES, tag="demo")
    batch.upload_inputs(sandbox, "demo/in/", files)
    n.expect(True, f"{BATCH_FILES} files are in s3://{sandbox.batch_input_bucket}/demo/in/")
    body = batch.job_request(
        sandbox,
        "demo/in/",
        "demo/out/",
        batch_size=BATCH_SIZE,
        max_workers=BATCH_WORKERS,
        processing_timeout_s=BATCH_PROCESSING_TIMEOUT_S,
        command=BATCH_COMMAND,
    )
    with batch.batch_pace(sandbox):
        accepted = sandbox.request("POST", "jobs", body)
        job_id = accepted.json().get("job_id", "") if accepted.status_code == HTTPStatus.ACCEPTED else ""
        n.expect(bool(job_id), "POST /jobs answers 202 with the job id, listing", accepted.text[:160])
        if not job_id:
            return
        running = _batch_eventually(
            n,
            sandbox,
            job_id,
            lambda v: v.get("status") == "running" and v.get("files") == BATCH_FILES,
            f"the listing wrote {BATCH_FILES // BATCH_SIZE} batches and the job runs",
            timeout_s=30,
        )
        n.expect(
            running.get("files") == BATCH_FILES
            and sum(running.get("batches", {}).values()) == BATCH_FILES // BATCH_SIZE,
            "GET /jobs/{id} counts the files and the batches",
            json.dumps(running.get("batches")),
        )
        _batch_eventually(
            n,
            sandbox,
            job_id,
            lambda v: len([w for w in v.get("workers", []) if w.get("status") == "active"]) >= BATCH_WORKERS,
            f"{BATCH_WORKERS} workers came up in the job's group and registered",
            timeout_s=60,
        )
        # The silent one first: its batch comes back only at its processing timeout, which the rest overlaps.
        silent = _holding(n, sandbox, job_id, ())
        if silent:
            sandbox.fleet.kill_agent(silent["instance_id"])  # type: ignore[union-attr]
            n.expect(True, f"the agent on {silent['instance_id']} is killed while it holds {silent['batch_id']}")
        interrupted = _holding(n, sandbox, job_id, (silent or {}).get("instance_id", ""))
        if interrupted:
            sandbox.fleet.send_interruption_warning(interrupted["instance_id"])  # type: ignore[union-attr]
            _batch_eventually(
                n,
                sandbox,
                job_id,
                lambda v: any(
                    w["instance_id"] == interrupted["instance_id"] and w.get("status") in ("shutting-down", "gone")
                    for w in v.get("workers", [])
                ),
                f"the interrupted worker handed {interrupted['batch_id']} back at once and left",
                timeout_s=30,
            )
        finished = _batch_eventually(
            n, sandbox, job_id, lambda v: v.get("status") in batch.FINISHED, "the job finished", timeout_s=120
        )
        n.expect(finished.get("status") == "completed", "the job completed", json.dumps(finished.get("batches")))
        errors = [e for e in finished.get("errors", []) if silent and e.get("batch_id") == silent["batch_id"]]
        n.expect(
            bool(errors) and "processing timeout" in errors[0].get("error", ""),
            f"the silent worker's batch came back after its {BATCH_PROCESSING_TIMEOUT_S} s processing timeout",
            errors[0].get("error", "")[:120] if errors else "",
        )
        n.expect(
            not [e for e in finished.get("errors", []) if interrupted and e.get("batch_id") == interrupted["batch_id"]],
            "the interrupted worker's batch was not counted as a failure",
        )
        outputs = batch.check_outputs(sandbox, files, "demo/out/")
        n.expect(outputs.ok, "every output is present exactly once, and right", outputs.summary())
        n.eventually(lambda: sandbox.job_notifications(job_id), "the jobs topic was told the job's end", 30)
        n.eventually(
            lambda: [
                e
                for e in sandbox.events(detail_type="Spothub Job Finished")
                if e.details["event"]["detail"].get("job_id") == job_id
            ],
            "`Spothub Job Finished` went on the hub bus",
            30,
        )
        n.eventually(
            lambda: not sandbox.job_groups() and not sandbox.job_workers(job_id),
            "no worker is left: the job's groups and their instances are gone",
            30,
        )


def _batch_eventually(
    n: Narrator, sandbox: Sandbox, job_id: str, check: Callable[[dict], bool], claim: str, *, timeout_s: float
) -> dict:
    try:
        seen = batch.wait_for_job(sandbox, job_id, check, timeout_s=timeout_s)
    except AssertionError as exc:
        n.expect(False, claim, str(exc)[:300])
        return {}
    n.expect(True, claim, f"status {seen.get('status')}, batches {json.dumps(seen.get('batches'))}")
    return seen


def _holding(n: Narrator, sandbox: Sandbox, job_id: str, exclude: tuple[str, ...] | str) -> dict | None:
    excluded = (exclude,) if isinstance(exclude, str) else exclude
    try:
        return sandbox.wait_for(
            lambda: batch.worker_holding_batch(sandbox, job_id, exclude=excluded), timeout_s=30, interval_s=0.2
        )
    except SandboxError:
        n.expect(False, "a worker holds a batch", "none did within 30 s")
        return None


def _lift_exclusions(sandbox: Sandbox) -> list[str]:
    """Delete the state table's region exclusions (pk EXCLUSION, sk the region); the regions lifted."""
    dynamodb = sandbox.client("dynamodb", sandbox.hub.region)
    table = sandbox.hub.outputs["StateTableName"]
    items = dynamodb.query(
        TableName=table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": "EXCLUSION"}}
    )["Items"]
    for item in items:
        dynamodb.delete_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]})
    return [item["sk"]["S"] for item in items]

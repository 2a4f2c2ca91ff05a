"""The running sandbox: emulator, deployed stacks, Lambda runtime, REST API, clock; and its Python API."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import boto3
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from spothub.data import PRICES_FILE
from spothub.sandbox import emulator_patches, hops, instance_network
from spothub.sandbox.alarms import AlarmEvaluator
from spothub.sandbox.api_server import ApiServer, gateway_responses_from_emulator, routes_from_emulator
from spothub.sandbox.buckets import batch_buckets, empty_bucket, ensure_bucket
from spothub.sandbox.clock import RuleScheduler, SandboxClock
from spothub.sandbox.deployer import Deployer, StackDeployment
from spothub.sandbox.fleet import Fleet
from spothub.sandbox.function_logs import FunctionLogs
from spothub.sandbox.iam import hooks as iam_hooks
from spothub.sandbox.iam.enforcer import Enforcer
from spothub.sandbox.iam.principals import Principals
from spothub.sandbox.instance_network import InstanceNetwork
from spothub.sandbox.lambda_runtime import LambdaRuntime
from spothub.sandbox.market import SpotMarket, load_prices, load_traces
from spothub.sandbox.ports import free_port
from spothub.sandbox.search_volume import ensure_volume, fill, volume_directory, volumes_root
from spothub.sandbox.shared_clock import SharedClock
from spothub.sandbox.ttl_sweeper import TtlSweeper

# spothub_core is imported here, never inside a method: while a function runs, the Lambda runtime gives it its own
# spothub_core modules (lambda_runtime._modules_of), and an import in another thread meanwhile races with that swap.
from spothub_core.contracts import MANAGED_BY, MODEL_NODE_SERVICE, SEARCH_SERVICE, SearchTag, job_group_name
from spothub_core.dal.deployment_store import DeploymentStore
from stacks.config import cdk_json_context
from stacks.paths import REPO_ROOT

ACCOUNT = "123456789012"
ACCESS_KEY_ID = "AKIASPOTHUBSANDBOX00"
SECRET_ACCESS_KEY = "spothub-sandbox-secret-access-key"  # noqa: S105 (a fixed local credential, by design)
# The model endpoint's name in the sandbox, its hosted zone (created in the emulator: see _ensure_hosted_zone)
# and the pretend client the model's security groups let in (documentation ranges, RFC 5737: no real host).
ENDPOINT_NAME = "model.spothub.test"
HOSTED_ZONE_ID = "Z0SPOTHUBSANDBOX"
CLIENT_ADDRESS = "192.0.2.10"
OUTSIDE_ADDRESS = "198.51.100.200"
# The batch jobs' buckets (created in the emulator's hub region at start, emptied by a reset).
BATCH_INPUT_BUCKET = "spothub-sandbox-input"
BATCH_OUTPUT_BUCKET = "spothub-sandbox-output"
# The search index's volume (created in the emulator in <region>a before the stacks are deployed, filled with the
# sandbox's corpus: see search_volume.py) and the image the search instance would run (the stand-in runs instead).
SEARCH_REGION = "us-west-2"
SEARCH_VOLUME_ID = "vol-0dec0de5eadc0ffee"
SEARCH_IMAGE = "public.ecr.aws/spothub/semantic-search:sandbox"
SEARCH_IDLE_TIMEOUT_SECONDS = 60
# The deployment the sandbox runs unless told otherwise: a hub and two worker regions, serving a model
# at a stable name to clients of 192.0.2.0/24, batch jobs from and to the sandbox's buckets, and the search
# service over the sandbox's volume.
DEFAULT_CONTEXT: dict[str, Any] = {
    "hubRegion": "us-east-1",
    "workerRegions": "us-west-2,eu-west-1",
    "hostedZoneId": HOSTED_ZONE_ID,
    "endpointName": ENDPOINT_NAME,
    "servingIngressCidrs": ["192.0.2.0/24"],
    "batchInputBuckets": [BATCH_INPUT_BUCKET],
    "batchOutputBuckets": [BATCH_OUTPUT_BUCKET],
    "searchRegion": SEARCH_REGION,
    "searchVolumeId": SEARCH_VOLUME_ID,
    "searchImage": SEARCH_IMAGE,
    # An idle instance is retired after one minute of the sandbox clock here (the least the stack allows), so the demo
    # and the tests can show it by advancing the clock a minute.
    "searchIdleTimeout": SEARCH_IDLE_TIMEOUT_SECONDS,
}
STATE_DIR = REPO_ROOT / ".spothub"


class SandboxError(RuntimeError):
    pass


@dataclass
class SandboxOptions:
    port: int = 8080
    host: str = "127.0.0.1"
    cdk_out: Path | None = None  # reuse this assembly instead of synthesizing
    context: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CONTEXT))
    speed: float = 1.0
    state_dir: Path = STATE_DIR
    write_state_file: bool = True
    prices: Path | None = PRICES_FILE if PRICES_FILE.is_file() else None
    traces: Path | None = None  # replay spot capacity from this trace directory
    shape: str | None = None  # the trace shape to replay when the directory holds several
    run_agents: bool = True
    # Refuse what the deployed IAM policies do not allow (AccessDenied); False only records the refusals.
    enforce_iam: bool = True
    # Where the functions' own output goes (their JSON logs, metrics, warnings); None: the terminal, mixed in.
    function_log: Path | None = None


@dataclass
class TimelineEntry:
    at: float  # simulated epoch seconds
    kind: str
    summary: str
    details: dict[str, Any]

    def line(self, origin: float) -> str:
        return f"T+{self.at - origin:8.1f}s  {self.kind:<14} {self.summary}"


def _empty_table(dynamodb: Any, table: str) -> None:
    keys = [k["AttributeName"] for k in dynamodb.describe_table(TableName=table)["Table"]["KeySchema"]]
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ProjectionExpression=", ".join(keys)):
        for item in page["Items"]:
            dynamodb.delete_item(TableName=table, Key=item)


def agent_bundle(cdk_out: Path) -> Path:
    """The worker agent as the assembly ships it (the asset the launch template's user data installs)."""
    for candidate in sorted(cdk_out.glob("asset.*")):
        if (candidate / "spothub_agent" / "__main__.py").is_file():
            return candidate
    raise SandboxError(f"{cdk_out} holds no worker agent bundle")


def synthesize(outdir: Path, context: dict[str, Any]) -> Path:
    """Run the CDK app as `cdk synth` does: cdk.json's context beneath the given one."""
    if outdir.exists():
        shutil.rmtree(outdir)
    env = {
        **os.environ,
        "CDK_OUTDIR": str(outdir),
        "CDK_CONTEXT_JSON": json.dumps({**cdk_json_context(), **context}),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": os.environ.get(
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20"
        ),
    }
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "app.py")], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SandboxError(f"synthesis failed:\n{result.stderr.strip()[-4000:]}")
    return outdir


class Sandbox:
    """Start with `start()` (or `with Sandbox(...) as sandbox:`); everything stops with `stop()`.

    The emulator's state lives in this process's moto backends, so one sandbox runs per process.
    """

    _running: ClassVar[Sandbox | None] = None

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.options = options or SandboxOptions()
        self.clock = SandboxClock(speed=self.options.speed)
        # The clock as the wall clock of this process and of every process the sandbox starts (shared_clock.py).
        self.shared_clock = SharedClock(self.clock, self.options.state_dir / "clock.json")
        self._ttl_sweeper = TtlSweeper(
            self.clock,
            ACCOUNT,
            lambda: sorted({d.region for d in self.deployments}),
            items_lock=emulator_patches.dynamodb_items_lock(),
            on_error=lambda exc: self.record("failure", f"TTL sweeper: {exc}", {"error": repr(exc)}),
        )
        self.timeline: list[TimelineEntry] = []
        self.deployments: list[StackDeployment] = []
        self.started_in_s: float | None = None
        self._timeline_lock = threading.Lock()
        self._moto: Any = None
        self._api: ApiServer | None = None
        self._function_logs: FunctionLogs | None = None
        self._scheduler: RuleScheduler | None = None
        self.alarms: AlarmEvaluator | None = None
        self._saved_environment: dict[str, str | None] = {}
        self._hooks: emulator_patches.Hooks | None = None
        self.market: SpotMarket | None = None
        self.fleet: Fleet | None = None
        self.aws_endpoint_url = ""
        self.origin = self.clock.now()
        self.principals = Principals(ACCESS_KEY_ID)
        self.iam = Enforcer(self.principals, enforce=self.options.enforce_iam)
        # The hops (deliveries, invocations, state transitions) from one event to what it causes: `with
        # sandbox.hops.recording() as recording:` (see hops.py).
        self.hops = hops.RECORDER

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Sandbox:
        if Sandbox._running is not None:
            raise SandboxError("a sandbox is already running in this process; stop it first")
        Sandbox._running = self
        try:
            return self._start()
        except Exception:
            self.stop()
            raise

    def _start(self) -> Sandbox:
        started = time.monotonic()
        state_dir = self.options.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.shared_clock.start()
        cdk_out = self.options.cdk_out or synthesize(state_dir / "cdk.out", self.options.context)
        synthesized = time.monotonic()

        from moto.server import ThreadedMotoServer  # noqa: PLC0415

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the emulator's per-request access log

        if self.options.function_log is not None:
            self._function_logs = FunctionLogs(self.options.function_log)
            self._function_logs.open()
        emulator_patches.apply()
        iam_hooks.apply()
        iam_hooks.attach(self.iam)
        hops.install()
        instance_network.apply()
        from moto.moto_api._internal.models import moto_api_backend  # noqa: PLC0415

        moto_api_backend.reset()  # a clean account, whatever ran in this process before
        aws_port = free_port(self.options.host)
        os.environ["MOTO_PORT"] = str(aws_port)  # moto's Step Functions interpreter calls back on this port
        self._moto = ThreadedMotoServer(ip_address=self.options.host, port=aws_port, verbose=False)
        self._moto.start()
        self.aws_endpoint_url = f"http://{self.options.host}:{aws_port}"
        # What every function sees stays in the process environment between invocations, so that the
        # per-invocation swap never removes a key another thread is reading (see lambda_runtime).
        # The region keys too: each invocation sets its function's region, and a key absent before it would be
        # removed after it, while a boto3 client made in another thread (the fleet's) checks and reads it.
        process_environment = {
            **self.function_environment(),
            "AWS_REGION": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
        }
        self._saved_environment = {key: os.environ.get(key) for key in process_environment}
        os.environ.update(process_environment)
        runtime = LambdaRuntime(state_dir / "work", self.function_environment(), self.principals.credentials_for)
        self._hooks = emulator_patches.Hooks(
            lambda_runtime=runtime,
            on_event=self._record_event,
            on_failure=self._record_failure,
            on_notification=self._record_notification,
            clock=self.clock,
        )
        emulator_patches.attach(self._hooks)

        self._ensure_search_volume()  # before the stacks: the deployment names it
        deployer = Deployer(cdk_out, self.aws_endpoint_url, ACCOUNT, self.credentials())
        self.deployments = deployer.deploy_all()
        for deployment in self.deployments:
            self.record("deployed", deployment.report().splitlines()[0], {"stack": deployment.stack_name})
        self._ensure_hosted_zone()
        self._ensure_batch_buckets()

        self.market, self.fleet = self._start_market(cdk_out, runtime)
        self._api = self._start_api()
        self._publish_local_api_url()
        self.alarms = AlarmEvaluator(self.clock, ACCOUNT, sorted({d.region for d in self.deployments}), self.record)
        self.alarms.start()
        self._ttl_sweeper.start()
        self._scheduler = RuleScheduler(
            self.clock,
            self._events_backends,
            self._fire_scheduled_rule,
            on_error=lambda exc: self.record("failure", f"scheduler: {exc}", {"error": repr(exc)}),
        )
        self._scheduler.start()
        self.started_in_s = round(time.monotonic() - synthesized, 3)
        self.synth_s = round(synthesized - started, 3)
        if self.options.write_state_file:
            (state_dir / "sandbox.json").write_text(json.dumps(self.state(), indent=2) + "\n")
        return self

    def stop(self) -> None:
        # Inbound first (API, scheduler, emulator), so nothing can launch an instance while the fleet stops.
        if self._api:
            self._api.stop()
        if self._scheduler:
            self._scheduler.stop()
        if self.alarms:
            self.alarms.stop()
        self._ttl_sweeper.stop()
        if self._moto:
            self._moto.stop()
        if self._hooks:
            self._hooks.executor.shutdown(wait=True, cancel_futures=True)
        if self.fleet:
            self.fleet.stop()
        instance_network.attach(None)
        if self._function_logs is not None:
            self._function_logs.close()
            self._function_logs = None
        emulator_patches.attach(None)
        iam_hooks.attach(None)
        for key, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environment = {}
        state_file = self.options.state_dir / "sandbox.json"
        if self.options.write_state_file and state_file.exists():
            state_file.unlink()
        if Sandbox._running is self:
            Sandbox._running = None
        self.shared_clock.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Back to just deployed, cheaply: no instances, the market as configured, empty tables and
        queues, an empty timeline. For tests that share one sandbox."""

        # The state machines first, so that no launch or cleanup of before acts on what comes after.
        self._forget_executions()
        self._settle()
        self._forget_model_deployments()
        self._delete_job_groups()
        self._stop_instances()
        if self.market is not None:
            self.market.restore()
        # What the terminations set off (reports, their handlers) lands before the tables are emptied.
        self._settle()
        # An event of before still on its way (a launch command to a worker region, say) may have started an
        # execution since; it would claim the next test's instance. Once no invocation is queued, none can start.
        self.wait_for_async_invocations()
        if self._forget_executions():
            self._stop_instances()
            self._settle()
        self._forget_alarms_and_metrics()
        self._forget_endpoint_records()
        for deployment in self.deployments:
            dynamodb = self.client("dynamodb", deployment.region)
            for table in dynamodb.list_tables()["TableNames"]:
                _empty_table(dynamodb, table)
            self._empty_queues(deployment.region)
        # A fleet command of a job of before may have landed meanwhile: its group goes too.
        self._delete_job_groups()
        if self.fleet is not None:
            self.fleet.wait_until_stopped()
            self.fleet.forget_activities()
            self.fleet.deployment_tasks.forget()
        self._ensure_batch_buckets(empty=True)
        self._ensure_search_volume(refill=True)
        self._forget_notifications()
        self.clock.set_speed(self.options.speed)
        with self._timeline_lock:
            self.timeline.clear()

    def _forget_model_deployments(self) -> None:
        """The model deployments' records go before their nodes: the controller runs that the nodes' terminations set
        off (their tasks' state changes) then find no deployment, restart no task and ask no node group for nodes. A
        run under way, which read the deployments before, is waited for: the node groups are set to 0 after it."""
        try:
            table = self.deployments_table()
        except SandboxError:
            return  # a deployment without model deployments
        _empty_table(self.client("dynamodb", self.hub.region), table)
        if self._hooks is not None:
            self._hooks.lambda_runtime.wait_for_turn()

    def _settle(self, quiet_s: float = 1.0, timeout_s: float = 15.0) -> None:
        """Wait until nothing has happened for `quiet_s` (no event, launch or termination on the timeline)."""
        deadline = time.monotonic() + timeout_s
        seen, quiet_since = len(self.timeline), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < quiet_s:
            time.sleep(0.1)
            if len(self.timeline) != seen:
                seen, quiet_since = len(self.timeline), time.monotonic()

    def _forget_executions(self) -> int:
        """Stop what runs and forget every execution: execution names (replica-0-g1, launch ids) are
        idempotency keys, and a name left from before the reset would make a new start a no-op. Returns how many
        were running. Only what it stopped is forgotten: forgotten while it runs, an execution would go on unseen
        (no listing would count its launch) and claim another's instance."""
        from moto.stepfunctions.responses import get_backend  # noqa: PLC0415

        stopped = 0
        for region in {d.region for d in self.deployments}:
            backend = get_backend(ACCOUNT, region)
            for machine in backend.state_machines:
                for execution in list(machine.executions):  # not clear(): one started since stays listed
                    if execution.status == "RUNNING":
                        backend.stop_execution(execution.execution_arn)
                        stopped += 1
                    machine.executions.remove(execution)
        return stopped

    def _stop_instances(self) -> None:
        """Every worker group to 0 and every instance terminated, its processes included."""
        from moto.autoscaling.models import autoscaling_backends  # noqa: PLC0415

        for worker in self.workers:
            for group in autoscaling_backends[ACCOUNT][worker.region].autoscaling_groups.values():
                group.set_desired_capacity(0)
        if self.fleet is not None:
            # Instances in Standby (after an interruption warning) do not count in a group's size.
            self.fleet.terminate_all()
            self.wait_for(lambda: not self.fleet.running(), timeout_s=30)  # type: ignore[union-attr]

    def wait_for_async_invocations(self, timeout_s: float = 120.0) -> None:
        """Until no asynchronous invocation is queued or running (scheduled rules keep firing: a moment without)."""
        if self._hooks is not None:
            hooks = self._hooks
            self.wait_for(lambda: hooks.async_in_flight() == 0, timeout_s=timeout_s, interval_s=0.02)

    def _delete_job_groups(self) -> None:
        """Every batch job's group and its instances (a test's job left running, or released late)."""
        from moto.autoscaling.models import autoscaling_backends  # noqa: PLC0415

        for worker in self.workers:
            backend = autoscaling_backends[ACCOUNT][worker.region]
            for name in self.job_groups(worker.region):
                group = backend.autoscaling_groups.get(name)
                if group is not None:
                    # As a ForceDelete: an agent leaving the group meanwhile still finds it until it powered off.
                    emulator_patches.force_delete_group(backend, group)

    def _forget_notifications(self) -> None:
        from moto.sns.models import sns_backends  # noqa: PLC0415

        for region in {d.region for d in self.deployments}:
            for topic in list(sns_backends[ACCOUNT][region].topics.values()):
                topic.sent_notifications.clear()

    def _forget_alarms_and_metrics(self) -> None:
        from moto.cloudwatch.models import cloudwatch_backends  # noqa: PLC0415

        for region in {d.region for d in self.deployments}:
            backend = cloudwatch_backends[ACCOUNT][region]
            backend.alarms.clear()
            backend.metric_data.clear()
        if self.alarms is not None:
            self.alarms.reset()

    @staticmethod
    def _empty_queues(region: str) -> None:
        from moto.sqs.models import sqs_backends  # noqa: PLC0415

        backend = sqs_backends[ACCOUNT][region]
        for queue in list(backend.queues.values()):
            # A reset is not a user's PurgeQueue: AWS's once-a-minute limit does not apply to it.
            queue.last_purged_at = None
            backend.purge_queue(queue.name)

    # --- what the sandbox is ---------------------------------------------------------------------

    @property
    def hub(self) -> StackDeployment:
        return next(d for d in self.deployments if d.artifact_id == "Hub")

    @property
    def workers(self) -> list[StackDeployment]:
        return [d for d in self.deployments if d.artifact_id.startswith("Worker-")]

    @property
    def api_url(self) -> str:
        return f"http://{self.options.host}:{self._started_api().port}/{self._started_api().stage}/"

    @property
    def control_url(self) -> str:
        return f"http://{self.options.host}:{self._started_api().port}/_sandbox/"

    def _started_api(self) -> ApiServer:
        if self._api is None:
            raise SandboxError("the sandbox is not started")
        return self._api

    def _started_hooks(self) -> emulator_patches.Hooks:
        if self._hooks is None:
            raise SandboxError("the sandbox is not started")
        return self._hooks

    def credentials(self) -> dict[str, str]:
        return {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET_ACCESS_KEY}

    def deployed_roles(self) -> list[str]:
        """The ARNs of the IAM roles the deployed stacks created."""
        from moto.iam.models import iam_backends  # noqa: PLC0415

        names = {d.stack_name for d in self.deployments}
        roles = iam_backends[ACCOUNT]["aws"].get_roles()
        return sorted(r.arn for r in roles if any(r.name.startswith(f"{name}-") for name in names))

    def function_environment(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_SESSION_TOKEN": "",
        }

    def state(self) -> dict[str, Any]:
        endpoint = self.endpoint_settings()
        return {
            "prefix": self.prefix,
            "endpoint_name": endpoint.get("SPOTHUB_ENDPOINT_NAME"),
            "hosted_zone_id": endpoint.get("SPOTHUB_HOSTED_ZONE_ID"),
            "client_address": CLIENT_ADDRESS,
            "api_url": self.api_url,
            "control_url": self.control_url,
            "aws_endpoint_url": self.aws_endpoint_url,
            "aws_access_key_id": ACCESS_KEY_ID,
            "aws_secret_access_key": SECRET_ACCESS_KEY,
            "account": ACCOUNT,
            "hub_region": self.hub.region,
            "worker_regions": [w.region for w in self.workers],
            "stacks": {d.stack_name: {"region": d.region, "outputs": d.outputs} for d in self.deployments},
        }

    def client(self, service: str, region: str | None = None) -> Any:
        return boto3.client(
            service,
            region_name=region or self.hub.region,
            endpoint_url=self.aws_endpoint_url,
            config=Config(retries={"max_attempts": 1}),
            **self.credentials(),
        )

    # --- batch jobs ----------------------------------------------------------------------------------

    @property
    def batch_input_bucket(self) -> str:
        return self._batch_buckets("batchInputBuckets")[0]

    @property
    def batch_output_bucket(self) -> str:
        return self._batch_buckets("batchOutputBuckets")[0]

    def _batch_buckets(self, key: str) -> list[str]:
        names = batch_buckets({key: self.options.context.get(key)})
        if not names:
            raise SandboxError(f"the deployment names no {key}")
        return names

    def _ensure_batch_buckets(self, *, empty: bool = False) -> None:
        """The deployment's batch buckets exist in the hub region (created at start; a test may have deleted one),
        and, with `empty`, hold nothing (no objects, no bucket policy)."""
        s3 = self.client("s3", self.hub.region)
        for name in batch_buckets(self.options.context):
            created = ensure_bucket(s3, name, self.hub.region)
            if created and not empty:
                self.record("deployed", f"bucket s3://{name} (batch jobs)", {"bucket": name})
            elif empty and not created:
                empty_bucket(s3, name)

    def job_groups(self, region: str | None = None) -> list[str]:
        """The batch jobs' Auto Scaling groups (`<prefix>-job-...`) that exist now, in one or every worker region."""
        from moto.autoscaling.models import autoscaling_backends  # noqa: PLC0415

        start = job_group_name(self.prefix, "job-")
        regions = [region] if region else [w.region for w in self.workers]
        return sorted(
            name
            for r in regions
            for name in list(autoscaling_backends[ACCOUNT][r].autoscaling_groups)
            if name.startswith(start)
        )

    def job_workers(self, job_id: str | None = None) -> list[Any]:
        """The simulated instances of batch jobs (of one job) that are not terminated."""
        if self.fleet is None:
            return []
        return [i for i in self.fleet.running() if i.job_id and (job_id is None or i.job_id == job_id)]

    def job_notifications(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """What was published to the jobs topic (about one job: its job_id message attribute), oldest first."""
        from moto.sns.models import sns_backends  # noqa: PLC0415

        topic_arn = self.hub.outputs.get("JobsTopicArn", "")
        topic = sns_backends[ACCOUNT][self.hub.region].topics.get(topic_arn)
        published = []
        for message_id, message, subject, attributes, _group in list(topic.sent_notifications) if topic else []:
            values = {k: (v or {}).get("Value") for k, v in (attributes or {}).items()}
            if job_id is None or values.get("job_id") == job_id:
                published.append({"id": message_id, "message": message, "subject": subject, "attributes": values})
        return published

    def fire_schedule(self, rule_name_contains: str) -> int:
        """Fire now, by hand, every scheduled rule whose name contains the text (its next firing by the clock is
        unchanged); returns how many fired."""
        fired = 0
        for backend in self._events_backends():
            for bus in list(backend.event_buses.values()):
                for rule in list(bus.rules.values()):
                    if rule.scheduled_expression and rule_name_contains in rule.name and rule.state == "ENABLED":
                        self._fire_scheduled_rule(rule, self.clock.datetime())
                        fired += 1
        return fired

    # --- the model endpoint, as a client reaches it -------------------------------------------------

    @property
    def prefix(self) -> str:
        """The deployment's prefix, from the parameters the hub publishes (/spothub/<prefix>/...)."""
        ssm = self.client("ssm", self.hub.region)
        published = ssm.describe_parameters(
            ParameterFilters=[{"Key": "Name", "Option": "Contains", "Values": ["/api-url"]}]
        )["Parameters"]
        names = [p["Name"] for p in published if p["Name"].startswith("/spothub/")]
        return names[0].split("/")[2] if names else "spothub"

    def endpoint_settings(self) -> dict[str, str]:
        """SPOTHUB_HOSTED_ZONE_ID and SPOTHUB_ENDPOINT_NAME as the deployed capacity handler has them ({} without)."""
        from moto.awslambda.models import lambda_backends  # noqa: PLC0415

        for function in lambda_backends[ACCOUNT][self.hub.region]._lambdas.all():
            variables = function.environment_vars or {}
            if variables.get("SPOTHUB_HOSTED_ZONE_ID") and variables.get("SPOTHUB_ENDPOINT_NAME"):
                return {k: str(variables[k]) for k in ("SPOTHUB_HOSTED_ZONE_ID", "SPOTHUB_ENDPOINT_NAME")}
        return {}

    def serving_port(self) -> int:
        """The port the model serves on: the hub's /spothub/<prefix>/serving-port, else the task definition's."""
        from spothub.sandbox.serving_container import port_and_health_path, serving_task_definition  # noqa: PLC0415

        ssm = self.client("ssm", self.hub.region)
        with contextlib.suppress(Exception):
            return int(ssm.get_parameter(Name=f"/spothub/{self.prefix}/serving-port")["Parameter"]["Value"])
        for worker in self.workers:
            definition = serving_task_definition(ACCOUNT, worker.region)
            if definition is not None and definition.container_definitions:
                port, _ = port_and_health_path(definition.container_definitions[0])
                if port is not None:
                    return port
        raise SandboxError("no serving port: neither /spothub/<prefix>/serving-port nor a serving task definition")

    def api_key(self) -> str:
        """The model endpoint's key, as `spothub api-key` reads it: the secret the hub names in SSM."""
        ssm = self.client("ssm", self.hub.region)
        name = ssm.get_parameter(Name=f"/spothub/{self.prefix}/model-api-key-secret")["Parameter"]["Value"]
        return str(self.client("secretsmanager", self.hub.region).get_secret_value(SecretId=name)["SecretString"])

    def resolve(self, name: str) -> list[str]:
        """The A values of a name in the emulator's Route 53 (every value of a multivalue answer)."""
        from spothub.sandbox.model_client import ModelClient  # noqa: PLC0415

        return ModelClient(self).resolve(name)

    def model_request(
        self,
        endpoint: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        source_ip: str = CLIENT_ADDRESS,
        source_groups: list[str] | None = None,
        method: str | None = None,
        timeout_s: float = 10.0,
    ) -> requests.Response:
        """A request to the model endpoint (`http://name:port`, an address, or a bare name) from a client at
        `source_ip`, as the network carries it: the name resolved through the emulator's Route 53, refused
        (requests' ConnectTimeout) where the instance's security groups do not let the client in. See
        spothub/sandbox/model_client.py."""
        from spothub.sandbox.model_client import ModelClient  # noqa: PLC0415

        return ModelClient(self).request(
            endpoint,
            path,
            body,
            key=key,
            source_ip=source_ip,
            source_groups=source_groups,
            method=method,
            timeout_s=timeout_s,
        )

    def _forget_endpoint_records(self) -> None:
        """The endpoint's records of before (one per replica) go with the replicas they named."""
        settings = self.endpoint_settings()
        if not settings:
            return
        route53 = self.client("route53")
        zone_id, name = settings["SPOTHUB_HOSTED_ZONE_ID"], settings["SPOTHUB_ENDPOINT_NAME"].rstrip(".") + "."
        records = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
        stale = [r for r in records if r["Name"] == name and r["Type"] == "A"]
        if stale:
            route53.change_resource_record_sets(
                HostedZoneId=zone_id,
                ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": record} for record in stale]},
            )

    def _ensure_hosted_zone(self) -> None:
        """The hosted zone the deployment's endpoint record goes in (a public zone for the name's parent
        domain, with the id the context gave), unless the emulator already has it."""
        settings = self.endpoint_settings()
        if not settings:
            return
        from moto.route53.models import route53_backends  # noqa: PLC0415

        backend = route53_backends[ACCOUNT]["aws"]
        zone_id, name = settings["SPOTHUB_HOSTED_ZONE_ID"], settings["SPOTHUB_ENDPOINT_NAME"].rstrip(".")
        if zone_id in backend.zones:
            return
        labels = name.split(".")
        domain = ".".join(labels[1:]) if len(labels) > 2 else name  # noqa: PLR2004 (a name below a domain)
        zone = backend.create_hosted_zone(f"{domain}.", private_zone=False, comment="spothub sandbox endpoint zone")
        # Route 53 chooses a zone's id; the context named one before the zone existed, so the zone takes it.
        backend.zones.pop(zone.resource_id)
        zone.resource_id = zone_id
        backend.zones[zone_id] = zone
        self.record("deployed", f"hosted zone {domain} ({zone_id}) for {name}", {"zone": zone_id})

    # --- the search volume and instance ----------------------------------------------------------------

    @property
    def search_region(self) -> str:
        """Where the search volume is: the context's searchRegion, else the first worker region."""
        regions = str(self.options.context.get("workerRegions", "")).split(",")
        return str(self.options.context.get("searchRegion") or regions[0].strip())

    @property
    def search_volume_id(self) -> str | None:
        """The deployment's search volume (context searchVolumeId); None: no search part."""
        return self.options.context.get("searchVolumeId") or None

    @property
    def search_volume_dir(self) -> Path:
        """The volume's data, as an instance sees it once attached."""
        if self.search_volume_id is None:
            raise SandboxError("the deployment has no search volume (context searchVolumeId)")
        return volume_directory(self.options.state_dir, self.search_volume_id)

    def search_instances(self) -> list[Any]:
        """The simulated search instances (Service=semantic-search) that are not terminated."""
        return [i for i in (self.fleet.running() if self.fleet else []) if i.service == SEARCH_SERVICE]

    def search_health(self, instance_id: str, *, healthy: bool) -> dict[str, Any]:
        """Make the search instance's service pass or fail its health checks (503 on its health path)."""
        if self.fleet is None:
            raise SandboxError("the sandbox runs no fleet")
        return self.fleet.search_health(instance_id, healthy=healthy)

    def _search_instance_types(self) -> list[str]:
        """The search instance's type as the hub's search functions have it (SPOTHUB_SEARCH_INSTANCE_TYPE)."""
        from moto.awslambda.models import lambda_backends  # noqa: PLC0415

        return sorted(
            {
                str(variables["SPOTHUB_SEARCH_INSTANCE_TYPE"])
                for function in lambda_backends[ACCOUNT][self.hub.region]._lambdas.all()
                if (variables := function.environment_vars or {}).get("SPOTHUB_SEARCH_INSTANCE_TYPE")
            }
        )

    def _ensure_search_volume(self, *, refill: bool = False) -> None:
        """The deployment's search volume exists in <search region>a with the context's id, attached to nothing,
        and its directory holds the corpus (refilled by a reset: what a test wrote there goes)."""
        volume_id = self.search_volume_id
        if volume_id is None:
            return
        region = self.search_region
        tags = {"Name": "spothub-search-index", SearchTag.MANAGED_BY.value: MANAGED_BY}
        created = ensure_volume(ACCOUNT, region, f"{region}a", volume_id, tags)
        from moto.ec2.models import ec2_backends  # noqa: PLC0415

        backend = ec2_backends[ACCOUNT][region]
        attachment = backend.volumes[volume_id].attachment
        if attachment is not None:  # an instance the fleet does not know held it (a test's): let it go
            backend.detach_volume(volume_id, attachment.instance.id, attachment.device)
        directory = volume_directory(self.options.state_dir, volume_id)
        if created or refill or not directory.is_dir():
            documents = fill(directory)
            if created:
                self.record(
                    "deployed",
                    f"volume {volume_id} in {region}a: {documents} documents (the search index)",
                    {"volume_id": volume_id, "directory": str(directory)},
                )

    # --- model deployments: the nodes and the tasks running on them (deployment_tasks.py) -------------------------

    def model_nodes(self) -> list[Any]:
        """The simulated deployment nodes (Service=model-node) that are not terminated."""
        return [i for i in (self.fleet.running() if self.fleet else []) if i.service == MODEL_NODE_SERVICE]

    def deployment_tasks(self, deployment_id: str | None = None, *, running: bool = False) -> list[dict[str, Any]]:
        """The deployment tasks the sandbox runs or ran on its nodes (of one deployment), oldest first: task_arn,
        instance_id, deployment_id, model, endpoint (http://<node private ip>:<host port>), local_url, host_port,
        gpu_ids, health, last_status, started_at, stopped_at, stopped_reason, stop_code, exit_code, pid, log."""
        found = self._deployment_runtime().describe(deployment_id)
        return [t for t in found if not running or t["last_status"] != "STOPPED"]

    def deployment_task_arn(self, deployment_id: str, slot: int) -> str:
        """The ECS task ARN of a deployment's slot now, from the deployments table: the slot's task that holds one
        and has not ended (of two, a replacement and the task it replaces, the newer)."""
        table = self.deployments_table()
        resource = boto3.resource(
            "dynamodb", region_name=self.hub.region, endpoint_url=self.aws_endpoint_url, **self.credentials()
        )
        tasks = DeploymentStore(resource.Table(table)).tasks(deployment_id)
        live = [t for t in tasks if t.slot == slot and t.ecs_task_arn and not t.status.ended]
        if not live:
            raise SandboxError(f"deployment {deployment_id} has no task placed in slot {slot}")
        return str(live[-1].ecs_task_arn)

    def deployments_table(self) -> str:
        """The deployments table's name, as the hub's deployment functions have it (SPOTHUB_DEPLOYMENTS_TABLE)."""
        from moto.awslambda.models import lambda_backends  # noqa: PLC0415

        for function in lambda_backends[ACCOUNT][self.hub.region]._lambdas.all():
            name = (function.environment_vars or {}).get("SPOTHUB_DEPLOYMENTS_TABLE")
            if name:
                return str(name)
        raise SandboxError("the deployment has no deployments table (no function names SPOTHUB_DEPLOYMENTS_TABLE)")

    def kill_deployment_task(
        self,
        task_arn: str | None = None,
        *,
        deployment_id: str | None = None,
        slot: int | None = None,
        sig: int = signal.SIGKILL,
        wait_s: float = 10.0,
    ) -> dict[str, Any]:
        """Kill a deployment task's container (by ECS task ARN, or by deployment id and slot), as a crash would:
        SIGKILL by default (exit code 137). ECS reports it stopped (EssentialContainerExited, "Essential container
        in task exited") with an ECS Task State Change event; returns the task as deployment_tasks() shows it, once
        stopped (or after wait_s)."""
        arn = self._task_arn(task_arn, deployment_id, slot)
        return self._deployment_runtime().kill(arn, sig, wait_s=wait_s)

    def set_gpu_utilization(
        self,
        utilization_pct: float,
        *,
        task_arn: str | None = None,
        deployment_id: str | None = None,
        slot: int | None = None,
        instance_id: str | None = None,
        gpu_index: int | None = None,
    ) -> list[str]:
        """Set the GPU utilization the nodes' NVML reports (0-100): of a task's GPUs (by ECS task ARN, or deployment
        id and slot), of every running task of a deployment (deployment id alone), or of a node's (instance_id; all
        its GPUs, or the one at gpu_index). The nodes' agents send it with their next heartbeat. Returns the GPU
        UUIDs set."""
        runtime = self._deployment_runtime()
        if instance_id is None and task_arn is None and deployment_id is not None and slot is None:
            running = [r.task_arn for r in runtime.runs(deployment_id) if r.last_status != "STOPPED"]
            if not running:
                raise SandboxError(f"deployment {deployment_id} has no task running in the sandbox")
            return [u for arn in running for u in runtime.set_utilization(utilization_pct, task_arn=arn)]
        if instance_id is None:
            task_arn = self._task_arn(task_arn, deployment_id, slot)
        return list(
            runtime.set_utilization(utilization_pct, task_arn=task_arn, instance_id=instance_id, gpu_index=gpu_index)
        )

    def reach(self, url: str) -> str:
        """The URL on this machine that a deployment task's endpoint (`http://<node private ip>:<host port>[/path]`)
        reaches: the test process is outside the nodes' VPC, so it calls this instead. SandboxError when no running
        task serves that address."""
        from spothub.sandbox.deployment_tasks import Unreachable  # noqa: PLC0415

        try:
            return self._deployment_runtime().reach(url)
        except Unreachable as exc:
            raise SandboxError(str(exc)) from None

    def deployment_request(
        self, endpoint: str, path: str, body: Any = None, *, method: str | None = None, timeout_s: float = 10.0
    ) -> requests.Response:
        """A request to a deployment task's endpoint (`http://<node private ip>:<host port>`), as a client in the
        VPC sends it: POST with a JSON body, GET without one."""
        url = self.reach(endpoint.rstrip("/") + "/" + path.lstrip("/"))
        verb = method or ("POST" if body is not None else "GET")
        return requests.request(verb, url, json=body, timeout=timeout_s)

    def _task_arn(self, task_arn: str | None, deployment_id: str | None, slot: int | None) -> str:
        if task_arn is not None:
            return task_arn
        if deployment_id is None or slot is None:
            raise ValueError("name a task: its task_arn, or its deployment_id and slot")
        return self.deployment_task_arn(deployment_id, slot)

    def _deployment_runtime(self) -> Any:
        if self.fleet is None:
            raise SandboxError("the sandbox runs no fleet")
        return self.fleet.deployment_tasks

    # --- the API, as a user calls it -------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        signed: bool = True,
        secret: str | None = None,
        credentials: dict[str, str] | None = None,
    ) -> requests.Response:
        """Call the sandbox API; signed with SigV4 by the sandbox credentials unless told otherwise
        (`credentials`: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY of a role session, see `principals`)."""
        url = self.api_url + path.lstrip("/")
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if signed:
            signable = AWSRequest(method=method, url=url, data=data, headers=headers)
            key, default_secret = ACCESS_KEY_ID, SECRET_ACCESS_KEY
            if credentials:
                key, default_secret = credentials["AWS_ACCESS_KEY_ID"], credentials["AWS_SECRET_ACCESS_KEY"]
            SigV4Auth(Credentials(key, secret or default_secret), "execute-api", self.hub.region).add_auth(signable)
            headers = dict(signable.headers.items())
        return requests.request(method, url, data=data, headers=headers, timeout=60)

    # --- timeline ---------------------------------------------------------------------------------

    def record(self, kind: str, summary: str, details: dict[str, Any] | None = None) -> TimelineEntry:
        entry = TimelineEntry(self.clock.now(), kind, summary, details or {})
        with self._timeline_lock:
            self.timeline.append(entry)
        return entry

    def events(self, bus_suffix: str | None = None, detail_type: str | None = None) -> list[TimelineEntry]:
        with self._timeline_lock:
            entries = [e for e in self.timeline if e.kind == "event"]
        return [
            e
            for e in entries
            if (bus_suffix is None or e.details["bus"].endswith(bus_suffix))
            and (detail_type is None or e.details["event"]["detail-type"] == detail_type)
        ]

    def wait_for(self, predicate: Any, timeout_s: float = 10.0, interval_s: float = 0.05) -> Any:
        """Poll `predicate` (real time) until it returns something truthy; raise on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval_s)
        raise SandboxError(f"timed out after {timeout_s}s waiting for {getattr(predicate, '__name__', 'condition')}")

    def _record_event(self, bus_arn: str, event: dict[str, Any]) -> None:
        region = bus_arn.split(":")[3]
        bus = bus_arn.rsplit("/", 1)[-1]
        self.record(
            "event",
            f"{region}/{bus}: {event['source']} {event['detail-type']}",
            {"bus": bus_arn, "event": event},
        )

    def _record_notification(self, topic_arn: str, details: dict[str, Any]) -> None:
        region, topic = topic_arn.split(":")[3], topic_arn.rsplit(":", 1)[-1]
        attributes = ", ".join(f"{k}={v}" for k, v in sorted(details.get("attributes", {}).items()))
        summary = f"{region}/{topic}: {details.get('subject') or '(no subject)'}"
        summary += f" [{attributes}]" if attributes else ""
        self.record("notification", summary, {"topic": topic_arn, **details})

    def _record_failure(self, what: str, details: dict[str, Any]) -> None:
        self.record("failure", f"{what}: {details.get('function') or details.get('target')}", details)

    # --- internals ---------------------------------------------------------------------------------

    def _start_api(self) -> ApiServer:
        rest_api_id = next(
            r["PhysicalResourceId"]
            for r in self.client("cloudformation").list_stack_resources(StackName=self.hub.stack_name)[
                "StackResourceSummaries"
            ]
            if r["ResourceType"] == "AWS::ApiGateway::RestApi"
        )
        stage = self.hub.outputs["ApiUrl"].rstrip("/").rsplit("/", 1)[-1]
        from spothub.sandbox.control import ControlSurface  # noqa: PLC0415

        api = ApiServer(
            host=self.options.host,
            port=self.options.port,
            stage=stage,
            account=ACCOUNT,
            api_id=rest_api_id,
            routes=routes_from_emulator(ACCOUNT, self.hub.region, rest_api_id),
            invoke=self._invoke_function,
            control=ControlSurface(self).handle,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            region=self.hub.region,
            gateway_responses=gateway_responses_from_emulator(ACCOUNT, self.hub.region, rest_api_id),
            iam=self.iam,
        )
        api.start()
        return api

    def _publish_local_api_url(self) -> None:
        """Agents read the API's URL from SSM: the sandbox's API answers on localhost, not execute-api."""
        ssm = self.client("ssm", self.hub.region)
        published = ssm.describe_parameters(
            ParameterFilters=[{"Key": "Name", "Option": "Contains", "Values": ["/api-url"]}]
        )["Parameters"]
        for parameter in published:
            ssm.put_parameter(Name=parameter["Name"], Value=self.api_url, Type="String", Overwrite=True)

    def _start_market(self, cdk_out: Path, runtime: LambdaRuntime) -> tuple[SpotMarket, Fleet]:
        from moto.autoscaling.models import autoscaling_backends  # noqa: PLC0415

        market = SpotMarket(self.clock)
        shapes, prices = load_prices(self.options.prices) if self.options.prices else ({}, {})
        instance_types = sorted(
            {
                override["InstanceType"]
                for worker in self.workers
                for group in autoscaling_backends[ACCOUNT][worker.region].autoscaling_groups.values()
                for override in (group.mixed_instances_policy or {}).get("LaunchTemplate", {}).get("Overrides", [])
            }
            | set(self._search_instance_types())
        )
        market.populate([w.region for w in self.workers], instance_types, prices)
        if self.options.traces:
            market.replay(load_traces(self.options.traces, shapes, self.options.shape))
        fleet = Fleet(
            clock=self.clock,
            market=market,
            record=self.record,
            account=ACCOUNT,
            agent_dir=agent_bundle(cdk_out) if self.options.run_agents else None,
            agent_environment={**self.function_environment(), **self.shared_clock.environment()},
            work_dir=self.options.state_dir / "work",
            iam=self.iam,
            volumes_dir=volumes_root(self.options.state_dir),
        )
        self._started_hooks().market = market
        self._started_hooks().fleet = fleet
        instance_network.attach(
            InstanceNetwork(fleet, ACCOUNT, [w.region for w in self.workers], lambda region: self.client("ec2", region))
        )
        fleet.start()
        return market, fleet

    def _invoke_function(self, function_arn: str, event: dict[str, Any]) -> tuple[bytes, str | None]:
        from moto.awslambda.models import lambda_backends  # noqa: PLC0415

        region = function_arn.split(":")[3]
        function = lambda_backends[ACCOUNT][region].get_function(function_arn.split(":")[6], None)
        return self._started_hooks().lambda_runtime.invoke(function, event)

    def _events_backends(self) -> list[Any]:
        from moto.events.models import events_backends  # noqa: PLC0415

        return [events_backends[ACCOUNT][d.region] for d in self.deployments]

    def _fire_scheduled_rule(self, rule: Any, at: datetime) -> None:
        self.record("schedule", f"{rule.region_name}: rule {rule.name} fires", {"rule": rule.arn})
        rule.send_to_targets(
            {
                "version": "0",
                "id": f"scheduled-{rule.name}-{int(at.timestamp())}",
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": ACCOUNT,
                "time": at.timestamp(),
                "region": rule.region_name,
                "resources": [rule.arn],
                "detail": {},
                "ingestion-time": at.timestamp(),
            }
        )

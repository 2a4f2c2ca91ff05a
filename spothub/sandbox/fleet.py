"""Simulated GPU instances: launched by the Auto Scaling groups against the spot market, each with its
own instance metadata and a process running the real `worker_agent`; interrupted by the market
or by hand, with the events AWS sends, and terminated two simulated minutes after the warning.
A deployment node (tagged Service=model-node) runs its agent in node mode over a stand-in NVML of its GPUs
(gpu_files.py), and the deployments' ECS tasks placed on it as processes (deployment_tasks.py).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spothub.sandbox import ecs_placement, gpu_files
from spothub.sandbox.clock import SandboxClock, Ticker
from spothub.sandbox.deployment_tasks import DeploymentTasks
from spothub.sandbox.ecs_placement import ecs_config, register_resources, registered_resources
from spothub.sandbox.emulator_patches import DELETE_IN_PROGRESS
from spothub.sandbox.iam.actions import Authorization
from spothub.sandbox.iam.enforcer import Enforcer
from spothub.sandbox.imds import InstanceMetadataServer
from spothub.sandbox.market import Pool, SpotMarket
from spothub.sandbox.ports import free_port
from spothub.sandbox.search_volume import device_name
from spothub.sandbox.serving_container import ContainerStartError, ServingContainer, prepare
from spothub.sandbox.shared_clock import child_environment
from spothub_core.contracts import (
    AWS_EVENT_SOURCES,
    MODEL_NODE_SERVICE,
    SEARCH_SERVICE,
    AwsEvent,
    InstanceTag,
    SearchTag,
)
from spothub_core.models.search_records import SearchAgentConfig

INTERRUPTION_NOTICE_SECONDS = 120
MODEL_SERVER = Path(__file__).with_name("model_server.py")
CONTAINER_ENTRY = Path(__file__).with_name("container_entry.py")
# A batch job's container, run by the agent's process runner where an instance would `docker run` the image.
BATCH_JOB = Path(__file__).with_name("batch_job.py")
# The search instance's container (the stand-in search service) and its mount helper (search_volume.py).
SEARCH_SERVER = Path(__file__).with_name("search_server.py")
SEARCH_VOLUME = Path(__file__).with_name("search_volume.py")
# Where a Nitro instance lists its EBS volumes by id, and where the search index is mounted: under the instance's
# own root in the sandbox.
BLOCK_DEVICE_DIR = "dev/disk/by-id"
SEARCH_MOUNT_PATH = "mnt/search-index"
# Public addresses of simulated instances: the documentation ranges (RFC 5737), never a real host.
PUBLIC_ADDRESS_RANGES = ("203.0.113.0/24", "198.51.100.0/24")
# Why ECS stops a task whose container could not be created (its stopCode).
TASK_FAILED_TO_START = "TaskFailedToStart"
# The agent's pace in the sandbox, in real seconds: fast enough that every simulated minute of a clock
# sped up to 60x still sees heartbeats, and a notice is seen within a poll.
AGENT_PACE = {
    "SPOTHUB_AGENT_HEARTBEAT_SECONDS": "0.25",
    "SPOTHUB_AGENT_POLL_SECONDS": "0.2",
    "SPOTHUB_AGENT_HEALTHY_WITHIN_SECONDS": "120",
    "SPOTHUB_AGENT_LIFECYCLE_HEARTBEAT_SECONDS": "5",
    "SPOTHUB_AGENT_BACKOFF_BASE_SECONDS": "0.2",
    "SPOTHUB_AGENT_BACKOFF_CAP_SECONDS": "2",
    "SPOTHUB_AGENT_BATCH_POLL_SECONDS": "0.5",
}
# How long the simulated model takes to load, in real seconds.
MODEL_LOAD_SECONDS = 1.0
# How long a group waits (simulated) before trying again after a launch failed, as Auto Scaling does.
LAUNCH_RETRY_SECONDS = 60
INSUFFICIENT_CAPACITY = (
    "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available that "
    "matches your request. Launching EC2 instance failed."
)

LAUNCH_TRANSITION = "autoscaling:EC2_INSTANCE_LAUNCHING"
# Scaling activities kept per group (AWS keeps six weeks of them; a sandbox run is shorter).
MAX_ACTIVITIES_KEPT = 100

Recorder = Callable[[str, str, dict[str, Any]], Any]


class LifecycleActionError(ValueError):
    """No active lifecycle action matches the request (Auto Scaling's ValidationError)."""


@dataclass
class LifecycleAction:
    """An instance held in Pending:Wait by a launch lifecycle hook until its agent completes it."""

    hook_name: str
    timeout_s: int
    default_result: str
    deadline: float


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SimulatedInstance:
    instance_id: str
    region: str
    zone: str
    instance_type: str
    capacity_type: str  # "spot" or "on-demand"
    group: str
    launched_at: float
    imds: InstanceMetadataServer
    log_path: Path
    agent: subprocess.Popen[bytes] | None = None
    state: str = "running"
    terminate_at: float | None = None
    notices: list[str] = field(default_factory=list)
    rebalance_sent: bool = False
    ecs_cluster: str | None = None
    role_arn: str | None = None  # the instance profile's role
    lifecycle_action: LifecycleAction | None = None
    workload_port: int = 0  # where the stand-in model server listens on this machine
    private_ip: str | None = None
    public_ip: str | None = None
    security_groups: list[str] = field(default_factory=list)
    # The serving container as ECS created it (environment and secrets resolved), or why it could not.
    container: ServingContainer | None = None
    container_error: str | None = None
    job_id: str | None = None  # the spothub:job-id tag: a batch job's worker (the agent in batch mode)
    service: str = ""  # the Service tag: semantic-search runs the agent in search mode
    # What its service listens on inside the VPC (a search instance's: the search config's port); the stand-in
    # listens on workload_port on this machine, and the network model maps one to the other.
    service_port: int | None = None
    health_path: str = "/health"
    root_dir: Path | None = None  # the instance's own filesystem: its block devices and mount points
    volumes: dict[str, str] = field(default_factory=dict)  # attached volume id -> its device (/dev/sdf)
    # A deployment node's running tasks: host port (its ECS network binding) -> where the task's server listens on
    # this machine (deployment_tasks.py); the network model routes the node's address and that port there.
    task_ports: dict[int, int] = field(default_factory=dict)

    @property
    def block_device_dir(self) -> Path | None:
        return self.root_dir / BLOCK_DEVICE_DIR if self.root_dir else None

    def describe(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "region": self.region,
            "availability_zone": self.zone,
            "instance_type": self.instance_type,
            "capacity_type": self.capacity_type,
            "group": self.group,
            "state": self.state,
            "launched_at": _iso(self.launched_at),
            "terminate_at": _iso(self.terminate_at) if self.terminate_at else None,
            "notices": self.notices,
            "agent": {
                "pid": self.agent.pid if self.agent else None,
                "running": bool(self.agent and self.agent.poll() is None),
                "exit_code": self.agent.poll() if self.agent else None,
                "log": str(self.log_path),
            },
            "imds_endpoint": self.imds.endpoint,
            "private_ip": self.private_ip,
            "public_ip": self.public_ip,
            "security_groups": self.security_groups,
            "job_id": self.job_id,
            "service": self.service or None,
            "task_ports": {str(host): local for host, local in self.task_ports.items()},
            "volumes": dict(self.volumes),
            "serving": {
                "port": self.container.port if self.container else self.service_port,
                "model": self.container.model if self.container else None,
                "local_port": self.workload_port or None,
                "error": self.container_error,
            },
        }

    @property
    def container_spec_path(self) -> Path:
        return self.log_path.with_name(f"{self.instance_id}.container.json")


class Fleet:
    def __init__(
        self,
        *,
        clock: SandboxClock,
        market: SpotMarket,
        record: Recorder,
        account: str,
        agent_dir: Path | None,
        agent_environment: dict[str, str],
        work_dir: Path,
        iam: Enforcer | None = None,
        volumes_dir: Path | None = None,
    ) -> None:
        self._clock = clock
        self._market = market
        self._record = record
        self._account = account
        self._agent_dir = agent_dir
        # Taken now: the process environment changes while a handler runs (its own variables).
        self._agent_environment = {**os.environ, **agent_environment}
        self._work_dir = work_dir
        # Each EBS volume's data, a directory per volume (search_volume.py); None: volumes hold nothing.
        self._volumes_dir = volumes_dir
        # The instance's own role: what its agent and its ECS agent may do (None: the sandbox's key).
        self._iam = iam
        self._lock = threading.RLock()
        self.instances: dict[str, SimulatedInstance] = {}
        self._retry_at: dict[tuple[str, str], float] = {}  # (region, group) -> when to try again
        self._public_ips: set[str] = set()  # in use by instances not terminated
        self._stopping_threads: dict[str, threading.Thread] = {}  # instance id -> its processes being stopped
        self._activities: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (region, group) -> newest first
        self._tick_lock = threading.Lock()
        self._stopping = False
        self._ticker = Ticker(
            "sandbox-fleet", self.tick, 0.2, lambda exc: record("failure", f"fleet tick: {exc}", {"error": repr(exc)})
        )
        # The deployments' ECS tasks on the nodes (ecs_placement's listener while the fleet runs).
        self.deployment_tasks = DeploymentTasks(
            self,
            account=account,
            clock=clock,
            record=record,
            work_dir=work_dir,
            environment=self._agent_environment,
            iam=iam,
        )
        market.on_change = self._on_market_change
        clock.on_advance(self.tick)

    def start(self) -> None:
        self._ticker.start()
        self.deployment_tasks.start()
        ecs_placement.attach(self.deployment_tasks)

    def stop(self) -> None:
        self._stopping = True
        self._ticker.stop()
        ecs_placement.attach(None)
        self.deployment_tasks.stop()
        with self._lock:
            stopping = list(self._stopping_threads.values())
            for instance in self.instances.values():
                self._stop_instance_processes(instance)
        for thread in stopping:
            thread.join(timeout=15)

    def wait_until_stopped(self, timeout_s: float = 15.0) -> None:
        """Until every terminated instance's processes are gone (they stop in the background)."""
        with self._lock:
            stopping = list(self._stopping_threads.values())
        for thread in stopping:
            thread.join(timeout=timeout_s)

    def delete_group_once_stopped(self, region: str, group_name: str, instance_ids: list[str]) -> None:
        """A group deleted with ForceDelete stays "Delete in progress" until its instances have powered off, as on
        AWS: an agent that is leaving the group as it is deleted still finds the group (and its tags, which its
        role's policy names), then is told its instance is no longer in it."""
        from moto.autoscaling.models import autoscaling_backends  # noqa: PLC0415

        backend = autoscaling_backends[self._account][region]
        backend.autoscaling_groups[group_name].status = DELETE_IN_PROGRESS
        with self._lock:
            stopping = [self._stopping_threads[i] for i in instance_ids if i in self._stopping_threads]

        def delete() -> None:
            for thread in stopping:
                thread.join(timeout=15)
            group = backend.autoscaling_groups.get(group_name)
            if group is not None and getattr(group, "status", None) == DELETE_IN_PROGRESS:
                backend.delete_auto_scaling_group(group_name)

        deleting = threading.Thread(target=delete, name=f"delete-{group_name}", daemon=True)
        with self._lock:
            self._stopping_threads[f"group:{region}:{group_name}"] = deleting
        deleting.start()

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [i.describe() for i in self.instances.values()]

    def running(self, region: str | None = None) -> list[SimulatedInstance]:
        with self._lock:
            return [
                i
                for i in self.instances.values()
                if i.state in {"running", "interrupting"} and (region is None or i.region == region)
            ]

    # --- launches: what the emulator's Auto Scaling group does through the sandbox ----------------

    def launch_for_group(self, group: Any, count: int, propagated_tags: dict[str, str]) -> int:
        """Launch up to `count` instances for a moto Auto Scaling group; returns how many launched."""
        launched = 0
        # One launcher at a time: the emulator's request threads and the fleet's ticks both launch.
        with self._lock:
            if self._stopping:
                return 0
            for _ in range(count):
                if not self._launch_one(group, propagated_tags):
                    self._retry_at[(group.region, group.name)] = self._clock.now() + LAUNCH_RETRY_SECONDS
                    break
                launched += 1
        return launched

    def _launch_one(self, group: Any, propagated_tags: dict[str, str]) -> bool:
        from moto.autoscaling.models import InstanceState  # noqa: PLC0415

        ec2 = group.autoscaling_backend.ec2_backend
        subnets = [s for s in (group.vpc_zone_identifier or "").split(",") if s]
        zone_subnets = {ec2.get_subnet(s).availability_zone: s for s in subnets}
        zones = list(zone_subnets) or list(group.availability_zones)
        instance_types, on_demand = _distribution(group)
        if on_demand:
            zone, instance_type, capacity_type = zones[0], instance_types[0], "on-demand"
        else:
            pool = self._market.take_spot([(z, t) for z in zones for t in instance_types])
            if pool is None:
                self._launch_unsuccessful(group, zones)
                return False
            zone, instance_type, capacity_type = pool.zone, pool.instance_type, "spot"
        tags = {**propagated_tags, "aws:autoscaling:groupName": group.name, **group.instance_tags}
        launch_template = None
        if group.ec2_launch_template:
            launch_template = {"LaunchTemplateId": group.ec2_launch_template.id}
        network = primary_interface(group)
        reservation = ec2.run_instances(
            group.image_id,
            1,
            group.user_data,
            group.security_groups,
            instance_type=instance_type,
            tags={"instance": tags},
            placement=zone,
            launch_config=group.launch_config,
            launch_template=launch_template,
            is_instance_type_default=False,
            subnet_id=zone_subnets.get(zone),
            # moto reads a template's SecurityGroupIds, not the groups of its NetworkInterfaces.
            security_group_ids=network.get("Groups") or [],
        )
        moto_instance = reservation.instances[0]
        self._assign_public_ip(moto_instance, network)
        moto_instance.lifecycle = "spot" if capacity_type == "spot" else None
        moto_instance.autoscaling_group = group
        hook = self._launch_hook(group)
        group.instance_states.append(
            InstanceState(
                moto_instance,
                lifecycle_state="Pending:Wait" if hook else "InService",
                protected_from_scale_in=group.new_instances_protected_from_scale_in,
            )
        )
        action = None
        if hook is not None:
            timeout = int(hook.heartbeat_timeout)
            action = LifecycleAction(hook.name, timeout, hook.default_result, self._clock.now() + timeout)
        instance = self._started(
            moto_instance,
            region=group.region,
            group_name=group.name,
            image_id=group.image_id,
            user_data=group.user_data,
            role_arn=instance_profile_role(group),
            metadata_tags=metadata_tags_enabled(template_data(group)),
            zone=zone,
            instance_type=instance_type,
            capacity_type=capacity_type,
            tags=tags,
            lifecycle_action=action,
        )
        self._launch_activity(group, instance)
        self._record(
            "launched",
            f"{instance.instance_id} {instance_type} {capacity_type} in {zone} for {group.name}"
            + (f", Pending:Wait on {action.hook_name}" if action else ""),
            instance.describe(),
        )
        return True

    # --- launches: RunInstances called directly (the search launcher) ---------------------------------

    def launch_direct(
        self,
        moto_instances: list[Any],
        *,
        capacity_type: str,
        network: dict[str, Any],
        role_arn: str | None,
        metadata_tags: bool,
    ) -> list[SimulatedInstance]:
        """Instances a RunInstances call launched outside any group (its capacity already taken from the market by
        the caller, see emulator_patches): each boots as a group's does, with its tags in IMDS and its agent."""
        started = []
        with self._lock:
            if self._stopping:
                return []
            for moto_instance in moto_instances:
                self._assign_public_ip(moto_instance, network)
                if not moto_instance.security_groups and moto_instance.nics:
                    # An instance's groups are its primary interface's (moto lists only the request's SecurityGroupIds).
                    moto_instance.security_groups = list(moto_instance.nics[0].group_set)
                moto_instance.lifecycle = "spot" if capacity_type == "spot" else None
                tags = {t["key"]: t["value"] for t in moto_instance.get_tags()}
                instance = self._started(
                    moto_instance,
                    region=moto_instance.region_name,
                    group_name="",
                    image_id=moto_instance.image_id,
                    user_data=moto_instance.user_data,
                    role_arn=role_arn,
                    metadata_tags=metadata_tags,
                    zone=moto_instance.placement.zone,
                    instance_type=moto_instance.instance_type,
                    capacity_type=capacity_type,
                    tags=tags,
                    lifecycle_action=None,
                )
                self._record(
                    "launched",
                    f"{instance.instance_id} {instance.instance_type} {capacity_type} in {instance.zone}"
                    + (f" ({instance.service})" if instance.service else " (RunInstances)"),
                    instance.describe(),
                )
                started.append(instance)
        return started

    def check_spot_capacity(self, zone: str, instance_type: str, count: int) -> list[Pool] | None:
        """Take `count` units of spot capacity in one pool for a direct RunInstances (None, nothing taken, when the
        pool has too few: EC2 refuses the whole request)."""
        self._market.ensure_pools(zone[:-1], instance_type)
        taken: list[Pool] = []
        for _ in range(count):
            pool = self._market.take_spot([(zone, instance_type)])
            if pool is None:
                for given_back in taken:
                    self._market.release(given_back.zone, given_back.instance_type)
                return None
            taken.append(pool)
        return taken

    @staticmethod
    def _launch_hook(group: Any) -> Any:
        hooks = group.autoscaling_backend.lifecycle_hooks.values()
        launch_hooks = [h for h in hooks if h.lifecycle_transition == LAUNCH_TRANSITION]
        return next((h for h in launch_hooks if h.auto_scaling_group_name == group.name), None)

    def _started(
        self,
        moto_instance: Any,
        *,
        region: str,
        group_name: str,
        image_id: str,
        user_data: Any,
        role_arn: str | None,
        metadata_tags: bool,
        zone: str,
        instance_type: str,
        capacity_type: str,
        tags: dict[str, str],
        lifecycle_action: LifecycleAction | None,
    ) -> SimulatedInstance:
        instance_id = moto_instance.id
        identity = {
            "instanceId": instance_id,
            "region": region,
            "availabilityZone": zone,
            "instanceType": instance_type,
            "accountId": self._account,
            "imageId": image_id,
            "privateIp": moto_instance.private_ip,
        }
        imds = InstanceMetadataServer(
            metadata={
                "instance-id": instance_id,
                "instance-type": instance_type,
                "placement/availability-zone": zone,
                "placement/region": region,
                "local-ipv4": moto_instance.private_ip or "",
                "public-ipv4": moto_instance.public_ip or "",
                "instance-life-cycle": capacity_type,
            },
            tags=tags,
            identity=identity,
            live_tags=lambda: {t["key"]: t["value"] for t in moto_instance.get_tags()},
            tags_enabled=metadata_tags,
        ).start()
        instance = SimulatedInstance(
            instance_id=instance_id,
            region=region,
            zone=zone,
            instance_type=instance_type,
            capacity_type=capacity_type,
            group=group_name,
            launched_at=self._clock.now(),
            imds=imds,
            log_path=self._work_dir / "instances" / f"{instance_id}.log",
            lifecycle_action=lifecycle_action,
            role_arn=role_arn,
            private_ip=moto_instance.private_ip,
            public_ip=moto_instance.public_ip,
            security_groups=sorted({g.id for g in moto_instance.nics[0].group_set} if moto_instance.nics else set()),
            job_id=tags.get(InstanceTag.JOB) or None,
            service=tags.get(SearchTag.SERVICE, ""),
            root_dir=self._work_dir / "instances" / instance_id / "root",
        )
        if instance.service == SEARCH_SERVICE:
            config = self._search_config(region, tags.get(InstanceTag.PREFIX, ""))
            instance.service_port, instance.health_path = config.port, config.health_path
        assert instance.block_device_dir is not None  # noqa: S101 (set just above)
        instance.block_device_dir.mkdir(parents=True, exist_ok=True)
        if instance.service == MODEL_NODE_SERVICE:
            # Its GPUs, as its stand-in NVML reports them: the UUIDs the ECS agent registers for it.
            gpu_files.write_inventory(DeploymentTasks.gpu_dir(instance), instance_id, instance_type)
        with self._lock:
            self.instances[instance_id] = instance
        # A batch worker's user data stops the ECS agent: its container is run by docker; the search instance runs
        # its container with docker too (the agent's search mode), not as an ECS task.
        if not instance.job_id and instance.service != SEARCH_SERVICE:
            self._register_with_ecs(instance, user_data)
        self._start_agent(instance)
        return instance

    def _search_config(self, region: str, prefix: str) -> SearchAgentConfig:
        """What the search agent reads (SSM /spothub/<prefix>/search-config in the instance's region): the port and
        health path the service is reached on. The defaults when the deployment publishes none."""
        from moto.ssm.models import ssm_backends  # noqa: PLC0415

        with contextlib.suppress(Exception):
            parameter = ssm_backends[self._account][region].get_parameter(f"/spothub/{prefix}/search-config")
            if parameter is not None:
                return SearchAgentConfig.model_validate_json(parameter.value)
        return SearchAgentConfig(image="")

    def _assign_public_ip(self, moto_instance: Any, network: dict[str, Any]) -> None:
        """A public address when the launch template's interface asks for one (else as the subnet maps one
        on launch), from a documentation range and unique among live instances: moto draws 54.214.x.y
        at random, and ignores the template's AssociatePublicIpAddress."""
        nic = moto_instance.nics.get(0) if moto_instance.nics else None
        if nic is None:
            return
        wanted = network.get("AssociatePublicIpAddress")
        if wanted is None:
            wanted = bool(getattr(nic.subnet, "map_public_ip_on_launch", False))
        nic.public_ip = None
        if str(wanted).lower() != "true":
            return
        for block in PUBLIC_ADDRESS_RANGES:
            for host in ipaddress.ip_network(block).hosts():
                if str(host) not in self._public_ips:
                    self._public_ips.add(str(host))
                    nic.public_ip = str(host)
                    return
        raise RuntimeError(f"no public address left in {', '.join(PUBLIC_ADDRESS_RANGES)}")

    def _prepare_container(self, instance: SimulatedInstance) -> None:
        """What ECS does before the serving container starts: read its task definition, fetch its secrets as
        the task execution role. A refusal is the task's stoppedReason, as on ECS."""
        endpoint = self._agent_environment.get("AWS_ENDPOINT_URL", "")
        if instance.container is not None or instance.container_error is not None or not endpoint:
            return
        admin = {key: self._agent_environment.get(key, "") for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        try:
            instance.container = prepare(
                account=self._account,
                region=instance.region,
                session_name=instance.instance_id,
                endpoint_url=endpoint,
                admin_credentials=admin,
                iam=self._iam,
            )
        except ContainerStartError as exc:
            instance.container_error = str(exc)
            self._record(
                "failure",
                f"{instance.instance_id}: the serving container did not start: {exc}"[:400],
                {"instance_id": instance.instance_id, "reason": str(exc)},
            )

    def _workload_command(self, instance: SimulatedInstance) -> list[str]:
        """The stand-in model server, inside the container's environment (container_entry.py). The spec
        holds the resolved secrets: readable by this user only, removed when the instance goes."""
        container = instance.container
        server = [sys.executable, str(MODEL_SERVER), "--port", str(instance.workload_port)]
        server += ["--load-seconds", str(MODEL_LOAD_SECONDS), "--instance-id", instance.instance_id]
        if container is not None:
            if container.model:
                server += ["--model", container.model]
            server += ["--health-path", container.health_path]
        if container is None and instance.container_error is None:
            return server  # no serving task definition in this region: the bare stand-in
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONUNBUFFERED": "1",
            # The sandbox finds an instance's processes by its IMDS endpoint (see _stop_instance_processes).
            "SPOTHUB_IMDS_ENDPOINT": instance.imds.endpoint,
            **(container.environment if container else {}),
        }
        environment = child_environment(environment, self._agent_environment)  # the host's clock: the sandbox's
        spec = {"error": instance.container_error} if instance.container_error else {}
        spec.update(environment=environment, command=server)
        path = instance.container_spec_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as spec_file:
            json.dump(spec, spec_file)
        return [sys.executable, str(CONTAINER_ENTRY), str(path)]

    def _stop_tasks_that_failed_to_start(self) -> None:
        """ECS stops a task whose container could not be created, with the reason: the launch sees it."""
        failed = [i for i in self.running() if i.container_error and i.ecs_cluster]
        if not failed:
            return
        from moto.ecs.models import ecs_backends  # noqa: PLC0415

        for instance in failed:
            backend = ecs_backends[self._account][instance.region]
            name = (instance.ecs_cluster or "").split("/")[-1]
            own = {
                c.container_instance_arn
                for c in backend.container_instances.get(name, {}).values()
                if c.ec2_instance_id == instance.instance_id
            }
            for task in list(backend.tasks.get(name, {}).values()):
                if task.container_instance_arn in own and task.last_status != "STOPPED":
                    backend.stop_task(name, task.task_arn, instance.container_error or "")
                    task.stop_code = TASK_FAILED_TO_START
                    self._record(
                        "task-stopped",
                        f"{instance.instance_id}: {TASK_FAILED_TO_START}: {instance.container_error}"[:400],
                        {"instance_id": instance.instance_id, "task": task.task_arn},
                    )

    def _register_with_ecs(self, instance: SimulatedInstance, user_data: Any) -> None:
        """What the ECS container agent does at boot: join the cluster named in the user data, registering
        the resources the agent finds on an instance of this type (ecs_placement)."""
        config = ecs_config(user_data)
        cluster = config.get("ECS_CLUSTER")
        if not cluster:
            return
        from moto.ecs.models import ecs_backends  # noqa: PLC0415

        backend = ecs_backends[self._account][instance.region]
        if cluster.split("/")[-1] in backend.clusters:
            cluster_arn = backend.clusters[cluster.split("/")[-1]].arn
            if not self._instance_may(instance, "ecs:RegisterContainerInstance", [cluster_arn]):
                return
            container_instance = backend.register_container_instance(cluster, instance.instance_id)
            register_resources(container_instance, registered_resources(instance.instance_type, config))
            instance.ecs_cluster = cluster
            # What the ECS agent calls next, with the instance's role: a refusal leaves the instance unusable.
            own = container_instance.container_instance_arn
            for action, resources in (
                ("ecs:DiscoverPollEndpoint", ["*"]),
                ("ecs:Poll", [own]),
                ("ecs:StartTelemetrySession", [own]),
                ("ecs:PutSystemLogEvents", [cluster_arn, own]),
                ("ecs:SubmitTaskStateChange", [cluster_arn]),
                ("ecs:SubmitContainerStateChange", [cluster_arn]),
            ):
                self._instance_may(instance, action, resources, {"ecs:cluster": cluster_arn})

    def _instance_may(
        self, instance: SimulatedInstance, action: str, resources: list[str], context: dict[str, str] | None = None
    ) -> bool:
        """Authorize a call the instance makes with its role (the ECS agent's, which the sandbox makes for it)."""
        if self._iam is None or instance.role_arn is None:
            return True
        authorization = Authorization(action, resources, dict(context or {}))
        decision = self._iam.authorize_role(instance.role_arn, instance.instance_id, authorization)
        if not decision.allowed:
            self._record("failure", f"{instance.instance_id}: {action} refused: {decision.reason}", {"action": action})
        return decision.allowed

    def _deregister_from_ecs(self, instance: SimulatedInstance) -> None:
        if not instance.ecs_cluster:
            return
        self.deployment_tasks.host_terminated(instance)  # the tasks it runs: stopped, with their events
        from moto.ecs.models import ecs_backends  # noqa: PLC0415

        backend = ecs_backends[self._account][instance.region]
        name = instance.ecs_cluster.split("/")[-1]
        for arn, container_instance in list(backend.container_instances.get(name, {}).items()):
            if container_instance.ec2_instance_id == instance.instance_id:
                for task in backend.tasks.get(name, {}).values():
                    if task.container_instance_arn == container_instance.container_instance_arn:
                        task.last_status = "STOPPED"
                        task.desired_status = "STOPPED"
                        task.stopped_reason = "Host EC2 instance terminated"
                container_instance.status = "INACTIVE"
                backend.container_instances[name].pop(arn, None)

    def _launch_unsuccessful(self, group: Any, zones: list[str]) -> None:
        now = self._clock.now()
        detail = {
            "StatusCode": "Failed",
            "AutoScalingGroupName": group.name,
            "ActivityId": str(uuid.uuid4()),
            "Description": "Launching a new EC2 instance.  Status Reason: " + INSUFFICIENT_CAPACITY,
            "Cause": "An activity was started to increase the capacity of the group.",
            "StatusMessage": INSUFFICIENT_CAPACITY,
            "StartTime": _iso(now),
            "EndTime": _iso(now),
            "EC2InstanceId": "",
            "Details": {"Availability Zone": ",".join(zones)},
        }
        self._record("launch-failed", f"{group.region}/{group.name}: no spot capacity in {', '.join(zones)}", detail)
        at = time.time()
        self._add_activity(group.region, group, {**detail, "StartTime": at, "EndTime": at, "Progress": 100})
        self._put_aws_event(group.region, AwsEvent.LAUNCH_UNSUCCESSFUL, detail, [group.arn])

    # --- scaling activities: what DescribeScalingActivities answers (moto keeps none) ------------------------
    # Stamped with this process's wall clock, the sandbox clock (shared_clock.py), as the functions that read them
    # compare them with theirs (a failure since the launch they started).

    def _add_activity(self, region: str, group: Any, activity: dict[str, Any]) -> None:
        activity = {
            "AutoScalingGroupName": group.name,
            "AutoScalingGroupARN": group.arn,
            "Progress": 100,
            "Details": json.dumps(activity.pop("Details", {})),
            **{k: v for k, v in activity.items() if k != "EC2InstanceId"},
        }
        with self._lock:
            kept = self._activities.setdefault((region, group.name), [])
            kept.insert(0, activity)
            del kept[MAX_ACTIVITIES_KEPT:]

    def scaling_activities(self, region: str, group_name: str | None = None) -> list[dict[str, Any]]:
        """A group's scaling activities (every group's, without a name), newest first, as the API answers them."""
        with self._lock:
            found = [a for (r, g), kept in self._activities.items() if r == region for a in kept]
        if group_name is not None:
            found = [a for a in found if a["AutoScalingGroupName"] == group_name]
        return sorted(found, key=lambda a: a["StartTime"], reverse=True)

    def forget_activities(self) -> None:
        with self._lock:
            self._activities.clear()

    def _launch_activity(self, group: Any, instance: SimulatedInstance) -> None:
        now = time.time()
        self._add_activity(
            group.region,
            group,
            {
                "ActivityId": str(uuid.uuid4()),
                "Description": f"Launching a new EC2 instance: {instance.instance_id}",
                "Cause": "An activity was started to increase the capacity of the group.",
                "StartTime": now,
                "EndTime": now,
                "StatusCode": "Successful",
                "Details": {"Subnet ID": "", "Availability Zone": instance.zone},
            },
        )

    def _termination_activity(self, instance: SimulatedInstance) -> None:
        from moto.autoscaling.models import autoscaling_backends  # noqa: PLC0415

        group = autoscaling_backends[self._account][instance.region].autoscaling_groups.get(instance.group)
        if group is None:
            return
        now = time.time()
        self._add_activity(
            instance.region,
            group,
            {
                "ActivityId": str(uuid.uuid4()),
                "Description": f"Terminating EC2 instance: {instance.instance_id}",
                "Cause": f"The instance {instance.instance_id} was taken out of service and terminated.",
                "StartTime": now,
                "EndTime": now,
                "StatusCode": "Successful",
                "Details": {"Availability Zone": instance.zone},
            },
        )

    # --- launch lifecycle actions: what Auto Scaling does with a launch hook ----------------------------

    def complete_lifecycle_action(self, group_name: str, hook_name: str, instance_id: str, result: str) -> None:
        """CONTINUE puts the instance in service; ABANDON terminates it (the group launches another)."""
        if result not in ("CONTINUE", "ABANDON"):
            raise LifecycleActionError(f"LifecycleActionResult must be CONTINUE or ABANDON, not {result!r}")
        instance = self._pending_action(group_name, hook_name, instance_id)
        self._end_lifecycle_action(instance, result, f"completed by the instance: {result}")

    def record_lifecycle_action_heartbeat(self, group_name: str, hook_name: str, instance_id: str) -> None:
        instance = self._pending_action(group_name, hook_name, instance_id)
        action = instance.lifecycle_action
        assert action is not None  # noqa: S101 (checked by _pending_action)
        action.deadline = self._clock.now() + action.timeout_s

    def _pending_action(self, group_name: str, hook_name: str, instance_id: str) -> SimulatedInstance:
        with self._lock:
            instance = self.instances.get(instance_id)
        action = instance.lifecycle_action if instance else None
        if instance is None or action is None or instance.group != group_name or action.hook_name != hook_name:
            raise LifecycleActionError(f"No active Lifecycle Action found with instance ID {instance_id}")
        return instance

    def _end_lifecycle_action(self, instance: SimulatedInstance, result: str, why: str) -> None:
        from moto.autoscaling.models import autoscaling_backends  # noqa: PLC0415

        instance.lifecycle_action = None
        self._record("lifecycle", f"{instance.instance_id}: {why}", {"instance_id": instance.instance_id})
        if result == "ABANDON":
            self._terminate(instance)
            return
        group = autoscaling_backends[self._account][instance.region].autoscaling_groups.get(instance.group)
        for state in group.instance_states if group is not None else []:
            if state.instance.id == instance.instance_id and state.lifecycle_state == "Pending:Wait":
                state.lifecycle_state = "InService"

    def _expire_lifecycle_actions(self, now: float) -> None:
        for instance in self.running():
            action = instance.lifecycle_action
            if action is not None and action.deadline <= now:
                self._end_lifecycle_action(
                    instance, action.default_result, f"heartbeat timeout of {action.hook_name}: {action.default_result}"
                )

    # --- notices and terminations ------------------------------------------------------------------

    def send_rebalance_recommendation(self, instance_id: str) -> dict[str, Any]:
        instance = self._get(instance_id)
        notice_time = _iso(self._clock.now())
        instance.imds.metadata["events/recommendations/rebalance"] = json.dumps({"noticeTime": notice_time})
        instance.notices.append(f"rebalance recommendation at {notice_time}")
        instance.rebalance_sent = True
        self._record("rebalance", f"{instance_id} in {instance.zone}", {"instance_id": instance_id})
        self._put_aws_event(
            instance.region,
            AwsEvent.REBALANCE_RECOMMENDATION,
            {"instance-id": instance_id},
            [self._arn(instance)],
        )
        return instance.describe()

    def send_interruption_warning(self, instance_id: str) -> dict[str, Any]:
        instance = self._get(instance_id)
        if instance.capacity_type != "spot":
            raise ValueError(f"{instance_id} is an on-demand instance; only spot instances are interrupted")
        if instance.state != "running":
            return instance.describe()
        terminate_at = self._clock.now() + INTERRUPTION_NOTICE_SECONDS
        instance.state = "interrupting"
        instance.terminate_at = terminate_at
        instance.imds.metadata["spot/instance-action"] = json.dumps({"action": "terminate", "time": _iso(terminate_at)})
        instance.notices.append(f"interruption warning: terminate at {_iso(terminate_at)}")
        self._record(
            "interruption",
            f"{instance_id} in {instance.zone}: terminated at T+{terminate_at - self._clock.now():.0f}s",
            {"instance_id": instance_id},
        )
        self._put_aws_event(
            instance.region,
            AwsEvent.SPOT_INTERRUPTION_WARNING,
            {"instance-id": instance_id, "instance-action": "terminate"},
            [self._arn(instance)],
        )
        return instance.describe()

    def kill_agent(self, instance_id: str) -> dict[str, Any]:
        instance = self._get(instance_id)
        if instance.agent and instance.agent.poll() is None:
            instance.agent.kill()
            instance.agent.wait(timeout=10)
        self._record("agent-killed", instance_id, {"instance_id": instance_id})
        return instance.describe()

    def restart_agent(self, instance_id: str) -> dict[str, Any]:
        instance = self._get(instance_id)
        if instance.state == "terminated":
            raise ValueError(f"{instance_id} is terminated")
        self.kill_agent(instance_id)
        self._start_agent(instance)
        self._record("agent-started", instance_id, {"instance_id": instance_id})
        return instance.describe()

    def release_spot(self, pool: Pool) -> None:
        """Give back capacity taken for a RunInstances that did not launch after all."""
        self._market.release(pool.zone, pool.instance_type)

    # --- EBS volumes: what the instance sees of an attached volume ----------------------------------------

    def on_attached(self, volume_id: str, instance_id: str, device: str) -> None:
        """EC2 attached the volume: it appears in the instance's block-device directory, named by its id as on a
        Nitro instance, a link to the volume's data."""
        with self._lock:
            instance = self.instances.get(instance_id)
        if instance is None or instance.block_device_dir is None:
            return
        instance.volumes[volume_id] = device
        entry = instance.block_device_dir / device_name(volume_id)
        data = self._volumes_dir / volume_id if self._volumes_dir else None
        if data is not None:
            data.mkdir(parents=True, exist_ok=True)  # a volume the sandbox did not fill: empty, as a new one is
            entry.unlink(missing_ok=True)
            entry.symlink_to(data, target_is_directory=True)
        self._record("attached", f"{volume_id} to {instance_id} as {device}", {"volume_id": volume_id})

    def on_detached(self, volume_id: str, instance_id: str) -> None:
        with self._lock:
            instance = self.instances.get(instance_id)
        if instance is None or volume_id not in instance.volumes:
            return
        instance.volumes.pop(volume_id, None)
        if instance.block_device_dir is not None:
            (instance.block_device_dir / device_name(volume_id)).unlink(missing_ok=True)
        self._record("detached", f"{volume_id} from {instance_id}", {"volume_id": volume_id})

    def search_health(self, instance_id: str, *, healthy: bool) -> dict[str, Any]:
        """Make the instance's search service pass or fail its health checks (the stand-in's control route)."""
        import requests  # noqa: PLC0415

        instance = self._get(instance_id)
        if instance.service != SEARCH_SERVICE or not instance.workload_port:
            raise ValueError(f"{instance_id} runs no search service")
        answer = requests.post(
            f"http://127.0.0.1:{instance.workload_port}/_control/health", json={"healthy": healthy}, timeout=5
        )
        answer.raise_for_status()
        self._record(
            "search-health", f"{instance_id}: health checks {'pass' if healthy else 'fail'}", {"healthy": healthy}
        )
        return instance.describe()

    def terminate_all(self) -> None:
        """Terminate every instance still running, whatever its group thinks (Standby included)."""
        for instance in self.running():
            self._terminate(instance)

    def on_terminated(self, instance_ids: list[str]) -> None:
        """The emulator terminated these instances (scale-in, interruption, by hand)."""
        for instance_id in instance_ids:
            with self._lock:
                instance = self.instances.get(instance_id)
                if instance is None or instance.state == "terminated":
                    continue
                instance.state = "terminated"
            self._record("terminated", f"{instance_id} in {instance.zone}", {"instance_id": instance_id})
            self._termination_activity(instance)
            if instance.capacity_type == "spot":
                self._market.release(instance.zone, instance.instance_type)
            self._public_ips.discard(instance.public_ip or "")
            self._deregister_from_ecs(instance)
            for volume_id in list(instance.volumes):  # EC2 detached them with the termination
                self.on_detached(volume_id, instance_id)
            # The instance shuts down after the call that terminated it returned (EC2 answers shutting-down): its
            # own agent may be that caller (a batch worker leaving its group), waiting for the answer.
            stopping = threading.Thread(
                target=self._stop_instance_processes, args=(instance,), name=f"stop-{instance_id}", daemon=True
            )
            with self._lock:
                self._stopping_threads = {k: t for k, t in self._stopping_threads.items() if t.is_alive()}
                self._stopping_threads[instance_id] = stopping
            stopping.start()

    def tick(self) -> None:
        # One tick at a time: the fleet thread and clock advances both tick.
        with self._tick_lock:
            self._market.apply_replay()
            now = self._clock.now()
            due = [i for i in self.running() if i.terminate_at is not None and i.terminate_at <= now]
            for instance in due:
                self._terminate(instance)
            self._expire_lifecycle_actions(now)
            self._stop_tasks_that_failed_to_start()
            self._reconcile_groups(now)

    # --- internals ---------------------------------------------------------------------------------------

    def _terminate(self, instance: SimulatedInstance) -> None:
        from moto.autoscaling.models import autoscaling_backends  # noqa: PLC0415

        backend = autoscaling_backends[self._account][instance.region]
        group = backend.autoscaling_groups.get(instance.group)
        if group is not None:
            # The group notices its instance is gone and will replace it to meet its desired capacity.
            group.instance_states = [s for s in group.instance_states if s.instance.id != instance.instance_id]
        backend.ec2_backend.terminate_instances([instance.instance_id])

    def _reconcile_groups(self, now: float) -> None:
        from moto.autoscaling.models import autoscaling_backends  # noqa: PLC0415

        with self._lock:
            regions = {i.region for i in self.instances.values()} | {key[0] for key in self._retry_at}
            for region in regions:
                for group in list(autoscaling_backends[self._account][region].autoscaling_groups.values()):
                    if getattr(group, "status", None) == DELETE_IN_PROGRESS:
                        continue
                    missing = (group.desired_capacity or 0) - len(group.active_instances())
                    if missing <= 0:
                        self._retry_at.pop((region, group.name), None)
                        continue
                    if self._retry_at.get((region, group.name), 0) > now:
                        continue
                    self.launch_for_group(group, missing, group.get_propagated_tags())

    def _on_market_change(self, pool: Pool) -> None:
        """Capacity changed: the newest spot instances beyond it are interrupted; when the pool is
        left without free capacity, the rest are told they are at elevated risk (rebalance)."""
        with self._lock:
            in_pool = [
                i
                for i in self.running(pool.region)
                if i.zone == pool.zone and i.instance_type == pool.instance_type and i.capacity_type == "spot"
            ]
            interrupting = sum(1 for i in in_pool if i.state == "interrupting")
            excess = self._market.over_capacity(pool.zone, pool.instance_type) - interrupting
            running = sorted((i for i in in_pool if i.state == "running"), key=lambda i: -i.launched_at)
            victims = running[: max(0, excess)]
            at_risk = [i for i in running[len(victims) :] if pool.free == 0 and not i.rebalance_sent]
        for instance in victims:
            self.send_interruption_warning(instance.instance_id)
        for instance in at_risk:
            self.send_rebalance_recommendation(instance.instance_id)
        if pool.free > 0:
            for key in [k for k in self._retry_at if k[0] == pool.region]:
                self._retry_at[key] = 0.0

    def _start_agent(self, instance: SimulatedInstance) -> None:
        if self._agent_dir is None:
            return
        instance.log_path.parent.mkdir(parents=True, exist_ok=True)
        environment = {
            **self._agent_environment,
            **AGENT_PACE,
            "AWS_DEFAULT_REGION": instance.region,
            "AWS_REGION": instance.region,
            "PYTHONPATH": str(self._agent_dir),
            "PYTHONUNBUFFERED": "1",
            "SPOTHUB_IMDS_ENDPOINT": instance.imds.endpoint,
            "SPOTHUB_AGENT_STATE_DIR": str(self._work_dir / "instances" / instance.instance_id),
        }
        if instance.job_id:
            # A batch job's worker: no serving workload; each batch's container is the stand-in job, a process.
            environment["SPOTHUB_AGENT_BATCH_RUNNER"] = "process"
            environment["SPOTHUB_AGENT_BATCH_COMMAND"] = json.dumps([sys.executable, str(BATCH_JOB)])
        elif instance.service == SEARCH_SERVICE:
            environment.update(self._search_environment(instance))
        elif instance.service == MODEL_NODE_SERVICE:
            # Node mode: no workload of its own (ECS runs the deployments' tasks: deployment_tasks.py); the stand-in
            # NVML first on this agent's path only, so the agent's gpu.py reads the node's simulated GPUs.
            environment["PYTHONPATH"] = os.pathsep.join([str(gpu_files.STAND_IN_NVML), str(self._agent_dir)])
            environment[gpu_files.GPU_DIR_VARIABLE] = str(DeploymentTasks.gpu_dir(instance))
        else:
            if not instance.workload_port:
                instance.workload_port = free_port()
            self._prepare_container(instance)
            # The workload runs as a local process (the agent's process runner), standing in for the ECS task.
            health_path = instance.container.health_path if instance.container else "/health"
            environment["SPOTHUB_AGENT_WORKLOAD_COMMAND"] = json.dumps(self._workload_command(instance))
            environment["SPOTHUB_AGENT_HEALTH_URL"] = f"http://127.0.0.1:{instance.workload_port}{health_path}"
        if self._iam is not None and instance.role_arn:
            # The agent calls as the instance profile's role, session named by the instance id (as on EC2).
            environment.update(self._iam.principals.credentials_for(instance.role_arn, instance.instance_id))
        with instance.log_path.open("ab") as log:
            instance.agent = subprocess.Popen(
                [sys.executable, "-m", "spothub_agent"],
                cwd=self._agent_dir,
                env=child_environment(environment, self._agent_environment),  # on the sandbox clock
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _search_environment(self, instance: SimulatedInstance) -> dict[str, str]:
        """The agent's search mode on a simulated instance: its block devices and its mount point under the
        instance's own directory, the mount a symlink to the volume's directory (search_volume.py), the container
        the stand-in search service (search_server.py) on this machine's workload port; the network model maps the
        service's port in the VPC to it (instance_network.py)."""
        if not instance.workload_port:
            instance.workload_port = free_port()
        assert instance.root_dir is not None  # noqa: S101 (every simulated instance has one)
        python, volume, server = sys.executable, str(SEARCH_VOLUME), str(SEARCH_SERVER)
        service = [python, server, "--port", str(instance.workload_port), "--data", "{data}"]
        return {
            "SPOTHUB_AGENT_BLOCK_DEVICE_DIR": str(instance.block_device_dir),
            "SPOTHUB_AGENT_MOUNT_PATH": str(instance.root_dir / SEARCH_MOUNT_PATH),
            "SPOTHUB_AGENT_MOUNT_COMMAND": json.dumps([python, volume, "mount", "{device}", "{path}"]),
            "SPOTHUB_AGENT_UNMOUNT_COMMAND": json.dumps([python, volume, "unmount", "{path}"]),
            "SPOTHUB_AGENT_SEARCH_COMMAND": json.dumps([*service, "--health-path", instance.health_path]),
            "SPOTHUB_AGENT_HEALTH_URL": f"http://127.0.0.1:{instance.workload_port}{instance.health_path}",
        }

    @staticmethod
    def _stop_instance_processes(instance: SimulatedInstance) -> None:
        """The instance powers off: its agent, and whatever ran on it (the workload, even when the agent was
        killed and left it behind), found by the instance's IMDS endpoint in their environment or by the
        instance's own root on their command line (what the agent starts with an environment of its choosing)."""
        if instance.agent and instance.agent.poll() is None:
            instance.agent.terminate()
            try:
                instance.agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                instance.agent.kill()
        marker = f"SPOTHUB_IMDS_ENDPOINT={instance.imds.endpoint}".encode()
        root = str(instance.root_dir).encode() if instance.root_dir else None
        for environ in Path("/proc").glob("[0-9]*/environ"):
            with contextlib.suppress(OSError, ValueError):
                on_instance = marker in environ.read_bytes().split(b"\0")
                if not on_instance and root is not None:
                    arguments = environ.with_name("cmdline").read_bytes().split(b"\0")
                    on_instance = any(a == root or a.startswith(root + b"/") for a in arguments)
                if on_instance:
                    os.kill(int(environ.parent.name), signal.SIGKILL)
        instance.imds.stop()
        instance.container_spec_path.unlink(missing_ok=True)  # it holds the container's secrets

    def _get(self, instance_id: str) -> SimulatedInstance:
        with self._lock:
            if instance_id not in self.instances:
                raise KeyError(f"no simulated instance {instance_id}")
            return self.instances[instance_id]

    def _arn(self, instance: SimulatedInstance) -> str:
        return f"arn:aws:ec2:{instance.region}:{self._account}:instance/{instance.instance_id}"

    def _put_aws_event(self, region: str, kind: AwsEvent, detail: dict[str, Any], resources: list[str]) -> None:
        from moto.events.models import events_backends  # noqa: PLC0415

        events_backends[self._account][region].put_events(
            [
                {
                    "Source": AWS_EVENT_SOURCES[kind],
                    "DetailType": kind.value,
                    "Detail": json.dumps(detail),
                    "Resources": resources,
                    "Time": self._clock.now(),
                }
            ]
        )


def template_data(group: Any) -> dict[str, Any]:
    """The data of the group's launch template version ({} for a group without a launch template)."""
    template = group.ec2_launch_template
    if template is None:
        return {}
    return dict(template.get_version(getattr(group, "launch_template_version", None) or "$Default").data or {})


def metadata_tags_enabled(template: dict[str, Any], requested: dict[str, Any] | None = None) -> bool:
    """Whether IMDS shows the instance's tags: MetadataOptions.InstanceMetadataTags of the request, else of the
    launch template; off unless enabled, as on EC2."""
    options = {**(template.get("MetadataOptions") or {}), **(requested or {})}
    return str(options.get("InstanceMetadataTags", "disabled")).lower() == "enabled"


def instance_profile_role(group: Any) -> str | None:
    """The role of the instance profile the group's launch template names, if any."""
    return profile_role(group.account_id, template_data(group).get("IamInstanceProfile") or {})


def profile_role(account: str, profile: dict[str, Any]) -> str | None:
    """The role of an instance profile given as {"Arn"} or {"Name"} (a launch template's, a request's), if any."""
    if not profile:
        return None
    from moto.iam.models import iam_backends  # noqa: PLC0415

    backend = iam_backends[account]["aws"]
    with contextlib.suppress(Exception):
        found = (
            backend.get_instance_profile_by_arn(profile["Arn"])
            if "Arn" in profile
            else backend.get_instance_profile(profile["Name"])
        )
        return found.roles[0].arn if found.roles else None
    return None


def primary_interface(group: Any) -> dict[str, Any]:
    """Device 0 of the group's launch template's NetworkInterfaces ({} when it has none)."""
    interfaces = template_data(group).get("NetworkInterfaces") or []
    return next((dict(i) for i in interfaces if int(i.get("DeviceIndex", 0)) == 0), {})


def _distribution(group: Any) -> tuple[list[str], bool]:
    """The group's instance types and whether its next instance is on-demand."""
    policy = group.mixed_instances_policy or {}
    overrides = policy.get("LaunchTemplate", {}).get("Overrides", [])
    instance_types = [o["InstanceType"] for o in overrides if o.get("InstanceType")] or [group.instance_type]
    distribution = policy.get("InstancesDistribution", {})
    base = int(distribution.get("OnDemandBaseCapacity", 0) or 0)
    above = int(distribution.get("OnDemandPercentageAboveBaseCapacity", 100 if not policy else 0) or 0)
    on_demand_running = sum(1 for s in group.instance_states if getattr(s.instance, "lifecycle", None) != "spot")
    return instance_types, on_demand_running < base or above >= 100  # noqa: PLR2004

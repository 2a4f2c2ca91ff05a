"""GET /spot-instances: where the replicas run, as the state table knows it."""

from __future__ import annotations

from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.dal.standby import StandbyStore
from spothub_core.logic.endpoints import Serving, endpoint_url, serving_address
from spothub_core.models.api import (
    InstanceView,
    ProvisioningSettings,
    ProvisioningState,
    RemediationView,
    ReplicaView,
    SpotInstances,
    StandbyView,
)
from spothub_core.models.records import (
    AgentRecord,
    InstanceRecord,
    InstanceStatus,
    ProvisioningConfig,
    ProvisioningStatus,
    Replica,
    ReplicaStatus,
)

# Replica statuses, most urgent first: the deployment's state is the first any replica is in.
STATE_ORDER = (
    (ReplicaStatus.FAILED, ProvisioningState.FAILED),
    (ReplicaStatus.REPLACING, ProvisioningState.REPLACING),
    (ReplicaStatus.PLACING, ProvisioningState.PLACING),
    (ReplicaStatus.SERVING, ProvisioningState.SERVING),
)
# A replacing replica's old instance still serves until its replacement does.
SERVING_STATUSES = (ReplicaStatus.SERVING, ReplicaStatus.REPLACING)
RECENT_REMEDIATIONS = 20


def describe(
    store: ProvisioningStore, health: InstanceHealthStore, serving: Serving, standbys: StandbyStore
) -> SpotInstances:
    config = store.config()
    agents = health.agents()
    replicas = sorted(store.replicas(), key=lambda r: r.replica_id)
    live = [i for i in store.instances() if i.status != InstanceStatus.TERMINATED]
    live.sort(key=lambda i: (i.status != InstanceStatus.SERVING, i.launched_at or ""))
    endpoints = {i.instance_id: _endpoint(i, serving) for i in live}
    replica_views = [_replica(r, endpoints) for r in replicas]
    serving_views = [v for v in replica_views if v.status in SERVING_STATUSES]
    return SpotInstances(
        provisioning=ProvisioningStatus.ENABLED if config.enabled else ProvisioningStatus.DISABLED,
        state=_state(replicas, live),
        region=next((v.region for v in serving_views if v.region), None),
        # The name follows the replicas (a record per replica): clients keep it across failovers.
        endpoint=(
            endpoint_url(serving.endpoint_name, serving.port)
            if serving.endpoint_name
            else next((v.endpoint for v in serving_views if v.endpoint), None)
        ),
        replicas=replica_views,
        instances=[_instance(i, agents.get(i.instance_id), endpoints[i.instance_id]) for i in live],
        settings=_settings(config),
        remediations=[
            RemediationView(
                instance_id=r.instance_id, region=r.region, reason=r.reason, alarm_name=r.alarm_name, at=r.at
            )
            for r in health.remediations()[-RECENT_REMEDIATIONS:]
        ],
        standbys=[
            StandbyView(
                replica_id=s.replica_id,
                status=s.status,
                region=s.region,
                zone=s.zone,
                capacity_type=s.capacity_type,
                launch_id=s.launch_id,
                instance_id=s.instance_id,
                launched_at=s.launched_at,
                ready_at=s.ready_at,
                replaces=s.adopted_for,
            )
            for s in sorted(standbys.standbys(), key=lambda s: s.replica_id)
        ],
    )


def _state(replicas: list[Replica], live: list[InstanceRecord]) -> ProvisioningState:
    statuses = {r.status for r in replicas}
    placed = next((state for status, state in STATE_ORDER if status in statuses), None)
    if placed:
        return placed
    # No replica is placed or serving (provisioning is off, or on with none): are instances it placed left?
    return ProvisioningState.LEFT_RUNNING if live else ProvisioningState.IDLE


def _endpoint(instance: InstanceRecord, serving: Serving) -> str | None:
    address = serving_address(instance.public_ip, instance.private_ip, public=serving.public_ip)
    return endpoint_url(address, serving.port)


def _replica(replica: Replica, endpoints: dict[str, str | None]) -> ReplicaView:
    """A replica whose instance is gone (terminated, or never recorded) points at none, is in no region and
    has no endpoint; `endpoints` holds the live instances'."""
    running = replica.instance_id in endpoints
    return ReplicaView(
        replica_id=replica.replica_id,
        status=replica.status,
        region=replica.region if running else None,
        instance_id=replica.instance_id if running else None,
        capacity_type=replica.capacity_type,
        reason=replica.reason,
        target_region=replica.target_region,
        error=replica.error,
        placed_at=replica.placed_at,
        endpoint=endpoints.get(replica.instance_id or ""),
    )


def _instance(instance: InstanceRecord, agent: AgentRecord | None, endpoint: str | None) -> InstanceView:
    """The instance as placement left it, where its model server answers, and what its agent last said: when,
    whether the workload is ready, the GPUs' health. It bills until it is terminated (a terminating one too)."""
    return InstanceView(
        instance_id=instance.instance_id,
        region=instance.region,
        replica_id=instance.replica_id,
        status=instance.status,
        public_ip=instance.public_ip,
        private_ip=instance.private_ip,
        capacity_type=instance.capacity_type,
        availability_zone=instance.availability_zone,
        instance_type=instance.instance_type,
        launched_at=instance.launched_at,
        last_seen=agent.last_seen if agent else None,
        ready=agent.ready if agent else None,
        gpu=agent.gpu if agent else None,
        endpoint=endpoint,
        billing=instance.status != InstanceStatus.TERMINATED,
    )


def _settings(config: ProvisioningConfig) -> ProvisioningSettings:
    return ProvisioningSettings(
        replicas=config.replicas,
        instance_types=config.instance_types,
        allowed_regions=config.allowed_regions,
        denied_regions=config.denied_regions,
        warm_standby=config.warm_standby,
    )

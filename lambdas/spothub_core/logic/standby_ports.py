"""The hub's side effects of the warm standby (the ports of spothub_core.logic.standby_watch): commands to worker
regions, the endpoint, the orchestrator. Each is safe to repeat: a promotion that broke off is finished by
running it again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from spothub_core.contracts import HubCommand, LaunchRequested, TeardownRequested
from spothub_core.logic.hub_services import HubServices, send_command, serve_from, start_orchestrator
from spothub_core.logic.replacements import start_replacement
from spothub_core.logic.standby_watch import StandbyLaunch
from spothub_core.models.orchestrator_tasks import OrchestratorInput
from spothub_core.models.records import InstanceRecord, InstanceStatus, Replica
from spothub_core.models.standby_records import StandbyRecord


@dataclass(frozen=True)
class HubStandbyPorts:
    hub: HubServices

    def launch(self, launch: StandbyLaunch) -> None:
        """A launch with role `standby`: no task token waits on it; its reports come back to the capacity handler,
        which finds the standby by its launch id. It names the zone ranked first, which the worker region does not
        pin (its group picks the zone, as the replay models it); the standby's record takes the zone it got."""
        command = LaunchRequested(
            launch_id=launch.launch_id,
            replica_id=launch.replica_id,
            region=launch.region,
            capacity_type=launch.capacity_type,  # type: ignore[arg-type]
            zone=launch.zone,
            role="standby",
        )
        send_command(self.hub, HubCommand.LAUNCH_REQUESTED, command)

    def teardown(self, *, region: str, instance_id: str | None, launch_id: str | None, reason: str) -> None:
        command = TeardownRequested(
            teardown_id=f"standby-{instance_id or launch_id}",
            region=region,
            instance_id=instance_id,
            launch_id=launch_id,
            reason=reason,
        )
        send_command(self.hub, HubCommand.TEARDOWN_REQUESTED, command)

    def promote(self, replica: Replica, standby: StandbyRecord, *, replaced: InstanceRecord | None, now: float) -> None:
        """What RecordInstance does for a new instance, for the standby: its instance record, the region it holds,
        the endpoint; then the replaced instance retired; an on-demand standby is watched for spot."""
        hub, instance_id = self.hub, standby.instance_id or ""
        hub.store.reserve_region(standby.region, replica_id=replica.replica_id, launch_id=standby.launch_id, now=now)
        serve_from(
            hub,
            replica_id=replica.replica_id,
            launch_id=standby.launch_id,
            region=standby.region,
            instance_id=instance_id,
            fields={
                "availability_zone": standby.zone or "",
                "capacity_type": standby.capacity_type,
                "public_ip": standby.public_ip,
                "private_ip": standby.private_ip,
                "launched_at": datetime.fromtimestamp(standby.launched_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            public_ip=standby.public_ip,
            private_ip=standby.private_ip,
            now=now,
        )
        if replaced is not None and replaced.status != InstanceStatus.TERMINATED and replaced.region:
            hub.store.put_instance(replaced.instance_id, {"status": InstanceStatus.TERMINATING, "updated_at": int(now)})
            command = TeardownRequested(
                teardown_id=f"retire-{replaced.instance_id}",
                region=replaced.region,
                instance_id=replaced.instance_id,
                reason=f"retired: standby {instance_id} serves in its place",
            )
            send_command(hub, HubCommand.TEARDOWN_REQUESTED, command)
        if standby.capacity_type == "on-demand":
            # The OnDemandPlaced path: a watch looks for spot and returns the replica to it (return_to_spot).
            watch = f"{standby.launch_id}-w"
            hub.store.update_replica(replica.replica_id, {"execution": watch})
            start_orchestrator(
                hub,
                watch,
                OrchestratorInput(replica_id=replica.replica_id, generation=replica.generation, watch_spot=True),
            )

    def replace(self, replica_id: str, instance_id: str, region: str, why: str, *, now: float, name: str) -> str:
        return start_replacement(self.hub, replica_id, instance_id, region, why, now=now, name=name)

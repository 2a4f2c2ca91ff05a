"""One replica per region: which regions the other replicas hold, reserving one before a launch is
dispatched there, and freeing it when the launch will not serve there."""

from __future__ import annotations

from spothub_core.logic.hub_services import HubServices
from spothub_core.models.records import Replica, ReplicaStatus, Reservation

# A replica in these states holds no region: what it reserved was left behind (a release that never ran).
NOT_PLACED = frozenset({ReplicaStatus.STOPPED, ReplicaStatus.FAILED})


def occupied_regions(
    replica_id: str | None, replicas: list[Replica], reservations: list[Reservation]
) -> dict[str, str]:
    """Regions that hold a replica other than `replica_id`: where it serves, where it is being launched, and
    what it reserved (which a launch does before it is dispatched, so replicas ranking at once see it)."""
    return dict(_holdings(replicas, reservations, but=replica_id))


def held_regions(replicas: list[Replica], reservations: list[Reservation]) -> dict[str, list[str]]:
    """Every region a replica holds, as `occupied_regions` counts them, with all the replicas holding it."""
    held: dict[str, set[str]] = {}
    for region, holder in _holdings(replicas, reservations, but=None):
        held.setdefault(region, set()).add(holder)
    return {region: sorted(holders) for region, holders in held.items()}


def _holdings(replicas: list[Replica], reservations: list[Reservation], *, but: str | None) -> list[tuple[str, str]]:
    """(region, replica) for every replica but `but`: serving there, then launching there, then reserved."""
    others = {r.replica_id: r for r in replicas if r.replica_id != but}
    serving = [
        (r.region, r.replica_id)
        for r in others.values()
        if r.region and r.status in (ReplicaStatus.SERVING, ReplicaStatus.REPLACING)
    ]
    launching = [
        (r.target_region, r.replica_id)
        for r in others.values()
        if r.target_region and r.status != ReplicaStatus.STOPPED
    ]
    reserved = [
        (held.region, held.replica_id)
        for held in reservations
        if held.replica_id in others and others[held.replica_id].status not in NOT_PLACED
    ]
    return serving + launching + reserved


def reserve(hub: HubServices, region: str, replica_id: str, launch_id: str, *, now: float) -> str:
    """Reserve `region` for the replica's launch; the replica that holds it afterwards (another one: taken)."""
    if hub.store.reserve_region(region, replica_id=replica_id, launch_id=launch_id, now=now):
        return replica_id
    held = hub.store.reservation(region)
    holder = held.replica_id if held else None
    holding = hub.store.replica(holder) if holder else None
    placed = holding is not None and holding.status not in NOT_PLACED
    if not placed and hub.store.reserve_region(
        region, replica_id=replica_id, launch_id=launch_id, now=now, taking_over=held.launch_id if held else None
    ):
        # Left behind by a replica no longer placed (stopped while it reserved, a release that never ran).
        return replica_id
    return str(holder or "another replica")


def release(hub: HubServices, region: str, launch_id: str, *, now: float) -> None:
    """`launch_id` will not serve in `region`: free it for other replicas, unless its replica serves there
    already (a failed replacement in the replica's own region keeps the region)."""
    held = hub.store.reservation(region)
    if held is None or held.launch_id != launch_id:
        return
    replica = hub.store.replica(held.replica_id)
    if replica and replica.region == region and replica.instance_id and replica.status not in NOT_PLACED:
        return
    hub.store.release_region(region, launch_id=launch_id, now=now)

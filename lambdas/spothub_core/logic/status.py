"""What `GET /status` answers: the deployment's shape and whether its state store answers."""

from __future__ import annotations

from spothub_core.dal.state_table import StateTable
from spothub_core.models.api import ControlPlaneStatus
from spothub_core.settings import HubSettings


def read_status(settings: HubSettings, table: StateTable) -> ControlPlaneStatus:
    """Raises DependencyUnavailable when the state table cannot be read."""
    table.probe()
    return ControlPlaneStatus(
        prefix=settings.prefix,
        version=settings.version,
        hub_region=settings.hub_region,
        worker_regions=settings.worker_regions,
        capacity_fallback=settings.capacity_fallback,
        state_table="reachable",
    )

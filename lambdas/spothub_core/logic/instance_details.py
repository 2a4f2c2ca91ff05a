"""GET /spot-instances: where the replicas run, as the state table knows it."""

from __future__ import annotations

from typing import Any

from spothub_core.dal.instance_health import InstanceHealthStore
from spothub_core.dal.provisioning import ProvisioningStore

INSTANCE_FIELDS = (
    "instance_id",
    "public_ip",
    "private_ip",
    "capacity_type",
    "availability_zone",
    "instance_type",
    "launched_at",
    "status",
)
# Replica statuses, most urgent first: the overall state is the first any replica is in.
STATE_ORDER = ("failed", "replacing", "placing", "serving", "stopped")
RECENT_REMEDIATIONS = 20


def describe(store: ProvisioningStore, health: InstanceHealthStore) -> dict[str, Any]:
    config = store.config()
    agents = health.agents()
    replicas = sorted(store.replicas(), key=lambda r: r["replica_id"])
    live = [i for i in store.instances() if i.get("status") not in ("terminated",)]
    live.sort(key=lambda i: (i.get("status") != "serving", str(i.get("launched_at") or "")))
    serving_regions = [r.get("region") for r in replicas if r.get("status") in ("serving", "replacing")]
    statuses = {r.get("status") for r in replicas}
    state = next((s for s in STATE_ORDER if s in statuses), "idle")
    if config.get("status") != "enabled" and state in ("stopped", "idle"):
        state = "stopped" if live else "idle"
    return {
        "region": next((r for r in serving_regions if r), None),
        "instances": [
            {
                **{f: i.get(f) for f in INSTANCE_FIELDS},
                "region": i.get("region"),
                **_agent(agents.get(i["instance_id"])),
            }
            for i in live
        ],
        "provisioning": "enabled" if config.get("status") == "enabled" else "disabled",
        "state": state,
        "replicas": [
            {
                "replica_id": r["replica_id"],
                "status": r.get("status"),
                "region": r.get("region"),
                "instance_id": r.get("instance_id"),
                "capacity_type": r.get("capacity_type"),
                "reason": r.get("reason"),
                "target_region": r.get("target_region"),
                "error": r.get("error"),
            }
            for r in replicas
        ],
        "settings": {k: config.get(k) for k in ("replicas", "instance_types", "allowed_regions", "denied_regions")},
        "remediations": [
            {k: r.get(k) for k in ("instance_id", "region", "reason", "alarm_name", "at")}
            for r in health.remediations()[-RECENT_REMEDIATIONS:]
        ],
    }


def _agent(agent: dict[str, Any] | None) -> dict[str, Any]:
    """What the instance's agent last said: when, whether the workload is ready, the GPUs' health."""
    if not agent:
        return {"last_seen": None, "ready": None}
    return {"last_seen": agent.get("last_seen"), "ready": agent.get("ready"), "gpu": agent.get("gpu")}

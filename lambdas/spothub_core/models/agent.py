"""What the agent on an instance sends to the agent API and what it gets back. Shipped in the agent's bundle
(stacks/agent_bundle.py) with `spothub_core.contracts`, so the agent builds its payloads from these models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

INSTANCE_ID_PATTERN = r"^i-[0-9a-f]{8,17}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Registration(_Body):
    region: str = Field(min_length=1, max_length=30)
    availability_zone: str = Field("", max_length=40)
    instance_type: str = Field("", max_length=40)
    group: str = Field("", max_length=255)
    capacity_type: Literal["spot", "on-demand", ""] = ""
    agent_version: str = Field("", max_length=40)


class WorkloadHealth(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    state: str = Field("", max_length=40)
    exit_code: int | None = None
    last_lines: list[str] = Field(default_factory=list, max_length=50)


class Heartbeat(_Body):
    ready: bool
    workload: WorkloadHealth = WorkloadHealth()
    gpu: dict[str, Any] = Field(default_factory=dict)
    drained: bool = False


class AgentRegistered(BaseModel):
    instance_id: str
    registered: bool


class HeartbeatAccepted(BaseModel):
    instance_id: str
    last_seen: str = Field(description="when the heartbeat was recorded, ISO 8601 UTC")

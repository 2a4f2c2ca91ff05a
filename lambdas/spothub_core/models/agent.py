"""What the agent on an instance sends to the agent API and what it gets back. Shipped in the agent's bundle
(stacks/agent_bundle.py) with `spothub_core.contracts`, so the agent builds its payloads from these models."""

from __future__ import annotations

import json
from decimal import Clamped, Context, DecimalException, Inexact, Overflow, Rounded, Underflow
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from spothub_core.models.base import Model

INSTANCE_ID_PATTERN = r"^i-[0-9a-f]{8,17}$"
# The heartbeat is stored as sent (the state table): a GPU report must be what DynamoDB stores. Its numbers: 38
# digits, magnitudes 1e-130 to below 1e126 (boto3's DYNAMODB_CONTEXT); its nesting well inside DynamoDB's 32 levels.
_DYNAMODB_NUMBERS = Context(Emin=-128, Emax=126, prec=38, traps=[Clamped, Overflow, Inexact, Rounded, Underflow])
MAX_GPU_REPORT_DEPTH = 16
MAX_GPU_REPORT_BYTES = 64 * 1024


class _Body(Model):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Registration(_Body):
    region: str = Field(min_length=1, max_length=30)
    availability_zone: str = Field("", max_length=40)
    instance_type: str = Field("", max_length=40)
    group: str = Field("", max_length=255)
    capacity_type: Literal["spot", "on-demand", ""] = ""
    agent_version: str = Field("", max_length=40)


class WorkloadHealth(Model):
    model_config = ConfigDict(extra="ignore", frozen=True)

    state: str = Field("", max_length=40)
    exit_code: int | None = Field(None, ge=-(2**31), lt=2**31)
    last_lines: list[str] = Field(default_factory=list, max_length=50)


class Heartbeat(_Body):
    ready: bool
    workload: WorkloadHealth = WorkloadHealth()
    gpu: dict[str, Any] = Field(default_factory=dict)
    drained: bool = False

    @field_validator("gpu")
    @classmethod
    def _storable(cls, gpu: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(gpu)) > MAX_GPU_REPORT_BYTES:
            raise ValueError(f"a GPU report is {MAX_GPU_REPORT_BYTES} bytes of JSON at most")
        _check_storable(gpu, depth=1)
        return gpu


def _check_storable(value: Any, *, depth: int) -> None:
    if depth > MAX_GPU_REPORT_DEPTH:
        raise ValueError(f"a GPU report nests {MAX_GPU_REPORT_DEPTH} levels at most")
    if isinstance(value, dict):
        for item in value.values():
            _check_storable(item, depth=depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_storable(item, depth=depth + 1)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = _DYNAMODB_NUMBERS.create_decimal(repr(value))
        except DecimalException:
            number = None
        if number is None or not number.is_finite():
            raise ValueError(f"{value!r}: a finite number of 38 digits at most, its magnitude 1e-130 to 1e125")


class AgentRegistered(Model):
    instance_id: str
    registered: bool


class HeartbeatAccepted(Model):
    instance_id: str
    last_seen: str = Field(description="when the heartbeat was recorded, ISO 8601 UTC")

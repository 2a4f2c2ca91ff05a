"""The search launcher's tasks (statemachines/search_launcher.asl.json, run by the `search_tasks` function) and
the router's requests (the `search_router` function in the search region's VPC): one input and one output
model per action. A task's input is `{"action": ..., **fields}`; its output is the result model, dumped."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field

from spothub_core.contracts import CapacityType
from spothub_core.models.base import Model


class _Model(Model):
    model_config = ConfigDict(extra="ignore", frozen=True)


class LauncherAction(StrEnum):
    PLACE = "place"
    LAUNCH = "launch"
    ATTACH = "attach"
    CHECK = "check"
    READY = "ready"
    FAIL = "fail"


class LauncherInput(_Model):
    """The execution's input (also what every task gets back): which launch, and the purchase order of options."""

    launch_id: str = Field(min_length=1, max_length=80)
    use_spot: bool = True


class Place(_Model):
    action: Literal[LauncherAction.PLACE] = LauncherAction.PLACE
    launch_id: str


class Placement(_Model):
    """The volume's zone and a subnet of the search region's network in it."""

    volume_id: str
    availability_zone: str
    subnet_id: str


class Launch(_Model):
    action: Literal[LauncherAction.LAUNCH] = LauncherAction.LAUNCH
    launch_id: str
    capacity_type: CapacityType
    placement: Placement


class Launched(_Model):
    instance_id: str
    capacity_type: CapacityType
    instance_type: str


class Attach(_Model):
    """Attach the volume once the instance runs and the volume is free: TransientError while the instance is
    pending or the volume is still detaching from a predecessor; FatalError when another live instance holds it."""

    action: Literal[LauncherAction.ATTACH] = LauncherAction.ATTACH
    launch_id: str
    instance_id: str
    volume_id: str


class Attached(_Model):
    device: str
    private_ip: str | None = None
    public_ip: str | None = None


class Check(_Model):
    action: Literal[LauncherAction.CHECK] = LauncherAction.CHECK
    launch_id: str


class Health(_Model):
    """One health check of a starting instance; give_up once the start budget (timings) is spent."""

    healthy: bool
    give_up: bool = False
    detail: str = ""


class Ready(_Model):
    action: Literal[LauncherAction.READY] = LauncherAction.READY
    launch_id: str


class Fail(_Model):
    """The launch failed: its instance (if any) is terminated, the record failed, the slot released."""

    action: Literal[LauncherAction.FAIL] = LauncherAction.FAIL
    launch_id: str
    error: str = ""
    cause: str = ""


class Outcome(_Model):
    launch_id: str
    status: str


# --- the router (search region, in the VPC): the only function that reaches the instance -------------------


class RouterAction(StrEnum):
    QUERY = "query"
    HEALTH = "health"


class RouterRequest(_Model):
    action: RouterAction
    address: str  # the instance's private IP
    port: int = Field(ge=1, le=65535)
    path: str = "/"
    body: dict[str, Any] | None = None
    timeout_s: float = Field(10.0, gt=0, le=60)


class RouterResponse(_Model):
    """ok: the service answered 2xx. A connection that failed or timed out is ok False, status_code None."""

    ok: bool
    status_code: int | None = None
    body: Any = None
    elapsed_ms: float
    error: str | None = None

"""The reconnect watchdog: the agent's link to the control plane survives the API going away or moving.

Every failed attempt marks the link stale; the next attempt (after the caller's backoff) re-reads
`/spothub/<prefix>/api-url` from SSM, registers again, then sends the heartbeat. A heartbeat answered
404 (the control plane lost or expired the record) registers and beats once more. Nothing here
raises: the agent never exits because the control plane is down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_agent import __version__
from spothub_agent.aws import AwsClients, error_code, read_parameter
from spothub_agent.config import AgentConfig
from spothub_agent.control_plane import ApiError, ControlPlaneClient, InstanceUnknown
from spothub_agent.logs import log_event, warn
from spothub_agent.state import AgentState
from spothub_core.models.agent import Heartbeat, Registration


class ControlPlaneLink:
    def __init__(
        self,
        instance_id: str,
        read_api_url: Callable[[], str | None],
        make_client: Callable[[str], ControlPlaneClient],
        registration: Registration,
        state: AgentState,
    ) -> None:
        self._instance_id = instance_id
        self._read_api_url = read_api_url
        self._make_client = make_client
        self._registration = registration
        self._state = state
        self._client: ControlPlaneClient | None = None
        self._registered = False
        self._last_url: str | None = None
        self.registrations = 0

    @property
    def api_url(self) -> str | None:
        return self._client.api_url if self._client else None

    def beat(self, heartbeat: Heartbeat) -> bool:
        """Send one heartbeat, (re)connecting first where needed; False when it did not get through."""
        try:
            client = self._connect()
            if not self._registered:
                self._register(client)
            try:
                answer = client.heartbeat(self._instance_id, heartbeat)
            except InstanceUnknown:
                log_event("control_plane_forgot_instance", api_url=client.api_url)
                self._register(client)
                answer = client.heartbeat(self._instance_id, heartbeat)
        except (ApiError, BotoCoreError, ClientError) as exc:
            self._stale()
            warn("control_plane_unreachable", api_url=self.api_url, error=error_code(exc), reason=str(exc)[:300])
            return False
        self._take_assignment(answer)
        return True

    def _connect(self) -> ControlPlaneClient:
        if self._client is None:
            url = self._read_api_url()
            if not url:
                raise ApiError("the api-url parameter is not published (yet)")
            if url != self._last_url:
                log_event("control_plane_url", api_url=url, previous=self._last_url)
                self._last_url = url
            self._client = self._make_client(url)
            self._registered = False
        return self._client

    def _register(self, client: ControlPlaneClient) -> None:
        try:
            answer = client.register(self._instance_id, self._registration)
        except InstanceUnknown as exc:  # a 404 on register: the URL points at no agent API
            raise ApiError(f"registration route not found: {exc}") from exc
        self._registered = True
        self.registrations += 1
        log_event("registered", api_url=client.api_url, assignment=answer.get("assignment"))
        self._take_assignment(answer)

    def _take_assignment(self, answer: dict[str, Any]) -> None:
        if "assignment" in answer:
            assignment = answer["assignment"]
            if assignment != self._state.assignment:
                log_event("assignment", assignment=assignment)
            self._state.set_assignment(assignment if isinstance(assignment, dict) else None)

    def _stale(self) -> None:
        """Forget the URL and the registration: the next attempt re-reads the one and redoes the other."""
        self._client = None
        self._registered = False


def instance_link(config: AgentConfig, aws: AwsClients, state: AgentState) -> ControlPlaneLink:
    """The instance's link to the hub API: the URL from SSM, signed with the instance's credentials, registering the
    instance as IMDS describes it."""
    return ControlPlaneLink(
        config.instance_id,
        lambda: read_parameter(aws.ssm, f"{config.ssm_prefix}/api-url"),
        lambda url: ControlPlaneClient(url, config.hub_region, aws.credentials),
        Registration(
            region=config.region,
            availability_zone=config.availability_zone,
            instance_type=config.instance_type,
            group=config.auto_scaling_group,
            capacity_type=config.capacity_type,
            agent_version=__version__,
        ),
        state,
    )

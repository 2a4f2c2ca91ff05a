"""The AWS clients the agent uses, made once from one session, with short timeouts: a call that hangs
must not hold up the interruption watch or the agent's own stop.

SSM and EventBridge are called in the hub region (parameters and the hub bus live there);
Auto Scaling and CloudWatch in the instance's own region (its group and its alarms live there).
S3 (batch mode's inputs and outputs) from the instance's region too; botocore follows a bucket elsewhere
to its own region. Its client waits longer and retries more: it moves files, and a failed transfer fails
the batch.
`AWS_ENDPOINT_URL` (the sandbox's emulator) is honoured by boto3 itself.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import ClientError

from spothub_agent import __version__
from spothub_core.timings import AGENT_AWS_CONNECT_TIMEOUT_SECONDS, AGENT_AWS_READ_TIMEOUT_SECONDS

CLIENT_CONFIG = Config(
    connect_timeout=AGENT_AWS_CONNECT_TIMEOUT_SECONDS,
    read_timeout=AGENT_AWS_READ_TIMEOUT_SECONDS,
    retries={"mode": "standard", "total_max_attempts": 2},
    user_agent_extra=f"spothub-agent/{__version__}",
)

# S3 transfers: a read may wait on a large object's next bytes; throttling (503 SlowDown) is retried.
S3_CONFIG = CLIENT_CONFIG.merge(Config(read_timeout=60, retries={"mode": "standard", "total_max_attempts": 5}))


class AwsClients:
    def __init__(self, region: str, hub_region: str, session: boto3.Session | None = None) -> None:
        self.region = region
        self.hub_region = hub_region
        self._session = session or boto3.Session()
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()  # boto3 sessions are not thread-safe; clients are

    def client(self, service: str, region: str, config: Config = CLIENT_CONFIG) -> Any:
        with self._lock:
            key = (service, region)
            if key not in self._clients:
                self._clients[key] = self._session.client(service, region_name=region, config=config)
            return self._clients[key]

    @property
    def ssm(self) -> Any:
        return self.client("ssm", self.hub_region)

    @property
    def events(self) -> Any:
        return self.client("events", self.hub_region)

    @property
    def autoscaling(self) -> Any:
        return self.client("autoscaling", self.region)

    @property
    def cloudwatch(self) -> Any:
        return self.client("cloudwatch", self.region)

    @property
    def s3(self) -> Any:
        return self.client("s3", self.region, S3_CONFIG)

    def warm(self) -> None:
        """Make the clients now: loading a service model takes a noticeable fraction of a second, which
        an interruption warning should not have to wait for."""
        for make in (lambda: self.events, lambda: self.cloudwatch, lambda: self.ssm):
            make()

    def credentials(self) -> ReadOnlyCredentials | None:
        """The current credentials (the instance role's, refreshed by botocore before they expire)."""
        with self._lock:
            credentials = self._session.get_credentials()
        return credentials.get_frozen_credentials() if credentials is not None else None


def read_parameter(ssm: Any, name: str) -> str | None:
    """The parameter's value; None when it does not exist. Other failures raise."""
    try:
        return str(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return type(exc).__name__

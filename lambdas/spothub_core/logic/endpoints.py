"""Where clients reach the model: an instance's serving address, its endpoint URL, and the deployment's.

Plain HTTP from the model server itself (no load balancer: one per region bills while idle); which address
clients use is the operator's choice (servingPublicIp): the public one, or the private one from inside the VPC.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Serving:
    """How the deployment serves, as the stacks tell its functions (SPOTHUB_SERVING_*, SPOTHUB_ENDPOINT_NAME)."""

    port: int
    public_ip: bool
    endpoint_name: str | None = None


def serving_address(public_ip: str | None, private_ip: str | None, *, public: bool) -> str | None:
    """The address clients reach an instance at: its public one, or its private one when instances serve
    privately. None while it has no such address (never the other kind: that one is not reachable, or not meant
    to be)."""
    return public_ip if public else private_ip


def endpoint_url(host: str | None, port: int) -> str | None:
    return f"http://{host}:{port}" if host else None

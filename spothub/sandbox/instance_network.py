"""A Lambda function's connections to simulated instances' private addresses, as the VPC carries them.

The functions run in this process (lambda_runtime.py), so an HTTP request a handler makes to an instance's private
address (the search router's `http://<private ip>:<port>`) would leave for the real network, where no such host
is. The sandbox hooks urllib3's connection creation (requests and botocore use it too) for addresses in the
deployed VPCs only, and decides as the network would:

- the caller is the function whose handler runs in this thread (lambda_runtime.current_function); outside any
  function (a test, the sandbox itself) or in a function without VpcConfig, a private address is out of reach;
- the function's subnets must be in the instance's VPC, with a running instance at that address;
- the function's security groups must let the connection out (egress: CIDR or destination group) and the
  instance's let it in (ingress from the function's groups, or a CIDR holding the function's address in its
  subnet; model_client.ingress_allows);
- what a security group drops is a connect timeout (raised at once: the sandbox does not wait out the client's
  connect timeout); an allowed port the instance's service does not listen on is refused;
- allowed, the connection goes to the instance's stand-in service on this machine (127.0.0.1:<workload port>), or,
  on a deployment node, to the deployment task bound to that host port (deployment_tasks.py: the node's task_ports).

Every other address (the emulator on 127.0.0.1, anything outside the VPCs) connects as before.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spothub.sandbox.lambda_runtime import current_function
from spothub.sandbox.model_client import _contains, _port_matches, ingress_allows

if TYPE_CHECKING:
    from spothub.sandbox.fleet import Fleet, SimulatedInstance

LOCALHOST = "127.0.0.1"


class Unreachable(Exception):
    """The network drops the connection: the client sees a connect timeout."""


class Refused(Exception):
    """Nothing listens there: the client sees the connection refused."""


@dataclass(frozen=True)
class Route:
    instance_id: str
    local_port: int
    rule: str  # the ingress rule that let the connection in


def egress_allows(ec2: Any, group_ids: list[str], destination: str, port: int, destination_groups: list[str]) -> bool:
    """Whether the groups' outbound rules let tcp/`port` out to `destination` (or to a member of
    `destination_groups`)."""
    for group in ec2.describe_security_groups(GroupIds=group_ids)["SecurityGroups"] if group_ids else []:
        for permission in group.get("IpPermissionsEgress", []):
            if not _port_matches(permission, port):
                continue
            blocks = [r["CidrIp"] for r in permission.get("IpRanges", [])]
            blocks += [r["CidrIpv6"] for r in permission.get("Ipv6Ranges", [])]
            if any(_contains(block, destination) for block in blocks):
                return True
            if any(pair.get("GroupId") in destination_groups for pair in permission.get("UserIdGroupPairs", [])):
                return True
    return False


class InstanceNetwork:
    """The VPCs of the deployment, seen from the functions: `route(host, port)` for a connection a handler opens."""

    def __init__(
        self,
        fleet: Fleet,
        account: str,
        regions: list[str],
        ec2_client: Callable[[str], Any],
        caller: Callable[[], Any] = current_function,
    ) -> None:
        self._fleet = fleet
        self._account = account
        self._regions = regions
        self._ec2_client = ec2_client
        self._caller = caller
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _ec2(self, region: str) -> Any:
        with self._lock:
            if region not in self._clients:
                self._clients[region] = self._ec2_client(region)
            return self._clients[region]

    def _backend(self, region: str) -> Any:
        from moto.ec2.models import ec2_backends  # noqa: PLC0415

        return ec2_backends[self._account][region]

    def in_a_vpc(self, address: str) -> bool:
        """Whether the address is a private address of the deployment's VPCs (their CIDRs; the default VPCs the
        emulator makes on its own are not the deployment's)."""
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return False
        if parsed.is_loopback:
            return False
        for region in self._regions:
            for vpc in list(self._backend(region).vpcs.values()):
                if not vpc.is_default and _contains(vpc.cidr_block, address):
                    return True
        return any(address == i.private_ip for i in list(self._fleet.instances.values()))

    def route(self, host: str, port: int) -> Route | None:
        """None: not an address of the VPCs (connect as usual). Raises Unreachable or Refused as the network
        answers; else where the connection goes on this machine."""
        if not self.in_a_vpc(host):
            return None
        where = f"{host}:{port}"
        function = self._caller()
        if function is None:
            raise Unreachable(f"{where} is a private address in the deployment's VPC: not reachable from outside it")
        vpc_config = getattr(function, "_vpc_config", None) or {}
        subnets = [s for s in vpc_config.get("SubnetIds", []) if s]
        groups = [g for g in vpc_config.get("SecurityGroupIds", []) if g]
        name = function.function_name
        if not subnets:
            raise Unreachable(f"{where}: the function {name} is not in a VPC, so no private address is reachable")
        instance = self._instance_at(host)
        if instance is None:
            raise Unreachable(f"{where}: no running instance holds this address")
        backend = self._backend(function.region)
        function_subnet = backend.get_subnet(subnets[0])
        instance_vpc = self._backend(instance.region).get_instance(instance.instance_id).vpc_id
        if function.region != instance.region or function_subnet.vpc_id != instance_vpc:
            raise Unreachable(
                f"{where} ({instance.instance_id}): in {instance_vpc} of {instance.region}, the function {name} in "
                f"{function_subnet.vpc_id} of {function.region}"
            )
        if not egress_allows(self._ec2(function.region), groups, host, port, instance.security_groups):
            raise Unreachable(
                f"{where}: the function {name}'s security groups {', '.join(groups)} let no tcp/{port} out"
            )
        source_ip = str(ipaddress.ip_network(function_subnet.cidr_block, strict=False).broadcast_address - 1)
        ingress = ingress_allows(self._ec2(instance.region), instance.security_groups, source_ip, port, groups)
        if not ingress.allowed:
            raise Unreachable(
                f"{where} ({instance.instance_id}): security groups {', '.join(instance.security_groups)} let no "
                f"tcp/{port} in from {name} ({', '.join(groups) or 'no security group'}, {source_ip})"
            )
        local_port = instance.workload_port if port == instance.service_port else instance.task_ports.get(port)
        if not local_port:
            raise Refused(f"{where} ({instance.instance_id}): connection refused (nothing listens there)")
        return Route(instance.instance_id, local_port, ingress.rule)

    def _instance_at(self, address: str) -> SimulatedInstance | None:
        return next((i for i in self._fleet.running() if i.private_ip == address), None)


_network: InstanceNetwork | None = None
_original_new_conn: Any = None
_applied = False


def attach(network: InstanceNetwork | None) -> None:
    global _network  # noqa: PLW0603
    _network = network


def apply() -> None:
    """Route urllib3's connections to the VPCs' addresses through the network model; idempotent."""
    global _applied, _original_new_conn  # noqa: PLW0603
    if _applied:
        return
    from urllib3 import connection  # noqa: PLC0415

    _original_new_conn = connection.HTTPConnection._new_conn
    connection.HTTPConnection._new_conn = _new_conn  # type: ignore[method-assign]
    _applied = True


def _new_conn(self: Any) -> socket.socket:
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError  # noqa: PLC0415
    from urllib3.util import connection  # noqa: PLC0415

    network = _network
    if network is None:
        return _original_new_conn(self)
    try:
        route = network.route(self._dns_host, self.port)
    except Unreachable as exc:
        raise ConnectTimeoutError(
            self, f"Connection to {self.host} timed out. (connect timeout={self.timeout}): {exc}"
        ) from None
    except Refused as exc:
        raise NewConnectionError(self, f"Failed to establish a new connection: [Errno 111] {exc}") from None
    if route is None:
        return _original_new_conn(self)
    try:
        sock = connection.create_connection(
            (LOCALHOST, route.local_port),
            self.timeout,
            source_address=self.source_address,
            socket_options=self.socket_options,
        )
    except TimeoutError as exc:
        raise ConnectTimeoutError(self, f"Connection to {self.host} timed out. ({exc})") from exc
    except OSError as exc:  # the instance's service is not up (yet): refused, as on the instance
        raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
    sys.audit("http.client.connect", self, self.host, self.port)
    return sock

"""A client's way to the model endpoint in the sandbox, as the network would carry it.

A name is resolved through the emulator's Route 53 (the hosted zone whose name ends it; every A value of
the name, as a multivalue answer gives them), an address is an instance's public or private address, and
a connection reaches the instance's stand-in model server only when one of the instance's security groups
lets the client's (pretend) source address in on that port:
- CIDR rules (IPv4 and IPv6) are evaluated as EC2 does: protocol tcp or all, the port in range, the
  address in the block;
- prefix-list rules, with the entries of lists the emulator knows (an AWS-managed list it does not know
  lets nobody in here);
- source-group rules match when the caller says the client is in that group (`source_groups`), since a
  pretend address belongs to no instance.
A security group drops what it does not allow, so the client sees a connect timeout; an address no live
instance holds times out too; an allowed port with nothing listening is refused. Several A values are
tried in turn, live instances first, as clients do with a multivalue answer.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

if TYPE_CHECKING:
    from spothub.sandbox.fleet import SimulatedInstance
    from spothub.sandbox.sandbox import Sandbox

ALL_PROTOCOLS = "-1"
TCP = ("tcp", "6", ALL_PROTOCOLS)


@dataclass
class Ingress:
    """Whether a security group rule lets a client in, and the rule that did."""

    allowed: bool
    rule: str = ""
    notes: list[str] = field(default_factory=list)


def _port_matches(permission: dict[str, Any], port: int) -> bool:
    if str(permission.get("IpProtocol")) == ALL_PROTOCOLS:
        return True
    if str(permission.get("IpProtocol")).lower() not in TCP:
        return False
    low, high = permission.get("FromPort"), permission.get("ToPort")
    return low is not None and high is not None and int(low) <= port <= int(high)


def _contains(block: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(block, strict=False)
    except ValueError:
        return False


def ingress_allows(
    ec2: Any, group_ids: list[str], source_ip: str, port: int, source_groups: list[str] | None = None
) -> Ingress:
    """Evaluate the groups' inbound rules for tcp/`port` from `source_ip` (or from a member of `source_groups`)."""
    notes: list[str] = []
    if not group_ids:
        return Ingress(False, notes=["the instance has no security group"])
    groups = ec2.describe_security_groups(GroupIds=group_ids)["SecurityGroups"]
    for group in groups:
        for permission in group.get("IpPermissions", []):
            if not _port_matches(permission, port):
                continue
            where = f"{group['GroupId']} {permission.get('IpProtocol')}/{permission.get('FromPort')}"
            for block in [r["CidrIp"] for r in permission.get("IpRanges", [])] + [
                r["CidrIpv6"] for r in permission.get("Ipv6Ranges", [])
            ]:
                if _contains(block, source_ip):
                    return Ingress(True, f"{where} from {block}")
            for pair in permission.get("UserIdGroupPairs", []):
                if pair.get("GroupId") in (source_groups or []):
                    return Ingress(True, f"{where} from {pair['GroupId']}")
            for prefix_list in permission.get("PrefixListIds", []):
                list_id = prefix_list["PrefixListId"]
                try:
                    entries = ec2.get_managed_prefix_list_entries(PrefixListId=list_id)["Entries"]
                except Exception:
                    notes.append(f"{list_id} is unknown to the emulator: it lets nobody in here")
                    continue
                if any(_contains(entry["Cidr"], source_ip) for entry in entries):
                    return Ingress(True, f"{where} from {list_id}")
    return Ingress(False, notes=notes)


class ModelClient:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def resolve(self, host: str) -> list[str]:
        """The A values of `host` in the emulator's Route 53 (a multivalue answer: every record of the name);
        an address resolves to itself; a name no zone holds to nothing."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return [host]
        route53 = self._sandbox.client("route53")
        fqdn = host.rstrip(".").lower() + "."
        zones = [
            z for z in route53.list_hosted_zones()["HostedZones"] if fqdn.endswith("." + z["Name"]) or fqdn == z["Name"]
        ]
        values: list[str] = []
        for zone in sorted(zones, key=lambda z: -len(z["Name"])):
            pages = route53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone["Id"])
            for page in pages:
                for record in page["ResourceRecordSets"]:
                    if record["Name"].lower() == fqdn and record["Type"] == "A":
                        values += [r["Value"] for r in record.get("ResourceRecords", [])]
            if values:
                break
        return values

    def instance_at(self, address: str) -> SimulatedInstance | None:
        fleet = self._sandbox.fleet
        if fleet is None:
            return None
        return next((i for i in fleet.running() if address in (i.public_ip, i.private_ip)), None)

    def request(
        self,
        endpoint: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        source_ip: str,
        source_groups: list[str] | None = None,
        method: str | None = None,
        timeout_s: float = 10.0,
    ) -> requests.Response:
        """Send a request to the model at `endpoint` (http://name-or-address[:port], or a bare name) as a
        client at `source_ip`; raises requests' ConnectTimeout or ConnectionError as the network would."""
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        host = parts.hostname or ""
        port = parts.port or self._sandbox.serving_port()
        addresses = self.resolve(host)
        if not addresses:
            raise requests.exceptions.ConnectionError(
                f"could not resolve {host}: no A record in the emulator's Route 53"
            )
        live = [a for a in addresses if self.instance_at(a) is not None]
        error: requests.exceptions.RequestException | None = None
        for address in live + [a for a in addresses if a not in live]:
            try:
                return self._connect(
                    address=address,
                    port=port,
                    path=path,
                    body=body,
                    key=key,
                    source_ip=source_ip,
                    source_groups=source_groups,
                    method=method,
                    timeout_s=timeout_s,
                )
            except (requests.exceptions.ConnectTimeout, requests.exceptions.ConnectionError) as exc:
                error = exc
        assert error is not None  # noqa: S101 (at least one address was tried)
        raise error

    def _connect(
        self,
        *,
        address: str,
        port: int,
        path: str,
        body: Any,
        key: str | None,
        source_ip: str,
        source_groups: list[str] | None,
        method: str | None,
        timeout_s: float,
    ) -> requests.Response:
        instance = self.instance_at(address)
        if instance is None:
            raise requests.exceptions.ConnectTimeout(f"{address}:{port}: no running instance holds this address")
        ingress = ingress_allows(
            self._sandbox.client("ec2", instance.region), instance.security_groups, source_ip, port, source_groups
        )
        if not ingress.allowed:
            raise requests.exceptions.ConnectTimeout(
                f"{address}:{port} ({instance.instance_id}): security groups {', '.join(instance.security_groups)} "
                f"let no tcp/{port} in from {source_ip}" + (f" ({'; '.join(ingress.notes)})" if ingress.notes else "")
            )
        serving_port = instance.container.port if instance.container else None
        if port != serving_port or not instance.workload_port:
            raise requests.exceptions.ConnectionError(f"{address}:{port}: connection refused (nothing listens there)")
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        url = f"http://127.0.0.1:{instance.workload_port}/{path.lstrip('/')}"
        verb = method or ("POST" if body is not None else "GET")
        return requests.request(verb, url, json=body, headers=headers, timeout=timeout_s)


class RecordWatch:
    """The A values of an endpoint name over simulated time, polled (every 50 ms) while something runs:
    `with RecordWatch(sandbox, name) as watch: ...`, then `watch.first_naming(address)`."""

    def __init__(self, sandbox: Sandbox, name: str, interval_s: float = 0.05) -> None:
        self._client = ModelClient(sandbox)
        self._clock = sandbox.clock
        self._name = name
        self._interval_s = interval_s
        self.seen: list[tuple[float, list[str]]] = []  # (simulated time, sorted values) at each change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-record-watch", daemon=True)

    def __enter__(self) -> RecordWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a poll that fails is a poll missed, not a change
                values = sorted(self._client.resolve(self._name))
                if not self.seen or self.seen[-1][1] != values:
                    self.seen.append((self._clock.now(), values))
            self._stop.wait(self._interval_s)

    def first_naming(self, address: str) -> float | None:
        """When the record first held `address` (simulated epoch seconds); None if it never did."""
        return next((at for at, values in self.seen if address in values), None)

    def history(self, origin: float) -> str:
        return "; ".join(f"T+{at - origin:.1f}s {','.join(values) or '(none)'}" for at, values in self.seen)

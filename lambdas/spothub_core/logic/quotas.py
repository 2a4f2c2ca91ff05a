"""Which EC2 account quota stopped a launch, and how the operator raises it.

EC2 counts running vCPUs per quota bucket of instance families, separately for spot requests and
on-demand instances. A new account's G/VT and P quotas are often 0: no GPU launch succeeds anywhere
until someone asks for more, which no retry or other region can do for them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pydantic import ConfigDict

from spothub_core.models.base import Model
from spothub_core.timings import QUOTA_EXCLUSION_SECONDS

CONSOLE_QUOTA_URL = "https://console.aws.amazon.com/servicequotas/home/services/ec2/quotas/{code}?region={region}"
CONSOLE_QUOTAS_URL = "https://console.aws.amazon.com/servicequotas/home/services/ec2/quotas?region={region}"
# SNS e-mail subjects hold at most 100 characters.
SUBJECT_LENGTH = 100
_FAMILY = re.compile(r"^([a-z]+)")
_STANDARD_FAMILIES = frozenset("acdhimrtz")


class Quota(Model):
    model_config = ConfigDict(frozen=True)

    code: str
    name: str

    def url(self, region: str) -> str:
        return CONSOLE_QUOTA_URL.format(code=self.code, region=region)


# By quota bucket, then capacity type.
QUOTAS: dict[str, dict[str, Quota]] = {
    "G and VT": {
        "spot": Quota(code="L-3819A6DF", name="All G and VT Spot Instance Requests"),
        "on-demand": Quota(code="L-DB2E81BA", name="Running On-Demand G and VT instances"),
    },
    "P": {
        "spot": Quota(code="L-7212CCBC", name="All P Spot Instance Requests"),
        "on-demand": Quota(code="L-417A185B", name="Running On-Demand P instances"),
    },
    "Standard": {
        "spot": Quota(code="L-34B43A08", name="All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"),
        "on-demand": Quota(code="L-1216C47A", name="Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
    },
}


class QuotaAlert(Model):
    model_config = ConfigDict(frozen=True)

    subject: str
    message: str
    quotas: tuple[Quota, ...]


def bucket(instance_type: str) -> str | None:
    """The quota bucket of an instance type (g6e.xlarge: G and VT); None for one spothub does not know."""
    match = _FAMILY.match(instance_type)
    family = match.group(1) if match else ""
    if family in ("g", "vt"):
        return "G and VT"
    if family == "p":
        return "P"
    # One letter only: inf, trn, dl, hpc, mac and u- are buckets of their own.
    if len(family) == 1 and family in _STANDARD_FAMILIES:
        return "Standard"
    return None


def quotas_for(instance_types: list[str], capacity_type: str | None) -> tuple[Quota, ...]:
    """The quotas a launch of these types may have run into; both capacity types when it is not known."""
    kinds = [capacity_type] if capacity_type in ("spot", "on-demand") else ["spot", "on-demand"]
    found: list[Quota] = []
    for name in dict.fromkeys(b for b in map(bucket, instance_types) if b):
        found.extend(QUOTAS[name][kind] for kind in kinds if QUOTAS[name][kind] not in found)
    return tuple(found)


def quota_alert(
    prefix: str,
    region: str,
    *,
    capacity_type: str | None,
    instance_types: list[str],
    code: str,
    message: str,
    now: float,
) -> QuotaAlert:
    """The operator's alert: what failed, that the region is left out and until when, which quota to raise, how."""
    if capacity_type is None and "spot" in f"{code} {message}".lower():
        capacity_type = "spot"  # MaxSpotInstanceCountExceeded, "Max spot instance count exceeded"
    quotas = quotas_for(instance_types, capacity_type)
    until = datetime.fromtimestamp(now + QUOTA_EXCLUSION_SECONDS, UTC).strftime("%Y-%m-%d %H:%M UTC")
    what = f"{capacity_type} " if capacity_type else ""
    types = ", ".join(instance_types) or "the configured types"
    lines = [
        f"spothub deployment {prefix!r} could not launch {what}instances ({types}) in {region}: an EC2 account"
        " quota is reached, not a shortage of capacity.",
        f"EC2 said: {code} {message}".strip(),
        "",
        f"{region} is left out of the ranking until {until} ({QUOTA_EXCLUSION_SECONDS // 3600} h); launches go on"
        " in the other regions. Retrying cannot help: only a higher quota can.",
        "",
        f"Raise the quota in {region} (it counts vCPUs: give at least the vCPUs of one instance per replica):",
    ]
    for quota in quotas:
        lines += [
            f"- {quota.name} ({quota.code}): {quota.url(region)}",
            f"  aws service-quotas request-service-quota-increase --service-code ec2 --quota-code {quota.code}"
            f" --desired-value <vCPUs> --region {region}",
        ]
    if not quotas or any(bucket(t) is None for t in instance_types):
        lines.append(f"- every EC2 quota of {region}: {CONSOLE_QUOTAS_URL.format(region=region)}")
    subject = f"spothub ({prefix}): EC2 quota reached in {region}, region left out"
    return QuotaAlert(subject=subject[:SUBJECT_LENGTH], message="\n".join(lines), quotas=quotas)

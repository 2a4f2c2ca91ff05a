"""Which EC2 quota a launch ran into, and the operator's alert that says how to raise it."""

from __future__ import annotations

import pytest

from spothub_core.logic.quotas import bucket, quota_alert, quotas_for
from spothub_core.timings import QUOTA_EXCLUSION_SECONDS

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("instance_type", "expected"),
    [
        ("g5.xlarge", "G and VT"),
        ("g6e.xlarge", "G and VT"),
        ("g4dn.12xlarge", "G and VT"),
        ("vt1.3xlarge", "G and VT"),
        ("p4d.24xlarge", "P"),
        ("p5.48xlarge", "P"),
        ("c7gn.large", "Standard"),
        ("m5.xlarge", "Standard"),
        ("inf2.xlarge", None),
        ("trn1.2xlarge", None),
        ("dl1.24xlarge", None),
        ("hpc7g.4xlarge", None),
        ("x2idn.16xlarge", None),
    ],
)
def test_each_instance_family_counts_against_its_bucket(instance_type: str, expected: str | None) -> None:
    assert bucket(instance_type) == expected


def test_a_spot_launch_names_the_spot_quotas_of_its_families_once() -> None:
    quotas = quotas_for(["g5.xlarge", "g6.xlarge", "p4d.24xlarge"], "spot")
    assert [(q.code, q.name) for q in quotas] == [
        ("L-3819A6DF", "All G and VT Spot Instance Requests"),
        ("L-7212CCBC", "All P Spot Instance Requests"),
    ]


def test_an_on_demand_launch_names_the_running_on_demand_quotas() -> None:
    assert [q.code for q in quotas_for(["g6e.xlarge", "p5.48xlarge"], "on-demand")] == ["L-DB2E81BA", "L-417A185B"]


def test_without_the_capacity_type_both_quotas_are_named() -> None:
    assert [q.code for q in quotas_for(["g5.xlarge"], None)] == ["L-3819A6DF", "L-DB2E81BA"]


def test_the_alert_says_what_failed_until_when_and_how_to_raise_the_quota() -> None:
    alert = quota_alert(
        "gpu-prod",
        "eu-west-1",
        capacity_type="spot",
        instance_types=["g5.xlarge"],
        code="VcpuLimitExceeded",
        message="limit of 0",
        now=NOW,
    )
    assert len(alert.subject) <= 100
    assert "eu-west-1" in alert.subject
    assert "VcpuLimitExceeded limit of 0" in alert.message
    assert f"({QUOTA_EXCLUSION_SECONDS // 3600} h)" in alert.message
    url = "https://console.aws.amazon.com/servicequotas/home/services/ec2/quotas/L-3819A6DF?region=eu-west-1"
    assert url in alert.message
    assert "--quota-code L-3819A6DF" in alert.message and "--region eu-west-1" in alert.message


def test_a_spot_count_limit_names_the_spot_quota_even_without_the_launchs_capacity_type() -> None:
    alert = quota_alert(
        "spothub",
        "us-west-2",
        capacity_type=None,
        instance_types=["g5.xlarge"],
        code="LaunchUnsuccessful",
        message="Max spot instance count exceeded",
        now=NOW,
    )
    assert [q.code for q in alert.quotas] == ["L-3819A6DF"]


def test_a_family_without_a_known_quota_points_at_every_ec2_quota_of_the_region() -> None:
    alert = quota_alert(
        "spothub",
        "us-east-2",
        capacity_type="spot",
        instance_types=["inf2.xlarge"],
        code="VcpuLimitExceeded",
        message="",
        now=NOW,
    )
    assert alert.quotas == ()
    assert "https://console.aws.amazon.com/servicequotas/home/services/ec2/quotas?region=us-east-2" in alert.message

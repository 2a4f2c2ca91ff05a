"""`spothub regions` against the stand-in API: the finder's ranking as a table (rank, score, the spot price and its
pool, the state with an exclusion's end, why, the replicas), one JSON object with --json, an error as one line."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.unit.fake_spothub_api import FakeApi
from tests.unit.test_cli_api import one_line, run

COLUMNS = ("RANK", "REGION", "SCORE", "SPOT $/h", "ON-DEMAND $/h", "STATE", "WHY", "REPLICAS")


def region(name: str, state: str = "ok", **fields: Any) -> dict[str, Any]:
    base = {
        "region": name,
        "rank": None,
        "state": state,
        "placement_score": 5,
        "spot_price": 0.42,
        "spot_zone": f"{name}a",
        "spot_instance_type": "g5.xlarge",
        "on_demand_price": None,
        "excluded": None,
        "denied": state == "denied",
        "allowed": state != "not-allowed",
        "replicas": [],
        "reason": "score 5, $0.4200/h",
    }
    return base | fields


CAPACITY = {"until": "2026-11-27T22:35:00Z", "kind": "capacity", "error": "InsufficientInstanceCapacity none left"}
QUOTA = {"until": "2026-11-28T04:20:00Z", "kind": "quota", "error": "MaxSpotInstanceCountExceeded"}
REGIONS = {
    "at": "2026-11-27T22:20:00Z",
    "best": "us-west-2",
    "reason": "score 9, $0.3512/h, best placement score",
    "instance_types": ["g5.xlarge", "g6.xlarge"],
    "regions": [
        region(
            "us-west-2",
            rank=1,
            placement_score=9,
            spot_price=0.3512,
            on_demand_price=1.006,
            reason="score 9, $0.3512/h, best placement score",
            replicas=["replica-0"],
        ),
        region("eu-west-1", "excluded", reason="excluded for 900s more: capacity", excluded=CAPACITY),
        region(
            "ap-south-1",
            "denied",
            placement_score=None,
            spot_price=None,
            spot_zone=None,
            spot_instance_type=None,
            reason="denied by the operator",
            excluded=QUOTA,
        ),
        region("ca-central-1", "not-allowed", reason="not in the operator's allowed regions"),
    ],
}


def rows(out: str) -> dict[str, str]:
    """Each region's table line, by region (the second word: the first is its rank, or "-")."""
    return {line.split()[1]: line for line in out.splitlines()[4:] if line.strip()}


def test_regions_as_a_table(api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # one line per region, whatever the reasons' lengths
    api.on("GET", "/regions", (200, REGIONS))
    code, out, err = run(capsys, "regions", "--url", api.url)
    assert (code, err) == (0, "")
    assert [s.method + " " + s.path for s in api.seen] == ["GET /regions"]
    head, _, header, *_ = out.splitlines()
    assert head == (
        "ranked at 2026-11-27T22:20:00Z for g5.xlarge, g6.xlarge: best us-west-2 "
        "(score 9, $0.3512/h, best placement score)"
    )
    positions = [header.index(column) for column in COLUMNS]
    assert positions == sorted(positions), header
    line = rows(out)
    assert line["us-west-2"].split()[:4] == ["1", "us-west-2", "9", "0.3512"]
    for text in ("(us-west-2a g5.xlarge)", "1.0060", "ok", "best placement score", "replica-0"):
        assert text in line["us-west-2"]
    assert "excluded until 2026-11-27T22:35:00Z" in line["eu-west-1"]
    assert "capacity: InsufficientInstanceCapacity none left" in line["eu-west-1"]
    # Denied, and an exclusion behind the deny list still shows.
    behind = "denied by the operator; also excluded until 2026-11-28T04:20:00Z: quota: MaxSpotInstanceCountExceeded"
    assert behind in line["ap-south-1"]
    assert line["ap-south-1"].split()[:4] == ["-", "ap-south-1", "-", "-"]
    assert "not-allowed" in line["ca-central-1"] and "not in the operator's allowed regions" in line["ca-central-1"]


def test_regions_as_json(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.on("GET", "/regions", (200, REGIONS))
    code, out, _ = run(capsys, "--json", "regions", "--url", api.url)
    assert code == 0
    assert out.count("\n") == 1
    assert json.loads(out) == REGIONS


def test_no_spot_region_left_is_said_first(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    nothing = {
        **REGIONS,
        "best": None,
        "reason": "no spot region left (eu-west-1: excluded for 900s more: capacity)",
        "regions": [REGIONS["regions"][1]],
    }
    api.on("GET", "/regions", (200, nothing))
    code, out, _ = run(capsys, "regions", "--url", api.url)
    assert code == 0
    why = "no spot region left (eu-west-1: excluded for 900s more: capacity)"
    assert out.splitlines()[0].endswith(f": no spot region ({why})")


def test_the_finder_failing_is_one_line_and_exit_1(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.on(
        "GET",
        "/regions",
        (503, {"error": "Service Unavailable", "message": "the spot finder failed: SpotDataUnavailable"}),
    )
    code, out, err = run(capsys, "regions", "--url", api.url)
    assert (code, out) == (1, "")
    assert one_line(err) == "spothub regions: 503 Service Unavailable: the spot finder failed: SpotDataUnavailable"


def test_regions_is_listed_among_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert re.search(r"^  regions +the spot finder's ranking now", out, re.MULTILINE), out

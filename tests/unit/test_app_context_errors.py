"""`app.py` (what `cdk synth` runs) turns bad context into one line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stacks.paths import REPO_ROOT


def run_app(context: dict, outdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(outdir)}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "app.py")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"hubRegion": "us-esat-1"}, "unknown region 'us-esat-1'"),
        ({"workerRegions": "", "hubAsWorker": False}, "workerRegions is empty"),
        ({"workerRegions": "us-west-2,us-west-2"}, "lists us-west-2 more than once"),
        ({"instanceTypes": "p3_2xlarge"}, "'p3_2xlarge' is not an EC2 instance type name"),
        ({"servingIngressCidrs": "198.51.100.7"}, "'198.51.100.7' is not a CIDR range: name the prefix length"),
        ({"servingPublicIp": "false"}, "servingPublicIp=false needs vpcs for every worker region"),
    ],
)
def test_bad_context_exits_with_one_line_and_no_traceback(tmp_path: Path, context: dict, expected: str) -> None:
    result = run_app(context, tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("spothub: bad CDK context: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.template.json"))

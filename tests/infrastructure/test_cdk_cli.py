"""The deploy path a user runs: the pinned CDK CLI synthesizes the app with context from the command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from stacks.paths import REPO_ROOT
from tests.infrastructure.test_cfn_lint import lint_errors

CDK = REPO_ROOT / "node_modules" / ".bin" / "cdk"


@pytest.mark.slow
@pytest.mark.skipif(not CDK.exists(), reason="run `make install` for the pinned CDK CLI")
def test_cdk_cli_synthesizes_three_lint_clean_templates_without_credentials(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PATH"] = f"{REPO_ROOT / '.venv' / 'bin'}:{env['PATH']}"
    result = subprocess.run(
        [
            str(CDK),
            "synth",
            "--quiet",
            "--no-notices",
            "--no-version-reporting",
            "--output",
            str(tmp_path),
            "-c",
            "hubRegion=us-east-1",
            "-c",
            "workerRegions=us-west-2,eu-west-1",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    templates = sorted(tmp_path.glob("*.template.json"))
    assert [t.name for t in templates] == [
        "Hub.template.json",
        "Worker-eu-west-1.template.json",
        "Worker-us-west-2.template.json",
    ]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    regions = {a["environment"].rsplit("/", 1)[-1] for a in manifest["artifacts"].values() if "environment" in a}
    assert regions == {"us-east-1", "us-west-2", "eu-west-1"}
    assert lint_errors(templates) == []
    assert shutil.which("docker") is None or "docker" not in result.stderr.lower()

"""cfn-lint over every synthesized template: no errors (warnings are reported, not failed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infrastructure.conftest import DEPLOYMENTS
from tests.infrastructure.synth import Synthesized


def lint_errors(templates: list[Path]) -> list[str]:
    assert templates, "nothing to lint"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--format", "json", *map(str, templates)],
        capture_output=True,
        text=True,
        check=False,
    )
    # exit code bits: 2 errors, 4 warnings, 8 informational; anything else is cfn-lint failing to run
    assert result.returncode & ~(2 | 4 | 8) == 0, result.stderr
    findings = json.loads(result.stdout or "[]")
    return [f"{f['Filename']}: {f['Rule']['Id']} {f['Message']}" for f in findings if f["Level"] == "Error"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_templates_have_no_cfn_lint_errors(request: pytest.FixtureRequest, deployment: str) -> None:
    synthesized: Synthesized = request.getfixturevalue(deployment)
    assert lint_errors(sorted(synthesized.outdir.glob("*.template.json"))) == []


def test_cfn_lint_finds_errors_when_there_are_some(tmp_path: Path) -> None:
    broken = tmp_path / "broken.template.json"
    broken.write_text(
        json.dumps({"Resources": {"Table": {"Type": "AWS::DynamoDB::Table", "Properties": {"Bogus": 1}}}})
    )
    assert lint_errors([broken])

"""The Docker-free layer builder: cache keys, reuse, pip failures, and runtime-provided packages left out."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from aws_cdk import aws_lambda as lambda_

from stacks.constructs import dependency_layer
from stacks.constructs.dependency_layer import (
    LayerBuildError,
    _remove_distributions,
    build_layer_tree,
    layer_cache_key,
)

RUNTIME = lambda_.Runtime.PYTHON_3_14
ARM = lambda_.Architecture.ARM_64


def test_cache_key_follows_requirements_runtime_and_architecture(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("pydantic==2.14.3\n")
    key = layer_cache_key(requirements, RUNTIME, ARM)
    assert key == layer_cache_key(requirements, RUNTIME, ARM)
    assert key != layer_cache_key(requirements, lambda_.Runtime.PYTHON_3_13, ARM)
    assert key != layer_cache_key(requirements, RUNTIME, lambda_.Architecture.X86_64)
    requirements.write_text("pydantic==2.14.2\n")
    assert key != layer_cache_key(requirements, RUNTIME, ARM)


def test_pip_is_asked_for_binary_wheels_of_the_lambda_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("pydantic==2.14.3\n")
    calls = []

    def fake_pip(command: list[str], **_kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        target = Path(command[command.index("--target") + 1])
        (target / "pydantic").mkdir(parents=True)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(dependency_layer.subprocess, "run", fake_pip)
    built = build_layer_tree(requirements, RUNTIME, ARM, tmp_path / "cache")
    assert (built / "python" / "pydantic").is_dir()
    (command,) = calls
    for flag, value in [
        ("--platform", "manylinux2014_aarch64"),
        ("--python-version", "3.14"),
        ("--implementation", "cp"),
    ]:
        assert command[command.index(flag) + 1] == value
    assert "--only-binary=:all:" in command

    assert build_layer_tree(requirements, RUNTIME, ARM, tmp_path / "cache") == built
    assert len(calls) == 1, "a cached layer must not be installed again"


def test_pip_failure_is_reported_with_its_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("no-such-package==0\n")
    monkeypatch.setattr(
        dependency_layer.subprocess,
        "run",
        lambda command, **_: subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution"),
    )
    with pytest.raises(LayerBuildError, match="No matching distribution"):
        build_layer_tree(requirements, RUNTIME, ARM, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*/python")), "a failed build must not be cached"


def test_runtime_provided_distributions_are_removed_by_their_record(tmp_path: Path) -> None:
    site = tmp_path / "python"
    for name, files in {
        "botocore-1.44.5": ["botocore/__init__.py", "botocore/data/ec2.json"],
        "pydantic-2.14.3": ["pydantic/__init__.py"],
    }.items():
        dist_info = site / f"{name}.dist-info"
        dist_info.mkdir(parents=True)
        for relative in files:
            (site / relative).parent.mkdir(parents=True, exist_ok=True)
            (site / relative).write_text("")
        (dist_info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
    _remove_distributions(site, frozenset({"botocore"}))
    assert not (site / "botocore").exists()
    assert not (site / "botocore-1.44.5.dist-info").exists()
    assert (site / "pydantic" / "__init__.py").is_file()

"""The Lambda dependency layer, built with pip on this machine instead of in a Docker container.

pip downloads binary wheels for the functions' platform (manylinux, the Lambda architecture and
Python version), so the layer is right for Lambda whatever machine synthesizes it. The built
tree is cached under `.build/layers/<hash of requirements and platform>`: a synth after the first
needs neither Docker nor the network.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.paths import LAMBDA_REQUIREMENTS, LAMBDAS_DIR, LAYER_CACHE_DIR

PIP_PLATFORMS = {
    lambda_.Architecture.ARM_64.name: "manylinux2014_aarch64",
    lambda_.Architecture.X86_64.name: "manylinux2014_x86_64",
}


# Distributions the Lambda Python runtime already provides; pulled in by aws-xray-sdk, left out
# of the layer (30 MB of botocore alone).
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer", "jmespath", "python_dateutil", "urllib3", "six"})


class LayerBuildError(RuntimeError):
    pass


def layer_cache_key(requirements: Path, runtime: lambda_.Runtime, architecture: lambda_.Architecture) -> str:
    digest = hashlib.sha256()
    digest.update(requirements.read_bytes())
    digest.update(f"{runtime.name}|{architecture.name}".encode())
    return digest.hexdigest()[:24]


def build_layer_tree(
    requirements: Path, runtime: lambda_.Runtime, architecture: lambda_.Architecture, cache_dir: Path
) -> Path:
    """Install `requirements` for Lambda into `<cache>/<key>/python` (once) and return `<cache>/<key>`."""
    target = cache_dir / layer_cache_key(requirements, runtime, architecture)
    if (target / "python").is_dir():
        return target
    python_version = runtime.name.removeprefix("python")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--requirement",
            str(requirements),
            "--target",
            str(Path(scratch) / "python"),
            "--platform",
            PIP_PLATFORMS[architecture.name],
            "--implementation",
            "cp",
            "--python-version",
            python_version,
            "--only-binary=:all:",
            "--no-compile",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise LayerBuildError(f"pip could not build the dependency layer:\n{result.stderr.strip()}")
        _remove_distributions(Path(scratch) / "python", RUNTIME_PROVIDED)
        for junk in Path(scratch).glob("python/**/__pycache__"):
            shutil.rmtree(junk, ignore_errors=True)
        Path(scratch).rename(target)
    return target


def _remove_distributions(site: Path, names: frozenset[str]) -> None:
    """Uninstall `names` from a --target tree using each distribution's RECORD of its files."""
    for dist_info in site.glob("*.dist-info"):
        if dist_info.name.split("-", 1)[0].lower() not in names:
            continue
        for line in (dist_info / "RECORD").read_text().splitlines():
            path = site / line.split(",", 1)[0]
            if path.is_file():
                path.unlink()
        for directory in sorted({p for p in site.rglob("*") if p.is_dir()}, reverse=True):
            if not any(directory.iterdir()):
                directory.rmdir()
        shutil.rmtree(dist_info, ignore_errors=True)


@jsii.implements(ILocalBundling)
class PipLocalBundling:
    def __init__(self, requirements: Path, runtime: lambda_.Runtime, architecture: lambda_.Architecture) -> None:
        self._requirements = requirements
        self._runtime = runtime
        self._architecture = architecture

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_options: object) -> bool:
        built = build_layer_tree(self._requirements, self._runtime, self._architecture, LAYER_CACHE_DIR)
        shutil.copytree(built / "python", Path(output_dir) / "python", dirs_exist_ok=True)
        return True


class DependencyLayer(Construct):
    """A layer with `lambdas/requirements.txt` installed for the given runtime and architecture."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        runtime: lambda_.Runtime,
        architecture: lambda_.Architecture,
        requirements: Path = LAMBDA_REQUIREMENTS,
    ) -> None:
        super().__init__(scope, construct_id)
        code = lambda_.Code.from_asset(
            str(LAMBDAS_DIR),
            asset_hash_type=AssetHashType.CUSTOM,
            asset_hash=layer_cache_key(requirements, runtime, architecture),
            bundling=BundlingOptions(
                # Never pulled: local bundling always succeeds or raises.
                image=DockerImage.from_registry("public.ecr.aws/sam/build-python"),
                local=PipLocalBundling(requirements, runtime, architecture),
            ),
        )
        self.layer = lambda_.LayerVersion(
            self,
            "Layer",
            code=code,
            compatible_runtimes=[runtime],
            compatible_architectures=[architecture],
            description="spothub dependencies: " + ", ".join(_pinned(requirements)),
        )


def _pinned(requirements: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in requirements.read_text().splitlines())
    return [line for line in lines if line]


def prefetch() -> Path:
    """Build the functions' layer into the cache now (`make install`), so synth needs no network."""
    from stacks.constructs.python_function import ARCHITECTURE, RUNTIME  # noqa: PLC0415

    return build_layer_tree(LAMBDA_REQUIREMENTS, RUNTIME, ARCHITECTURE, LAYER_CACHE_DIR)

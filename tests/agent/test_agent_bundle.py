"""The agent as the launch template installs it: from its bundle alone, with the control plane's shared
modules shipped beside it (stacks/agent_bundle.py), and nothing of the repository on its path."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

from spothub_core import timings
from stacks.agent_bundle import CORE_DIR, SHIPPED_MODULES, stage_agent_bundle
from stacks.paths import LAMBDAS_DIR, WORKER_AGENT_DIR

# What the venv on an instance has: requirements.txt's packages and their own dependencies.
AGENT_DEPENDENCIES = {"boto3", "botocore", "pydantic", "pydantic_core", "typing_extensions", "annotated_types"}

# A fresh interpreter without `site` (so no .pth file, the repository's editable install included, adds
# anything), its path the bundle and the venv's site-packages only: what install.sh checks before it
# enables the service, every module of the agent (those it imports lazily too), and the payloads it builds.
PROBE = """
import importlib, json, pkgutil, sys
sys.path[:] = [p for p in sys.path if "site-packages" not in p and p not in ("", ".")]
sys.path[:0] = json.loads(sys.argv[1])
import spothub_agent
for module in pkgutil.walk_packages(spothub_agent.__path__, "spothub_agent."):
    importlib.import_module(module.name)
from spothub_agent.agent import Agent
from spothub_agent.settings import Settings
from spothub_core.contracts import CapacityNotice
from spothub_core.models.agent import Heartbeat, Registration
settings = Settings()
payloads = [
    Registration(region="us-west-2", capacity_type="spot").model_dump(mode="json"),
    Heartbeat(ready=True).model_dump(mode="json"),
    CapacityNotice(region="us-west-2", instance_id="i-0abc", kind="rebalance", notice_id="n").model_dump(mode="json"),
]
ours = {
    name: getattr(module, "__file__", None)
    for name, module in sys.modules.items()
    if name.split(".")[0] in ("spothub_agent", "spothub_core", "spothub", "stacks")
}
print(json.dumps({"modules": ours, "healthy_within_s": settings.healthy_within_s, "payloads": payloads}))
"""


# The modules the bundle ships, by name: spothub_core/models/agent.py is spothub_core.models.agent.
SHIPPED = {"spothub_core"} | {
    "spothub_core." + module.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    for module in SHIPPED_MODULES
}


def probe(bundle: Path, cwd: Path) -> dict:
    paths = sysconfig.get_paths()
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PROBE, json.dumps([str(bundle), paths["purelib"], paths["platlib"]])],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_agent_imports_and_configures_itself_from_its_bundle_alone(tmp_path: Path) -> None:
    bundle = stage_agent_bundle(cache=tmp_path / "cache")
    probed = probe(bundle, tmp_path)
    modules = probed["modules"]
    assert all(Path(path).resolve().is_relative_to(bundle.resolve()) for path in modules.values()), modules
    assert not [name for name in modules if name.split(".")[0] in ("spothub", "stacks")]
    # Of the control plane, the agent loads what the bundle ships and nothing else.
    assert {name for name in modules if name.startswith("spothub_core")} == SHIPPED
    assert probed["healthy_within_s"] == timings.AGENT_HEALTHY_WITHIN_SECONDS
    registration, heartbeat, notice = probed["payloads"]
    assert registration["region"] == "us-west-2"
    assert heartbeat["workload"] == {"state": "", "exit_code": None, "last_lines": []}
    assert notice["version"] == "1"


def test_the_shipped_modules_import_only_each_other_the_standard_library_and_the_agents_dependencies() -> None:
    for module in SHIPPED_MODULES:
        tree = ast.parse((CORE_DIR / module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom):
                raise AssertionError(f"{module}: a relative import")
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "spothub_core":
                    assert name in SHIPPED, f"{module} imports {name}, which the agent bundle does not ship"
                else:
                    assert top in sys.stdlib_module_names or top in AGENT_DEPENDENCIES, f"{module} imports {name}"


def test_the_agents_requirements_pin_pydantic_as_the_lambdas_do() -> None:
    def pins(path: Path) -> dict[str, str]:
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        return {name.split("[")[0]: version for name, _, version in (line.partition("==") for line in lines if line)}

    assert pins(WORKER_AGENT_DIR / "requirements.txt")["pydantic"] == pins(LAMBDAS_DIR / "requirements.txt")["pydantic"]

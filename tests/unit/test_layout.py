"""Rules of the repository's shape that review alone would let slip."""

from __future__ import annotations

import ast
import json

import pytest

from stacks.paths import LAMBDAS_DIR, STATEMACHINES_DIR

SHARED_PACKAGE = "spothub_core"
CONCERNS = sorted(
    p.name for p in LAMBDAS_DIR.iterdir() if p.is_dir() and (p / "__init__.py").exists() and p.name != SHARED_PACKAGE
)


def _imported_top_levels(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_there_are_concerns() -> None:
    assert CONCERNS


@pytest.mark.parametrize("concern", CONCERNS)
def test_each_concern_has_a_handler_with_lambda_handler(concern: str) -> None:
    handler = LAMBDAS_DIR / concern / "handler.py"
    tree = ast.parse(handler.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "lambda_handler" for n in tree.body)


@pytest.mark.parametrize("concern", CONCERNS)
def test_no_handler_imports_another_concern(concern: str) -> None:
    for source in (LAMBDAS_DIR / concern).rglob("*.py"):
        others = _imported_top_levels(source) & (set(CONCERNS) - {concern})
        assert not others, f"{source} imports {others}: shared code belongs in {SHARED_PACKAGE}"


def test_shared_code_imports_no_concern() -> None:
    for source in (LAMBDAS_DIR / SHARED_PACKAGE).rglob("*.py"):
        assert not (_imported_top_levels(source) & set(CONCERNS)), source


def test_shared_code_does_not_import_the_cdk() -> None:
    for source in (LAMBDAS_DIR / SHARED_PACKAGE).rglob("*.py"):
        assert not (_imported_top_levels(source) & {"aws_cdk", "constructs", "stacks"}), source


def test_state_machine_definitions_are_json_files() -> None:
    for definition in STATEMACHINES_DIR.glob("*"):
        if definition.name.startswith(".") or definition.name == "README.md":
            continue
        assert definition.name.endswith(".asl.json"), definition
        assert "States" in json.loads(definition.read_text()), definition

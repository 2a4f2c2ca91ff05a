"""Rules of the repository's shape that review alone would let slip."""

from __future__ import annotations

import ast
import json

import pytest

from stacks.paths import LAMBDAS_DIR, REPO_ROOT, STATEMACHINES_DIR

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


CORE_DIR = LAMBDAS_DIR / SHARED_PACKAGE
# What the stacks may take from the shared package: declarations, never the code that decides or talks to AWS.
STACK_IMPORTS_ALLOWED = ("models", "contracts", "consumers", "timings")
NEVER_FROM_DECLARATIONS = ("logic", "dal")


def _core_imports(path) -> set[str]:
    """The spothub_core modules `path` imports, as dotted names under spothub_core (e.g. `models.api`); an import
    of a name from a package (`from spothub_core import timings`) counts as the module of that name."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(CORE_DIR).parent.parts if path.is_relative_to(CORE_DIR) else None  # for relative imports
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name for a in node.names if a.name.split(".")[0] == SHARED_PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level and package is not None:
                base = [SHARED_PACKAGE, *package[: len(package) - node.level + 1]]
                module = ".".join(base + ([node.module] if node.module else []))
            elif node.level == 0 and node.module and node.module.split(".")[0] == SHARED_PACKAGE:
                module = node.module
            else:
                continue
            modules.add(module)
            modules.update(f"{module}.{a.name}" for a in node.names if _core_path(f"{module}.{a.name}") is not None)
    return {m.removeprefix(SHARED_PACKAGE).lstrip(".") for m in modules} - {""}


def _core_path(module: str):
    parts = module.split(".")[1:]
    candidate = CORE_DIR.joinpath(*parts)
    if candidate.with_suffix(".py").is_file():
        return candidate.with_suffix(".py")
    if (candidate / "__init__.py").is_file():
        return candidate / "__init__.py"
    return None


def _imports_of_core_module(module: str, seen: set[str] | None = None) -> set[str]:
    """Every spothub_core module `module` (a dotted name under spothub_core) imports, directly or through others."""
    seen = set() if seen is None else seen
    path = _core_path(f"{SHARED_PACKAGE}.{module}")
    if path is None or module in seen:
        return set()
    seen.add(module)
    found = _core_imports(path)
    for imported in found:
        _imports_of_core_module(imported, seen)
    return seen - {module} | found


def _is_under(module: str, packages: tuple[str, ...]) -> bool:
    return module.split(".", maxsplit=1)[0] in packages


def _stack_sources() -> list:
    return [*sorted((REPO_ROOT / "stacks").rglob("*.py")), REPO_ROOT / "app.py"]


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


@pytest.mark.parametrize("source", _stack_sources(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_stacks_import_declarations_only(source) -> None:
    imported = _core_imports(source)
    assert all(_is_under(m, STACK_IMPORTS_ALLOWED) for m in imported), (
        f"{source} imports {sorted(imported)}: stacks take only {STACK_IMPORTS_ALLOWED} from {SHARED_PACKAGE}"
    )
    for module in imported:
        reached = _imports_of_core_module(module)
        assert not [m for m in reached if _is_under(m, NEVER_FROM_DECLARATIONS)], (
            f"{source} reaches logic or dal through {module}: {sorted(reached)}"
        )


@pytest.mark.parametrize(
    "module",
    sorted(
        [
            "contracts",
            "consumers",
            *(f"models.{p.stem}" if p.stem != "__init__" else "models" for p in (CORE_DIR / "models").glob("*.py")),
        ]
    ),
)
def test_declarations_import_no_logic_and_no_dal(module: str) -> None:
    """models/, contracts.py and consumers.py declare; they import no logic and no dal, not even through others."""
    reached = _imports_of_core_module(module)
    assert not [m for m in reached if _is_under(m, NEVER_FROM_DECLARATIONS)], f"{module} reaches {sorted(reached)}"

"""What the shipped packages may import: declared dependencies only (never something another
package happens to pull in), and no tooling; the runtime reaches the operator only from the
CLI. `make test-lower-bounds` runs the suite on every dependency's declared lower bound."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "runtime" / "rillet_runtime"
OPERATOR = ROOT / "operator" / "rillet_operator"
OWN = {"rillet_runtime", "rillet_operator"}
TOOLING = {"bench", "charts", "tests", "testcluster"}
# The `chroma` extra ships Chroma's thin HTTP client, which provides the same module as the
# full `chromadb` the tests install.
PROVIDED_BY = {"chromadb": "chromadb-client"}


def _imports(package: Path) -> dict[str, set[str]]:
    """Top-level module -> the files (relative to the package) that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                found.setdefault(module.split(".")[0], set()).add(
                    str(path.relative_to(package.parent))
                )
    return found


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]).lower()


def _declared() -> set[str]:
    """Core dependencies and the product's extras; the dev set is tooling, not declared."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = [r for k, v in project["optional-dependencies"].items() if k != "dev" for r in v]
    return {_name(r) for r in project["dependencies"] + extras}


def test_every_third_party_import_is_a_declared_dependency() -> None:
    declared = _declared()
    distributions = packages_distributions()
    undeclared = {}
    for module, files in (_imports(RUNTIME) | _imports(OPERATOR)).items():
        if module in sys.stdlib_module_names or module in OWN or module == "__future__":
            continue
        providers = {_name(d) for d in distributions.get(module, [module])}
        providers |= {PROVIDED_BY[module]} if module in PROVIDED_BY else set()
        if not providers & declared:
            undeclared[module] = sorted(files)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_runtime_imports_the_operator_only_from_the_cli() -> None:
    importers = _imports(RUNTIME).get("rillet_operator", set())
    assert importers <= {"rillet_runtime/cli.py"}, importers


def test_the_product_imports_no_tooling() -> None:
    for package in (RUNTIME, OPERATOR):
        imported = _imports(package)
        assert not {m: imported[m] for m in TOOLING if m in imported}

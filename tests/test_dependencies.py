"""What the gateway imports when it starts is installed by its own dependencies, no extra.

The quick start (``python3 dev.py serve``) installs pyproject's ``dependencies`` only. The test
venv holds far more (the test extra's clients and tools bring their own), so a module that only a
test tool brings passes every other test and fails on a fresh machine: python-multipart, used by
``POST /v1/files``, came with the test extra, and the README's first command failed with
``ModuleNotFoundError`` on a clean clone.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_by(requirements: list[str]) -> set[str]:
    """Every distribution these requirements install, following installed metadata (no extras)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = _canonical(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        todo.extend(Requirement(r) for r in requires)
    return seen


def _module_level_imports(path: Path) -> set[str]:
    """Top-level names imported at module level (not in a function, ``try`` or ``if``)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_module_level_import_comes_with_the_base_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    installed = _installed_by(project["dependencies"])
    providers = metadata.packages_distributions()
    missing: dict[str, list[str]] = {}
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        for name in _module_level_imports(path) - set(sys.stdlib_module_names) - {"gateway"}:
            dists = providers.get(name, [])
            if not any(_canonical(d) in installed for d in dists):
                missing.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert missing == {}, f"imported but not installed by pyproject's dependencies: {missing}"


def test_the_check_sees_a_module_no_dependency_installs() -> None:
    assert "python-multipart" not in _installed_by(["starlette"])
    assert "python-multipart" in _installed_by(["starlette", "python-multipart"])
    assert {"pydantic", "pydantic-core"} <= _installed_by(["pydantic"])

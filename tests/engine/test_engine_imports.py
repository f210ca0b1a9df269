"""The engine is protocol-free: nothing under ``gateway/engine/`` imports a door or HTTP."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway.engine

FORBIDDEN = ("gateway.openai", "gateway.anthropic", "gateway.http", "gateway.console", "starlette")
ENGINE = Path(gateway.engine.__file__).parent


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def test_no_engine_module_imports_a_door_starlette_or_http() -> None:
    modules = sorted(ENGINE.rglob("*.py"))
    assert len(modules) > 10  # the walk found the engine
    bad = [
        f"{path.relative_to(ENGINE.parent)} imports {name}"
        for path in modules
        for name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert bad == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from gateway.openai.protocol import ChatMessage\nimport starlette.routing\n")
    assert _imports(sample) == ["gateway.openai.protocol", "starlette.routing"]


def test_no_module_is_over_about_500_lines() -> None:
    package = ENGINE.parent
    long = {
        str(p.relative_to(package)): n
        for p in package.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 520
    }
    assert long == {}


def test_every_folder_of_the_package_is_a_package() -> None:
    """A folder without ``__init__.py`` is left out of the wheel (and so of the image)."""
    package = ENGINE.parent
    folders = [
        d
        for d in package.rglob("*")
        if d.is_dir() and d.name != "__pycache__" and "static" not in d.relative_to(package).parts
    ]
    assert [str(d) for d in folders if not (d / "__init__.py").exists()] == []

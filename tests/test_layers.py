"""The packages of ``gateway/`` form layers, enforced transitively, with no circles.

The import graph is read with :mod:`ast` (no import runs): every ``import`` and ``from ...
import`` anywhere in a module counts, inside functions and under ``TYPE_CHECKING`` too, since
a type-only arrow up is still an arrow up. Each module belongs to the layer of the longest
prefix declared in :data:`LAYERS`, lowest first. Then:

- no module reaches, through any chain of imports, a module of a layer above its own;
- no module reaches itself, and the units of :data:`LAYERS` (packages, mostly) form no
  circle either;
- the doors import none of each other; ``gateway.http`` imports nothing of the gateway but
  ``config`` and ``errors``; the engine reaches no door, no ``starlette`` and no HTTP plumbing.

A new package or top-level module must be given its place in :data:`LAYERS`: the test names
any module it cannot place. Plain ``ast`` rather than import-linter: forty lines that read the
tree as it is, no extra dependency, and a failure message that names the chain of imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "gateway"

#: The front doors, one per API the gateway speaks, and the operators' door.
DOORS = (
    "gateway.openai",
    "gateway.anthropic",
    "gateway.ollama",
    "gateway.admin",
    "gateway.console",
)

#: Lowest first. A module may import its own layer and those below it, never one above.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "gateway",
        "gateway.config_env",
        "gateway.config_errors",
        "gateway.config_ollama",
        "gateway.config_batches",
        "gateway.errors",
        "gateway.config",
        "gateway.ids",
    ),
    # Programs of their own that share only the config: the emulator and the demo defaults.
    ("gateway.emulator", "gateway.demo"),
    ("gateway.redaction",),
    ("gateway.http",),  # ASGI plumbing: bodies, responses, SSE, error shapes, connections
    ("gateway.ops",),  # metrics, logs, traces, shutdown, the live view's records
    ("gateway.upstream",),  # the jobs API: client, poller, batcher, slots
    ("gateway.auth",),
    ("gateway.db_base",),  # what the engines share: transactions, timeouts, clean text
    ("gateway.db_postgres",),  # the PostgreSQL engine
    ("gateway.db",),  # one database layer (issue 22 item 6, engineer "storage")
    ("gateway.ledger",),
    ("gateway.limits",),
    ("gateway.keys",),
    ("gateway.engine",),  # planning, choices, cache: no door, no HTTP
    ("gateway.runtime",),
    # The front desk: the one request lifecycle every door calls; the runtime of a request.
    ("gateway.serving", "gateway.state"),
    # Files, batches and their runner: each line through the front desk; the doors serve them.
    ("gateway.batches",),
    DOORS,
    ("gateway.app", "gateway.cli", "gateway.__main__"),
)

#: What ``gateway.http`` may import of the gateway, besides itself.
HTTP_ALLOWED = (
    "gateway.config",
    "gateway.config_env",
    "gateway.config_errors",
    "gateway.errors",
    "gateway.ids",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _targets(node: ast.AST, module: str, is_package: bool, known: dict[str, Path]) -> Iterable[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")
            base = base[: len(base) - node.level + (1 if is_package else 0)]
            source = ".".join([*base, *([node.module] if node.module else [])])
        else:
            source = node.module or ""
        yield source
        for alias in node.names:  # ``from gateway.http import sse`` imports a module
            if f"{source}.{alias.name}" in known:
                yield f"{source}.{alias.name}"


@cache
def graph() -> dict[str, frozenset[str]]:
    """Module -> the modules it imports: the gateway's own, and the top package of others."""
    known = modules()
    edges: dict[str, frozenset[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        found: set[str] = set()
        for node in ast.walk(tree):
            for target in _targets(node, name, path.name == "__init__.py", known):
                if target.startswith("gateway"):
                    while target not in known and "." in target:  # ``from x import name``
                        target = target.rsplit(".", 1)[0]
                    found.add(target)
                elif target:
                    found.add(target.split(".")[0])
        found.discard(name)
        edges[name] = frozenset(found)
    return edges


def unit(module: str) -> str | None:
    """The longest prefix declared in :data:`LAYERS` that ``module`` falls under."""
    if module == "gateway":
        return module
    matches = [
        prefix
        for members in LAYERS
        for prefix in members
        if prefix != "gateway" and (module == prefix or module.startswith(prefix + "."))
    ]
    return max(matches, key=len, default=None)


def layer(module: str) -> int:
    name = unit(module)
    return next(i for i, members in enumerate(LAYERS) if name in members)


@cache
def reach(module: str) -> dict[str, tuple[str, ...]]:
    """Every gateway module ``module`` imports, directly or not, with one chain leading there."""
    edges = graph()
    chains: dict[str, tuple[str, ...]] = {}
    todo = [(module, (module,))]
    while todo:
        current, chain = todo.pop()
        for target in edges[current]:
            if target in edges and target not in chains:
                chains[target] = (*chain, target)
                todo.append((target, chains[target]))
    return chains


def test_every_module_has_a_declared_layer() -> None:
    unplaced = [m for m in modules() if unit(m) is None]
    assert not unplaced, f"give these a place in LAYERS: {unplaced}"


def test_no_module_reaches_a_layer_above_its_own() -> None:
    wrong = []
    for module in modules():
        mine = layer(module)
        for target, chain in reach(module).items():
            if layer(target) > mine:
                wrong.append(" -> ".join(chain))
    assert not wrong, "imports up the layers:\n" + "\n".join(sorted(wrong))


def test_no_module_imports_itself_in_a_circle() -> None:
    circles = [" -> ".join(reach(m)[m]) for m in modules() if m in reach(m)]
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_no_circle_between_packages() -> None:
    edges: dict[str, set[str]] = {}
    for module, targets in graph().items():
        for target in targets:
            if target in modules() and unit(target) != unit(module):
                edges.setdefault(str(unit(module)), set()).add(str(unit(target)))

    def reaches(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    circles = sorted(u for u in edges if u in reaches(u))
    assert not circles, f"packages in a circle: {circles}"


def test_the_doors_import_none_of_each_other() -> None:
    crossing = [
        f"{module} -> {target}"
        for module, targets in graph().items()
        if unit(module) in DOORS
        for target in targets
        if unit(target) in DOORS and unit(target) != unit(module)
    ]
    assert not crossing, crossing


def test_http_imports_only_config_and_errors() -> None:
    wrong = [
        f"{module} -> {target}"
        for module, targets in graph().items()
        if unit(module) == "gateway.http"
        for target in targets
        if target.startswith("gateway")
        and unit(target) != "gateway.http"
        and target not in HTTP_ALLOWED
    ]
    assert not wrong, wrong


@pytest.mark.parametrize("forbidden", ["starlette", "uvicorn", "gateway.http", *DOORS])
def test_the_engine_reaches_no_door_and_no_http(forbidden: str) -> None:
    """Nothing the engine imports, directly or not, is HTTP plumbing or a door."""
    edges = graph()
    for module in (m for m in modules() if unit(m) == "gateway.engine"):
        for target, chain in {module: (module,), **reach(module)}.items():
            hits = [t for t in edges[target] if t == forbidden or t.startswith(forbidden + ".")]
            assert not hits, " -> ".join((*chain, hits[0]))


def test_the_graph_is_read_as_python_resolves_it() -> None:
    """The reading itself: a chain known to exist is found, so the checks above can fail."""
    edges = graph()
    assert "gateway.runtime" in edges["gateway.serving.desk"]  # under TYPE_CHECKING too
    assert "gateway.state" in edges["gateway.serving.web"]
    assert "gateway.http.sse" in edges["gateway.openai.answers"]
    assert "gateway.upstream.client" in reach("gateway.engine.service")
    assert layer("gateway.serving.desk") > layer("gateway.runtime") > layer("gateway.engine")
    assert layer("gateway.http.exchange") < layer("gateway.serving")
    assert layer("gateway.http.sse") < layer("gateway.upstream")

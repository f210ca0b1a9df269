"""The ``subprocess`` marker: tests that start servers as processes, a browser, or signals.

``python3 dev.py test --fast`` (``pytest -m "not subprocess"``) runs the rest: unit and
in-process tests, about a minute. A module is marked when it lives where every test starts real
servers (``e2e/``, ``console/``, ``examples/``) or its source starts processes itself.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests check what comes out, not how fast: on a loaded CI machine (two cores, tests in
# parallel) a per-example deadline only makes them flaky.
settings.register_profile("gateway", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gateway")

_SERVER_DIRS = ("e2e", "console", "examples")
_STARTS_PROCESSES = ("tests.e2e.servers", "subprocess", "Popen", "multiprocessing")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "subprocess: starts servers as processes or a browser (not in --fast)"
    )


@functools.cache
def _starts_processes(path: Path) -> bool:
    tests = Path(__file__).resolve().parent
    try:
        relative = path.resolve().relative_to(tests)
    except ValueError:
        return False
    if relative.parts[0] in _SERVER_DIRS:
        return True
    source = path.read_text(encoding="utf-8", errors="replace")
    return any(marker in source for marker in _STARTS_PROCESSES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _starts_processes(Path(str(item.path))):
            item.add_marker(pytest.mark.subprocess)

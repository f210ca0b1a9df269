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


#: The slowest modules, slowest first (one run's timings on the two-core machine, 40 to 90 s
#: each): started first, so under ``--dist loadfile`` no worker is left running one of them
#: alone at the end while the others idle (that tail was over a minute of a 5-minute run).
SLOWEST = (
    "e2e/test_batches_restart_e2e.py",
    "e2e/test_ops_e2e.py",
    "e2e/test_responses_storage_e2e.py",
    "e2e/test_faults_e2e.py",
    "e2e/test_limits_e2e.py",
    "e2e/test_fuzz_e2e.py",
    "e2e/test_front_desk_e2e.py",
    "e2e/test_responses_durable_e2e.py",
    "e2e/test_shared_polling_e2e.py",
    "examples/test_examples.py",
    "test_dev.py",
    "e2e/test_economy_e2e.py",
    "e2e/test_compat_e2e.py",
    "e2e/test_workers_e2e.py",
    "engine/test_preset_render.py",
)


def _order(item: pytest.Item) -> tuple[int, int]:
    """The slowest modules first, then the others that start servers, then the rest (quick)."""
    path = Path(str(item.path))
    relative = path.resolve().relative_to(Path(__file__).resolve().parent).as_posix()
    if relative in SLOWEST:
        return 0, SLOWEST.index(relative)
    return (1 if _starts_processes(path) else 2), 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _starts_processes(Path(str(item.path))):
            item.add_marker(pytest.mark.subprocess)
    items.sort(key=_order)  # stable: a module's tests keep their order and stay together

"""The ``subprocess`` marker: tests that start servers as processes, a browser, or signals.

``python3 dev.py test --fast`` (``pytest -m "not subprocess"``) runs the rest: unit and
in-process tests, about a minute. A module is marked when it lives where every test starts real
servers (``e2e/``, ``console/``, ``examples/``) or its source starts processes itself.
"""

from __future__ import annotations

import functools
import ssl
from pathlib import Path
from typing import Any

import httpx._transports.default
import pytest
from hypothesis import HealthCheck, settings

# Property tests check what comes out, not how fast: on a loaded CI machine (two cores, tests in
# parallel) a per-example deadline only makes them flaky.
settings.register_profile("gateway", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gateway")


@functools.cache
def _default_ssl_context(trust_env: bool) -> ssl.SSLContext:
    return httpx.create_ssl_context(verify=True, trust_env=trust_env)


def _shared_ssl_context(
    verify: Any = True, cert: Any = None, trust_env: bool = True
) -> ssl.SSLContext:
    """Every httpx client made with the default ``verify=True`` shares one SSL context.

    Making one parses certifi's CA bundle: 32 ms of CPU on the 2-core machine, for each
    ``httpx.get``, each ``httpx.Client`` and each SDK client, thousands of times a run, though
    the tests speak plain HTTP on loopback. The context is the one httpx would make.
    """
    if verify is True and cert is None:
        return _default_ssl_context(trust_env)
    return httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)


httpx._transports.default.create_ssl_context = _shared_ssl_context  # type: ignore[assignment]

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

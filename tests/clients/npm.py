"""The newest release of a client from npm, installed once into a cache outside the repository.

``GATEWAY_TESTS_NPM_CACHE`` (default ``~/.cache/gateway-tests/npm``) holds one prefix per
package. Each run asks the registry for the newest version and installs it when the cache holds
another; without the registry, the cached copy is used, and without either the test is skipped
with the reason. A file lock keeps two test processes from installing into one prefix at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Seconds for ``npm view`` and for ``npm install`` (Claude Code's native binary is ~400 MB).
VIEW_TIMEOUT = 30
INSTALL_TIMEOUT = 900


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "gateway-tests" / "npm"
    return Path(os.environ.get("GATEWAY_TESTS_NPM_CACHE", default))


@dataclass(frozen=True, slots=True)
class Installed:
    package: str
    version: str  # what the package's manifest says
    latest: str | None  # what the registry says is newest; None when it could not be asked
    binary: Path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _latest(npm: str, package: str) -> str | None:
    try:
        out = subprocess.run(
            # No retries: without a registry, the cached copy serves at once.
            [
                npm,
                "view",
                package,
                "version",
                "--json",
                "--fetch-retries=0",
                "--fetch-timeout=15000",
            ],
            capture_output=True,
            text=True,
            timeout=VIEW_TIMEOUT,
            check=True,
        ).stdout
        version = json.loads(out)
    except (subprocess.SubprocessError, OSError, ValueError):
        return None
    return version if isinstance(version, str) else None


def _installed(prefix: Path, package: str) -> str | None:
    manifest = prefix / "node_modules" / package / "package.json"
    try:
        version = json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    return version if isinstance(version, str) else None


def newest(package: str, binary: str) -> Installed:
    """The newest release of ``package`` with its ``binary``; skips the test when there is none."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(f"npm is not installed: cannot install {package}")
    prefix = cache_dir() / package.replace("/", "+")
    with _locked(prefix.with_name(prefix.name + ".lock")):
        latest = _latest(npm, package)
        version = _installed(prefix, package)
        if latest is not None and version != latest:
            prefix.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(
                [
                    npm,
                    "install",
                    "--prefix",
                    str(prefix),
                    "--no-audit",
                    "--no-fund",
                    "--include=optional",
                    f"{package}@{latest}",
                ],
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
            )
            if done.returncode != 0 and version is None:
                pytest.skip(f"npm could not install {package}@{latest}: {done.stderr[-500:]}")
            version = _installed(prefix, package)
        if version is None:
            pytest.skip(f"the npm registry is unreachable and no copy of {package} is cached")
    path = prefix / "node_modules" / ".bin" / binary
    if not path.exists():
        pytest.skip(f"{package}@{version} installed no '{binary}' binary for this platform")
    return Installed(package, version, latest, path)


def reported_version(binary: Path, env: dict[str, str]) -> str:
    """What ``binary --version`` says, its first x.y.z: the version that really runs."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=60, env=env
        )
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"{binary} does not run here: {exc}")
    found = re.search(r"\d+\.\d+\.\d+", out.stdout)
    if out.returncode != 0 or found is None:
        pytest.skip(f"{binary} --version failed here: {out.stderr[-300:]}")
    return found[0]

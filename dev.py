#!/usr/bin/env python3
"""Set-up included: ``python3 dev.py serve`` runs the gateway, ``python3 dev.py test`` tests it.

The first run creates ``.venv`` and installs the project with its test tools; later runs
reuse it until ``pyproject.toml`` changes. Needs only Python 3.11+.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed-from"


def _python() -> str:
    return str(BIN / "python")


def ensure_environment() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py may be run by an older python3)
        sys.exit("dev.py: Python 3.11 or newer is needed")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("dev.py: creating .venv", flush=True)
        venv.create(VENV, with_pip=True)
    print("dev.py: installing the gateway and its test tools into .venv", flush=True)
    pip = [_python(), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-U", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(wanted)


def run(cmd: list[str]) -> int:
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def test(extra: list[str]) -> int:
    checks = [
        [str(BIN / "ruff"), "check", "gateway", "tests", "bench", "dev.py"],
        [str(BIN / "ruff"), "format", "--check", "gateway", "tests", "bench", "dev.py"],
        [str(BIN / "mypy"), "gateway"],
    ]
    if not extra:
        for check in checks:
            if code := run(check):
                return code
    return run([_python(), "-m", "pytest", *extra])


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("serve", "test", "setup", "gateway"):
        print(__doc__)
        print("usage: python3 dev.py serve [gateway serve options] | test [pytest args] | setup")
        return 2
    ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "serve":
        return run([str(BIN / "gateway"), "serve", *rest])
    if command == "gateway":
        return run([str(BIN / "gateway"), *rest])
    if command == "test":
        return test(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

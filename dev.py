#!/usr/bin/env python3
"""Set-up included: ``python3 dev.py serve`` runs the gateway, ``python3 dev.py test`` tests it.

The first run creates ``.venv`` and installs what the command needs: ``serve`` only the
gateway's own dependencies (a quick start), ``test`` and ``setup`` the test tools too. Later
runs reuse it until ``pyproject.toml`` changes. Needs only Python 3.11+.

usage: python3 dev.py COMMAND [ARGS]

  serve [options]     run the gateway (options as `gateway serve`; no config: the demo)
  test [pytest args]  ruff check, ruff format --check, mypy gateway, then pytest (with no
                      args: all of it, as CI); uses Redis / PostgreSQL when they answer on
                      127.0.0.1:6379 / :5432, and ends with a line on what was skipped and why
  setup               create .venv with the test tools and stop (for editors, bench/)
  gateway ARGS        any `gateway` subcommand inside the venv (emulator, keys, usage, ...)
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import venv
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed-from"
COMMANDS = ("serve", "test", "setup", "gateway")
# What each command needs installed: serving needs no test tools (a 5x smaller venv).
EXTRAS = {"serve": (), "gateway": (), "test": ("test",), "setup": ("test",)}
LOCAL_SERVICES = {
    "REDIS_URL": ("redis://127.0.0.1:6379/0", 6379),
    "DATABASE_URL": ("postgresql://postgres@127.0.0.1:5432/test", 5432),
}


def _python() -> str:
    return str(BIN / "python")


def _installed() -> tuple[str, set[str]]:
    """The pyproject digest and what the venv holds: extras, and "project" once installed."""
    try:
        stamp = json.loads(STAMP.read_text())
        return str(stamp["pyproject"]), set(stamp["extras"])
    except (OSError, ValueError, KeyError, TypeError):
        return "", set()


def _pip() -> list[str]:
    """pip for the venv: this Python's own when it can install elsewhere (no ensurepip: ~6 s)."""
    if (BIN / "pip").exists():
        return [_python(), "-m", "pip"]
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, check=False
    )
    version = probe.stdout.split()[1] if probe.returncode == 0 else "0"
    if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) >= (22, 3):
        return [sys.executable, "-m", "pip", "--python", _python()]
    subprocess.run([_python(), "-m", "ensurepip", "-q"], check=True)
    return [_python(), "-m", "pip"]


def ensure_environment(extras: tuple[str, ...]) -> None:
    """Install what the command needs; ``serve`` gets the dependencies only, run from source.

    ``test`` and ``setup`` install the project itself (editable, with pip in the venv, as
    editors and bench/ expect); serving needs neither, and skipping the build is most of the
    quick start's set-up time.
    """
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py may be run by an older python3)
        sys.exit("dev.py: Python 3.11 or newer is needed")
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    wanted = hashlib.sha256(pyproject).hexdigest()
    digest, have = _installed()
    need = set(extras) | ({"project"} if extras else set())
    if digest == wanted and have.issuperset(need):
        return
    if not (BIN / "python").exists():
        print("dev.py: creating .venv", flush=True)
        venv.create(VENV, with_pip=False)
    chosen = (have if digest == wanted else set()) | need
    pip = [*_pip(), "install", "--disable-pip-version-check", "-q"]
    if "project" in chosen:
        print("dev.py: installing the gateway and its test tools into .venv", flush=True)
        named = sorted(chosen - {"project"})
        target = f"{ROOT}[{','.join(named)}]" if named else str(ROOT)
        subprocess.run([*pip, "-e", target, "pip"], check=True)
    else:
        print("dev.py: installing what the gateway needs into .venv", flush=True)
        import tomllib  # here: dev.py must reach its version check on an older python3

        dependencies = tomllib.loads(pyproject.decode())["project"]["dependencies"]
        subprocess.run([*pip, *dependencies], check=True)
    STAMP.write_text(json.dumps({"pyproject": wanted, "extras": sorted(chosen)}))


def run(cmd: list[str], env: dict[str, str] | None = None) -> int:
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def _answers(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_environment() -> dict[str, str]:
    """The environment for pytest: local Redis / PostgreSQL used when they answer, as in CI."""
    env = dict(os.environ)
    for name, (url, port) in LOCAL_SERVICES.items():
        if name not in env and _answers(port):
            env[name] = url
            print(f"dev.py: {name}={url} (it answers)", flush=True)
    return env


def skip_summary(junit: Path) -> str:
    """One line: how many tests ran, and each reason for a skip with its count."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return "dev.py: no test report was written"
    outcomes: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    for case in root.iter("testcase"):
        skipped = case.find("skipped")
        if skipped is not None:
            outcomes["skipped"] += 1
            reason = (skipped.get("message") or "no reason given").strip()
            reasons[reason.removeprefix("Skipped: ")] += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            outcomes["failed"] += 1
        else:
            outcomes["passed"] += 1
    counts = f"{outcomes['passed']} passed, {outcomes['failed']} failed"
    if not reasons:
        return f"dev.py: {counts}, nothing skipped"
    why = "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common())
    return f"dev.py: {counts}, {outcomes['skipped']} skipped ({why})"


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
    env = test_environment()
    with tempfile.TemporaryDirectory(prefix="dev-py-") as tmp:
        junit = Path(tmp) / "junit.xml"
        code = run([_python(), "-m", "pytest", f"--junitxml={junit}", *extra], env=env)
        print(skip_summary(junit), flush=True)
    return code


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_environment(EXTRAS[command])
    if command == "serve":  # from the source tree: serving needs no installed project
        return run([_python(), "-m", "gateway", "serve", *rest])
    if command == "gateway":
        return run([_python(), "-m", "gateway", *rest])
    if command == "test":
        return test(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

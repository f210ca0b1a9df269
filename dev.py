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
  test --fast [args]  only the unit and in-process tests (no subprocess servers, no browser,
                      no lint): about a minute
  setup               create .venv with the test tools and stop (for editors, bench/)
  gateway ARGS        any `gateway` subcommand inside the venv (emulator, keys, usage, ...)
  example FILE        run one of examples/ against the gateway, installing its client first
                      (Python into .venv; Node packages into a cache directory, not the clone)

Paths (--config, files) are read from the current directory, as any command would.
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
import time
import venv
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent
#: ``DEV_PY_VENV`` moves the environment (tests point it at a prepared one).
VENV = Path(os.environ.get("DEV_PY_VENV") or ROOT / ".venv")
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed-from"
COMMANDS = ("serve", "test", "setup", "gateway", "example")
# What each command needs installed: serving needs no test tools (a 5x smaller venv).
EXTRAS = {"serve": (), "gateway": (), "example": (), "test": ("test",), "setup": ("test",)}
#: What each example needs beyond the gateway's own dependencies (``dev.py example``): the
#: module that tells whether it is installed, and the packages to install (npm for .mjs).
EXAMPLE_NEEDS = {
    "openai_chat.py": ("openai", ("openai>=1.60",)),
    "openai_responses.py": ("openai", ("openai>=1.60",)),
    "anthropic_messages.py": ("anthropic", ("anthropic>=2.17",)),
    "ollama_chat.py": ("ollama", ("ollama>=0.6",)),
    "langchain_chat.py": ("langchain_openai", ("langchain-openai>=0.3",)),
    "llamaindex_chat.py": ("llama_index.llms.openai_like", ("llama-index-llms-openai-like>=0.3",)),
    "openai_agents.py": ("agents", ("openai-agents>=0.20",)),
    "openai_node.mjs": ("openai", ("openai",)),
    "vercel_ai.mjs": ("@ai-sdk/openai-compatible", ("ai", "@ai-sdk/openai-compatible")),
}
#: The pytest marker of tests that start servers as subprocesses or a browser (tests/conftest.py).
SLOW_MARK = "not subprocess"
#: The most pytest-xdist workers a whole run starts (see workers()).
WORKERS_MAX = 6
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
    if "project" in chosen:
        print("dev.py: installing the gateway and its test tools into .venv", flush=True)
        named = sorted(chosen - {"project"})
        packages = ["-e", f"{ROOT}[{','.join(named)}]" if named else str(ROOT), "pip"]
    else:
        print("dev.py: installing what the gateway needs into .venv", flush=True)
        import tomllib  # here: dev.py must reach its version check on an older python3

        packages = tomllib.loads(pyproject.decode())["project"]["dependencies"]
    if not install_packages(packages):
        sys.exit("dev.py: installing failed; see above")
    STAMP.write_text(json.dumps({"pyproject": wanted, "extras": sorted(chosen)}))


def install_packages(packages: list[str]) -> bool:
    """Install into the venv with uv (pip when uv cannot be had, or fails)."""
    uv = _uv()
    if uv is not None:
        # Bytecode now, as pip does: else every test worker and server compiles it on import.
        if _install([uv, "pip", "install", "--compile-bytecode", "--python", _python(), *packages]):
            return True
        print("dev.py: uv could not install them; trying pip", flush=True)
    return _install([*_pip_install(), *packages])


def _pip_install() -> list[str]:
    # Not -q: pip's own lines ("Collecting ...", "Installing ...") are the progress a first run
    # shows; a minute of silence looks like a hang.
    return [*_pip(), "install", "--disable-pip-version-check", "--progress-bar", "off"]


def cache_dir() -> Path:
    """dev.py's cache outside the clone (``$XDG_CACHE_HOME/llm-gateway``): uv, npm packages."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llm-gateway"


def _uv() -> str | None:
    """uv, the installer (a few seconds where pip takes half a minute): on the PATH, or fetched
    once from the package index into the cache. None (then pip) when ``DEV_PY_INSTALLER=pip``
    or it cannot be had."""
    if os.environ.get("DEV_PY_INSTALLER", "uv") != "uv":
        return None
    import shutil

    if found := shutil.which("uv"):
        return found
    binary = cache_dir() / "uv" / ("uv.exe" if os.name == "nt" else "uv")
    if binary.exists():
        return str(binary)
    print("dev.py: fetching uv, a faster installer, from the package index (once)", flush=True)
    import zipfile

    with tempfile.TemporaryDirectory(prefix="dev-py-uv-") as tmp:
        fetch = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        got = subprocess.run([*fetch, "-q", "-d", tmp, "uv"], capture_output=True, check=False)
        wheels = sorted(Path(tmp).glob("uv-*.whl"))
        if got.returncode or not wheels:
            print("dev.py: could not fetch uv; installing with pip", flush=True)
            return None
        with zipfile.ZipFile(wheels[0]) as wheel:
            inside = [n for n in wheel.namelist() if n.endswith(f".data/scripts/{binary.name}")]
            if not inside:
                return None
            binary.parent.mkdir(parents=True, exist_ok=True)
            partial = binary.with_suffix(".partial")
            partial.write_bytes(wheel.read(inside[0]))
            partial.chmod(0o755)
            partial.replace(binary)
    return str(binary)


def _install(cmd: list[str]) -> bool:
    """Run an installer, showing its progress lines, then the time taken; True if it worked."""
    started = time.monotonic()
    try:
        installer = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    except OSError as exc:
        print(f"dev.py: cannot run {cmd[0]}: {exc}", flush=True)
        return False
    with installer:
        assert installer.stdout is not None
        for line in installer.stdout:
            quiet = line.startswith((" ", "Requirement already", "Using cached", "Downloading"))
            if not quiet or line.startswith(" + ") or "rror" in line:
                print(f"  {line.rstrip()[:110]}", flush=True)
    if installer.returncode:
        return False
    print(f"dev.py: installed in {time.monotonic() - started:.0f} s", flush=True)
    return True


def gateway_process(args: list[str]) -> int:
    """Become ``python -m gateway ARGS`` (POSIX ``exec``), in the caller's directory.

    Replacing dev.py instead of starting a child means a supervisor's SIGTERM or a terminal's
    Ctrl-C reaches the gateway itself: nothing is left holding the port. The gateway runs from
    the source tree (``PYTHONPATH``), so serving needs no installed project, and relative paths
    (``--config``, a SQLite ledger) are the caller's, not the repository's.
    """
    if (problem := _missing_config(args)) is not None:
        print(f"dev.py: {problem}", file=sys.stderr, flush=True)
        return 2
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [_python(), "-m", "gateway", *args]
    if os.name == "posix":
        sys.stdout.flush()
        os.execve(cmd[0], cmd, env)
    return subprocess.run(cmd, env=env).returncode  # elsewhere: Ctrl-C reaches both anyway


def _missing_config(args: list[str]) -> str | None:
    """What is wrong with ``--config PATH`` when it names no file: the path tried, in full."""
    for index, arg in enumerate(args):
        if arg == "--config" and index + 1 < len(args):
            path = args[index + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            continue
        tried = Path(path).expanduser().resolve()
        if not tried.is_file():
            return f"no config file at {tried} (--config {path}, read from {Path.cwd()})"
    return None


def example(args: list[str]) -> int:
    """``dev.py example FILE``: install what FILE's client needs, then run it."""
    if not args:
        print(
            "usage: python3 dev.py example examples/FILE (one of: "
            + ", ".join(sorted(EXAMPLE_NEEDS))
            + ")",
            file=sys.stderr,
        )
        return 2
    path = Path(args[0]).expanduser().resolve()
    module, needs = EXAMPLE_NEEDS.get(path.name, ("", ()))
    if not needs or not path.is_file():
        known = ", ".join(sorted(EXAMPLE_NEEDS))
        print(f"dev.py: {path} is not a runnable example (one of: {known})", file=sys.stderr)
        return 2
    if path.suffix == ".mjs":
        return _node_example(path, needs, args[1:])
    missing = subprocess.run(
        [_python(), "-c", f"import {module}"], capture_output=True, check=False
    ).returncode
    if missing:
        print(f"dev.py: installing {', '.join(needs)} into .venv", flush=True)
        if not install_packages(list(needs)):
            return 1
    return subprocess.run([_python(), str(path), *args[1:]]).returncode


def node_cache() -> Path:
    """Where Node examples get their packages: a cache directory outside the clone."""
    return cache_dir() / "node-examples"


def _node_example(path: Path, needs: tuple[str, ...], rest: list[str]) -> int:
    """Copy the file next to its packages in the cache (ES modules resolve imports from the
    file's own directory upwards), install them there once, run it from there."""
    import shutil

    if shutil.which("node") is None or shutil.which("npm") is None:
        print("dev.py: Node examples need node and npm on PATH", file=sys.stderr)
        return 2
    cache = node_cache()
    cache.mkdir(parents=True, exist_ok=True)
    if not all((cache / "node_modules" / name / "package.json").exists() for name in needs):
        print(f"dev.py: npm install {' '.join(needs)} (into {cache})", flush=True)
        npm = ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(cache), *needs]
        if code := subprocess.run(npm).returncode:
            return code
    runnable = cache / path.name
    shutil.copyfile(path, runnable)
    return subprocess.run(["node", str(runnable), *rest]).returncode


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


def workers() -> int:
    """How many pytest-xdist workers a whole run uses (``DEV_PY_WORKERS`` overrides; 1: none).

    Most end-to-end tests wait on sockets and subprocess servers, so a few more workers than
    cores pay off; beyond WORKERS_MAX the servers' start-ups only crowd the cores.
    """
    wanted = os.environ.get("DEV_PY_WORKERS", "").strip()
    if wanted.isdigit():
        return max(1, int(wanted))
    return max(1, min(WORKERS_MAX, 3 * (os.cpu_count() or 1)))


def pytest_args(extra: list[str], parallel: int) -> list[str]:
    """pytest's arguments for ``dev.py test [extra]``.

    The whole suite and ``--fast`` run in ``parallel`` workers, a test module per worker
    (``--dist loadfile``: a module's servers start once, in one worker); a run of named test
    files, or one that says ``-n`` / ``--dist`` / ``-p no:xdist`` itself, is left as asked.
    """
    args = [arg for arg in extra if arg != "--fast"]
    named = any(not a.startswith("-") and (ROOT / a.split("::")[0]).exists() for a in args)
    if "--fast" in extra:  # unit and in-process tests only; lint and type-check are CI's
        args = ["-m", SLOW_MARK, "-q", *args]
    chosen = any(a.startswith(("-n", "--numprocesses", "--dist")) or "xdist" in a for a in args)
    if not named and parallel > 1 and not chosen:
        args = ["-n", str(parallel), "--dist", "loadfile", *args]
    return args


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
    args = pytest_args(extra, workers())
    env = test_environment()
    with tempfile.TemporaryDirectory(prefix="dev-py-") as tmp:
        junit = Path(tmp) / "junit.xml"
        code = run([_python(), "-m", "pytest", f"--junitxml={junit}", *args], env=env)
        print(skip_summary(junit), flush=True)
    return code


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_environment(EXTRAS[command])
    if command == "serve":
        return gateway_process(["serve", *rest])
    if command == "gateway":
        return gateway_process(rest)
    if command == "example":
        return example(rest)
    if command == "test":
        return test(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""dev.py: its usage names every command, serve needs no test tools, skips are summed up."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_dev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dev_script", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["dev_script"] = module
    spec.loader.exec_module(module)
    return module


def test_usage_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    dev = load_dev()
    assert dev.main([]) == 2
    usage = capsys.readouterr().out
    for command in dev.COMMANDS:
        assert f"\n  {command} " in usage, command
    assert dev.EXTRAS["serve"] == () and "test" in dev.EXTRAS["test"]


def test_skips_are_summed_up_by_reason(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(
        "<testsuites><testsuite>"
        '<testcase name="a"/><testcase name="b"><failure message="x"/></testcase>'
        '<testcase name="c"><skipped message="needs REDIS_URL"/></testcase>'
        '<testcase name="d"><skipped message="needs REDIS_URL"/></testcase>'
        '<testcase name="e"><skipped message="needs /v1/responses"/></testcase>'
        "</testsuite></testsuites>"
    )
    line = load_dev().skip_summary(report)
    assert line == (
        "dev.py: 1 passed, 1 failed, 3 skipped (2 x needs REDIS_URL; 1 x needs /v1/responses)"
    )


def test_the_whole_suite_and_the_fast_part_run_in_parallel_by_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dev = load_dev()
    assert dev.pytest_args([], 3) == ["-n", "3", "--dist", "loadfile"]
    fast = dev.pytest_args(["--fast", "-x"], 3)
    assert fast == ["-n", "3", "--dist", "loadfile", "-m", dev.SLOW_MARK, "-q", "-x"]
    # Named tests, a worker count of one, or the caller's own choice: left as asked.
    assert dev.pytest_args(["tests/test_dev.py::test_usage_lists_every_command"], 3) == [
        "tests/test_dev.py::test_usage_lists_every_command"
    ]
    assert dev.pytest_args([], 1) == []
    assert dev.pytest_args(["-n", "2"], 3) == ["-n", "2"]
    assert dev.pytest_args(["-p", "no:xdist"], 3) == ["-p", "no:xdist"]
    monkeypatch.setenv("DEV_PY_WORKERS", "1")
    assert dev.workers() == 1
    monkeypatch.delenv("DEV_PY_WORKERS")
    assert 1 <= dev.workers() <= dev.WORKERS_MAX


def test_local_services_are_used_when_they_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = load_dev()
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: nothing answers
        services = {
            "REDIS_URL": ("redis://up", listening.getsockname()[1]),
            "DATABASE_URL": ("postgresql://down", closed.getsockname()[1]),
        }
        monkeypatch.setattr(dev, "LOCAL_SERVICES", services)
        monkeypatch.delenv("REDIS_URL", raising=False)
        monkeypatch.delenv("DATABASE_URL", raising=False)
        env = dev.test_environment()
    assert env["REDIS_URL"] == "redis://up"
    assert "DATABASE_URL" not in env


def prepared_venv(tmp_path: Path) -> Path:
    """A venv dev.py takes as installed: its python runs this interpreter (which has it all)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    (venv / ".installed-from").write_text(json.dumps({"pyproject": digest, "extras": []}))
    return venv


def dev_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_CONFIG", "PYTHONPATH")}
    return {**env, "DEV_PY_VENV": str(prepared_venv(tmp_path)), "XDG_CACHE_HOME": str(tmp_path)}


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.skipif(os.name != "posix", reason="signals as a supervisor sends them: POSIX")
@pytest.mark.parametrize(
    "sig,command",
    [
        (signal.SIGTERM, ["serve"]),
        (signal.SIGINT, ["serve"]),
        (signal.SIGTERM, ["gateway", "emulator"]),
    ],
)
def test_a_signal_to_dev_py_stops_the_server(tmp_path: Path, sig: int, command: list[str]) -> None:
    """A supervisor signals dev.py: the server stops and the port is free, no orphan."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dev = subprocess.Popen(
        [sys.executable, str(ROOT / "dev.py"), *command, "--port", str(port)],
        cwd=tmp_path,
        env=dev_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while port_is_free(port):
            assert dev.poll() is None, dev.stdout.read() if dev.stdout else ""
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        probe = "/healthz" if command == ["serve"] else "/emulator/stats"
        assert httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=5).status_code == 200
        dev.send_signal(sig)
        assert dev.wait(30) == 0
        assert port_is_free(port)
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
    output = dev.stdout.read().decode() if dev.stdout else ""
    if command == ["serve"]:  # the demo admin key, printed at start-up
        assert "sk-gateway-demo-admin" in output, output
    assert not list(tmp_path.glob("*.db")), "the demo's ledger landed in the current directory"


def test_a_relative_config_is_read_from_the_callers_directory(tmp_path: Path) -> None:
    """--config gateway.yaml is the caller's file; when absent, the path tried is said."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "serve", "--config", "nowhere.yaml"],
        cwd=tmp_path,
        env=dev_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"no config file at {tmp_path.resolve() / 'nowhere.yaml'}" in result.stderr
    config = tmp_path / "bad.yaml"
    config.write_text("server: {port: nope}\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "serve", "--config", "bad.yaml"],
        cwd=tmp_path,
        env=dev_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "server.port" in result.stderr, result.stderr


def test_example_names_what_it_can_run(capsys: pytest.CaptureFixture[str]) -> None:
    dev = load_dev()
    assert set(dev.EXAMPLE_NEEDS) == {
        p.name for p in (ROOT / "examples").iterdir() if p.suffix in (".py", ".mjs")
    }
    assert dev.example([str(ROOT / "examples" / "nothing.py")]) == 2
    assert "openai_chat.py" in capsys.readouterr().err


def test_node_packages_go_to_a_cache_outside_the_clone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/cache")
    assert load_dev().node_cache() == Path("/somewhere/cache/llm-gateway/node-examples")


def test_example_runs_an_example_against_the_gateway(tmp_path: Path) -> None:
    """``dev.py example`` from any directory: the client is there (or installed), it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dev_env(tmp_path)
    gateway = subprocess.Popen(
        [sys.executable, str(ROOT / "dev.py"), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while port_is_free(port):
            assert gateway.poll() is None and time.monotonic() < deadline, "no gateway"
            time.sleep(0.1)
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "dev.py"),
                "example",
                str(ROOT / "examples" / "openai_chat.py"),
            ],
            cwd=tmp_path,
            env={**env, "GATEWAY_URL": f"http://127.0.0.1:{port}"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tokens, estimated" in result.stdout


def test_uv_is_used_when_there_and_pip_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = load_dev()
    uv = tmp_path / "bin" / "uv"
    uv.parent.mkdir()
    uv.write_text("#!/bin/sh\nexit 0\n")
    uv.chmod(0o755)
    monkeypatch.setenv("PATH", f"{uv.parent}{os.pathsep}{os.environ['PATH']}")
    assert dev._uv() == str(uv)
    monkeypatch.setenv("DEV_PY_INSTALLER", "pip")
    assert dev._uv() is None
    monkeypatch.delenv("DEV_PY_INSTALLER")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "llm-gateway" / "uv" / "uv"
    cached.parent.mkdir(parents=True)
    cached.write_text("")
    assert dev._uv() == str(cached)  # fetched once, then taken from the cache


def test_a_failing_installer_is_said_and_pip_follows(capsys: pytest.CaptureFixture[str]) -> None:
    dev = load_dev()
    assert (
        dev._install([sys.executable, "-c", "print('Collecting x'); raise SystemExit(1)"]) is False
    )
    assert dev._install([sys.executable, "-c", "print('Resolved 3 packages')"]) is True
    out = capsys.readouterr().out
    assert "  Collecting x" in out and "  Resolved 3 packages" in out and "installed in" in out

"""dev.py: its usage names every command, serve needs no test tools, skips are summed up."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path
from types import ModuleType

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

"""Servers forked from a gateway already imported: a start costs a fork, not an interpreter.

Starting ``python -m gateway`` costs about a second of CPU before the server does anything
(the interpreter and the gateway's imports: 1.2 s on the 2-core machine), and the suite starts
about 130 servers. A *zygote*, one per test process, imports the gateway and the emulator once,
then forks a child per server. Each child is a
process of its own, as ``python -m gateway`` would be: it runs :func:`gateway.cli.main` with
the server's arguments, environment, working directory and log file, so signals, exit codes,
workers, restarts and kills behave as they do in production. Only its parent differs (the
zygote, which reaps it and reports its exit code through a file).

``GATEWAY_TESTS_FORK=0`` starts every server with ``python -m gateway`` instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

#: The command a forked server stands for (what ``Popen.args`` would hold).
COMMAND = [sys.executable, "-m", "gateway"]


class ForkedProcess:
    """A forked server, with the part of :class:`subprocess.Popen` the tests use."""

    def __init__(self, pid: int, args: list[str], exits: Path) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._exit_file = exits / str(pid)

    def poll(self) -> int | None:
        if self.returncode is None:
            with contextlib.suppress(FileNotFoundError, ValueError):
                self.returncode = int(self._exit_file.read_text())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(0.01)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The test process's side: asks the zygote for a child, one request at a time."""

    def __init__(self) -> None:
        self.exits = Path(tempfile.mkdtemp(prefix="gateway-zygote-"))
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            [sys.executable, "-c", "from tests.e2e.zygote import serve; serve()", str(self.exits)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(self.exits / "zygote.log").open("wb"),
            cwd=Path(__file__).resolve().parents[2],
        )
        self._ask({"ping": True})  # ready once the gateway is imported

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        with self._lock:
            stdin.write(json.dumps(request).encode() + b"\n")
            stdin.flush()
            answer = stdout.readline()
        if not answer:
            log = (self.exits / "zygote.log").read_text(errors="replace")
            raise RuntimeError(f"the test zygote ended:\n{log}")
        reply: dict[str, Any] = json.loads(answer)
        return reply

    def spawn(
        self, args: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path | None = None
    ) -> ForkedProcess:
        request = {
            "argv": list(args),
            "env": dict(env),
            "log": str(log),
            "cwd": str(cwd or Path.cwd()),
        }
        pid = int(self._ask(request)["pid"])
        return ForkedProcess(pid, [*COMMAND, *args], self.exits)


def enabled() -> bool:
    return os.environ.get("GATEWAY_TESTS_FORK", "1") != "0" and hasattr(os, "fork")


_zygotes: dict[int, Zygote] = {}


def zygote() -> Zygote:
    """This test process's zygote, started at its first server."""
    found = _zygotes.get(os.getpid())
    if found is None:
        found = _zygotes[os.getpid()] = Zygote()
    return found


# --------------------------------------------------------------------- the zygote's own side


def serve() -> None:
    """The zygote: import once, then fork a server per request read from stdin."""
    exits = Path(sys.argv[1])
    requests: BinaryIO = sys.stdin.buffer
    replies: BinaryIO = sys.stdout.buffer
    import uvicorn  # noqa: F401
    from prometheus_client import values

    import gateway.app
    import gateway.cli
    import gateway.emulator.server

    children: set[int] = set()

    def reap(*_: object) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            written = exits / f".{pid}"
            written.write_text(str(os.waitstatus_to_exitcode(status)))
            written.rename(exits / str(pid))

    signal.signal(signal.SIGCHLD, reap)
    for line in iter(requests.readline, b""):
        request = json.loads(line)
        if request.get("ping"):
            replies.write(b'{"pid": 0}\n')
            replies.flush()
            continue
        pid = os.fork()
        if pid == 0:
            _child(request, gateway.cli.main, values)
        children.add(pid)
        replies.write(json.dumps({"pid": pid}).encode() + b"\n")
        replies.flush()
    for pid in list(children):  # the test process is gone: so are its servers
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(exits, ignore_errors=True)


def _child(request: dict[str, Any], main: Any, values: Any) -> None:
    """In the forked child: become ``python -m gateway <argv>`` and never return."""
    code: int = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        out = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.close(null)
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        # prometheus-client picks its storage when imported: pick again with this environment.
        values.ValueClass = values.get_value_class()
        sys.argv = [COMMAND[-1], *request["argv"]]
        try:
            code = int(main(request["argv"]) or 0)
        except SystemExit as stop:
            if isinstance(stop.code, int) or stop.code is None:
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
                code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

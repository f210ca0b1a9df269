"""Seconds from ``git clone`` to the first streamed token, as a new user meets the gateway.

Clones the repository into a temporary folder, runs the README's first command there (the
quick start's ``python3 dev.py serve``, given a free port), streams one chat completion with
the demo key as soon as the gateway answers, and prints how long each step took. Only the
standard library is used, so it runs with any ``python3``. The goal is under 30 s::

    python3 bench/first_hour.py                # clones this checkout's HEAD
    python3 bench/first_hour.py --source URL   # or another clone source
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_KEY = "sk-gateway-demo"
GOAL_SECONDS = 30.0


def first_command(readme: str) -> list[str]:
    """The first command of the README's first ``sh`` block, without its comment."""
    match = re.search(r"```sh\n(.*?)```", readme, re.S)
    if match is None:
        raise SystemExit("first_hour: the README has no ```sh block")
    line = next(ln for ln in match.group(1).splitlines() if ln.strip())
    return shlex.split(line, comments=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(url: str, process: subprocess.Popen[bytes], limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"first_hour: the command exited with {process.returncode}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url + "/healthz", timeout=1.0) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.05)
    raise SystemExit(f"first_hour: no answer from {url} within {limit:g} s")


def first_token(url: str) -> str:
    """Stream one chat completion; return the first non-empty text delta."""
    body = {
        "model": "gemma-2b",
        "stream": True,
        "messages": [{"role": "user", "content": "Hello!"}],
    }
    request = urllib.request.Request(
        url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {DEMO_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        for raw in answer:
            line = raw.decode().strip()
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[len("data: ") :])
            for choice in chunk.get("choices", []):
                if text := choice.get("delta", {}).get("content"):
                    return str(text)
    raise SystemExit("first_hour: the stream ended without text")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(ROOT), help="what to clone (default: this repo)")
    parser.add_argument("--limit", type=float, default=300.0, help="seconds to wait at most")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="first-hour-") as tmp:
        clone = Path(tmp) / "gateway"
        started = time.monotonic()
        subprocess.run(["git", "clone", "--quiet", args.source, str(clone)], check=True)
        cloned = time.monotonic()
        port = free_port()
        command = [*first_command((clone / "README.md").read_text()), "--port", str(port)]
        env = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_CONFIG", "VIRTUAL_ENV")}
        print("$ " + shlex.join(command), flush=True)
        log = (Path(tmp) / "serve.log").open("wb")
        process = subprocess.Popen(
            command,
            cwd=clone,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, process, args.limit)
            serving = time.monotonic()
            text = first_token(url)
            token = time.monotonic()
        except BaseException:
            log.close()
            print((Path(tmp) / "serve.log").read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
    total = token - started
    print(f"first token: {text!r}")
    print(
        f"clone {cloned - started:.1f} s + set-up and start {serving - cloned:.1f} s"
        f" + first token {token - serving:.1f} s"
    )
    verdict = "within" if total < GOAL_SECONDS else "OVER"
    print(f"clone to first streamed token: {total:.1f} s ({verdict} the {GOAL_SECONDS:g} s goal)")
    return 0 if total < GOAL_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())

"""Claude Code, the newest release from npm, unchanged, against the gateway on loopback.

The live test installs ``@anthropic-ai/claude-code`` into the npm cache outside the repository
(:mod:`tests.clients.npm`), says which version ran, and runs ``claude -p`` through a recording
proxy: every request it sends must be answered (no 400 it has to work around: Claude Code
2.1.332 falls back to an older request shape after a 400, which hid the bug of issue 24), and
what it prints must be the emulator's answer to the prompt the gateway wrote. The replay test
sends the recorded request byte for byte, so the shape is checked where Claude Code cannot run.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from gateway.emulator import reply_for
from tests.clients import recordings
from tests.clients.conftest import offline_env
from tests.clients.npm import newest, reported_version
from tests.clients.proxy import Seen, recording_proxy
from tests.e2e.conftest import job_prompt
from tests.e2e.servers import ALICE_KEY, Server

PACKAGE = "@anthropic-ai/claude-code"
PROMPT = "Name three colours."
EXAMPLE = Path(__file__).parents[2] / "examples" / "claude_code.env"
EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def claude_env(home: Path, base_url: str) -> dict[str, str]:
    """``examples/claude_code.env``, pointed at ``base_url`` with the test's key."""
    lines = EXAMPLE.read_text().splitlines()
    example = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {
        **offline_env(home),
        **example,
        "ANTHROPIC_BASE_URL": base_url,  # no /v1: Claude Code adds it
        "ANTHROPIC_AUTH_TOKEN": ALICE_KEY,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }


def text_of(events: list[dict[str, Any]]) -> str:
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    return "".join(d.get("text", "") for d in deltas)


def stream_events(body: bytes) -> list[dict[str, Any]]:
    """Each event of an Anthropic stream, validated as the SDK's own type."""
    events = []
    for line in body.decode().splitlines():
        if line.startswith("data: "):
            event = json.loads(line[6:])
            if event["type"] not in ("ping", "error"):
                EVENTS.validate_python(event)
            events.append(event)
    return events


def system_turns(body: bytes) -> int:
    return sum(1 for m in json.loads(body)["messages"] if m.get("role") == "system")


def run_claude(
    gateway: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], prompt: str
) -> tuple[str, list[Seen], str]:
    """(its output, the POSTs to /v1/messages, its version) of ``claude -p prompt``; every
    request it sent must have been answered 200."""
    tool = newest(PACKAGE, "claude")
    env = claude_env(tmp_path / "home", "")
    version = reported_version(tool.binary, env)
    with capsys.disabled():
        newest_known = tool.latest or "unknown: the registry was unreachable"
        print(f"\n[clients] Claude Code {version} ran (npm's newest: {newest_known})")
    assert version == tool.version and tool.latest in (None, version)
    with recording_proxy(gateway.url) as recording:
        env["ANTHROPIC_BASE_URL"] = recording.url
        done = subprocess.run(
            [str(tool.binary), "-p", prompt],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
    posts = recording.posts("/v1/messages")
    refused = [(s.status, s.body[:300]) for s in posts if s.status != 200]
    assert posts and not refused, (refused, done.stderr[-2000:])
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, posts, version


def keep(name: str, seen: Seen, version: str) -> None:
    """Refresh the recording when asked to; else say when it is older than what ran."""
    if recordings.wanted():
        recordings.save(name, seen, PACKAGE, version)
    elif (recorded := recordings.load(name)[0]["version"]) != version:
        warnings.warn(
            f"tests/clients/recorded/{name}.json is from Claude Code {recorded}; {version} "
            "ran: refresh it with GATEWAY_RECORD_CLIENTS=1",
            stacklevel=2,
        )


def test_the_newest_claude_code_works_unchanged(
    gateway: Server, emulator: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, posts, version = run_claude(gateway, tmp_path, capsys, PROMPT)
    prompt = job_prompt(emulator, posts[-1].answer_headers["x-job-id"])
    assert PROMPT in prompt
    assert out.strip() == reply_for(prompt).strip()
    with capsys.disabled():
        print(
            f"[clients] its request held {system_turns(posts[0].body)} system turn(s) in messages"
        )
    keep("claude_code", posts[0], version)


def test_the_newest_claude_code_runs_a_tool_and_reads_its_result(
    gateway: Server, emulator: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A whole agent turn: the model (the emulator, told to) calls one of Claude Code's tools,
    Claude Code runs it and sends the call and its result back with its system turns, and
    the answer (the emulator reads the result back) is what Claude Code prints.

    The tool is ``ListAgents`` (read-only, no permission asked) because the emulator answers a
    call whose name shows up again later in the prompt as if it had run, and Claude Code's
    system turn after the question names ``Read``, ``Bash``, ``Edit``... but not this one."""
    out, posts, version = run_claude(
        gateway, tmp_path, capsys, "[[emulate:tool ListAgents {}]] Who can I message?"
    )
    assert len(posts) >= 2
    last = json.loads(posts[-1].body)
    kinds = [
        (m["role"], block["type"])
        for m in last["messages"]
        if isinstance(m["content"], list)
        for block in m["content"]
    ]
    assert ("assistant", "tool_use") in kinds and ("user", "tool_result") in kinds
    assert system_turns(posts[-1].body) > 0
    prompt = job_prompt(emulator, posts[-1].answer_headers["x-job-id"])
    assert out.strip() == reply_for(prompt).strip()
    assert out.startswith("The result of ListAgents is:")
    keep("claude_code_tools", posts[-1], version)


@pytest.mark.parametrize("name", ["claude_code", "claude_code_tools"])
def test_the_recorded_claude_code_request_replays_byte_for_byte(
    gateway: Server, emulator: Server, name: str
) -> None:
    meta, body = recordings.load(name)
    assert system_turns(body) > 0  # the shape of issue 24: system turns inside messages
    headers = {**meta["headers"], "authorization": f"Bearer {ALICE_KEY}"}
    answer = httpx.request(
        meta["method"], gateway.url + meta["path"], content=body, headers=headers, timeout=120
    )
    assert answer.status_code == 200, answer.text
    events = stream_events(answer.content)
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    prompt = job_prompt(emulator, answer.headers["x-job-id"])
    assert text_of(events) == reply_for(prompt)
    for message in json.loads(body)["messages"]:  # every system turn reached the prompt
        if message["role"] == "system":
            content = message["content"]
            texts = [content] if isinstance(content, str) else [b["text"] for b in content]
            assert all(text.strip()[:200] in prompt for text in texts)

"""Codex CLI, the newest release from npm, unchanged, against the gateway's Responses door.

As for Claude Code (:mod:`tests.clients.test_claude_code`): the live test installs
``@openai/codex`` into the npm cache outside the repository, says which version ran, and runs
``codex exec`` with a ``model_providers`` entry (the one in ``examples/codex_config.toml``)
pointing at a recording proxy in front of the gateway; the replay test sends the recorded
request byte for byte.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.emulator import reply_for
from tests.clients import recordings
from tests.clients.conftest import offline_env
from tests.clients.npm import newest, reported_version
from tests.clients.proxy import recording_proxy
from tests.e2e.conftest import job_prompt
from tests.e2e.servers import ALICE_KEY, Server

PACKAGE = "@openai/codex"
PROMPT = "Name three colours."
EXAMPLE = Path(__file__).parents[2] / "examples" / "codex_config.toml"
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def codex_home(home: Path, base_url: str) -> Path:
    """``$CODEX_HOME`` with the example's provider, its base URL pointed at ``base_url``."""
    example = tomllib.loads(EXAMPLE.read_text())
    provider = example["model_providers"][example["model_provider"]]
    config = EXAMPLE.read_text().replace(provider["base_url"], base_url + "/v1")
    path = home / ".codex"
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.toml").write_text(config)
    return path


def stream_events(body: bytes) -> list[dict[str, Any]]:
    """Each event of a Responses stream, validated as the openai SDK's own type."""
    events = []
    for line in body.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            event = json.loads(line[6:])
            EVENTS.validate_python(event)
            events.append(event)
    return events


def test_the_newest_codex_works_unchanged(
    gateway: Server, emulator: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tool = newest(PACKAGE, "codex")
    env = offline_env(tmp_path / "home")
    version = reported_version(tool.binary, env)
    with capsys.disabled():
        newest_known = tool.latest or "unknown: the registry was unreachable"
        print(f"\n[clients] Codex CLI {version} ran (npm's newest: {newest_known})")
    assert version == tool.version and tool.latest in (None, version)
    with recording_proxy(gateway.url) as recording:
        home = codex_home(tmp_path / "home", recording.url)
        env |= {"CODEX_HOME": str(home), "GATEWAY_API_KEY": ALICE_KEY}
        done = subprocess.run(
            [str(tool.binary), "exec", "--skip-git-repo-check", PROMPT],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
    posts = recording.posts("/v1/responses")
    refused = [(s.status, s.body[:300]) for s in posts if s.status != 200]
    assert posts and not refused, (refused, done.stderr[-2000:])
    assert done.returncode == 0, done.stderr[-2000:]
    prompt = job_prompt(emulator, posts[-1].answer_headers["x-job-id"])
    assert PROMPT in prompt
    assert done.stdout.strip() == reply_for(prompt).strip()
    if recordings.wanted():
        recordings.save("codex", posts[0], PACKAGE, version)
    elif (recorded := recordings.load("codex")[0]["version"]) != version:
        warnings.warn(
            f"tests/clients/recorded/codex.json is from Codex CLI {recorded}; {version} ran: "
            "refresh it with GATEWAY_RECORD_CLIENTS=1",
            stacklevel=1,
        )


def test_the_recorded_codex_request_replays_byte_for_byte(
    gateway: Server, emulator: Server
) -> None:
    meta, body = recordings.load("codex")
    headers = {**meta["headers"], "authorization": f"Bearer {ALICE_KEY}"}
    answer = httpx.request(
        meta["method"], gateway.url + meta["path"], content=body, headers=headers, timeout=120
    )
    assert answer.status_code == 200, answer.text
    events = stream_events(answer.content)
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed"
    prompt = job_prompt(emulator, answer.headers["x-job-id"])
    assert events[-1]["response"]["output"][-1]["content"][0]["text"] == reply_for(prompt)


def test_the_tools_codex_sends_are_offered(gateway: Server, emulator: Server) -> None:
    """``apply_patch`` as the custom (free-text) tool Codex sends to models that take one is
    offered with its other tools, in its order, as many as fit gemma-2b's window beside the
    developer prompt (the rest are left out and logged); its hosted tools are not offered."""
    meta, body = recordings.load("codex")
    request = json.loads(body)
    patch = {
        "type": "custom",
        "name": "apply_patch",
        "description": "Use the `apply_patch` tool to edit files.",
        "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch"},
    }
    request["tools"].insert(0, patch)
    headers = {**meta["headers"], "authorization": f"Bearer {ALICE_KEY}"}
    answer = httpx.post(gateway.url + meta["path"], json=request, headers=headers, timeout=120)
    assert answer.status_code == 200, answer.text
    events = stream_events(answer.content)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["tools"][0] == patch
    prompt = job_prompt(emulator, answer.headers["x-job-id"])
    names = [t["name"] for t in request["tools"] if t["type"] in ("function", "custom")]
    offered = [name for name in names if f'"{name}"' in prompt or f"{name}(" in prompt]
    assert offered[:1] == ["apply_patch"], offered
    assert offered == names[: len(offered)]  # the client's order, the first that fit
    assert "web_search" not in prompt


def test_codexs_developer_prompt_is_cut_to_fit_a_small_window(
    gateway: Server, emulator: Server
) -> None:
    """gemma-2b-4k reads 4,096 tokens: Codex's ~18 KB developer prompt alone is more.
    As sent, the request is refused at once with ``context_length_exceeded``; with
    ``truncation: "auto"`` the prompt's middle is cut, its head and tail kept."""
    meta, body = recordings.load("codex")
    request = {**json.loads(body), "model": "gemma-2b-4k"}
    developer = request["input"][0]["content"][0]["text"]
    headers = {**meta["headers"], "authorization": f"Bearer {ALICE_KEY}"}
    url = gateway.url + meta["path"]
    refused = httpx.post(url, json=request, headers=headers, timeout=120)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "context_length_exceeded"
    fitted = httpx.post(url, json={**request, "truncation": "auto"}, headers=headers, timeout=120)
    assert fitted.status_code == 200, fitted.text
    assert stream_events(fitted.content)[-1]["type"] == "response.completed"
    prompt = job_prompt(emulator, fitted.headers["x-job-id"])
    assert developer[:100] in prompt and developer[-100:] in prompt
    assert developer not in prompt and "[...]" in prompt
    assert PROMPT in prompt

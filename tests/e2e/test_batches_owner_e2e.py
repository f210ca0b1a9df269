"""End to end: files and batches belong to a key's identity, never its name.

A database key uploads a file and makes batches (OpenAI's and Anthropic's), one of them still
running when its gateway dies; the key is removed and a new database key is made with the same
name (``gateway keys create``). The new key finds none of the first one's files, batches or
results, and the batch left running is not run under it: the restarted gateway ends it, as it
would a batch whose key is gone. The admin views, which read every key's, still show them all.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml

from tests.e2e.servers import (
    BOB_TOKEN,
    Server,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)
from tests.e2e.test_batches_e2e import CHAT, chat, jsonl, line, wait_done

ADMIN_KEY = "sk-test-batch-owner-admin-0123456789"


def _create_key(config: Path, name: str) -> str:
    """A database key made with ``gateway keys create``; its secret."""
    made = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "create", name, "--account", "acct-b",
         "--config", str(config)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    secret: str = json.loads(made.stdout)["secret"]
    return secret


def _admin_batches(gateway: Server) -> dict[str, dict[str, Any]]:
    got = httpx.get(
        gateway.url + "/admin/batches?key=carol", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert got.status_code == 200, got.text
    return {row["id"]: row for row in got.json()["data"]}


def _ended(gateway: Server, batch_id: str, limit: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        row = _admin_batches(gateway)[batch_id]
        if row["status"] in ("completed", "failed", "expired", "cancelled"):
            return row
        assert time.monotonic() < deadline, row
        time.sleep(0.2)


def _message_batch(api: anthropic.Anthropic, text: str) -> str:
    params = {
        "model": "gemma-2b",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": text}],
    }
    made = api.messages.batches.create(requests=[{"custom_id": "m0", "params": params}])  # type: ignore[list-item]
    deadline = time.monotonic() + 60
    while api.messages.batches.retrieve(made.id).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return made.id


def test_a_new_key_with_a_removed_keys_name_finds_none_of_its_files_or_batches(
    tmp_path: Path,
) -> None:
    with running(start_emulator(tmp_path)) as emulator:
        config = gateway_config(
            emulator.url,
            accounts=[{"name": "acct-b", "upstream_token": BOB_TOKEN}],
            admin={"keys": [{"name": "ops", "key": ADMIN_KEY, "role": "admin"}]},
            ledger={"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
            batches={"lease_seconds": 1, "scan_interval": 0.2},
        )
        config_file = tmp_path / "gateway.yaml"
        config_file.write_text(yaml.safe_dump(config))
        first_secret = _create_key(config_file, "carol")

        first = start_gateway(tmp_path, config)
        try:
            api = openai.OpenAI(base_url=first.url + "/v1", api_key=first_secret, max_retries=0)
            claude = anthropic.Anthropic(base_url=first.url, api_key=first_secret, max_retries=0)
            lines = [line(f"l{i}", chat(f"[[emulate:reply carol's {i}]]")) for i in range(2)]
            uploaded = api.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
            made = api.batches.create(
                input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"
            )
            done = wait_done(api, made.id)
            assert done.status == "completed" and done.output_file_id, done
            assert "carol's 1" in api.files.content(done.output_file_id).text
            message_batch = _message_batch(claude, "[[emulate:reply carol's message]]")
            slow = [
                line(f"s{i}", chat(f"[[emulate:words 60]] [[emulate:wps 2]] slow {i}"))
                for i in range(3)
            ]
            slow_file = api.files.create(file=("slow.jsonl", jsonl(slow)), purpose="batch")
            running_batch = api.batches.create(
                input_file_id=slow_file.id, endpoint=CHAT, completion_window="24h"
            )
            assert api.batches.retrieve(running_batch.id).status in ("validating", "in_progress")
        finally:
            first.stop(signal.SIGKILL)  # the running batch is left to the next gateway

        # carol is removed (her row deleted), and a new key is made with her name.
        with sqlite3.connect(tmp_path / "ledger.db") as db:
            assert db.execute("DELETE FROM gateway_keys WHERE name = 'carol'").rowcount == 1
        secret = _create_key(config_file, "carol")

        with running(start_gateway(tmp_path, config)) as gateway:
            api = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
            claude = anthropic.Anthropic(base_url=gateway.url, api_key=secret, max_retries=0)
            assert api.models.list().data  # the new key works
            # The batch left running is not run under the new key: it ends, its lines unrun.
            ended = _ended(gateway, running_batch.id)
            assert ended["status"] == "expired", ended
            assert ended["counts"]["done"] == 0 and ended["counts"]["total"] == 3, ended
            unrun = httpx.get(
                f"{gateway.url}/admin/files/{ended['error_file_id']}/content",
                headers={"authorization": f"Bearer {ADMIN_KEY}"},
            ).text.splitlines()
            codes = [json.loads(x)["error"]["code"] for x in unrun]
            assert codes == ["batch_expired"] * 3, unrun
            said = [str(r.get("message")) for r in gateway.records()]
            assert any(running_batch.id in m and "name was reused" in m for m in said), said
            for file_id in (uploaded.id, slow_file.id, done.output_file_id):
                with pytest.raises(openai.NotFoundError):
                    api.files.retrieve(file_id)
                with pytest.raises(openai.NotFoundError):
                    api.files.content(file_id)
            assert api.files.list().data == []
            for batch_id in (made.id, running_batch.id):
                with pytest.raises(openai.NotFoundError):
                    api.batches.retrieve(batch_id)
                with pytest.raises(openai.NotFoundError):
                    api.batches.cancel(batch_id)
            assert api.batches.list().data == []
            with pytest.raises(openai.NotFoundError):  # nor a batch of the old key's file
                api.batches.create(
                    input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"
                )
            with pytest.raises(anthropic.NotFoundError):
                claude.messages.batches.retrieve(message_batch)
            with pytest.raises(anthropic.NotFoundError):
                claude.messages.batches.cancel(message_batch)
            results = httpx.get(
                f"{gateway.url}/v1/messages/batches/{message_batch}/results",
                headers={"x-api-key": secret, "anthropic-version": "2023-06-01"},
            )
            assert results.status_code == 404, results.text
            with pytest.raises(anthropic.NotFoundError):
                claude.messages.batches.delete(message_batch)
            assert claude.messages.batches.list().data == []
            with pytest.raises(openai.NotFoundError):
                api.files.delete(uploaded.id)
            # The admin views read every key's: all three, under the name they were made with.
            assert set(_admin_batches(gateway)) == {made.id, running_batch.id, message_batch}
            kept = httpx.get(
                f"{gateway.url}/admin/files/{done.output_file_id}/content",
                headers={"authorization": f"Bearer {ADMIN_KEY}"},
            )
            assert kept.status_code == 200 and "carol's 1" in kept.text

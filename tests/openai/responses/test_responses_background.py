"""Background runs' saves: one transaction, and a failed save retried with no hole."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.auth import KeyRing
from gateway.config import Settings
from gateway.engine.events import ChoiceEnd, TextDelta
from gateway.keys.digests import owner
from gateway.openai.responses.background import Background, Follower
from gateway.openai.responses.door import ResponsesDoor
from gateway.openai.responses.render import response_object
from gateway.openai.responses.run import ResponseRun
from gateway.openai.responses.store import ResponseStore, StoredResponse
from gateway.openai.responses.translate import translate
from gateway.openai.responses.wire import CreateResponse


def _run() -> ResponseRun:
    request = CreateResponse.model_validate(
        {"model": "gemma-2b", "input": "hi", "background": True}
    )
    translated = translate(request, [], [{"role": "user", "content": "hi"}], {})
    obj = response_object(request, translated, "gemma-2b", status="queued")
    return ResponseRun(obj, translated.namespaces)


async def _no_replan(*_: Any) -> Any:
    raise AssertionError("not resumed here")


async def test_a_failed_save_is_retried_whole_with_no_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ResponseStore(f"sqlite:///{tmp_path}/r.db")
    await store.open()
    try:
        run = _run()
        now = time.time()
        body = run.snapshot()
        record = StoredResponse(
            str(body["id"]), "k", "k", now, now + 60, "queued", True, body, job_ids=["j"]
        )
        await store.put(record, [])
        background = Background(store, 5, _no_replan)
        follower = Follower(record, run)
        follower.publish(run.opening())
        follower.publish(run.start())
        follower.publish(run.feed(TextDelta(0, "hello ")))
        assert await background._save(follower)

        real = store.update
        calls = 0

        async def flaky(*args: Any, **kwargs: Any) -> bool:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise OSError("the database went away")
            return await real(*args, **kwargs)

        monkeypatch.setattr(store, "update", flaky)
        follower.publish(run.feed(TextDelta(0, "brave ")))
        assert await background._save(follower)  # failed: carry on, nothing advanced
        follower.publish(run.feed(TextDelta(0, "world")))
        follower.publish(run.feed(ChoiceEnd(0, "stop")))
        follower.publish(run.finish(1, 3))
        assert await background._save(follower, final=True)

        events = await store.events(record.id, -1)
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert events[-1]["type"] == "response.completed"
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text == "hello brave world"
        got = await store.get(record.id, "k", time.time())
        assert got is not None and got.status == "completed"
        assert got.body["output"][0]["content"][0]["text"] == "hello brave world"
    finally:
        await store.close()


async def test_a_run_stopped_while_submitting_is_failed_never_submitted_again(
    tmp_path: Path,
) -> None:
    """Stored as ``submitting`` and never given its job ids (the gateway died in between):
    nothing can tell whether its job reached the service, so resuming fails it, clearly."""
    settings = Settings.model_validate(
        {
            "ledger": {"url": f"sqlite:///{tmp_path}/g.db"},
            "keys": [{"name": "k", "key": "sk-test-submitting-key", "upstream_token": "t"}],
        }
    )
    key = settings.keys[0]
    door = ResponsesDoor(settings)
    await door.store.open()
    runtime = SimpleNamespace(settings=settings, keys=KeyRing(settings.keys))
    door._runtime = runtime  # type: ignore[assignment]
    try:
        run = _run()
        now = time.time()
        body = run.snapshot()
        record = StoredResponse(
            str(body["id"]), owner(key), "k", now, now + 60, "submitting", True, body
        )
        await door.store.put(record, [{"id": "in_1", "type": "message", "role": "user"}])
        await door.background._adopt(SimpleNamespace(rt=runtime), record)  # type: ignore[arg-type]
        follower = door.background.followers.get(record.id)
        if follower is not None and follower.task is not None:
            await follower.task
        got = await door.store.get(record.id, owner(key), time.time())
        assert got is not None and got.status == "failed"
        assert "stopped while submitting" in got.body["error"]["message"]
    finally:
        await door.store.close()

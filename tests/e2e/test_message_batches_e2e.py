"""End to end: Anthropic's Message Batches (``/v1/messages/batches``) through the anthropic SDK.

Each request runs as ``POST /v1/messages`` would (the same planner, codec and errors), and
every object is read back through the SDK's own types.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from tests.e2e.servers import ALICE_KEY, BOB_KEY, Server, gateway_config, running, start_gateway


def _params(text: str, model: str = "gemma-2b") -> dict[str, Any]:
    return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}


def _wait_ended(api: anthropic.Anthropic, batch_id: str, limit: float = 60) -> MessageBatch:
    deadline = time.monotonic() + limit
    while True:
        got = api.messages.batches.retrieve(batch_id)
        if got.processing_status == "ended":
            return got
        assert time.monotonic() < deadline, got
        time.sleep(0.2)


@pytest.fixture(scope="module")
def gateway(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("message-batches")
    # Ten lines at a time: a batch of 300 slow lines is still running whenever a cancel comes,
    # however slow the machine (all 300 at once could all be started, then end, before it).
    config = gateway_config(
        emulator.url,
        ledger={"url": f"sqlite:///{tmp / 'ledger.db'}"},
        batches={"lines_in_flight": 10},
    )
    with running(start_gateway(tmp, config)) as server:
        yield server


def test_a_message_batch_answers_each_request_as_messages_would(gateway: Server) -> None:
    api = anthropic.Anthropic(base_url=gateway.url, api_key=ALICE_KEY, max_retries=0)
    bad = {"model": "gemma-2b", "messages": [{"role": "user", "content": "no max_tokens"}]}
    made = api.messages.batches.create(
        requests=[
            *({"custom_id": f"ok-{i}", "params": _params(f"[[emulate:reply hi {i}]]")}
              for i in range(5)),
            {"custom_id": "bad", "params": bad},
            {"custom_id": "unknown", "params": _params("x", model="no-such-model")},
        ]  # type: ignore[list-item]
    )  # fmt: skip
    MessageBatch.model_validate(made.model_dump())  # the SDK's own types, strictly
    assert made.type == "message_batch" and made.processing_status == "in_progress"
    assert made.id.startswith("msgbatch_") and made.results_url is None
    done = _wait_ended(api, made.id)
    MessageBatch.model_validate(done.model_dump())
    counts = done.request_counts
    assert (counts.succeeded, counts.errored, counts.processing) == (5, 2, 0)
    assert done.ended_at is not None and done.results_url is not None
    results = {r.custom_id: r for r in api.messages.batches.results(made.id)}
    assert sorted(results) == sorted([*(f"ok-{i}" for i in range(5)), "bad", "unknown"])
    for r in results.values():
        MessageBatchIndividualResponse.model_validate(r.model_dump())
    ok = results["ok-3"].result
    assert ok.type == "succeeded"
    live = api.messages.create(**_params("[[emulate:reply hi 3]]"))  # type: ignore[call-overload]
    assert ok.message.content == live.content and ok.message.usage == live.usage
    assert set(ok.message.model_dump()) == set(live.model_dump())
    for custom_id, sent in (("bad", bad), ("unknown", _params("x", model="no-such-model"))):
        answer = httpx.post(
            gateway.url + "/v1/messages", json=sent,
            headers={"x-api-key": ALICE_KEY, "anthropic-version": "2023-06-01"},
        )  # fmt: skip
        errored = results[custom_id].result
        assert errored.type == "errored"
        assert errored.error.error.model_dump() == answer.json()["error"]


def test_list_cancel_delete_and_ownership(gateway: Server) -> None:
    alice = anthropic.Anthropic(base_url=gateway.url, api_key=ALICE_KEY, max_retries=0)
    bob = anthropic.Anthropic(base_url=gateway.url, api_key=BOB_KEY, max_retries=0)
    slow = _params("[[emulate:words 60]] [[emulate:wps 10]]")
    made = alice.messages.batches.create(
        requests=[{"custom_id": f"s{i}", "params": slow} for i in range(300)]  # type: ignore[misc]
    )
    with pytest.raises(anthropic.NotFoundError):
        bob.messages.batches.retrieve(made.id)
    assert made.id not in [b.id for b in bob.messages.batches.list()]
    assert made.id in [b.id for b in alice.messages.batches.list(limit=5)]
    with pytest.raises(anthropic.BadRequestError):  # not ended yet
        alice.messages.batches.delete(made.id)
    time.sleep(0.5)
    cancelling = alice.messages.batches.cancel(made.id)
    MessageBatch.model_validate(cancelling.model_dump())
    assert cancelling.processing_status in ("canceling", "ended")
    assert cancelling.cancel_initiated_at is not None
    done = _wait_ended(alice, made.id)
    counts = done.request_counts
    assert counts.canceled > 0 and counts.succeeded + counts.canceled + counts.errored == 300
    kinds = {r.result.type for r in alice.messages.batches.results(made.id)}
    assert "canceled" in kinds
    deleted = alice.messages.batches.delete(made.id)
    assert (deleted.id, deleted.type) == (made.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        alice.messages.batches.retrieve(made.id)


def test_bad_creates_are_refused_in_anthropics_shape(gateway: Server, tmp_path: Path) -> None:
    api = anthropic.Anthropic(base_url=gateway.url, api_key=ALICE_KEY, max_retries=0)
    for requests in (
        [],
        [{"custom_id": "has space", "params": _params("x")}],
        [{"custom_id": "a", "params": _params("x")}, {"custom_id": "a", "params": _params("y")}],
    ):
        with pytest.raises(anthropic.BadRequestError) as info:
            api.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        assert info.value.body["type"] == "error"  # type: ignore[index]
        assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]

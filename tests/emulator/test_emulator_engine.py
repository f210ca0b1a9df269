"""The engine's time evolution, driven by an injected clock (no sleeping)."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import EmulatorSettings
from gateway.emulator.directives import Directives, parse_directives, pseudo_text, reply_for
from gateway.emulator.engine import (
    FINISHED,
    QUEUED,
    RUNNING,
    EmulatorConfig,
    Engine,
    build_script,
    decorate_ansi,
    token_digest,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
WALL = 1_700_000_000.0
TOKEN = "tok-a"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_engine(clock: Clock, **config: Any) -> Engine:
    settings = {"queue_seconds": 1.0, "words_per_second": 10.0, **config}
    return Engine(EmulatorConfig(**settings), clock=clock, wall_clock=lambda: WALL)


def state(engine: Engine, job_id: str, token: str = TOKEN) -> dict[str, Any] | None:
    return engine.status(token, [job_id]).get(job_id)


def log_of(engine: Engine, job_id: str) -> str:
    job = state(engine, job_id)
    assert job is not None
    text = job["states"]["default"]["log"]
    assert isinstance(text, str)
    return text


def status_of(engine: Engine, job_id: str) -> tuple[str, str]:
    job = state(engine, job_id)
    assert job is not None
    return job["states"]["default"]["status"], job["vmStatus"]


def test_config_defaults_and_validation() -> None:
    config = EmulatorConfig()
    assert config.tokens is None
    assert (config.queue_seconds, config.words_per_second) == (0.5, 20.0)
    assert (config.finished_status, config.default_words, config.retention_seconds) == (
        "completed",
        24,
        600.0,
    )
    for bad in (
        {"words_per_second": 0},
        {"queue_seconds": -1},
        {"finished_status": ""},
        {"tokens": frozenset({""})},
        {"default_words": -1},
    ):
        with pytest.raises(ValueError):
            EmulatorConfig(**bad)


def test_config_from_settings_and_secret_free_repr() -> None:
    settings = EmulatorSettings(token="secret-token", queue_seconds=0.1, words_per_second=50)
    config = EmulatorConfig.from_settings(settings)
    assert config.tokens == frozenset({"secret-token"})
    assert (config.queue_seconds, config.words_per_second) == (0.1, 50)
    assert "secret-token" not in repr(config)


def test_life_of_a_job(clock: Clock) -> None:
    engine = make_engine(clock)
    prompt = "Tell me something"
    reply = reply_for(prompt)
    words = reply.split(" ")
    (job_id,) = engine.submit(TOKEN, [prompt], "gemma:2b")
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)

    job = state(engine, job_id)
    assert job == {
        "vmStatus": "pending",
        "states": {
            "default": {
                "status": "queued",
                "outputFiles": [],
                "log": "",
                "commandLine": json.dumps({"inputs": [prompt]}, separators=(",", ":")),
                "app": "gridrepublic:text-inference",
            }
        },
        "created": "2023-11-14T22:13:20+00:00",
        "copy": 0,
        "tag": "gemma:2b",
        "runtime": 0,
    }
    clock.now = 1000.0 + 0.99
    assert status_of(engine, job_id) == ("queued", "pending")
    clock.now = 1000.0 + 1.0  # queue over: word 0 enters at once
    assert status_of(engine, job_id) == ("running", "running")
    assert log_of(engine, job_id) == words[0]
    clock.now += 0.55  # words 0..5 at 0.0, 0.1, ..., 0.5 after start
    assert log_of(engine, job_id) == " ".join(words[:6])
    clock.now += 1.0
    job = state(engine, job_id)
    assert job is not None and job["runtime"] == 1
    clock.now = 1000.0 + 1.0 + 2.4 - 0.01  # just before the end (24 words at 10/s)
    assert status_of(engine, job_id) == ("running", "running")
    assert log_of(engine, job_id) == reply
    clock.now += 0.02
    assert status_of(engine, job_id) == ("completed", "stopped")
    assert log_of(engine, job_id) == reply
    clock.now += 100
    job = state(engine, job_id)
    assert job is not None and job["runtime"] == 2


def test_created_is_iso8601(clock: Clock) -> None:
    engine = make_engine(clock)
    (job_id,) = engine.submit(TOKEN, ["x"], "m")
    job = state(engine, job_id)
    assert job is not None
    assert datetime.fromisoformat(job["created"]).timestamp() == WALL


def test_log_keeps_original_spacing(clock: Clock) -> None:
    engine = make_engine(clock, queue_seconds=0.0, words_per_second=1.0)
    (job_id,) = engine.submit(TOKEN, ["[[emulate:reply one  two\n\nthree\tfour\n]]"], "m")
    seen = []
    for _ in range(5):
        seen.append(log_of(engine, job_id))
        clock.now += 1.0
    assert seen == [
        "one",
        "one  two",
        "one  two\n\nthree",
        "one  two\n\nthree\tfour",
        "one  two\n\nthree\tfour\n",
    ]
    assert status_of(engine, job_id)[0] == "completed"


def test_several_inputs_make_several_jobs_in_order(clock: Clock) -> None:
    engine = make_engine(clock, queue_seconds=0.0)
    ids = engine.submit(TOKEN, ["[[emulate:reply A]]", "[[emulate:reply B]]"], "m")
    assert len(set(ids)) == 2
    clock.now += 10
    assert [log_of(engine, job_id) for job_id in ids] == ["A", "B"]
    assert engine.stats.jobs_created == 2


def test_unknown_and_foreign_jobs_are_absent(clock: Clock) -> None:
    engine = make_engine(clock)
    (mine,) = engine.submit(TOKEN, ["x"], "m")
    (theirs,) = engine.submit("tok-b", ["y"], "m")
    answer = engine.status(TOKEN, [mine, theirs, "0" * 32])
    assert list(answer) == [mine]
    assert list(engine.status("tok-b", [mine, theirs])) == [theirs]


def test_authorized(clock: Clock) -> None:
    assert make_engine(clock).authorized("anything")
    assert not make_engine(clock).authorized("")
    engine = make_engine(clock, tokens=frozenset({"a", "b"}))
    assert engine.authorized("a") and not engine.authorized("c")


def test_per_job_word_rate_and_queue(clock: Clock) -> None:
    engine = make_engine(clock)
    (job_id,) = engine.submit(
        TOKEN, ["[[emulate:queue 0]][[emulate:wps 2]][[emulate:words 4]]"], "m"
    )
    assert status_of(engine, job_id) == ("running", "running")
    clock.now += 1.99
    assert len(log_of(engine, job_id).split()) == 4
    assert status_of(engine, job_id)[0] == "running"
    clock.now += 0.01
    assert status_of(engine, job_id)[0] == "completed"


def test_finished_status_from_config_and_directive(clock: Clock) -> None:
    engine = make_engine(clock, queue_seconds=0.0, finished_status="done")
    plain, named = engine.submit(
        TOKEN, ["[[emulate:words 1]]", "[[emulate:words 1]][[emulate:status Wobbly]]"], "m"
    )
    clock.now += 5
    assert status_of(engine, plain) == ("done", "stopped")
    assert status_of(engine, named) == ("Wobbly", "stopped")


def test_fail_after_a_few_words(clock: Clock) -> None:
    engine = make_engine(clock, queue_seconds=0.0, words_per_second=1.0)
    prompt = "[[emulate:fail GPU fell off]]"
    reply = reply_for(prompt)
    with_message, without = engine.submit(TOKEN, [prompt, "[[emulate:fail]]"], "m")
    clock.now += 2.5
    assert status_of(engine, with_message) == ("running", "running")
    assert log_of(engine, with_message) == " ".join(reply.split()[:3])
    clock.now += 0.5
    assert status_of(engine, with_message) == ("failed", "failed")
    assert log_of(engine, with_message) == " ".join(reply.split()[:3]) + "\nGPU fell off"
    assert log_of(engine, without) == " ".join(reply_for("[[emulate:fail]]").split()[:3])
    clock.now += 100
    assert status_of(engine, with_message) == ("failed", "failed")


def test_hang_runs_forever(clock: Clock) -> None:
    engine = make_engine(clock, queue_seconds=0.0, words_per_second=1.0)
    (job_id,) = engine.submit(TOKEN, ["[[emulate:hang]]"], "m")
    clock.now += 3
    frozen = log_of(engine, job_id)
    assert len(frozen.split()) == 3
    clock.now += 500
    assert log_of(engine, job_id) == frozen
    assert status_of(engine, job_id) == ("running", "running")
    job = state(engine, job_id)
    assert job is not None and job["runtime"] == 503


def test_rewrite_replaces_the_log_half_way(clock: Clock) -> None:
    engine = make_engine(clock, queue_seconds=0.0, words_per_second=1.0)
    prompt = "[[emulate:rewrite]][[emulate:words 8]]"
    reply = reply_for(prompt)
    (job_id,) = engine.submit(TOKEN, [prompt], "m")
    logs = []
    for _ in range(10):
        logs.append(log_of(engine, job_id))
        clock.now += 1
    rewritten = [i for i in range(1, len(logs)) if not logs[i].startswith(logs[i - 1])]
    assert rewritten == [4]
    assert logs[4] == " ".join(reply.split()[:5])
    assert all(logs[i + 1].startswith(logs[i]) for i in range(4, 9))
    assert logs[-1] == reply


def test_shrink_loses_words_then_regrows(clock: Clock) -> None:
    engine = make_engine(clock, queue_seconds=0.0, words_per_second=1.0)
    prompt = "[[emulate:shrink]][[emulate:words 10]]"
    reply = reply_for(prompt)
    (job_id,) = engine.submit(TOKEN, [prompt], "m")
    counts = []
    for _ in range(18):
        counts.append(len(log_of(engine, job_id).split()))
        clock.now += 1
    assert counts == [1, 2, 3, 4, 5, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 10]
    assert log_of(engine, job_id) == reply
    assert status_of(engine, job_id)[0] == "completed"


def test_ansi_codes_around_words(clock: Clock) -> None:
    engine = make_engine(clock, queue_seconds=0.0)
    prompt = "[[emulate:ansi]]"
    (job_id,) = engine.submit(TOKEN, [prompt], "m")
    clock.now += 60
    log = log_of(engine, job_id)
    assert "\x1b[32m" in log and "\x1b[0m" in log
    assert ANSI.sub("", log) == reply_for(prompt)
    assert decorate_ansi("") == ""


def test_vanish_after_queue(clock: Clock) -> None:
    engine = make_engine(clock)
    (job_id,) = engine.submit(TOKEN, ["[[emulate:vanish]]"], "m")
    assert status_of(engine, job_id) == ("queued", "pending")
    clock.now += 1
    assert engine.status(TOKEN, [job_id]) == {}


def test_json_invalid_first_counts_per_directive_text(clock: Clock) -> None:
    engine = make_engine(clock, queue_seconds=0.0)
    prompt = 'User: give JSON [[emulate:json {"ok": true} invalid_first=2]]'
    other = 'Another conversation [[emulate:json {"ok": true} invalid_first=2]]'
    ids = engine.submit(TOKEN, [prompt, other], "m") + engine.submit(TOKEN, [prompt], "m")
    clock.now += 60
    logs = [log_of(engine, job_id) for job_id in ids]
    for broken in logs[:2]:
        with pytest.raises(json.JSONDecodeError):
            json.loads(broken)
    assert json.loads(logs[2]) == {"ok": True}
    fresh = make_engine(clock, queue_seconds=0.0)
    (first,) = fresh.submit(TOKEN, [prompt], "m")
    clock.now += 60
    with pytest.raises(json.JSONDecodeError):
        json.loads(log_of(fresh, first))


def test_garbage_collection_after_retention(clock: Clock) -> None:
    engine = make_engine(clock, queue_seconds=0.0, retention_seconds=10.0, max_job_seconds=100.0)
    done, hung = engine.submit(TOKEN, ["[[emulate:words 10]]", "[[emulate:hang]]"], "m")
    clock.now += 1.0 + 10.0 - 0.01  # ends at 1.0, retained 10 s
    assert set(engine.status(TOKEN, [done, hung])) == {done, hung}
    clock.now += 0.01
    assert set(engine.status(TOKEN, [done, hung])) == {hung}
    assert engine.timeline(done) is None
    clock.now = 1000.0 + 110.0
    assert engine.status(TOKEN, [hung]) == {}
    assert len(engine) == 0


def test_timeline_is_exact(clock: Clock) -> None:
    engine = make_engine(clock, queue_seconds=2.0, words_per_second=4.0)
    prompt = "[[emulate:words 5]]"
    (job_id,) = engine.submit(TOKEN, [prompt], "m")
    timeline = engine.timeline(job_id)
    assert timeline is not None
    assert timeline["id"] == job_id and timeline["prompt"] == prompt
    assert timeline["started"] == WALL + 2.0 and timeline["ended"] == WALL + 2.0 + 5 / 4
    assert timeline["words"] == [{"index": i, "at": WALL + 2.0 + i / 4} for i in range(5)]
    assert engine.timeline("nope") is None


def test_timeline_of_a_hanging_job_has_no_end(clock: Clock) -> None:
    engine = make_engine(clock)
    (job_id,) = engine.submit(TOKEN, ["[[emulate:hang]]"], "m")
    timeline = engine.timeline(job_id)
    assert timeline is not None and timeline["ended"] is None and len(timeline["words"]) == 3


def test_many_jobs_in_one_status_call(clock: Clock) -> None:
    engine = make_engine(clock, queue_seconds=0.0)
    ids = engine.submit(TOKEN, [f"prompt {i}" for i in range(1000)], "m")
    clock.now += 0.35
    answer = engine.status(TOKEN, ids)
    assert list(answer) == ids
    assert all(len(job["states"]["default"]["log"].split()) == 4 for job in answer.values())


def test_stats_count_tokens_by_hash_only() -> None:
    engine = Engine()
    engine.stats.count_request("status", "secret-a")
    engine.stats.count_request("status", "secret-a")
    engine.stats.count_request("submit", "secret-b")
    engine.stats.count_request("submit", None)
    engine.stats.count_status_ids(3)
    engine.stats.count_status_ids(7)
    snapshot = engine.snapshot()
    assert "secret" not in json.dumps(snapshot)
    assert snapshot["status_requests_by_token"] == {token_digest("secret-a")[:12]: 2}
    assert snapshot["tokens_seen"] == 2
    assert (snapshot["submit_requests"], snapshot["status_requests"]) == (2, 2)
    assert (snapshot["status_ids_total"], snapshot["max_ids_per_status"]) == (10, 7)
    engine.stats.reset()
    assert engine.snapshot()["status_requests"] == 0


@given(
    reply=st.text(alphabet=st.sampled_from("ab \n"), max_size=40),
    ansi=st.booleans(),
    shrink=st.booleans(),
    offsets=st.lists(st.floats(min_value=0, max_value=100), max_size=20),
)
def test_script_converges_to_the_reply(
    reply: str, ansi: bool, shrink: bool, offsets: list[float]
) -> None:
    script = build_script(reply, Directives(ansi=ansi, shrink=shrink), queue=0.5, wps=3.0)
    for offset in offsets:
        log, phase = script.at(offset)
        assert reply.startswith(ANSI.sub("", log))
        assert phase in (QUEUED, RUNNING, FINISHED)
    log, phase = script.at(script.end)
    assert phase == FINISHED and ANSI.sub("", log) == reply
    assert math.isfinite(script.end)
    assert len(script.word_offsets()) == len(reply.split())


def test_default_reply_uses_configured_word_count(clock: Clock) -> None:
    engine = make_engine(clock, queue_seconds=0.0, default_words=5)
    (job_id,) = engine.submit(TOKEN, ["hi"], "m")
    clock.now += 60
    assert log_of(engine, job_id) == pseudo_text("hi", 5)
    assert parse_directives("hi") == Directives()


def test_each_of_n_choices_gets_its_own_text() -> None:
    """One submission with the same prompt n times is n choices: n different default texts."""
    engine = Engine(EmulatorConfig(queue_seconds=0))

    def finals(ids: list[str]) -> list[str]:
        return [engine._jobs[i].script.texts[engine._jobs[i].script.final] for i in ids]

    texts = finals(engine.submit(TOKEN, ["same prompt"] * 3 + ["other"], "gemma:2b"))
    assert texts == [reply_for("same prompt", variant=v) for v in range(3)] + [reply_for("other")]
    assert len(set(texts)) == 4
    assert texts[0] == reply_for("same prompt")  # the first is the prompt's usual text
    directed = finals(engine.submit(TOKEN, ["[[emulate:reply Hi.]]"] * 2, "gemma:2b"))
    assert directed == ["Hi.", "Hi."]  # a directive's reply is what it says, for every choice

"""The benchmark's own arithmetic and parsing: wrong here means wrong figures in the table."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import resource
from pathlib import Path

import pytest

from bench import scale, servers
from bench.loadgen import (
    Connection,
    Record,
    Spec,
    SSEReader,
    count_words,
    parse_head,
    parse_streams,
)
from bench.profile import tally
from bench.report import Row, advantage, format_table, id_chunks, percentile
from bench.scenarios import Observation, coalescing_bound, word_delays
from gateway.config import Settings


def test_percentile_interpolates_and_handles_edges() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))


def test_id_chunks_follow_the_url_budget() -> None:
    # 32-char ids plus commas: 241 fit in 7972 characters, so 500 need 3 requests
    assert id_chunks(241, 32, 7972) == 1
    assert id_chunks(242, 32, 7972) == 2
    assert id_chunks(500, 32, 7972) == 3
    assert id_chunks(0, 32, 7972) == 0
    assert coalescing_bound(500, 2, 22) == 4


def test_advantage_is_oriented_by_what_is_better() -> None:
    assert advantage(2.0, 10.0, higher_is_better=False) == 5.0
    assert advantage(300.0, 100.0, higher_is_better=True) == 3.0
    assert advantage(None, 1.0, higher_is_better=True) is None
    assert advantage(0.0, 1.0, higher_is_better=False) is None


def test_table_lines_up() -> None:
    rows = [Row("a", "1", "2", "2x", "t", True), Row("long name", "", "", "", "", None)]
    table = format_table(rows)
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert "PASS" in lines[2] and lines[3].rstrip(" |").endswith("-")


def test_words_are_counted_once_across_deltas() -> None:
    assert count_words(False, "Hello big") == (2, True)
    assert count_words(True, "ger world ") == (1, False)  # "ger" continues "big"
    assert count_words(False, " two words") == (2, True)
    assert count_words(True, "") == (0, True)


def _frame(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def test_sse_reader_stamps_words_and_finds_the_job_id() -> None:
    record = Record(t0=0.0)
    reader = SSEReader(record)
    fields = {"job_id": "j1"}
    role = {"choices": [{"delta": {"role": "assistant", "provider_specific_fields": fields}}]}
    first = {"choices": [{"delta": {"content": "one two"}}]}
    second = {"choices": [{"delta": {"content": " three"}}]}
    data = _frame(role) + b": ping\n\n" + _frame(first) + _frame(second) + b"data: [DONE]\n\n"
    reader.feed(data[:30], now=1.0)  # frames split anywhere
    reader.feed(data[30:], now=2.0)
    assert record.job_id == "j1"
    assert record.words == [2.0, 2.0, 2.0]
    assert reader.done and record.error is None


def test_sse_reader_keeps_an_error_event() -> None:
    record = Record(t0=0.0)
    SSEReader(record).feed(_frame({"error": {"message": "boom"}}), now=1.0)
    assert record.error == "boom"


def test_parse_head() -> None:
    head = parse_head(b"HTTP/1.1 200 OK\r\nX-Job-Id: abc\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert head.status == 200 and head.chunked and head.keep_alive
    assert head.headers["x-job-id"] == "abc"


async def test_connection_reads_chunked_bodies_and_reuses_the_socket() -> None:
    requests = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            requests += 1
            writer.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = Connection("127.0.0.1", port)
    try:
        for _ in range(2):
            head = await conn.request("POST", "/x", b"", b"{}")
            assert b"".join([p async for p in conn.body(head)]) == b"hello world"
    finally:
        conn.close()
        server.close()
        await server.wait_closed()
    assert requests == 2


def test_word_delays_use_only_words_inside_the_window() -> None:
    seen = Observation(start=10.0, end=20.0)
    ok = {"job_id": "a", "words": [9.5, 10.5, 11.0], "status": 200, "error": None, "t_end": 11.0}
    short = {"job_id": "b", "words": [12.0], "status": 200, "error": None, "t_end": 12.0}
    timelines = {"a": [9.0, 10.25, 10.5], "b": [11.5, 11.9]}
    delays, mismatched = word_delays([ok, short], timelines, seen)
    assert delays == pytest.approx([0.25, 0.5, 0.5])
    assert mismatched == 1


def test_profile_tally_counts_own_and_inclusive_samples() -> None:
    rows = [
        "process 1:x;main (a.py:1);work (b.py:2);hot (c.py:3) 7",
        "process 1:x;main (a.py:1);work (b.py:4) 3",
    ]
    own, total, samples = tally(rows)
    assert samples == 10
    assert own["hot (c.py)"] == 7 and own["work (b.py)"] == 3
    assert total["work (b.py)"] == 10 and total["main (a.py)"] == 10


def test_streams_are_parsed_after_the_run_with_their_arrival_times() -> None:
    complete, cut = Record(t0=0.0), Record(t0=0.0)
    text = _frame({"choices": [{"delta": {"content": "a b"}}]})
    parse_streams([(complete, [(1.0, text), (2.0, b"data: [DONE]\n\n")]), (cut, [(1.5, text)])])
    assert complete.words == [1.0, 1.0] and complete.error is None
    assert cut.words == [1.5, 1.5] and cut.error == "stream ended without [DONE]"


def test_set_overrides_reach_the_generated_gateway_config() -> None:
    overrides = servers.parse_overrides(
        ["server.gc_threshold=null", "server.gc_freeze=false", "upstream.status_max_ids=100"]
    )
    settings = servers.apply_overrides(
        servers.gateway_settings("http://up", "sk-bench-key", 0.25, 1, Path("u.db")), overrides
    )
    assert settings["server"] == {
        "workers": 1,
        "graceful_shutdown_seconds": 2,
        "gc_threshold": None,
        "gc_freeze": False,
    }
    assert settings["upstream"]["status_max_ids"] == 100
    assert settings["upstream"]["poll_interval"] == 0.25
    Settings.model_validate(settings)  # still a config the gateway accepts
    with pytest.raises(SystemExit, match="FIELD=YAML"):
        servers.parse_overrides(["server.gc_freeze"])


def test_load_generator_spreads_clients_over_replicas() -> None:
    fields = {"host": "h", "api_key": "k", "model": "m", "prompt": "p"}
    spec = Spec(kind="streams", port=1, concurrency=6, start_at=0, stop_at=1, **fields)
    assert [spec.port_of(i) for i in range(3)] == [1, 1, 1]
    spec.ports = [7, 8, 9]
    assert [spec.port_of(i) for i in range(5)] == [7, 8, 9, 7, 8]


def test_replicas_are_measured_as_one_server(monkeypatch: pytest.MonkeyPatch) -> None:
    class Member:
        def __init__(self, port: int, usage: servers.Usage) -> None:
            self.port, self.url, self._usage = port, f"http://127.0.0.1:{port}", usage

        def usage(self) -> servers.Usage:
            return self._usage

    members = [Member(1, servers.Usage(1.0, 100, 1)), Member(2, servers.Usage(2.5, 300, 2))]
    replicas = servers.Replicas(members)  # type: ignore[arg-type]
    assert replicas.usage() == servers.Usage(3.5, 400, 3)
    assert replicas.ports == [1, 2] and replicas.port == 1
    assert replicas.urls == ["http://127.0.0.1:1", "http://127.0.0.1:2"]


def test_scale_rows_and_estimate() -> None:
    rows = scale.setups([1, 4], 3, redis=True, alone=True)
    assert [r.label for r in rows] == [
        "1 worker, no Redis",
        "1 worker, Redis",
        "4 workers, no Redis",
        "4 workers, Redis",
        "3 replicas, no Redis",
        "3 replicas, Redis",
    ]
    assert len({r.name for r in rows}) == len(rows)
    assert [r.label for r in scale.setups([2], 0, redis=False, alone=True)] == [
        "2 workers, no Redis"
    ]
    one = scale.setups([1], 0, redis=False, alone=True)
    run = scale.OVERHEAD + 2000 * scale.OVERHEAD_PER_STREAM + scale.ramp_for(2000)
    run += scale.SETTLE + 10 + 3
    assert scale.estimate([2000], one, 10, 3) == pytest.approx(2 * run)


def test_scale_row_divides_memory_by_thousands_of_streams() -> None:
    floor = {"delay_ms": {"p50": 100.0, "p99": 200.0}}
    result = {
        "streams_in_window": 500,
        "delay_ms": {"p50": 110.0, "p99": 230.0},
        "concurrency": 2000,
        "rss_max_mb": 600.0,
        "idle_rss_mb": 200.0,
        "idle_processes": 4,
        "status_requests_per_tick": 20.0,
        "submits_in_window": 250,
        "server_cpu_seconds": 1.0,
        "window_seconds": 10.0,
        "server_processes": 5,
        "loadgen_busiest_share": 0.5,
        "errors_total": 0,
    }
    fields = scale.row("x", result, floor, 4).split()
    # status/tick, subm/compl, +p50, +p99, CPU ms/c, compl/s, ...
    # ... procs, MB total, MB/1k, idle per worker, +MB/1k marginal, load, errors
    expected = "20.00 0.500 +10.0 +30.0 2.00 50 5 600 300 50 200 0.50 0"
    assert fields[1:] == expected.split()


def test_lease_takeovers_are_counted_over_every_process_in_the_window(tmp_path: Path) -> None:
    def line(second: int, message: str = "shared polling: this process polls account x") -> str:
        return json.dumps({"time": f"2026-12-07T04:34:{second:02d}.500+00:00", "message": message})

    start = dt.datetime(2026, 12, 7, 4, 34, 10, tzinfo=dt.UTC).timestamp()
    (tmp_path / "2000-r3-redis-r0-gateway.log").write_text(f"{line(11)}\n{line(12)}\n")
    (tmp_path / "2000-r3-redis-r1-gateway.log").write_text(
        f"{line(13, 'other')}\n{line(14)}\n{line(25)}\nnot json\n"  # 25: after the window
    )
    (tmp_path / "2000-w3-redis-gateway.log").write_text(line(11))  # another run
    assert scale.lease_takeovers(tmp_path, "2000-r3-redis", start, start + 10) == 3


def test_the_open_file_limit_is_raised_for_the_streams() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(512, hard), hard))
        if hard == resource.RLIM_INFINITY or hard >= 3000:
            assert scale.open_files_for(1000) == 2024
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 2024
        if hard != resource.RLIM_INFINITY:
            with pytest.raises(SystemExit, match="hard limit"):
                scale.open_files_for(hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_litellm_comes_from_the_venv_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(servers.LITELLM_VENV_ENV, str(tmp_path))
    assert servers.litellm_command() is None  # named, but not installed there
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "litellm").touch()
    assert servers.litellm_command() == str(tmp_path / "bin" / "litellm")
    assert servers.litellm_command(tmp_path / "other") is None

"""Workers of one server share their live views through files (gateway/ops/live_share.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.ops.live_share import LiveShare, merge_accounts, share_directory
from gateway.ops.recent import LiveView


def _view(jobs: int, account: str = "alice", circuit: str = "closed") -> dict[str, Any]:
    return {
        "accounts": [
            {
                "account": account,
                "jobs_in_flight": jobs,
                "queued": 1,
                "max_jobs": 10,
                "status_requests_per_tick": 1,
                "circuit": circuit,
            }
        ],
        "samples": [[float(10 * (jobs + 1)), True]],
        "failures": [],
        "jobs": [{"job_id": f"{jobs:032x}", "state": "queued"}] * jobs,
    }


async def _until(check: Any, limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_each_worker_reads_the_others_views(tmp_path: Path) -> None:
    one = LiveShare(tmp_path, lambda: _view(1), interval=0.02, worker=101)
    two = LiveShare(tmp_path, lambda: _view(2), interval=0.02, worker=202)
    async with one, two:
        await _until(lambda: one.others and two.others)
        assert [v["worker"] for v in one.others] == [202]
        assert [v["worker"] for v in two.others] == [101]
        assert len(one.others[0]["jobs"]) == 2
    # A worker that stops takes its file with it.
    assert _files(tmp_path) == []


def _files(directory: Path) -> list[Path]:
    return list(directory.glob("worker-*"))


def _leftovers(directory: Path) -> None:
    """A file a dead worker stopped refreshing a minute ago, and one that is not JSON."""
    dead = directory / "worker-999.json"
    dead.write_text('{"worker": 999, "jobs": []}')
    old = os.path.getmtime(dead) - 60
    os.utime(dead, (old, old))
    (directory / "worker-998.json").write_text("not json")


async def test_a_worker_that_stopped_refreshing_is_left_out(tmp_path: Path) -> None:
    _leftovers(tmp_path)
    share = LiveShare(tmp_path, lambda: _view(0), interval=0.02, worker=1)
    async with share:
        await asyncio.sleep(0.1)
        assert share.others == []


def test_the_answer_merges_every_worker() -> None:
    view = LiveView()
    own = view.answer([], 60)
    assert len(own["workers"]) == 1 and own["jobs"] == []
    others = [{**_view(2), "worker": 7}, {**_view(3, circuit="open"), "worker": 8}]
    answer = view.answer([], 60, others)
    assert [w["worker"] for w in answer["workers"]] == [os.getpid(), 7, 8]
    assert [row["worker"] for row in answer["jobs"]] == [7, 7, 8, 8, 8]
    assert answer["upstream"]["calls_recent"] == 2
    assert answer["upstream"]["latency_ms_p99"] == 40.0
    assert answer["accounts"] == [
        {
            "account": "alice",
            "jobs_in_flight": 5,
            "queued": 2,
            "max_jobs": 10,
            "status_requests_per_tick": 2,
            "circuit": "open",
        }
    ]


def test_accounts_of_different_names_stay_apart() -> None:
    rows = merge_accounts([_view(1, "bob"), _view(1, "alice")])
    assert [r["account"] for r in rows] == ["alice", "bob"]


def test_only_a_multiprocess_dir_turns_sharing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert share_directory() is None
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/tmp/metrics")
    assert share_directory() == Path("/tmp/metrics/live")

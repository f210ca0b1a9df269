"""Group commit and the remembered key usage: the pure parts of the store's cheaper writes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence

import pytest

from gateway.openai.responses.commits import GroupCommit
from gateway.openai.responses.quota import KeyUsage


async def test_a_database_that_is_away_fails_the_gathering_once_not_per_item() -> None:
    calls: list[list[int]] = []

    async def write(items: Sequence[int]) -> None:
        calls.append(list(items))
        if len(calls) > 1:
            raise ConnectionError("the database is away")

    commits: GroupCommit[int] = GroupCommit(write)
    first = asyncio.ensure_future(commits.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(commits.submit(n)) for n in (1, 2, 3)]
    await first
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert calls == [[0], [1, 2, 3]]  # one try for the three, no retry one by one
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_refused_item_is_retried_alone_and_fails_only_its_caller() -> None:
    calls: list[list[str]] = []

    async def write(items: Sequence[str]) -> None:
        calls.append(list(items))
        if "bad" in items:
            raise sqlite3.IntegrityError("UNIQUE constraint failed")

    commits: GroupCommit[str] = GroupCommit(write)
    results = await asyncio.gather(
        *(commits.submit(i) for i in ("a", "bad", "b")), return_exceptions=True
    )
    assert calls == [["a", "bad", "b"], ["a"], ["bad"], ["b"]]
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], sqlite3.IntegrityError)


def test_key_usage_answers_only_while_fresh_and_with_room() -> None:
    usage = KeyUsage(fresh=1.0)
    assert usage.answer("k", 0.0, 10, 100) is None  # never read
    usage.read("k", 0.0, 50)
    usage.stored("k", 20)
    assert usage.answer("k", 0.5, 30, 100) == 70
    assert usage.answer("k", 0.5, 31, 100) is None  # would refuse: ask the database
    assert usage.answer("k", 1.0, 1, 100) is None  # stale
    usage.changed("k")
    assert usage.answer("k", 0.5, 1, 100) is None


@pytest.mark.parametrize("most", [1, 2])
def test_key_usage_forgets_the_stalest_keys_first(most: int) -> None:
    usage = KeyUsage(most=most)
    usage.read("a", 0.0, 1)
    usage.read("b", 0.0, 2)
    usage.read("a", 0.1, 3)  # read again: now the newest
    assert usage.answer("a", 0.2, 0, 10) == 3
    assert (usage.answer("b", 0.2, 0, 10) is None) == (most == 1)

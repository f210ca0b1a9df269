"""Lanes: every job in exactly one status request per tick, the requests spread over the tick."""

from __future__ import annotations

import random

import pytest

from gateway.upstream.lanes import Lanes

TICK = 0.25


def _ids(count: int, start: int = 0) -> list[str]:
    return [f"{i:032x}" for i in range(start, start + count)]


def _check(lanes: Lanes, ids: set[str]) -> None:
    """Each id in one lane, each lane within budget."""
    seen = [job_id for lane in lanes for job_id in lane.ids]
    assert sorted(seen) == sorted(ids)
    for lane in lanes:
        assert lane.length == len(",".join(lane.ids)) <= lanes.url_budget
        assert lanes.max_ids is None or len(lane) <= lanes.max_ids


def test_the_first_lane_is_due_one_tick_after_its_first_job() -> None:
    lanes = Lanes(TICK, url_budget=8000)
    opened = lanes.place("a" * 32, now=10.0)
    assert opened is not None and opened.due == 10.0 + TICK
    assert lanes.place("b" * 32, now=10.1) is None  # joins the open lane
    assert list(lanes) == [opened] and list(opened.ids) == ["a" * 32, "b" * 32]


def test_lanes_open_only_when_the_url_budget_is_full_and_are_filled_evenly() -> None:
    lanes = Lanes(TICK, url_budget=7972)  # 8000 minus the base URL and "/jobs/"
    ids = _ids(500)
    for job_id in ids:
        lanes.place(job_id, now=0.0)
    # 241 ids of 32 characters fit one URL: three lanes are needed, and three there are.
    assert len(lanes) == 3
    _check(lanes, set(ids))
    assert max(len(lane) for lane in lanes) == 241


def test_new_lanes_take_the_middle_of_the_widest_gap_in_the_tick() -> None:
    lanes = Lanes(TICK, url_budget=100, max_ids=1)
    dues = []
    for job_id in _ids(4):
        lane = lanes.place(job_id, now=1.0)
        assert lane is not None
        dues.append(lane.due)
    phases = sorted(round((due - 1.0) % TICK, 6) for due in dues)
    assert phases == [0.0, 0.0625, 0.125, 0.1875]
    assert all(1.0 < due <= 1.0 + TICK for due in dues)


def test_a_lane_the_others_can_absorb_is_merged_into_them() -> None:
    lanes = Lanes(TICK, url_budget=1000, max_ids=10)
    ids = _ids(25)
    for job_id in ids:
        lanes.place(job_id, now=0.0)
    assert len(lanes) == 3
    alive = set(ids)
    for job_id in ids[:14]:  # 11 left: they fit two lanes of 10 at 85% (8 + 8)
        lanes.remove(job_id)
        alive.discard(job_id)
        _check(lanes, alive)
    assert len(lanes) == 2


def test_an_emptied_lane_keeps_its_beat_until_it_is_due_and_still_empty() -> None:
    lanes = Lanes(TICK, url_budget=1000, max_ids=2)
    a, b, c, d = _ids(4)
    for job_id in (a, b, c):
        lanes.place(job_id, now=0.0)
    first, second = list(lanes)
    lanes.remove(c)
    assert c not in lanes and len(lanes) == 2 and not second.ids
    assert lanes.place(d, now=0.1) is None  # the next job joins the emptied lane, same beat
    assert lanes.lane_of(d) is second
    assert not lanes.close_if_empty(second)
    lanes.remove(d)
    assert lanes.close_if_empty(second) and list(lanes) == [first]
    assert not lanes.close_if_empty(first)
    lanes.remove("not there")  # forgetting an unknown job is harmless


@pytest.mark.parametrize(("budget", "max_ids"), [(7972, None), (8000, 100)])
def test_churn_keeps_every_job_in_one_lane_and_the_lane_count_near_the_minimum(
    budget: int, max_ids: int | None
) -> None:
    """With ``max_ids`` the count binds before the URL length (and lanes skip looking for a
    merge while one lane fewer could not hold every id): still merged back to the minimum."""
    rng = random.Random(8)
    lanes = Lanes(TICK, url_budget=budget, max_ids=max_ids)
    alive: set[str] = set()
    serial = 0
    for step in range(20_000):
        target = 500 if step < 15_000 else 100
        if len(alive) < target or (alive and rng.random() < 0.5):
            job_id = f"{serial:032x}"
            serial += 1
            lanes.place(job_id, now=step * 0.001)
            alive.add(job_id)
        if len(alive) > target or rng.random() < 0.5:
            job_id = rng.choice(sorted(alive))
            lanes.remove(job_id)
            alive.discard(job_id)
        if step % 500 == 0:
            _check(lanes, alive)
            per_lane = 7972 // 33 if max_ids is None else max_ids
            needed = -(-len(alive) // per_lane)  # chunks the ids need at the least
            assert sum(1 for lane in lanes if lane.ids) <= needed + 1
            for lane in list(lanes):  # what the lanes' loops do when each is due
                lanes.close_if_empty(lane)
    _check(lanes, alive)
    # 100 ids: the lanes of 500 merged back into one (two of 85 at most by count)
    assert len(lanes) == (1 if max_ids is None else 2)

"""The runner's gates: how many lines of a key's batches one gateway starts at once, bounded
by its account's batch share, its own ``max_concurrent`` and its team's, whatever order the
keys sharing an account start their batches in."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gateway.batches.runner import Runner
from gateway.config import KeySettings
from gateway.config_batches import BatchSettings
from gateway.limits.limiter import TeamLimits
from gateway.limits.state import Quota

SHARE = 8  # the account's batch share of its job slots


def key(name: str, team: str | None = None, most: int | None = None) -> KeySettings:
    return KeySettings(
        name=name, key=f"sk-{name}-0123456789", upstream_token="tok-a", team=team,
        max_concurrent=most,
    )  # fmt: skip


def runtime(teams: dict[str, int | None]) -> Any:
    """Just what ``Runner._gate`` reads of a runtime: the account's slots, the teams."""

    def team_limits(k: KeySettings) -> TeamLimits | None:
        if k.team is None:
            return None
        return TeamLimits(k.team, Quota(max_concurrent=teams[k.team]))

    return SimpleNamespace(
        completions=SimpleNamespace(slots=lambda token: SimpleNamespace(batch_capacity=SHARE)),
        key_service=SimpleNamespace(team_limits=team_limits),
    )


def runner() -> Runner:
    return Runner(None, None, BatchSettings(), {})  # type: ignore[arg-type]


def test_a_teams_max_concurrent_bounds_its_keys_lines() -> None:
    rt, run = runtime({"red": 3}), runner()
    gates = run._gate(rt, key("alice", team="red"))
    assert gates.capacity == 3 and gates.free == 3
    for _ in range(3):
        gates.enter()
    # Another key of the team, on the same account: the team's places are taken.
    other = run._gate(rt, key("carol", team="red"))
    assert other.free == 0
    gates.leave()
    assert other.free == 1


def test_keys_sharing_an_account_keep_their_own_limits_whichever_starts_first() -> None:
    rt = runtime({})
    for order in (("pair", "open"), ("open", "pair")):
        run = runner()
        made = {name: run._gate(rt, key(name, most=2 if name == "pair" else None))
                for name in order}  # fmt: skip
        pair, unlimited = made["pair"], made["open"]
        assert (pair.capacity, unlimited.capacity) == (2, SHARE), order
        for _ in range(2):
            pair.enter()
        assert (pair.free, unlimited.free) == (0, SHARE - 2), order  # the account is shared
        for _ in range(SHARE - 2):
            unlimited.enter()
        assert (pair.free, unlimited.free) == (0, 0), order  # the account's share is full
        unlimited.leave()
        assert (pair.free, unlimited.free) == (0, 1), order  # the pair still has its two

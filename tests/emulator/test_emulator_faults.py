"""Fault descriptions and their queues."""

from __future__ import annotations

import pytest

from gateway.emulator.faults import Fault, FaultError, FaultQueues, parse_faults


def test_parse_each_kind() -> None:
    parsed = parse_faults(
        {
            "submit": [
                {"http": 503},
                {"http": 429, "retry_after": 1},
                {"not_json": True},
                {"success_false": "nope"},
                {"delay": 0.5},
                {"reset": True, "repeat": True},
            ],
            "status": {"missing": True},
        }
    )
    assert parsed["submit"][1] == Fault(http=429, retry_after=1.0)
    assert parsed["submit"][4] == Fault(delay=0.5)
    assert parsed["submit"][5].reset and parsed["submit"][5].repeat
    assert parsed["status"] == [Fault(missing=True)]
    assert parsed["submit"][1].to_dict() == {"http": 429, "retry_after": 1.0}


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"other": []},
        {"submit": ["503"]},
        {"submit": [{}]},
        {"submit": [{"http": 99}]},
        {"submit": [{"http": True}]},
        {"submit": [{"http": 503, "not_json": True}]},
        {"submit": [{"missing": True}]},
        {"submit": [{"retry_after": 1}]},
        {"submit": [{"delay": -1}]},
        {"submit": [{"reset": "yes"}]},
        {"submit": [{"http": 500, "body": 3}]},
        {"status": [{"bogus": 1}]},
    ],
)
def test_invalid_faults_are_rejected(data: object) -> None:
    with pytest.raises(FaultError):
        parse_faults(data)


def test_queues_are_fifo_per_kind_and_repeat_sticks() -> None:
    queues = FaultQueues()
    queues.add("submit", [Fault(http=500), Fault(http=502)])
    queues.add("status", [Fault(missing=True, repeat=True), Fault(http=503)])
    assert queues.take("submit") == Fault(http=500)
    assert queues.take("submit") == Fault(http=502)
    assert queues.take("submit") is None
    for _ in range(3):
        assert queues.take("status") == Fault(missing=True, repeat=True)
    assert queues.pending() == {
        "submit": [],
        "status": [{"missing": True, "repeat": True}, {"http": 503}],
    }
    queues.clear()
    assert queues.take("status") is None

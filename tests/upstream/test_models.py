"""Job-state rules: documented shape, undocumented names, odd data."""

from __future__ import annotations

from gateway.config import DEFAULT_FAILED, DEFAULT_FINISHED
from gateway.upstream.models import JobPhase, StatusRules, parse_job

RULES = StatusRules.of(DEFAULT_FINISHED, DEFAULT_FAILED)


def test_documented_running_job() -> None:
    data = {
        "vmStatus": "running",
        "states": {"default": {"status": "running", "outputFiles": [], "log": "1+1=2."}},
        "runtime": 23,
    }
    snap = parse_job("x", data, RULES)
    assert snap.phase is JobPhase.PENDING
    assert snap.log == "1+1=2."
    assert snap.runtime == 23.0


def test_finished_and_failed_names_case_insensitive() -> None:
    for name in ("Completed", "DONE", "finished"):
        assert parse_job("x", {"states": {"default": {"status": name}}}, RULES).phase is (
            JobPhase.FINISHED
        )
    failed = parse_job("x", {"states": {"default": {"status": "Cancelled"}}}, RULES)
    assert failed.phase is JobPhase.FAILED
    assert failed.error and "cancelled" in failed.error


def test_unknown_names_mean_still_going() -> None:
    for name in ("queued", "pending", "assigned", "weird-new-state", ""):
        assert parse_job("x", {"states": {"default": {"status": name}}}, RULES).phase is (
            JobPhase.PENDING
        )


def test_vm_status_counts_only_without_a_state() -> None:
    assert parse_job("x", {"vmStatus": "completed"}, RULES).phase is JobPhase.FINISHED
    assert parse_job("x", {"vmStatus": "failed"}, RULES).phase is JobPhase.FAILED
    running = {"vmStatus": "completed", "states": {"default": {"status": "running"}}}
    assert parse_job("x", running, RULES).phase is JobPhase.PENDING


def test_configurable_sets() -> None:
    rules = StatusRules.of(["ok-then"], ["boom"])
    assert parse_job("x", {"states": {"default": {"status": "OK-then"}}}, rules).phase is (
        JobPhase.FINISHED
    )
    assert parse_job("x", {"states": {"default": {"status": "completed"}}}, rules).phase is (
        JobPhase.PENDING
    )


def test_garbage_is_tolerated() -> None:
    for data in (None, "str", 3, {"states": "x"}, {"states": {"default": {"log": 5}}}):
        snap = parse_job("x", data, RULES)
        assert snap.phase is JobPhase.PENDING
        assert snap.log == ""

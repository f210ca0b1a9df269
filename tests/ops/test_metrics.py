from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.ops.metrics import (
    STATUS_ID_BUCKETS,
    UPSTREAM_KINDS,
    UPSTREAM_OUTCOMES,
    Metrics,
    multiprocess_enabled,
    prepare_multiprocess_dir,
    render_latest,
)

EXPECTED = {
    "gateway_requests": ("counter", {"route", "model", "key", "status"}),
    "gateway_request_duration_seconds": ("histogram", {"route", "model"}),
    "gateway_time_to_first_token_seconds": ("histogram", {"model"}),
    "gateway_queue_wait_seconds": ("histogram", {"model"}),
    "gateway_upstream_requests": ("counter", {"kind", "outcome"}),
    "gateway_upstream_request_duration_seconds": ("histogram", {"kind"}),
    "gateway_jobs_in_flight": ("gauge", {"account"}),
    "gateway_status_request_ids": ("histogram", set()),
    "gateway_rate_limited": ("counter", {"key", "reason"}),
    "gateway_shared_polling_events": ("counter", {"event"}),
    "gateway_tokens": ("counter", {"key", "model", "direction"}),
    "gateway_streams_active": ("gauge", set()),
    "gateway_log_rewrites": ("counter", set()),
    "gateway_limits_degraded": ("gauge", set()),
    "gateway_ledger_dropped": ("counter", set()),
    "gateway_circuit_open": ("gauge", {"account"}),
    "gateway_build_info": ("gauge", {"version"}),
}

SECRET_KEY = "sk-very-secret-key-123"
SECRET_TOKEN = "upstream-token-abcdef"


def families(body: bytes) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def value(family: Metric, sample_name: str, **labels: str) -> float:
    matches = [
        s.value
        for s in family.samples
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert matches, f"no sample {sample_name}{labels}"
    return float(sum(matches))


@pytest.fixture
def metrics() -> Metrics:
    return Metrics.create(CollectorRegistry(), version="9.9.9")


def exercise(m: Metrics) -> None:
    m.observe_request("/v1/chat/completions", "gemma:2b", "alice", 200, 1.5)
    m.observe_request("/v1/chat/completions", "gemma:2b", "alice", 200, 700.0)
    m.observe_request("/v1/chat/completions", "gemma:2b", "bob", 429, 0.01)
    m.observe_ttft("gemma:2b", 3.0)
    m.observe_queue_wait("gemma:2b", 2.0)
    m.observe_upstream("submit", "ok", 0.2)
    m.observe_upstream("status", "timeout", 30.0)
    m.observe_status_ids(7)
    m.observe_status_ids(1)
    m.set_jobs_in_flight("team-a", 3)
    m.count_rate_limited("bob", "rpm")
    m.count_shared_polling("gap", 3)
    m.add_tokens("alice", "gemma:2b", prompt=12, completion=30)
    m.count_log_rewrite()
    m.set_limits_degraded(True)
    m.count_ledger_dropped(2)
    m.set_circuit_open("team-a", True)


def test_not_on_the_global_registry(metrics: Metrics) -> None:
    assert metrics.registry is not REGISTRY
    assert REGISTRY.get_sample_value("gateway_requests_total") is None
    # Two instances side by side: no "Duplicated timeseries" error.
    Metrics.create()
    Metrics.create()


def test_single_process_mode_by_default(metrics: Metrics) -> None:
    assert multiprocess_enabled() is False
    assert metrics.multiprocess is False


def test_every_instrument_is_exported_with_its_labels(metrics: Metrics) -> None:
    exercise(metrics)
    body, content_type = render_latest(metrics)
    assert content_type.startswith("text/plain")
    found = families(body)
    for name, (kind, labels) in EXPECTED.items():
        assert name in found, name
        family = found[name]
        assert family.type == kind, name
        sample_labels: set[str] = set()
        for sample in family.samples:
            sample_labels |= set(sample.labels) - {"le"}
        assert sample_labels == labels, name


def test_helpers_move_the_right_series(metrics: Metrics) -> None:
    exercise(metrics)
    found = families(render_latest(metrics)[0])
    route = "/v1/chat/completions"
    requests = found["gateway_requests"]
    assert value(requests, "gateway_requests_total", key="alice", status="200") == 2
    assert value(requests, "gateway_requests_total", key="bob", status="429") == 1
    duration = found["gateway_request_duration_seconds"]
    assert value(duration, "gateway_request_duration_seconds_count", route=route) == 3
    # 700 s is beyond the last bucket (600 s) and lands in +Inf only.
    assert value(duration, "gateway_request_duration_seconds_bucket", le="600.0") == 2
    assert value(duration, "gateway_request_duration_seconds_bucket", le="+Inf") == 3
    ttft = found["gateway_time_to_first_token_seconds"]
    assert value(ttft, "gateway_time_to_first_token_seconds_sum", model="gemma:2b") == 3.0
    queue = found["gateway_queue_wait_seconds"]
    assert value(queue, "gateway_queue_wait_seconds_count", model="gemma:2b") == 1
    upstream = found["gateway_upstream_requests"]
    total = "gateway_upstream_requests_total"
    assert value(upstream, total, kind="submit", outcome="ok") == 1
    assert value(upstream, total, kind="status", outcome="timeout") == 1
    assert value(upstream, total, kind="status", outcome="ok") == 0
    up_duration = found["gateway_upstream_request_duration_seconds"]
    assert value(up_duration, "gateway_upstream_request_duration_seconds_count", kind="status") == 1
    ids = found["gateway_status_request_ids"]
    assert value(ids, "gateway_status_request_ids_bucket", le="1.0") == 1
    assert value(ids, "gateway_status_request_ids_bucket", le="10.0") == 2
    assert value(ids, "gateway_status_request_ids_sum") == 8
    assert value(found["gateway_jobs_in_flight"], "gateway_jobs_in_flight", account="team-a") == 3
    limited = found["gateway_rate_limited"]
    assert value(limited, "gateway_rate_limited_total", key="bob", reason="rpm") == 1
    tokens = found["gateway_tokens"]
    assert value(tokens, "gateway_tokens_total", key="alice", direction="prompt") == 12
    assert value(tokens, "gateway_tokens_total", key="alice", direction="completion") == 30
    assert value(found["gateway_log_rewrites"], "gateway_log_rewrites_total") == 1
    assert value(found["gateway_limits_degraded"], "gateway_limits_degraded") == 1
    assert value(found["gateway_ledger_dropped"], "gateway_ledger_dropped_total") == 2
    assert value(found["gateway_circuit_open"], "gateway_circuit_open", account="team-a") == 1
    assert value(found["gateway_build_info"], "gateway_build_info", version="9.9.9") == 1

    metrics.set_limits_degraded(False)
    metrics.set_circuit_open("team-a", False)
    found = families(render_latest(metrics)[0])
    assert value(found["gateway_limits_degraded"], "gateway_limits_degraded") == 0
    assert value(found["gateway_circuit_open"], "gateway_circuit_open", account="team-a") == 0


def test_status_id_buckets_are_the_documented_ones() -> None:
    assert STATUS_ID_BUCKETS == (1, 2, 5, 10, 20, 50, 100, 200, 500)


def test_upstream_series_exist_before_any_call(metrics: Metrics) -> None:
    found = families(render_latest(metrics)[0])
    upstream = found["gateway_upstream_requests"]
    for kind in UPSTREAM_KINDS:
        for outcome in UPSTREAM_OUTCOMES:
            assert (
                value(upstream, "gateway_upstream_requests_total", kind=kind, outcome=outcome) == 0
            )


def test_init_accounts_shows_zeroes(metrics: Metrics) -> None:
    metrics.init_accounts(["team-a", "team-b"])
    found = families(render_latest(metrics)[0])
    for account in ("team-a", "team-b"):
        assert (
            value(found["gateway_jobs_in_flight"], "gateway_jobs_in_flight", account=account) == 0
        )
        assert value(found["gateway_circuit_open"], "gateway_circuit_open", account=account) == 0


def test_track_stream(metrics: Metrics) -> None:
    def active() -> float:
        found = families(render_latest(metrics)[0])
        return value(found["gateway_streams_active"], "gateway_streams_active")

    assert active() == 0
    with metrics.track_stream():
        assert active() == 1
        with metrics.track_stream():
            assert active() == 2
    assert active() == 0


def test_no_secret_in_the_exposition(metrics: Metrics) -> None:
    exercise(metrics)
    metrics.observe_request("/v1/completions", "gemma:2b", "alice", 401, 0.1)
    body = render_latest(metrics)[0].decode()
    assert SECRET_KEY not in body
    assert SECRET_TOKEN not in body
    assert "Bearer" not in body


def test_default_registry_carries_process_metrics() -> None:
    found = families(render_latest(Metrics.create())[0])
    assert "process_cpu_seconds" in found or "python_info" in found


def test_prepare_multiprocess_dir_clears_stale_files(tmp_path: Path) -> None:
    target = tmp_path / "prom"
    prepare_multiprocess_dir(target)
    assert target.is_dir()
    (target / "counter_123.db").write_bytes(b"stale")
    (target / "keep.txt").write_text("not ours")
    prepare_multiprocess_dir(target)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]


WORKER = textwrap.dedent(
    """
    import sys
    from gateway.ops.metrics import Metrics
    m = Metrics.create()
    assert m.multiprocess
    m.observe_request("/v1/chat/completions", "gemma:2b", "alice", 200, 1.0)
    m.set_jobs_in_flight("team-a", int(sys.argv[1]))
    m.add_tokens("alice", "gemma:2b", prompt=5, completion=7)
    """
)

SCRAPER = textwrap.dedent(
    """
    import json, subprocess, sys
    from prometheus_client.parser import text_string_to_metric_families
    from gateway.ops.metrics import Metrics, render_latest

    def snapshot(m):
        body, _ = render_latest(m)
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                key = s.name + json.dumps(s.labels, sort_keys=True)
                out[key] = s.value
        return out

    m = Metrics.create()
    m.set_jobs_in_flight("team-a", 1)
    m.observe_request("/v1/chat/completions", "gemma:2b", "alice", 200, 1.0)
    workers = [subprocess.Popen([sys.executable, "-c", sys.argv[1], str(n)]) for n in (2, 4)]
    pids = [w.pid for w in workers]
    assert all(w.wait() == 0 for w in workers)
    before = snapshot(m)
    for pid in pids:
        m.mark_process_dead(pid)
    after = snapshot(m)
    print(json.dumps({"before": before, "after": after}))
    """
)


def test_multiprocess_mode_merges_workers(tmp_path: Path) -> None:
    """Three processes share a PROMETHEUS_MULTIPROC_DIR; the scrape sums them."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", SCRAPER, WORKER],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    before, after = data["before"], data["after"]

    def get(snapshot: dict[str, float], name: str, **labels: str) -> float:
        return snapshot[name + json.dumps(labels, sort_keys=True)]

    req = {"key": "alice", "model": "gemma:2b", "route": "/v1/chat/completions", "status": "200"}
    assert get(before, "gateway_requests_total", **req) == 3
    assert get(after, "gateway_requests_total", **req) == 3  # counters outlive their process
    tokens = {"key": "alice", "model": "gemma:2b", "direction": "completion"}
    assert get(before, "gateway_tokens_total", **tokens) == 14
    # livesum: all three processes until the two workers are marked dead.
    assert get(before, "gateway_jobs_in_flight", account="team-a") == 7
    assert get(after, "gateway_jobs_in_flight", account="team-a") == 1
    assert any(name.startswith("gateway_build_info") for name in after)
    assert any(p.name.endswith(".db") for p in tmp_path.iterdir())

"""Headers read once: the middleware's one pass picks out what the doors read, as plain values."""

from __future__ import annotations

from starlette.requests import Request

from gateway.config import LimitSettings
from gateway.http.middleware import REQUEST_HEADERS, headers_of, scan_headers
from gateway.serving.web import keepalive_interval, trace_headers

RAW = [
    (b"host", b"gateway"),
    (b"authorization", b"Bearer sk-1"),
    (b"cache-control", b"no-cache"),
    (b"cache-control", b"no-store"),  # the first wins, as request.headers.get reads it
    (b"traceparent", b"00-abc-def-01"),
    (b"x-request-id", b"client-id-1"),
    (b"x-stainless-read-timeout", b"6"),
    (b"anthropic-version", b"2023-06-01"),
    (b"user-agent", b"sdk/\xe9"),
]


def test_one_pass_finds_the_id_and_the_headers_doors_read_as_starlette_would() -> None:
    scanned = scan_headers(RAW)
    assert scanned.request_id == "client-id-1"
    assert scanned.duplicate is None
    request = Request({"type": "http", "headers": RAW})
    wanted = {name for name in scanned.headers}
    assert wanted == {
        "authorization",
        "cache-control",
        "traceparent",
        "x-stainless-read-timeout",
        "anthropic-version",
    }
    assert scanned.headers == {name: request.headers[name] for name in wanted}
    assert "user-agent" not in scanned.headers  # only what a door reads


def test_a_duplicated_single_header_is_still_found() -> None:
    scanned = scan_headers([(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")])
    assert scanned.duplicate == b"authorization"
    assert scanned.headers["authorization"] == "Bearer a"


def test_doors_read_the_middleware_values_not_the_raw_list() -> None:
    state = {REQUEST_HEADERS: {"x-stainless-read-timeout": "8", "tracestate": "a=b"}}
    request = Request({"type": "http", "headers": [(b"tracestate", b"raw")], "state": state})
    headers = headers_of(request)
    assert trace_headers(headers) == {"tracestate": "a=b"}
    assert keepalive_interval(headers, LimitSettings(keepalive_interval=15)) == 4.0


def test_without_the_middleware_they_are_read_once_from_the_raw_list() -> None:
    scope = {"type": "http", "headers": RAW}
    request = Request(scope)
    first = headers_of(request)
    assert first["cache-control"] == "no-cache"
    assert headers_of(Request(scope)) is first  # kept in the request's state


def test_a_planners_options_replace_what_http_said() -> None:
    """A background response sets its own keepalive and timeout (it has no client)."""
    from types import SimpleNamespace

    from gateway.config import KeySettings
    from gateway.serving.web import call_of

    limits = LimitSettings(keepalive_interval=15)
    app = SimpleNamespace(
        state=SimpleNamespace(runtime=SimpleNamespace(settings=SimpleNamespace(limits=limits)))
    )
    scope = {"type": "http", "headers": RAW, "app": app, "state": {"request_id": "req_1"}}
    key = KeySettings(name="alice", key="sk-alice-0123456789", upstream_token="t")
    said = call_of(Request(scope), key, "/v1/responses")
    assert (said.keepalive, said.no_cache, said.request_id) == (3.0, True, "req_1")
    assert said.trace_headers == {"traceparent": "00-abc-def-01"}
    chosen = call_of(Request(scope), key, "/v1/responses", keepalive=15.0, timeout=60.0)
    assert (chosen.keepalive, chosen.timeout, chosen.no_cache) == (15.0, 60.0, True)

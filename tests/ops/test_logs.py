from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.config import LoggingSettings
from gateway.ops.logs import (
    REQUEST_FIELDS,
    LoggingSetup,
    configure_logging,
    log_request,
)
from gateway.redaction import SecretRedactor

TOKEN = "upstream-token-abcdef"
KEY = "sk-very-secret-key-123"


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide loggers: put them back after each test."""
    names = ("uvicorn", "uvicorn.error", "uvicorn.asgi", "uvicorn.access", "httpx", "httpcore")
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level) for n in names}
    saved_propagate = {n: logging.getLogger(n).propagate for n in names}
    yield
    root.handlers[:] = saved_root[0]
    root.setLevel(saved_root[1])
    for name, (handlers, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = saved_propagate[name]


def setup(fmt: str = "json", level: str = "info") -> tuple[LoggingSetup, io.StringIO]:
    stream = io.StringIO()
    settings = LoggingSettings.model_validate({"format": fmt, "level": level})
    return configure_logging(settings, stream), stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_have_the_common_fields() -> None:
    _, stream = setup("json")
    logging.getLogger("gateway.test").info("hello %s", "world", extra={"job_ids": ["a", "b"]})
    logging.getLogger("gateway.test").debug("not at info level")
    (entry,) = lines(stream)
    assert entry["message"] == "hello world"
    assert entry["level"] == "info"
    assert entry["logger"] == "gateway.test"
    assert entry["time"].startswith("20") and "T" in entry["time"]
    assert entry["job_ids"] == ["a", "b"]


def test_level_from_settings() -> None:
    _, stream = setup("json", level="debug")
    logging.getLogger("gateway.test").debug("visible")
    assert [e["message"] for e in lines(stream)] == ["visible"]
    _, stream = setup("json", level="error")
    logging.getLogger("gateway.test").warning("hidden")
    logging.getLogger("gateway.test").error("shown")
    assert [e["message"] for e in lines(stream)] == ["shown"]


def test_reconfiguring_replaces_the_handler() -> None:
    first, _ = setup("json")
    second, stream = setup("json")
    ours = [h for h in logging.getLogger().handlers if h in (first.handler, second.handler)]
    assert ours == [second.handler]
    logging.getLogger("gateway.test").info("once")
    assert len(lines(stream)) == 1


def test_log_request_writes_every_field() -> None:
    _, stream = setup("json")
    log_request(
        logging.getLogger("gateway.access"),
        request_id="req-1",
        key="alice",
        model="gemma:2b",
        route="/v1/chat/completions",
        job_ids=["j1", "j2"],
        status=200,
        duration_ms=1234.567,
        ttft_ms=800.0,
        queue_ms=300.25,
        prompt_tokens=12,
        completion_tokens=30,
        outcome="ok",
        stream=True,
    )
    log_request(
        logging.getLogger("gateway.access"),
        request_id="req-2",
        route="/v1/models",
        status=502,
        duration_ms=5.0,
        outcome="upstream_error",
    )
    ok, failed = lines(stream)
    for field in REQUEST_FIELDS:
        assert field in ok and field in failed, field
    assert ok["job_ids"] == ["j1", "j2"]
    assert ok["duration_ms"] == 1234.6
    assert ok["prompt_tokens"] == 12 and ok["completion_tokens"] == 30
    assert ok["stream"] is True
    assert ok["level"] == "info"
    assert failed["level"] == "warning"
    assert failed["key"] is None and failed["ttft_ms"] is None and failed["job_ids"] == []


def test_log_request_refuses_reserved_names() -> None:
    with pytest.raises(ValueError, match="reserved"):
        log_request(
            logging.getLogger("gateway.access"),
            request_id="r",
            route="/x",
            status=200,
            duration_ms=1,
            message="clash",
        )


def test_registered_secrets_and_bearer_values_are_masked() -> None:
    setup_, stream = setup("json")
    setup_.redactor.register_secrets([TOKEN, KEY, None, ""])
    log = logging.getLogger("gateway.test")
    log.info("calling upstream with %s", TOKEN)
    log.info("header Authorization: Bearer abc.def-ghi_jkl=")
    log.info("bearer lowercase-value and more text")
    log.warning("key presented", extra={"presented": KEY, "nested": {"h": [f"Bearer {TOKEN}"]}})
    try:
        raise RuntimeError(f"boom with {KEY}")
    except RuntimeError:
        log.exception("failed")
    text = stream.getvalue()
    assert TOKEN not in text
    assert KEY not in text
    assert "abc.def-ghi_jkl" not in text
    assert "lowercase-value" not in text
    entries = lines(stream)
    assert entries[0]["message"] == "calling upstream with ***"
    assert entries[1]["message"] == "header Authorization: Bearer ***"
    assert entries[2]["message"] == "bearer *** and more text"
    assert entries[3]["presented"] == "***"
    assert entries[3]["nested"] == {"h": ["Bearer ***"]}
    assert "boom with ***" in entries[4]["exception"]
    assert "RuntimeError" in entries[4]["exception"]


def test_secret_containing_another_is_masked_whole() -> None:
    redactor = SecretRedactor()
    redactor.register_secret("abcd")
    redactor.register_secret("abcdefgh")
    assert redactor.redact("x abcdefgh y abcd") == "x *** y ***"


def test_redaction_covers_uvicorn_loggers() -> None:
    setup_, stream = setup("json")
    setup_.redactor.register_secret(TOKEN)
    logging.getLogger("uvicorn.error").info("something about %s", TOKEN)
    (entry,) = lines(stream)
    assert entry["message"] == "something about ***"


def test_text_format_is_readable() -> None:
    setup_, stream = setup("text")
    setup_.redactor.register_secret(KEY)
    log_request(
        logging.getLogger("gateway.access"),
        request_id="req-1",
        key="alice",
        route="/v1/chat/completions",
        status=200,
        duration_ms=12.0,
        job_ids=["j1", "j2"],
    )
    logging.getLogger("gateway.test").info("with %s", KEY, extra={"note": "two words"})
    first, second = stream.getvalue().splitlines()
    assert not first.startswith("{")
    assert "INFO" in first and "gateway.access:" in first
    assert "request_id=req-1" in first and "key=alice" in first and "job_ids=j1,j2" in first
    assert "ttft_ms" not in first  # unknown values are left out of text lines
    assert second.endswith('gateway.test: with *** note="two words"')


def test_auto_format_follows_the_terminal() -> None:
    settings = LoggingSettings.model_validate({"format": "auto"})
    tty = TtyStream()
    configure_logging(settings, tty)
    logging.getLogger("gateway.test").info("hi")
    assert not tty.getvalue().startswith("{")
    pipe = io.StringIO()
    configure_logging(settings, pipe)
    logging.getLogger("gateway.test").info("hi")
    assert json.loads(pipe.getvalue())["message"] == "hi"


def test_uvicorn_access_log_is_quiet() -> None:
    _, stream = setup("json", level="debug")
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET / HTTP/1.1" 200')
    logging.getLogger("uvicorn.error").info(
        "Started %d", 7, extra={"color_message": "Started \x1b[36m%d\x1b[0m"}
    )
    (entry,) = lines(stream)
    assert entry["logger"] == "uvicorn.error"
    assert entry["message"] == "Started 7"
    assert "color_message" not in entry


def test_http_client_request_lines_only_at_debug_level() -> None:
    """httpx logs every upstream call at info: a poll tick must not write a line."""
    _, stream = setup("json", level="info")
    logging.getLogger("httpx").info('HTTP Request: GET http://upstream/jobs/1 "HTTP/1.1 200 OK"')
    logging.getLogger("httpx").warning("something is wrong")
    assert [e["logger"] for e in lines(stream)] == ["httpx"]
    _, stream = setup("json", level="debug")
    logging.getLogger("httpx").info("HTTP Request: GET http://upstream/jobs/1")
    assert [e["logger"] for e in lines(stream)] == ["httpx"]


def test_uvicorn_log_config_keeps_our_handler() -> None:
    """uvicorn applies log_config with dictConfig: our root handler must survive it."""
    import logging.config

    setup_, stream = setup("json")
    logging.config.dictConfig(json.loads(json.dumps(setup_.uvicorn_log_config)))
    assert setup_.handler in logging.getLogger().handlers
    logging.getLogger("uvicorn.error").info("started")
    logging.getLogger("uvicorn.access").info("access line")
    assert [e["message"] for e in lines(stream)] == ["started"]


def test_bad_format_arguments_do_not_raise() -> None:
    setup_, stream = setup("json")
    logging.getLogger().handlers[:] = [setup_.handler]  # pytest's own handler would raise
    logging.getLogger("gateway.test").info("%d apples", "not-a-number")
    (entry,) = lines(stream)
    assert "apples" in entry["message"]

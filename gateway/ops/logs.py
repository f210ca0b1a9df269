"""Logging: JSON lines for machines, plain text for a terminal, secrets masked on the way out.

:func:`configure_logging` installs one handler on the root logger with a
:class:`~gateway.redaction.SecretRedactor` filter, and routes uvicorn's loggers through it.
uvicorn's access log is silenced: the gateway writes its own line per request with
:func:`log_request`, which carries what an access log lacks (key name, model, job ids,
durations, tokens).

uvicorn: pass ``setup.uvicorn_log_config`` as ``log_config`` to ``uvicorn.run`` / ``uvicorn.Config``
(and leave ``log_level`` unset). It only adjusts uvicorn's loggers, so it does not undo this
module's handler. With ``--workers N`` uvicorn starts fresh interpreters, so each worker must call
:func:`configure_logging` again (in the app factory) and register its secrets on the redactor it
gets back.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from gateway.config import LoggingSettings
from gateway.redaction import RECORD_ATTRS, SecretRedactor

_HANDLER_MARK = "_gateway_handler"
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi")
_ACCESS_LOGGER = "uvicorn.access"
#: Libraries that log every upstream HTTP call at info level: one line per poll tick would
#: drown the one line per request. They speak at debug level only.
_CHATTY_LOGGERS = ("httpx", "httpcore")

#: Extras not worth writing: uvicorn's copy of its message with terminal colour codes.
_DROPPED_EXTRAS = frozenset({"color_message"})

#: The fields of the one line per request, in the order they are written.
REQUEST_FIELDS = (
    "request_id",
    "key",
    "model",
    "route",
    "job_ids",
    "status",
    "duration_ms",
    "ttft_ms",
    "queue_ms",
    "prompt_tokens",
    "completion_tokens",
    "outcome",
)


def structured_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record, in the order they were given."""
    return {
        k: v for k, v in vars(record).items() if k not in RECORD_ATTRS and k not in _DROPPED_EXTRAS
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in structured_fields(record).items():
            entry.setdefault(name, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        try:  # orjson: one access line per request, ~50x faster than json.dumps
            return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # what orjson cannot write (an integer past 64 bits, say)
            return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...``, for a person at a terminal.

    Values a client chose (field names, ids) may hold newlines or terminal escapes: they are
    escaped, so one record is one line and cannot pass for another (only a traceback, which
    the gateway writes itself, continues on the lines below).
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(
            f"{name}={_text_value(value)}"
            for name, value in structured_fields(record).items()
            if value is not None
        )
        if not fields:
            return line
        head, sep, tail = line.partition("\n")
        return f"{head} {fields}{sep}{tail}"


def escape_controls(text: str) -> str:
    """``text`` with every unprintable character (newline, CR, ESC, U+2028 ...) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


#: Characters that make a text-format value ambiguous unless it is quoted.
_QUOTE_IF = frozenset(' "=,\\')


def _text_item(value: Any) -> str:
    text = str(value)
    if text and text.isprintable() and not _QUOTE_IF.intersection(text):
        return text
    return json.dumps(text)  # quotes, and escapes controls as \n, \u001b ...


def _text_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(_text_item(v) for v in value)
    return _text_item(value)


def capped_names(names: Sequence[str], max_count: int = 20, max_chars: int = 500) -> list[str]:
    """At most ``max_count`` names of at most ``max_chars`` characters in all, then a marker
    saying how many were left out: a client's 20,000 unknown fields must not make a 189 KB line.
    """
    kept: list[str] = []
    used = 0
    for name in names[:max_count]:
        room = max_chars - used
        if room <= 0:
            break
        kept.append(name if len(name) <= room else name[: max(room - 3, 0)] + "...")
        used += len(kept[-1])
    if len(kept) < len(names):
        kept.append(f"(+{len(names) - len(kept)} more)")
    return kept


@dataclass(frozen=True, slots=True)
class LoggingSetup:
    """What :func:`configure_logging` installed."""

    redactor: SecretRedactor
    handler: logging.Handler
    #: For ``uvicorn.run(..., log_config=...)``: routes uvicorn's loggers through ours.
    uvicorn_log_config: dict[str, Any]


def _wants_text(settings: LoggingSettings, stream: TextIO) -> bool:
    if settings.format == "auto":
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty())
    return settings.format == "text"


def uvicorn_log_config(settings: LoggingSettings) -> dict[str, Any]:
    """An incremental ``dictConfig``: uvicorn's loggers propagate to root; access log off.

    Incremental, so applying it (uvicorn does, in every worker) leaves the root handler alone.
    """
    level = settings.level.upper()
    loggers: dict[str, Any] = {
        name: {"level": level, "propagate": True} for name in _UVICORN_LOGGERS
    }
    loggers[_ACCESS_LOGGER] = {"level": "WARNING", "propagate": False}
    return {"version": 1, "incremental": True, "loggers": loggers}


def configure_logging(settings: LoggingSettings, stream: TextIO | None = None) -> LoggingSetup:
    """Install the gateway's handler on the root logger; safe to call again (it replaces it).

    ``stream`` defaults to ``sys.stderr``; ``format: auto`` means text when it is a terminal.
    Register secrets on the returned ``redactor`` as soon as they are known.
    """
    target = stream if stream is not None else sys.stderr
    redactor = SecretRedactor()
    handler = logging.StreamHandler(target)
    handler.setFormatter(TextFormatter() if _wants_text(settings, target) else JsonFormatter())
    handler.addFilter(redactor)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
    root.addHandler(handler)
    level = logging.getLevelName(settings.level.upper())
    root.setLevel(level)

    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(level)
    access = logging.getLogger(_ACCESS_LOGGER)
    access.handlers.clear()
    access.propagate = False
    access.setLevel(logging.WARNING)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.DEBUG if level == logging.DEBUG else logging.WARNING
        )
    return LoggingSetup(redactor, handler, uvicorn_log_config(settings))


def log_request(
    logger: logging.Logger,
    *,
    request_id: str,
    route: str,
    status: int,
    duration_ms: float,
    key: str | None = None,
    model: str | None = None,
    job_ids: Sequence[str] = (),
    ttft_ms: float | None = None,
    queue_ms: float | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    outcome: str = "ok",
    level: int | None = None,
    **extra: Any,
) -> None:
    """Write the one structured line for a finished request (warning level for 5xx).

    Every field of :data:`REQUEST_FIELDS` is present (``null`` when unknown). ``extra`` adds
    fields; it must not reuse a LogRecord attribute name. No prompt or output belongs here.
    """
    clash = sorted(set(extra) & RECORD_ATTRS)
    if clash:
        raise ValueError(f"log_request: field names reserved by logging: {clash}")
    fields: dict[str, Any] = {
        "request_id": request_id,
        "key": key,
        "model": model,
        "route": route,
        "job_ids": list(job_ids),
        "status": status,
        "duration_ms": _round(duration_ms),
        "ttft_ms": _round(ttft_ms),
        "queue_ms": _round(queue_ms),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "outcome": outcome,
        **extra,
    }
    if level is None:
        level = logging.WARNING if status >= 500 else logging.INFO
    if not logger.isEnabledFor(level):
        return
    # The record is made here, not by logger.log: that walks the stack for the caller's file
    # and line on every call, which no formatter of the gateway writes (a sixth of the line).
    record = logger.makeRecord(
        logger.name, level, "", 0, "%s %s %s", (route, status, outcome), None, extra=fields
    )
    logger.handle(record)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)

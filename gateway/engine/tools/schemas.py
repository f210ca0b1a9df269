"""Client JSON schemas, compiled so that checking an answer can never do I/O or stall.

A schema comes from the request (``response_format.json_schema.schema``,
``tools[].function.parameters``), so everything in it is untrusted:

* References: only local ones (``#/...``, ``#anchor``) resolve, against the schema itself.
  Any other ``$ref``/``$dynamicRef`` (``http:``, ``file:``, relative), and a ``$id`` below the
  root (which would move the base of the ``#`` references under it elsewhere), is a 400 naming
  the parameter, found by walking the whole schema before anything is submitted. As a second
  line, the validator's registry cannot retrieve anything: a reference that got past the walk
  fails instead of being fetched.
* Patterns (``pattern``, ``patternProperties``) are matched by RE2, whose time is linear in the
  text and whose compiled size is bounded, never by a backtracking engine; a pattern RE2 does
  not support (lookaround, backreferences) is a 400. ``uniqueItems`` hashes instead of
  comparing pairs. Every check of an answer also has a wall-clock budget
  (``limits.schema_check_seconds``), checked before each keyword is applied; the caller runs
  the check in a worker thread (RE2 releases the GIL), so the event loop keeps serving.
* Size: a schema has at most :data:`MAX_SCHEMA_NODES` values, :data:`MAX_SCHEMA_DEPTH` levels
  and patterns of at most :data:`MAX_PATTERN_CHARS` characters.
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import re2
import referencing.exceptions
import referencing.jsonschema
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import extend, validator_for
from referencing import Registry, Resource

from gateway.errors import BadRequest

__all__ = [
    "DEFAULT_CHECK_SECONDS",
    "MAX_PATTERN_CHARS",
    "MAX_SCHEMA_DEPTH",
    "MAX_SCHEMA_NODES",
    "Schema",
    "compile_schema",
]

MAX_SCHEMA_NODES = 10_000
MAX_SCHEMA_DEPTH = 64
MAX_PATTERN_CHARS = 1_000
DEFAULT_CHECK_SECONDS = 0.5
_REF_KEYS = ("$ref", "$dynamicRef")

#: When the check running in this context must give up (monotonic seconds). A context
#: variable because jsonschema hands keyword functions nothing but the validator.
_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("schema_check_deadline")


class _TooSlow(Exception):
    """The check's time budget ran out (raised through jsonschema, caught by Schema.problem)."""


class _BadReference(Exception):
    """Raised by the registry instead of retrieving a resource."""


def _no_retrieval(uri: str) -> Resource[Any]:
    raise _BadReference(uri)


#: No retrieval: a reference to anything but the schema itself is unresolvable.
_LOCAL_ONLY: Registry[Any] = Registry(retrieve=_no_retrieval)  # type: ignore[call-arg]

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_ECMA_U = re.compile(r"(?<!\\)((?:\\\\)*)\\u(?:\{([0-9A-Fa-f]{1,6})\}|([0-9A-Fa-f]{4}))")


@functools.lru_cache(maxsize=512)
def _compiled(pattern: str) -> Any:
    """The RE2 program for an ECMA-262 ``pattern`` (``\\uXXXX`` written as RE2's ``\\x{}``)."""
    source = _ECMA_U.sub(lambda m: f"{m[1]}\\x{{{m[2] or m[3]}}}", pattern)
    return re2.compile(source, _RE2_OPTIONS)


def _in_time() -> None:
    deadline = _deadline.get(None)
    if deadline is not None and time.monotonic() > deadline:
        raise _TooSlow


def _search(pattern: str, text: str) -> bool:
    _in_time()
    return _compiled(pattern).search(text) is not None


def _timed(keyword: Callable[..., Any]) -> Callable[..., Iterator[Any]]:
    """``keyword`` that first checks the deadline: every step of a check is bounded."""

    def check(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        _in_time()
        yield from keyword(validator, value, instance, schema) or ()

    return check


def _canonical(value: Any) -> Any:
    """A hashable form equal for JSON-equal values (1 == 1.0, true != 1, key order ignored)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", float(value) if isinstance(value, float) else value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("other", repr(value))


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """jsonschema's uniqueItems compares unhashable items pairwise (quadratic): this hashes."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError(f"{instance!r} has non-unique elements")
            return
        seen.add(key)


def _pattern(validator: Validator, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


@functools.lru_cache(maxsize=16)
def _safe(base: Any) -> Any:
    """``base`` (a jsonschema validator class) with patterns matched by RE2, under a deadline."""
    overrides = {name: _timed(keyword) for name, keyword in base.VALIDATORS.items()}
    overrides["pattern"] = _timed(_pattern)
    overrides["patternProperties"] = _timed(_pattern_properties)
    overrides["uniqueItems"] = _timed(_unique_items)
    return extend(base, overrides)  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Schema:
    """A compiled client schema; :meth:`problem` checks a value against it, within a budget."""

    validator: Validator
    param: str  # the request parameter the schema came from, for errors
    seconds: float  # the wall-clock budget of one check
    draft: str  # the draft's validator, e.g. "Draft202012Validator"

    def problem(self, value: Any) -> ValidationError | None:
        """The most relevant reason ``value`` does not fit, or None.

        Raises ``BadRequest`` when the budget runs out or a reference does not resolve.
        """
        token = _deadline.set(time.monotonic() + self.seconds)
        try:
            error: ValidationError | None = best_match(self.validator.iter_errors(value))
        except _TooSlow:
            raise BadRequest(
                f"Checking the answer against {self.param} took longer than {self.seconds:g} s; "
                "make the schema smaller or its patterns simpler.",
                param=self.param,
                code="schema_too_complex",
            ) from None
        except (referencing.exceptions.Unresolvable, RecursionError) as exc:
            raise BadRequest(
                f"The schema in {self.param} cannot be applied: {type(exc).__name__}.",
                param=self.param,
                code="invalid_schema",
            ) from None
        finally:
            _deadline.reset(token)
        return error


def _refuse(message: str, param: str) -> BadRequest:
    return BadRequest(f"Invalid JSON schema: {message}", param=param, code="invalid_schema")


def _where(path: tuple[str | int, ...]) -> str:
    return "/" + "/".join(str(p) for p in path) if path else "the top level"


def _walk(schema: Mapping[str, Any], param: str, id_of: Any) -> list[str]:
    """Check size, references, ids and patterns everywhere in ``schema``; its local refs.

    Every value is walked, not only known keywords: a ``#/...`` pointer can make any part of
    the document a schema.
    """
    refs: list[str] = []
    nodes = 0
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(schema, ())]
    while stack:
        node, path = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise _refuse(f"it has more than {MAX_SCHEMA_NODES} values.", param)
        if len(path) > MAX_SCHEMA_DEPTH:
            raise _refuse(f"it is nested more than {MAX_SCHEMA_DEPTH} levels deep.", param)
        if isinstance(node, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        for key in _REF_KEYS:
            ref = node.get(key)
            if isinstance(ref, str):
                if not ref.startswith("#"):
                    raise _refuse(
                        f"{key} {ref!r} at {_where(path)} is not a local reference; only "
                        "references into the schema itself ('#/...') are allowed.",
                        param,
                    )
                refs.append(ref)
        node_id = id_of(node)
        if path and isinstance(node_id, str) and node_id:
            raise _refuse(
                f"$id at {_where(path)}: only the top level of a schema may have an id.", param
            )
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            _check_pattern(pattern, f"{_where(path)}/pattern", param)
        patterns = node.get("patternProperties")
        if isinstance(patterns, dict):
            for key in patterns:
                _check_pattern(key, f"{_where(path)}/patternProperties", param)
        stack.extend((value, (*path, key)) for key, value in node.items())
    return refs


def _check_pattern(pattern: str, where: str, param: str) -> None:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise _refuse(f"the pattern at {where} has over {MAX_PATTERN_CHARS} characters.", param)
    try:
        _compiled(pattern)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise _refuse(
            f"the pattern {pattern!r} at {where} is not supported ({reason}); patterns are "
            "matched in linear time, without lookaround or backreferences.",
            param,
        ) from None


def _resolve_all(cls: Any, schema: Mapping[str, Any], refs: list[str]) -> str | None:
    """The first of ``refs`` that does not resolve within ``schema``, or None."""
    dialect = cls.ID_OF(cls.META_SCHEMA) or ""
    specification = referencing.jsonschema.specification_with(
        dialect, default=referencing.jsonschema.DRAFT202012
    )
    resolver = _LOCAL_ONLY.resolver_with_root(specification.create_resource(schema))
    for ref in refs:
        try:
            resolver.lookup(ref)
        except referencing.exceptions.Unresolvable:
            return ref
    return None


def compile_schema(schema: Any, param: str, seconds: float = DEFAULT_CHECK_SECONDS) -> Schema:
    """A checker for ``schema`` (its ``$schema`` or draft 2020-12); a bad schema is a 400."""
    if not isinstance(schema, dict):
        raise BadRequest("A JSON schema must be an object.", param=param, code="invalid_schema")
    if not isinstance(schema.get("$schema", ""), str):  # jsonschema would hash or decode it
        raise _refuse("$schema must be a string (the URI of a dialect).", param)
    base: Any = validator_for(schema, default=jsonschema.Draft202012Validator)
    refs = _walk(schema, param, base.ID_OF)
    try:
        # Pattern syntax is RE2's to judge (in _walk), not Python's: no format checker.
        base.check_schema(schema, format_checker=None)
    except jsonschema.SchemaError as error:
        raise _refuse(error.message, param) from None
    unresolved = _resolve_all(base, schema, refs)
    if unresolved is not None:
        raise _refuse(f"$ref {unresolved!r} does not point into the schema.", param)
    validator = _safe(base)(schema, registry=_LOCAL_ONLY)
    return Schema(validator, param, seconds, base.__name__)

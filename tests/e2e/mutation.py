"""Valid-then-mutated requests at every route of a running gateway; no 5xx, no traceback.

Shared by ``test_fuzz_e2e.py`` (a few thousand requests) and ``bench/fuzz.py`` (``--count``).
Each request starts from a valid seed for its route (so it reaches the deep paths: Responses
input items, admin PATCH bodies, usage ranges, JSON schemas with the cache on), and most get
one to three mutations: a value anywhere in the body replaced by a hostile one (integers beyond
64 bits, NUL, lone surrogates, objects where strings go, deep nesting), a field dropped or
added, a query parameter or path segment replaced. Schemathesis (``fuzzing.py``) covers what
the OpenAPI document says; this covers what it does not.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from tests.e2e.servers import gateway_config

ADMIN_KEY = "sk-test-admin-fuzz-0123456789"

#: Values that broke gateways: sizes, types and characters at the edges.
HOSTILE: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**63,
    2**64 + 1,
    2**70,
    -(2**70),
    10**400,
    1e308,
    -1e-308,
    0.5,
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\u202e",
    "x" * 5000,
    "9999-12-31",
    "0001-01-01T00:00+01:00",
    "99999999999999d",
    [],
    [None],
    {},
    {"type": {}},
    {"type": ["message"]},
    {"$ref": "#/x"},
    [[[[[]]]]],
    {"a": {"b": {"c": {"d": {}}}}},
]
#: Query values for ranges, pages and filters.
QUERY_VALUES = [
    "",
    "0",
    "-1",
    "1e9",
    str(2**70),
    "99999999999999d",
    "99999999999999w",
    "9999-12",
    "9999-12-31",
    "10000-01-01",
    "0001-01-01",
    "0001-01-01T00:00+01:00",
    "2024-13",
    "now",
    "today",
    "%00",
    "\x00",
    "x" * 300,
    "key",
    "model",
    "team",
]
PATH_VALUES = ["x", "..", "%2e%2e", "%00", "a" * 300, "é", "resp_" + "0" * 48, "-", "%ff"]


def fuzz_config(upstream: str, tmp: Path, run: str, database_url: str | None) -> dict[str, Any]:
    """Every route reachable: an admin key, database keys, the cache on, stored responses;
    in PostgreSQL (tables named after ``run``) when ``database_url`` is set, else one SQLite file
    (the ledger's, shared by the key store and stored responses, as by default)."""
    if database_url:
        ledger = {"url": database_url, "table": f"fuzz_usage_{run}"}
        responses = {"store_url": database_url, "table": f"fuzz_resp_{run}"}
    else:
        # One file for all three: gateway.db serialises the writers of one SQLite file.
        ledger = {"url": f"sqlite:///{tmp}/usage.db"}
        responses = {"store_url": None}  # the ledger's url
    config = gateway_config(
        upstream,
        admin={"key": ADMIN_KEY},
        key_store={"secret": "fuzz-secret-0123456789", "table_prefix": f"fuzz_{run}_"},
        cache={"models": ["gemma-2b"]},
        ledger=ledger,
        responses=responses,
    )
    config["upstream"]["poll_interval"] = 0.02
    config["limits"]["default_deadline"] = 10
    return config


@dataclass(frozen=True, slots=True)
class Seed:
    """One valid request: its route label, method, path, query and JSON body."""

    label: str
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None
    admin: bool = False
    anthropic: bool = False


@dataclass
class MutationReport:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_route: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    model_misfits: int = 0  # 502s that say the (emulated) model's answer did not fit
    transport_errors: int = 0
    seconds: float = 0.0
    seed: int = 0  # of the random generator: the same seed sends the same requests

    def summary(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (
            f"{self.requests} requests in {self.seconds:.1f} s over {len(self.by_route)} routes; "
            f"5xx: {len(self.server_errors)}; 502 model answers that did not fit the request: "
            f"{self.model_misfits}; transport errors: {self.transport_errors}; "
            f"statuses: {statuses}; seed {self.seed}"
        )


#: 502 codes about what the (emulated) model answered, not about the gateway.
MODEL_MISFITS = {"invalid_json_output", "tool_call_invalid", "invalid_tool_call"}


def seeds(models: Sequence[str], response_id: str) -> list[Seed]:
    """A valid request for every route (the admin ones with the admin key)."""
    m = models[0]
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 2**40}},
        "required": ["a"],
    }
    json_prompt = '[[emulate:json {"a": 1}]]'
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    chat = {"model": m, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a": 1}'},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"role": "user", "content": "go on"},
    ]
    team = {"name": "fz-team", "rpm": 100, "tpm": 10_000, "weight": 2, "metadata": {"o": 1}}
    key = {"name": "fz-key", "team": "fz-team", "rpm": 50, "models": [m], "metadata": {"x": "y"}}
    msgs = {"model": m, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    usage_query = {"since": "24h", "until": "now", "group_by": "key"}
    return [
        Seed("chat", "POST", "/v1/chat/completions", body=chat),
        Seed("chat stream", "POST", "/v1/chat/completions", body={**chat, "stream": True}),
        Seed(
            "chat json_schema (cached)",
            "POST",
            "/v1/chat/completions",
            body={
                **chat,
                "messages": [{"role": "user", "content": json_prompt}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "s", "schema": schema},
                },
            },
        ),
        Seed(
            "chat tools",
            "POST",
            "/v1/chat/completions",
            body={**chat, "tools": [tool], "tool_choice": "auto"},
        ),
        Seed("completions", "POST", "/v1/completions", body={"model": m, "prompt": "hi"}),
        Seed(
            "responses",
            "POST",
            "/v1/responses",
            body={"model": m, "input": items, "tools": [{**tool["function"], "type": "function"}]},
        ),
        Seed(
            "responses stream",
            "POST",
            "/v1/responses",
            body={"model": m, "input": "hi", "stream": True, "store": True},
        ),
        Seed(
            "responses json",
            "POST",
            "/v1/responses",
            body={
                "model": m,
                "input": json_prompt,
                "text": {"format": {"type": "json_schema", "name": "s", "schema": schema}},
            },
        ),
        Seed(
            "responses chained",
            "POST",
            "/v1/responses",
            body={"model": m, "input": "more", "previous_response_id": response_id},
        ),
        Seed(
            "responses input_tokens",
            "POST",
            "/v1/responses/input_tokens",
            body={"model": m, "input": items},
        ),
        Seed(
            "responses compact", "POST", "/v1/responses/compact", body={"model": m, "input": items}
        ),
        Seed("responses get", "GET", f"/v1/responses/{response_id}"),
        Seed("responses items", "GET", f"/v1/responses/{response_id}/input_items", {"limit": "5"}),
        Seed("responses cancel", "POST", f"/v1/responses/{response_id}/cancel"),
        Seed("responses delete", "DELETE", "/v1/responses/resp_missing"),
        Seed("messages", "POST", "/v1/messages", body=msgs, anthropic=True),
        Seed(
            "messages stream", "POST", "/v1/messages", body={**msgs, "stream": True}, anthropic=True
        ),
        Seed(
            "messages tools",
            "POST",
            "/v1/messages",
            body={**msgs, "tools": [{"name": "f", "input_schema": schema}]},
            anthropic=True,
        ),
        Seed("messages count", "POST", "/v1/messages/count_tokens", body=msgs, anthropic=True),
        Seed("messages other", "POST", "/v1/messages/batches", body=msgs, anthropic=True),
        Seed("models", "GET", "/v1/models"),
        Seed("model", "GET", f"/v1/models/{m}"),
        Seed("model (anthropic)", "GET", f"/v1/models/{m}", anthropic=True),
        Seed("usage", "GET", "/v1/usage", usage_query),
        Seed("unsupported", "POST", "/v1/embeddings", body={"model": m, "input": "x"}),
        Seed("healthz", "GET", "/healthz"),
        Seed("readyz", "GET", "/readyz"),
        Seed("openapi", "GET", "/openapi.json"),
        Seed("root", "GET", "/"),
        Seed("metrics", "GET", "/metrics"),
        Seed("admin usage", "GET", "/admin/usage", {**usage_query, "team": "fz-team"}, admin=True),
        Seed("admin reload", "POST", "/admin/reload", admin=True),
        Seed("admin whoami", "GET", "/admin/whoami", admin=True),
        Seed("admin keys", "GET", "/admin/keys", {"limit": "5", "q": "fz"}, admin=True),
        Seed("admin key create", "POST", "/admin/keys", body=key, admin=True),
        Seed("admin key get", "GET", "/admin/keys/fz-key", admin=True),
        Seed(
            "admin key patch",
            "PATCH",
            "/admin/keys/fz-key",
            body={"rpm": 10, "tpm": None, "disabled": False, "expires_at": "2999-01-01T00:00:00Z"},
            admin=True,
        ),
        Seed(
            "admin key rotate",
            "POST",
            "/admin/keys/fz-key/rotate",
            body={"grace_seconds": 60},
            admin=True,
        ),
        Seed("admin key delete", "DELETE", "/admin/keys/fz-gone", admin=True),
        Seed("admin teams", "GET", "/admin/teams", admin=True),
        Seed("admin team create", "POST", "/admin/teams", body=team, admin=True),
        Seed("admin team get", "GET", "/admin/teams/fz-team", admin=True),
        Seed(
            "admin team patch",
            "PATCH",
            "/admin/teams/fz-team",
            body={"rpm": 200, "daily_tokens": 10**6, "models": [m]},
            admin=True,
        ),
        Seed("admin team delete", "DELETE", "/admin/teams/fz-gone", admin=True),
        Seed("admin audit", "GET", "/admin/audit", {"limit": "5"}, admin=True),
        Seed("admin live", "GET", "/admin/live", admin=True),
    ]


def mutate_value(value: Any, rng: random.Random) -> Any:
    """``value`` with one thing changed somewhere inside it."""
    if isinstance(value, dict) and value and rng.random() < 0.75:
        name = rng.choice(list(value))
        roll = rng.random()
        if roll < 0.15:
            return {k: v for k, v in value.items() if k != name}
        if roll < 0.25:
            return {
                **value,
                rng.choice(["type", "x", "role", "$schema", name + "_"]): rng.choice(HOSTILE),
            }
        return {**value, name: mutate_value(value[name], rng)}
    if isinstance(value, list) and value and rng.random() < 0.75:
        index = rng.randrange(len(value))
        roll = rng.random()
        if roll < 0.1:
            return value + value[index : index + 1] * rng.choice([1, 50])
        if roll < 0.2:
            return value[:index] + value[index + 1 :]
        return [*value[:index], mutate_value(value[index], rng), *value[index + 1 :]]
    return rng.choice(HOSTILE)


def mutated(seed: Seed, rng: random.Random) -> Seed:
    """``seed`` as sent (a valid one a tenth of the time), or with 1-3 mutations."""
    if rng.random() < 0.1:
        return seed
    body, query, path = seed.body, dict(seed.query), seed.path
    for _ in range(rng.choice([1, 1, 2, 3])):
        roll = rng.random()
        if roll < 0.65 and body is not None:
            body = mutate_value(body, rng)
        elif roll < 0.85:
            name = rng.choice([*query, "since", "until", "limit", "after", "group_by", "key"])
            query[name] = rng.choice(QUERY_VALUES)
        else:
            parts = path.split("/")
            if len(parts) > 3:
                parts[rng.randrange(3, len(parts))] = rng.choice(PATH_VALUES)
                path = "/".join(parts)
    return Seed(seed.label, seed.method, path, query, body, seed.admin, seed.anthropic)


def _encode(body: Any) -> bytes:
    try:
        return json.dumps(body).encode("utf-8", "surrogatepass")
    except ValueError:  # 10**400 and friends: as JSON text anyway
        return json.dumps(body, default=str).encode("utf-8", "surrogatepass")


async def run_mutations(
    base_url: str,
    key: str,
    admin_key: str,
    models: Sequence[str],
    count: int,
    *,
    concurrency: int = 16,
    seed: int | None = None,
    response_id: str | None = None,
    on_error: Callable[[str], None] | None = None,
) -> MutationReport:
    """Send ``count`` requests; every 5xx is listed (route, status, start of the body)."""
    report = MutationReport(seed=random.randrange(2**32) if seed is None else seed)
    rng = random.Random(report.seed)
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:
        if response_id is None:
            made = await http.post(
                "/v1/responses",
                json={"model": models[0], "input": "seed", "store": True},
                headers={"authorization": f"Bearer {key}"},
            )
            response_id = str(made.json().get("id", "resp_none"))
        pool = seeds(models, response_id)
        queue: asyncio.Queue[Seed] = asyncio.Queue()
        for _ in range(count):
            queue.put_nowait(mutated(rng.choice(pool), rng))

        async def worker() -> None:
            while not queue.empty():
                one = queue.get_nowait()
                await _send(http, one, key, admin_key, report)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    report.seconds = time.perf_counter() - started
    return report


async def _send(
    http: httpx.AsyncClient, one: Seed, key: str, admin_key: str, report: MutationReport
) -> None:
    secret = admin_key if one.admin else key
    headers = (
        {"x-api-key": secret, "anthropic-version": "2023-06-01"}
        if one.anthropic
        else {"authorization": f"Bearer {secret}"}
    )
    content = None
    if one.body is not None:
        content = _encode(one.body)
        headers["content-type"] = "application/json"
    query = "&".join(
        f"{quote(k)}={quote(v, safe='', errors='surrogatepass')}" for k, v in one.query.items()
    )
    url = one.path + (f"?{query}" if query else "")
    try:
        async with http.stream(one.method, url, content=content, headers=headers) as answer:
            body = await answer.aread()
    except httpx.HTTPError:
        report.transport_errors += 1
        return
    report.requests += 1
    report.statuses[answer.status_code] += 1
    report.by_route[one.label] += 1
    if answer.status_code >= 500:
        text = body[:300].decode(errors="replace")
        if answer.status_code == 502 and any(code in text for code in MODEL_MISFITS):
            report.model_misfits += 1
            return
        report.server_errors.append(
            f"{one.label} {one.method} {url[:200]} -> {answer.status_code}: {text}"
        )

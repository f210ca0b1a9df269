"""The jobs API client: one set of pooled connections for every account.

It speaks exactly the documented API and turns every way a call can fail into an
:class:`UpstreamFailure`. It never logs or returns the upstream token.

Calls go straight to httpx's transport (its connection pool) with the headers and timeouts an
``httpx.AsyncClient`` would add: the client's own layers (URL merging, auth and redirect flows,
cookies, response wrappers) were half the CPU of a status poll of 100 jobs, and the gateway
uses none of them. When the environment names a proxy (``HTTP_PROXY``, ``ALL_PROXY``, ...),
calls keep the client, which routes them through it.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from gateway.config import UpstreamSettings
from gateway.redaction import MASK, SecretRedactor
from gateway.upstream.breaker import CircuitBreaker
from gateway.upstream.errors import UpstreamFailure
from gateway.upstream.failurelog import FailureLog
from gateway.upstream.models import (
    JobSnapshot,
    StatusRules,
    parse_job,
    parse_json,
    same_as,
    submit_body,
    valid_job_id,
)
from gateway.upstream.transport import AsyncioTransport
from gateway.upstream.urls import join

#: Called after every upstream request: (kind "submit"|"status", outcome, seconds).
Observer = Callable[[str, str, float], None]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _proxied(url: httpx.URL) -> bool:
    """Does the environment name a proxy httpx could route ``url`` through? (Any for its
    scheme, whatever ``NO_PROXY`` says: then the calls keep httpx's client, which decides.)"""
    proxies = urllib.request.getproxies()
    return url.scheme in proxies or "all" in proxies


#: Connection pools the upstream connections are spread over (see JobsClient.__init__).
POOL_SHARDS = 8
#: The longest a submission waits to retry; a longer Retry-After goes back to the client.
MAX_SUBMIT_WAIT = 5.0
#: The breaker's metric label until a call names the account of a token.
UNNAMED_ACCOUNT = "-"
#: The most of an upstream error message a client is shown.
MAX_UPSTREAM_MESSAGE = 300
#: Tokens shorter than this are not searched for in upstream text (they are no secret anyway).
MIN_MASKED_TOKEN = 6


def may_resubmit(failure: UpstreamFailure) -> bool:
    """A submission is not idempotent: retry only what certainly created no job.

    That is a connection that never reached the service, or a 429 (the service refused the
    request as a whole). An open circuit is not retried: it exists to fail fast.
    """
    if failure.kind == "circuit_open":
        return False
    return not failure.reached or failure.status_code == 429


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter (AWS style): spreads retries of many clients."""
    return random.uniform(0, min(cap, base * (2**attempt)))


class JobsClient:
    def __init__(
        self,
        settings: UpstreamSettings,
        base_url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        observer: Observer | None = None,
        on_circuit_change: Callable[[str, bool], None] | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.settings = settings
        # What the upstream says may echo a token (say, the Authorization header it refused):
        # it is masked here, where it enters, so no client, log or ledger row ever holds it.
        self._redact = redact or SecretRedactor().redact
        self.rules = StatusRules.of(settings.finished_statuses, settings.failed_statuses)
        self._base_url = httpx.URL(base_url)
        self._submit_url = join(self._base_url, "/jobs")
        self._failures = FailureLog(base_url)
        self._observer = observer
        self._on_circuit_change = on_circuit_change
        self._breakers: dict[str, CircuitBreaker] = {}
        self._accounts: dict[str, str] = {}
        self._failing = 0  # transient failures in a row, over every account (for readiness)
        # httpcore's pool walks all its connections (and, per queued request, all of them
        # again) on every request and every response; with ~100 connections that cost more
        # CPU than the rest of a request. Several small pools, taken in turn, keep it cheap.
        shards = 1 if transport is not None else min(POOL_SHARDS, settings.max_connections)
        per_shard = settings.max_connections // shards
        limits = httpx.Limits(
            max_connections=per_shard,
            max_keepalive_connections=per_shard,
            keepalive_expiry=settings.keepalive_expiry,
        )
        tls = httpx.create_ssl_context() if transport is None else None
        timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        headers = {"user-agent": "llm-gateway"}
        self._direct = transport is not None or not _proxied(self._base_url)
        if self._direct:
            self._transports = [
                transport or AsyncioTransport(limits, verify=tls or True) for _ in range(shards)
            ]
            self._pools = [
                httpx.AsyncClient(
                    base_url=base_url, transport=shard, timeout=timeout, headers=headers
                )
                for shard in self._transports
            ]
        else:  # httpx's own transport, which mounts the environment's proxies
            self._transports = []
            self._pools = [
                httpx.AsyncClient(
                    base_url=base_url,
                    limits=limits,
                    verify=tls or True,
                    timeout=timeout,
                    headers=headers,
                )
                for _ in range(shards)
            ]
        #: What the client would send with every request, and its timeouts.
        self._headers = dict(self._pools[0].headers)
        self._timeouts = self._pools[0].timeout.as_dict()
        self._turn = 0

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()

    @property
    def unavailable(self) -> bool:
        """The service is down as far as this client knows: a circuit is open, or the last
        ``failure_threshold`` calls (status polls, submissions) all failed transiently."""
        if self._failing >= self.settings.circuit_breaker.failure_threshold:
            return True
        return any(breaker.is_open for breaker in self._breakers.values())

    def open_circuits(self) -> list[str]:
        """The tokens whose circuit is open."""
        return [token for token, breaker in self._breakers.items() if breaker.is_open]

    def breaker(self, token: str, account: str = "") -> CircuitBreaker:
        """The account's breaker; ``account`` names it in metrics (never the token itself)."""
        if account:
            self._accounts[token] = account
        breaker = self._breakers.get(token)
        if breaker is None:
            cb = self.settings.circuit_breaker
            notify = self._on_circuit_change
            names = self._accounts

            def changed(is_open: bool) -> None:
                if notify is not None:
                    notify(names.get(token, UNNAMED_ACCOUNT), is_open)

            breaker = CircuitBreaker(cb.failure_threshold, cb.reset_seconds, on_change=changed)
            self._breakers[token] = breaker
        return breaker

    async def submit(
        self,
        token: str,
        tag: str,
        inputs: Sequence[str],
        *,
        account: str = "",
        deadline: float | None = None,
    ) -> list[str]:
        """Create one job per input; retried only when the request cannot have arrived.

        ``deadline`` (event-loop time) stops retrying once a wait would pass it; the failure
        at hand is raised instead. An open circuit is never waited out here: it fails fast.
        """
        body = submit_body(
            self.settings.app,
            tag,
            inputs,
            inputs_field=self.settings.inputs_field,
            hours=self.settings.hours,
        )
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                data = await self._call("submit", "POST", self._submit_url, token, body, account)
                break
            except UpstreamFailure as failure:
                if not may_resubmit(failure) or attempt >= self.settings.submit_retries:
                    raise
                delay = failure.retry_after or backoff_delay(attempt, 0.2, 2.0)
                if delay > MAX_SUBMIT_WAIT:
                    raise  # asked to wait long: the client hears it (Retry-After) now
                if deadline is not None and loop.time() + delay >= deadline:
                    raise
                attempt += 1
                await asyncio.sleep(delay)
        ids = data.get("ids")
        if not isinstance(ids, list) or not ids:
            raise UpstreamFailure("bad_response", "the submission answer holds no job ids")
        if not all(valid_job_id(i) for i in ids):
            # Never used, echoed or logged: it would go into URLs polled with the token.
            raise UpstreamFailure("bad_response", "the submission answer holds a malformed job id")
        if len(ids) != len(inputs):
            raise UpstreamFailure(
                "bad_response", f"submitted {len(inputs)} inputs but got {len(ids)} job ids"
            )
        return ids

    async def status(
        self,
        token: str,
        ids: Sequence[str],
        *,
        account: str = "",
        previous: Mapping[str, JobSnapshot] | None = None,
    ) -> dict[str, JobSnapshot]:
        """One status request for many jobs; ids absent from the answer are absent here.

        A job that shows what its snapshot in ``previous`` showed (``same_as``) is answered
        with that very snapshot, not parsed again: the caller tells "nothing new" by identity.
        """
        path = join(self._base_url, "/jobs/" + ",".join(ids))
        data = await self._call("status", "GET", path, token, None, account)
        jobs = data.get("jobs")
        if jobs is None:
            jobs = {}
        if not isinstance(jobs, Mapping):
            raise UpstreamFailure("bad_response", "the status answer's 'jobs' is not an object")
        wanted = set(ids)
        last = previous or {}
        snapshots: dict[str, JobSnapshot] = {}
        for job_id, job in jobs.items():
            if job_id not in wanted:
                continue
            before = last.get(job_id)
            if before is not None and same_as(job, before):
                snapshots[job_id] = before
                continue
            snapshot = parse_job(job_id, job, self.rules)
            if snapshot.error is not None:  # it quotes the status the upstream gave
                snapshot.error = self._upstream_text(snapshot.error, token)
            snapshots[job_id] = snapshot
        return snapshots

    def _upstream_text(self, text: str, token: str) -> str:
        """Upstream text fit for a client: the call's token and every config secret masked
        (and ``Bearer <anything>``), and cut to a readable length."""
        if len(token) >= MIN_MASKED_TOKEN:  # a 1-character test token would mask every "t"
            text = text.replace(token, MASK)
        text = self._redact(text)
        if len(text) > MAX_UPSTREAM_MESSAGE:
            text = text[: MAX_UPSTREAM_MESSAGE - 3] + "..."
        return text

    async def _call(
        self,
        kind: str,
        method: str,
        path: httpx.URL,
        token: str,
        body: dict[str, Any] | None,
        account: str = "",
    ) -> Mapping[str, Any]:
        breaker = self.breaker(token, account)
        probe = breaker.is_open  # allowed through an open circuit: this call is the probe
        if not breaker.allow():
            raise UpstreamFailure(
                "circuit_open",
                "the upstream service is failing; not calling it for a while",
                reached=False,
                retry_after=breaker.retry_after(),
            )
        started = time.perf_counter()
        outcome = "ok"
        try:
            data = await self._request(method, path, token, body)
        except UpstreamFailure as failure:
            outcome = failure.kind
            self._failures.note(kind, failure)
            if failure.transient:
                self._failing += 1
                breaker.failure()
            else:
                self._failing = 0
                breaker.success()  # the service answered: it is up, just unhappy with us
            raise
        except BaseException:
            outcome = "cancelled"
            if probe:
                breaker.abandon()
            raise
        finally:
            if self._observer is not None:
                self._observer(kind, outcome, time.perf_counter() - started)
        self._failing = 0
        breaker.success()
        return data

    async def _send(
        self, method: str, url: httpx.URL, token: str, body: dict[str, Any] | None
    ) -> httpx.Response:
        """One request on the next pool in turn, its body read."""
        self._turn = turn = (self._turn + 1) % len(self._pools)
        if not self._direct:
            headers = {"authorization": f"Bearer {token}"}
            return await self._pools[turn].request(method, url, json=body, headers=headers)
        request = httpx.Request(
            method,
            url,
            headers={**self._headers, "authorization": f"Bearer {token}"},
            json=body,
            extensions={"timeout": self._timeouts},
        )
        response = await self._transports[turn].handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def _request(
        self, method: str, url: httpx.URL, token: str, body: dict[str, Any] | None
    ) -> Mapping[str, Any]:
        try:
            response = await self._send(method, url, token, body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise UpstreamFailure(
                "connect_error" if not isinstance(exc, httpx.TimeoutException) else "timeout",
                f"cannot connect to the upstream service ({type(exc).__name__})",
                reached=False,
            ) from None
        except httpx.TimeoutException as exc:
            raise UpstreamFailure(
                "timeout", f"the upstream service did not answer in time ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise UpstreamFailure(
                "connect_error", f"the connection to the upstream failed ({type(exc).__name__})"
            ) from None
        if response.status_code >= 400:
            raise UpstreamFailure(
                "http_error",
                f"the upstream service answered HTTP {response.status_code}",
                status_code=response.status_code,
                retry_after=_retry_after(response),
            )
        try:
            data = parse_json(response.content)
        except ValueError:
            raise UpstreamFailure("bad_response", "the upstream answer is not JSON") from None
        if not isinstance(data, Mapping):
            raise UpstreamFailure("bad_response", "the upstream answer is not a JSON object")
        if data.get("success") is not True:
            message = data.get("error")
            raise UpstreamFailure(
                "rejected",
                self._upstream_text(str(message), token)
                if message
                else "the upstream answered success: false",
                status_code=response.status_code,
            )
        return data

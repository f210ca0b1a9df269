"""The jobs API client: one pooled ``httpx.AsyncClient`` for every account.

It speaks exactly the documented API and turns every way a call can fail into an
:class:`UpstreamFailure`. It never logs or returns the upstream token.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from gateway.config import UpstreamSettings
from gateway.upstream.breaker import CircuitBreaker
from gateway.upstream.errors import UpstreamFailure
from gateway.upstream.models import JobSnapshot, StatusRules, parse_job, submit_body

#: Called after every upstream request: (kind "submit"|"status", outcome, seconds).
Observer = Callable[[str, str, float], None]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


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
    ) -> None:
        self.settings = settings
        self.rules = StatusRules.of(settings.finished_statuses, settings.failed_statuses)
        self._observer = observer
        self._on_circuit_change = on_circuit_change
        self._breakers: dict[str, CircuitBreaker] = {}
        self._http = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_connections,
            ),
            headers={"user-agent": "llm-gateway"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def breaker(self, token: str, account: str = "") -> CircuitBreaker:
        breaker = self._breakers.get(token)
        if breaker is None:
            cb = self.settings.circuit_breaker
            notify = self._on_circuit_change

            def changed(is_open: bool) -> None:
                if notify is not None:
                    notify(account, is_open)

            breaker = CircuitBreaker(cb.failure_threshold, cb.reset_seconds, on_change=changed)
            self._breakers[token] = breaker
        return breaker

    async def submit(self, token: str, tag: str, inputs: Sequence[str]) -> list[str]:
        """Create one job per input; retried only when the request cannot have arrived."""
        body = submit_body(
            self.settings.app,
            tag,
            inputs,
            inputs_field=self.settings.inputs_field,
            hours=self.settings.hours,
        )
        attempt = 0
        while True:
            try:
                data = await self._call("submit", "POST", "/jobs", token, body)
                break
            except UpstreamFailure as failure:
                retryable = not failure.reached or failure.status_code == 429
                if not retryable or attempt >= self.settings.submit_retries:
                    raise
                delay = failure.retry_after or backoff_delay(attempt, 0.2, 2.0)
                attempt += 1
                await asyncio.sleep(min(delay, 5.0))
        ids = data.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise UpstreamFailure("bad_response", "the submission answer holds no job ids")
        if len(ids) != len(inputs):
            raise UpstreamFailure(
                "bad_response", f"submitted {len(inputs)} inputs but got {len(ids)} job ids"
            )
        return ids

    async def status(self, token: str, ids: Sequence[str]) -> dict[str, JobSnapshot]:
        """One status request for many jobs; ids absent from the answer are absent here."""
        data = await self._call("status", "GET", "/jobs/" + ",".join(ids), token, None)
        jobs = data.get("jobs")
        if jobs is None:
            jobs = {}
        if not isinstance(jobs, Mapping):
            raise UpstreamFailure("bad_response", "the status answer's 'jobs' is not an object")
        wanted = set(ids)
        return {
            job_id: parse_job(job_id, job, self.rules)
            for job_id, job in jobs.items()
            if job_id in wanted
        }

    async def _call(
        self, kind: str, method: str, path: str, token: str, body: dict[str, Any] | None
    ) -> Mapping[str, Any]:
        breaker = self.breaker(token)
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
            if failure.transient:
                breaker.failure()
            else:
                breaker.success()  # the service answered: it is up, just unhappy with us
            raise
        finally:
            if self._observer is not None:
                self._observer(kind, outcome, time.perf_counter() - started)
        breaker.success()
        return data

    async def _request(
        self, method: str, path: str, token: str, body: dict[str, Any] | None
    ) -> Mapping[str, Any]:
        headers = {"authorization": f"Bearer {token}"}
        try:
            response = await self._http.request(method, path, json=body, headers=headers)
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
            data = response.json()
        except ValueError:
            raise UpstreamFailure("bad_response", "the upstream answer is not JSON") from None
        if not isinstance(data, Mapping):
            raise UpstreamFailure("bad_response", "the upstream answer is not a JSON object")
        if data.get("success") is not True:
            message = data.get("error")
            raise UpstreamFailure(
                "rejected",
                str(message) if message else "the upstream answered success: false",
                status_code=response.status_code,
            )
        return data

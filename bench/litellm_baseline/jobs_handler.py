"""The alternative to the gateway: a LiteLLM custom provider for the jobs API.

This is what a LiteLLM user would write to reach the Distributed LLM Service: each request
submits its own job and then polls that job on its own, every ``POLL_INTERVAL`` seconds
(the gateway's tick), until it ends. Streaming requests yield each new part of the log as it
appears (``astreaming``); non-streamed ones return the final log (``acompletion``).

It is deliberately straightforward rather than weak: LiteLLM's own pooled HTTP client (the one
its built-in providers use; aiohttp underneath), no logging on the hot path, the first status
request right after submitting (a job that ends at once is seen at once), and the same notion of
"finished" as the gateway's defaults.

Configured from ``config.yaml`` beside this file (``api_base`` = the jobs API base URL,
``api_key`` = the upstream token); ``JOBS_POLL_INTERVAL`` sets the interval.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import litellm
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, get_async_httpx_client
from litellm.llms.custom_llm import CustomLLM, CustomLLMError
from litellm.types.utils import GenericStreamingChunk, ModelResponse

POLL_INTERVAL = float(os.environ.get("JOBS_POLL_INTERVAL", "0.25"))
APP = "gridrepublic:text-inference"
FINISHED = {"completed", "complete", "finished", "done", "success", "succeeded", "ended"}
FAILED = {"failed", "failure", "error", "errored", "cancelled", "canceled", "aborted", "killed"}
DEADLINE = 600.0


def render(messages: list[dict[str, Any]]) -> str:
    """A plain transcript prompt, as a user would write it."""
    lines = []
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        lines.append(f"{message.get('role', 'user')}: {content}")
    lines.append("assistant:")
    return "\n".join(lines)


class JobsLLM(CustomLLM):
    def _client(self) -> AsyncHTTPHandler:
        return get_async_httpx_client(llm_provider="jobs", params={"timeout": 30.0})

    async def _submit(self, base: str, token: str, tag: str, prompt: str) -> str:
        body = {"app": APP, "tag": tag, "commandLine": json.dumps({"inputs": [prompt]})}
        try:
            response = await self._client().post(
                f"{base}/jobs", json=body, headers={"authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            raise CustomLLMError(502, f"submit failed: {exc}") from None
        data = response.json()
        if not data.get("success"):
            raise CustomLLMError(502, f"submit failed: {data.get('error')}")
        return str(data["ids"][0])

    async def _poll(self, base: str, token: str, job_id: str) -> AsyncIterator[tuple[str, bool]]:
        """(log so far, ended) after every status request, one every POLL_INTERVAL."""
        started = time.monotonic()
        headers = {"authorization": f"Bearer {token}"}
        while True:
            response = await self._client().get(f"{base}/jobs/{job_id}", headers=headers)
            job = (response.json().get("jobs") or {}).get(job_id) or {}
            state = (job.get("states") or {}).get("default") or {}
            status = str(state.get("status") or "").lower()
            if status in FAILED:
                raise CustomLLMError(502, f"job {job_id} failed: {status}")
            ended = status in FINISHED
            yield str(state.get("log") or ""), ended
            if ended:
                return
            if time.monotonic() - started > DEADLINE:
                raise CustomLLMError(504, f"job {job_id} did not finish in time")
            await asyncio.sleep(POLL_INTERVAL)

    async def acompletion(  # type: ignore[override]
        self,
        model: str,
        messages: list[Any],
        api_base: str,
        model_response: ModelResponse,
        api_key: str,
        **kwargs: Any,
    ) -> ModelResponse:
        prompt = render(messages)
        job_id = await self._submit(api_base, api_key, model, prompt)
        log = ""
        async for latest, _ in self._poll(api_base, api_key, job_id):
            log = latest
        model_response.choices[0].message.content = log  # type: ignore[union-attr]
        model_response.choices[0].finish_reason = "stop"
        model_response.model = model
        completion = len(log.split())
        model_response.usage = litellm.Usage(  # type: ignore[attr-defined]
            prompt_tokens=len(prompt.split()),
            completion_tokens=completion,
            total_tokens=len(prompt.split()) + completion,
        )
        return model_response

    async def astreaming(  # type: ignore[override]
        self, model: str, messages: list[Any], api_base: str, api_key: str, **kwargs: Any
    ) -> AsyncIterator[GenericStreamingChunk]:
        prompt = render(messages)
        job_id = await self._submit(api_base, api_key, model, prompt)
        sent = 0
        first = True
        async for log, ended in self._poll(api_base, api_key, job_id):
            delta = log[sent:] if len(log) >= sent else ""
            sent = max(sent, len(log))
            if delta or first or ended:
                chunk: GenericStreamingChunk = {
                    "text": delta,
                    "is_finished": ended,
                    "finish_reason": "stop" if ended else "",
                    "usage": None,
                    "index": 0,
                    "tool_use": None,
                }
                if first:
                    # Lets the benchmark find the job's word timeline in the emulator.
                    chunk["provider_specific_fields"] = {"job_id": job_id}
                    first = False
                yield chunk


jobs_llm = JobsLLM()

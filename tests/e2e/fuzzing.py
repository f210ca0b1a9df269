"""Schemathesis against a running gateway, driven by the gateway's own ``/openapi.json``.

Shared by the quick fuzz test (``test_fuzz_e2e.py``) and the long run (``bench/fuzz.py``).
Requests are generated from the document, valid ones (positive mode) and ones that break it
(negative mode), weighted towards the two completion endpoints where the work is. Every
answer must pass schemathesis' checks: no 5xx, a documented status code and content type,
and a body matching the documented schema (the OpenAI error shape for every error).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Relative weight of each operation's examples: the completions get most of them.
WEIGHTS = {"POST /v1/chat/completions": 6, "POST /v1/completions": 3}


@dataclass
class FuzzReport:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    client_errors: int = 0  # requests the HTTP client itself could not send
    seconds: float = 0.0
    request_seconds: float = 0.0  # of ``seconds``, waiting for answers (the rest: generating)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def summary(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (
            f"{self.requests} requests in {self.seconds:.1f} s "
            f"({self.request_seconds:.1f} s waiting for answers); 5xx: {self.server_errors}; "
            f"check failures: {len(self.failures)}; unsendable: {self.client_errors}; "
            f"statuses: {statuses}"
        )


def fuzz_document(base_url: str, models: Sequence[str]) -> dict[str, Any]:
    """The served document, narrowed for the emulator behind the gateway.

    ``model`` takes configured names, so valid bodies get past the catalog and reach the
    upstream path; lists stay short (long ones only cost generation time; size limits are
    tested elsewhere). And no request demands structured output (``response_format`` JSON,
    ``tool_choice: required`` or a named tool): the emulated model answers prose unless its
    prompt says otherwise, so those would end, correctly, in a 502 "the model did not answer
    with valid JSON" that says nothing about the gateway.
    """
    doc: dict[str, Any] = httpx.get(base_url + "/openapi.json").json()
    schemas = doc["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]["properties"]
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        schemas[name]["properties"]["model"] = {"type": "string", "enum": list(models)}
    chat["messages"]["maxItems"] = 4
    chat["tools"]["maxItems"] = 2
    chat["response_format"]["properties"]["type"]["enum"] = ["text"]
    chat["tool_choice"] = {"type": "string", "enum": ["none", "auto"]}
    for name in ("MessagesRequest", "CountTokensRequest"):  # the Messages door, alike
        fields = schemas[name]["properties"]
        fields["model"] = {"type": "string", "enum": list(models)}
        fields["messages"]["maxItems"] = 4
        fields["tools"]["maxItems"] = 2
        fields["tool_choice"]["properties"]["type"]["enum"] = ["none", "auto"]
    for name in ("OllamaChatRequest", "OllamaGenerateRequest"):  # the Ollama door, alike
        fields = schemas[name]["properties"]
        fields["model"] = {"type": "string", "enum": list(models)}
        fields["format"] = {"enum": [""]}
        fields.pop("context", None)  # opaque: only an earlier answer's is valid (400 otherwise)
    schemas["OllamaChatRequest"]["properties"]["messages"]["maxItems"] = 4
    schemas["OllamaChatRequest"]["properties"]["tools"]["maxItems"] = 2
    return doc


def _strategy(doc: dict[str, Any]) -> st.SearchStrategy[Any]:
    schema = schemathesis.openapi.from_dict(doc)
    strategies: list[st.SearchStrategy[Any]] = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            raise AssertionError(f"the document has a broken operation: {result!r}")
        operation = result.ok()
        weight = WEIGHTS.get(operation.label, 1)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies.extend([operation.as_strategy(generation_mode=mode)] * weight)
    # sampled_from keeps the repeats (one_of would fold equal branches): weights hold.
    return st.sampled_from(strategies).flatmap(lambda strategy: strategy)


def run_fuzz(
    base_url: str,
    key: str,
    models: Sequence[str],
    examples: int,
    *,
    timeout: float = 30.0,
    max_failures: int = 20,
) -> FuzzReport:
    """Send about ``examples`` generated requests (hypothesis may stop a little short)."""
    report = FuzzReport()
    strategy = _strategy(fuzz_document(base_url, models))
    headers = {"Authorization": f"Bearer {key}"}
    started = time.perf_counter()
    with requests.Session() as session:

        @settings(
            max_examples=examples,
            database=None,
            deadline=None,
            derandomize=False,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def one(case: Any) -> None:
            sent = time.perf_counter()
            try:
                response = case.call(
                    base_url=base_url, session=session, headers=headers, timeout=timeout
                )
            except (requests.RequestException, ValueError, UnicodeError):
                report.client_errors += 1  # e.g. a header value requests refuses to send
                return
            report.requests += 1
            report.request_seconds += time.perf_counter() - sent
            report.statuses[response.status_code] += 1
            report.by_operation[f"{case.operation.label} {response.status_code}"] += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as failure:  # a schemathesis Failure or FailureGroup
                if len(report.failures) < max_failures:
                    body = response.text[:300]
                    report.failures.append(
                        f"{case.operation.label} -> {response.status_code}: "
                        f"{str(failure)[:600]}\nbody: {body}"
                    )

        one()
    report.seconds = time.perf_counter() - started
    return report

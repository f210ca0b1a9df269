"""A quick schemathesis run against a real gateway: a few hundred generated requests, no 5xx.

The long run (2,000+ requests) is ``bench/fuzz.py``; both drive the gateway from its own
``/openapi.json`` (see ``fuzzing.py``). Jobs are instant here so valid requests stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("schemathesis", reason="schemathesis is a [test] dependency")

from tests.e2e.fuzzing import run_fuzz
from tests.e2e.observe import settle
from tests.e2e.servers import (
    ALICE_KEY,
    Server,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)

EXAMPLES = 250
MODELS = ("gemma-2b", "gpt-3.5-turbo", "llama2-uncensored")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fuzz")
    emulator = start_emulator(tmp, "--queue-seconds", "0", "--words-per-second", "2000")
    with running(emulator):
        config = gateway_config(emulator.url)
        config["upstream"]["poll_interval"] = 0.02
        config["limits"]["default_deadline"] = 10
        with running(start_gateway(tmp, config)) as server:
            yield server


@pytest.mark.timeout(240)
def test_generated_requests_never_get_a_5xx(gateway: Server) -> None:
    report = run_fuzz(gateway.url, ALICE_KEY, MODELS, EXAMPLES)
    assert report.requests >= EXAMPLES * 0.8, report.summary()
    assert report.server_errors == 0, report.summary()
    assert report.failures == [], "\n\n".join(report.failures)
    # Valid requests got through to the upstream, and invalid ones were refused.
    assert report.statuses[200] > 0 and report.statuses[400] > 0, report.summary()
    assert settle(gateway).idle
    assert "Traceback" not in gateway.output()

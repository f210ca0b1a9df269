"""Fuzz the gateway from its own OpenAPI document: thousands of generated requests, no 5xx.

    .venv/bin/python bench/fuzz.py                    # 2,000 requests against fresh servers
    .venv/bin/python bench/fuzz.py --examples 5000
    .venv/bin/python bench/fuzz.py --url http://127.0.0.1:8080 --key sk-... --models gemma-2b

Without ``--url`` it starts an emulator (instant jobs) and a gateway on loopback, as
subprocesses. Requests come from schemathesis (positive and negative modes, weighted towards
the completion endpoints, see ``tests/e2e/fuzzing.py``); every answer is checked for a 5xx, an
undocumented status or content type, and a body off the documented schema. Prints the count
of requests and of 5xx; exits 1 if there was any 5xx or check failure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.fuzzing import FuzzReport, run_fuzz
from tests.e2e.servers import ALICE_KEY, gateway_config, running, start_emulator, start_gateway

MODELS = ("gemma-2b", "gpt-3.5-turbo", "llama2-uncensored")


def _on_fresh_servers(examples: int) -> tuple[FuzzReport, str]:
    with tempfile.TemporaryDirectory(prefix="gateway-fuzz-") as folder:
        tmp = Path(folder)
        emulator = start_emulator(tmp, "--queue-seconds", "0", "--words-per-second", "2000")
        with running(emulator):
            config = gateway_config(emulator.url)
            config["upstream"]["poll_interval"] = 0.02
            config["limits"]["default_deadline"] = 10
            with running(start_gateway(tmp, config)) as gateway:
                report = run_fuzz(gateway.url, ALICE_KEY, MODELS, examples)
            return report, gateway.output()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="requests to generate")
    parser.add_argument("--url", help="an already running gateway (default: start one)")
    parser.add_argument("--key", default=ALICE_KEY, help="gateway key for --url")
    parser.add_argument("--models", default=",".join(MODELS), help="model names for --url")
    args = parser.parse_args(argv)
    if args.url:
        report = run_fuzz(args.url.rstrip("/"), args.key, args.models.split(","), args.examples)
        tracebacks = 0
    else:
        report, log = _on_fresh_servers(args.examples)
        tracebacks = log.count("Traceback")
    print(f"requests: {report.requests}")
    print(f"5xx: {report.server_errors}")
    print(f"check failures: {len(report.failures)}")
    if not args.url:
        print(f"tracebacks in the gateway log: {tracebacks}")
    print(report.summary())
    for operation, count in sorted(report.by_operation.items()):
        print(f"  {operation}: {count}")
    for failure in report.failures:
        print("----\n" + failure)
    return 1 if report.server_errors or report.failures or tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())

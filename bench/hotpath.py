"""Micro-benchmarks of per-request steps on the hot path (issue 28 item 3), printed in us.

Each figure compares the step as the gateway runs it with the way it ran before, in one process,
so the ratio holds on a loaded machine even where the absolute figures do not.

.venv/bin/python bench/hotpath.py [--number 20000]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from gateway.engine.prompts import PRESETS, PromptMessage, PromptTemplate

CONVERSATION = [
    PromptMessage("system", "You are helpful."),
    PromptMessage("user", "Hello, how are you?"),
    PromptMessage("assistant", "Fine."),
    PromptMessage("user", "Tell me a joke about cats."),
]


def per_call_us(step: Callable[[], object], number: int) -> float:
    """The best of five runs of ``number`` calls, per call."""
    return min(timeit.repeat(step, number=number, repeat=5)) / number * 1e6


def prompts(number: int) -> None:
    """Preset templates: the plain-Python twin vs the Jinja sandbox (4 messages, with guards)."""
    for name in ("transcript", "chatml", "llama3", "mistral"):
        python = PromptTemplate(PRESETS[name], name=name)
        sandbox = PromptTemplate(PRESETS[name], name=name)
        sandbox._python = None
        fast = per_call_us(lambda t=python: t.render(CONVERSATION), number)
        slow = per_call_us(lambda t=sandbox: t.render(CONVERSATION), number)
        ratio = slow / fast
        print(f"prompt {name:<10} python {fast:6.2f} us  sandbox {slow:6.2f} us  {ratio:5.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per timing run")
    args = parser.parse_args()
    prompts(args.number)


if __name__ == "__main__":
    main()

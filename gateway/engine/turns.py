"""The gateway owns the turn structure: client text cannot write a template's control tokens.

Every message's content and name (and so tool names, schema names and descriptions, which
reach the prompt inside the instructions' system text) comes from the client. Where that text
holds a control token of the model's template (``<|im_start|>``, ``<start_of_turn>``,
``[INST]``, ``<<SYS>>``, ``</s>``...) or, in formats whose turns are labelled lines, a line
that starts like a turn label (``System:``, ``### Response:``), a zero-width space
(U+200B) goes into it: the text reads the same, but no tokenizer sees the special token and
no line starts a turn. Templates from configuration get every preset's rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from types import MappingProxyType

__all__ = ["MARK", "TurnGuard", "guard_for"]

MARK = "\u200b"

#: ``<|name|>`` tokens: chatml, llama3, phi3, zephyr and many more.
_PIPES = r"<\|[A-Za-z0-9_.]{1,48}\|>"
_LLAMA = ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<s>", "</s>")
_MISTRAL = (
    "[INST]",
    "[/INST]",
    "<s>",
    "</s>",
    "[TOOL_CALLS]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
)
_GEMMA = ("<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>")
_VICUNA = ("USER:", "ASSISTANT:", "<s>", "</s>")
#: Line starts that open a turn (zero-width: the mark goes before them). Any line break
#: counts, not only "\n": a model may read "\r" or U+2028 as one.
_LINE_START = r"(?:^|(?<=[\n\r\x0b\x0c\x85\u2028\u2029]))"
_TRANSCRIPT_LINE = (
    rf"(?i){_LINE_START}(?=[ \t]*(?:system|user|assistant|tool|developer|function)[ \t]*"
    r"(?:\([^)\n]*\))?[ \t]*:)"
)
_ALPACA_LINE = rf"(?i){_LINE_START}(?=[ \t]*###[ \t]*(?:instruction|response|input)\b)"
#: Characters that break a line: a name (one line in every format) has none.
_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")

_RULES: MappingProxyType[str, tuple[tuple[str, ...], tuple[str, ...]]] = MappingProxyType(
    {
        # preset: (literal tokens, regular expressions)
        "raw": ((), ()),
        "transcript": ((), (_PIPES, _TRANSCRIPT_LINE)),
        "chatml": ((), (_PIPES,)),
        "llama3": ((), (_PIPES,)),
        "phi3": ((), (_PIPES,)),
        "zephyr": (("</s>",), (_PIPES,)),
        "gemma": (_GEMMA, (_PIPES,)),
        "llama2": (_LLAMA, (_PIPES,)),
        "mistral": (_MISTRAL, (_PIPES,)),
        "vicuna": (_VICUNA, (_PIPES,)),
        "alpaca": ((), (_PIPES, _ALPACA_LINE)),
    }
)


class TurnGuard:
    """Neutralises one template's control tokens in client text."""

    __slots__ = ("_pattern",)

    def __init__(self, literals: Iterable[str], expressions: Iterable[str]) -> None:
        parts = [re.escape(t) for t in sorted(set(literals), key=len, reverse=True) if t]
        parts += [f"(?:{e})" if not e.startswith("(?") else e for e in expressions]
        # Inline flags must lead the whole expression: hoist them.
        flags = "".join(sorted({f for p in parts for f in re.findall(r"^\(\?([a-z]+)\)", p)}))
        body = "|".join(re.sub(r"^\(\?[a-z]+\)", "", p) for p in parts)
        self._pattern = re.compile(f"(?{flags}){body}" if flags else body) if body else None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(_mark, text)

    def name(self, name: str) -> str:
        """A message's name: neutralised, and on one line."""
        return self(_BREAKS.sub(" ", name))


def _mark(match: re.Match[str]) -> str:
    found = match[0]
    return MARK if not found else found[0] + MARK + found[1:]


def guard_for(template: str, custom: bool, extra: Iterable[str] = ()) -> TurnGuard:
    """The guard of preset ``template``; a ``custom`` template gets every preset's rules.

    ``extra`` are the configured ``bos_token``/``eos_token``, control tokens too.
    """
    rules = [_RULES.get(template, ((), ()))] if not custom else list(_RULES.values())
    literals = [t for lits, _ in rules for t in lits] + list(extra)
    expressions = list(dict.fromkeys(e for _, exprs in rules for e in exprs))
    return TurnGuard(literals, expressions)

"""The one documented way the gateway counts tokens.

The upstream reports no token counts and the real tokenizers (tiktoken's encodings, the models'
own vocabularies) cannot be loaded here, so usage figures, the ``max_tokens`` cut and token rate
limits all use this deterministic *estimate*. One method everywhere keeps the numbers consistent
with each other: the completion a client receives under ``max_tokens=N`` counts as exactly ``N``.

The method imitates the pre-tokenizer of byte-pair encoders. A token is one of:

1. an optional single leading space, then a run of 1-4 letters or digits
   (``"Hello"`` -> ``"Hell"``, ``"o"``; ``" world"`` -> ``" worl"``, ``"d"``);
2. an optional single leading space, then one other non-space character (punctuation,
   underscore, a symbol, an emoji, or one CJK ideograph, kana or Hangul syllable: real
   vocabularies give those about a token each, so they never join a letter run);
3. a run of 1-16 whitespace characters (a single space directly before a non-space character
   belongs to that character's token instead, as in rule 1 and 2).

Every character belongs to exactly one token, so the count never misses text.

How good an estimate it is, measured against OpenAI's ``cl100k_base`` (GPT-3.5/4) encoding:
English prose and Python source both count about 40% high (real vocabularies hold most common
words of 5-10 letters, and runs of punctuation such as ``"):"``, as one token; this method splits
them), long numbers about 40% low (cl100k splits digits in threes), CJK text roughly one token a
character as in real vocabularies (often somewhat low). Other models' tokenizers differ from
cl100k by margins of the same order. Treat every figure as an estimate, never as exact; for the
usual English traffic it errs high, the safe side for limits.

Two properties make it cheap to run per streamed chunk (both covered by property tests):
appending text never changes a token other than the last one (so :class:`TokenCounter` re-scans
only from the start of the last token), and the last token only ever grows (so text counted as
``N`` tokens stays within the first ``N`` tokens of any longer text).
"""

from __future__ import annotations

import re

__all__ = ["MAX_TOKEN_CHARS", "TokenCounter", "count_tokens", "truncate_to_tokens"]

# CJK ideographs, kana and Hangul: one token per character, never part of a letter run.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf" ?[^\W_{_CJK}]{{1,4}}| ?\S|\s{{1,16}}")

#: The longest a token can be, in characters (a whitespace run).
MAX_TOKEN_CHARS = 16


def count_tokens(text: str) -> int:
    """The estimated number of tokens in ``text`` (see the module docstring)."""
    return len(_TOKEN.findall(text))


def truncate_to_tokens(text: str, limit: int) -> str:
    """The prefix of ``text`` made of its first ``limit`` tokens (all of it if it has fewer).

    The cut falls on a token boundary, so ``count_tokens`` of the result is exactly
    ``min(limit, count_tokens(text))``.
    """
    if limit <= 0:
        return ""
    # The first `limit` tokens lie within this window, and a window that long always holds a
    # further token when the text goes on, so those first tokens are the same as in the full text.
    window = text[: MAX_TOKEN_CHARS * limit + 1]
    tokens = _TOKEN.findall(window)
    if len(tokens) <= limit:
        return window
    return text[: sum(map(len, tokens[:limit]))]


class TokenCounter:
    """Counts the tokens of a text that arrives in pieces.

    ``feed`` returns what ``count_tokens`` would return for everything fed so far, at a cost
    proportional to the new piece: only the last token can still change, so only it is re-scanned.
    """

    __slots__ = ("_done", "_tail")

    def __init__(self) -> None:
        self._done = 0  # tokens that can no longer change
        self._tail = ""  # the last token, which more text may still extend

    @property
    def total(self) -> int:
        """Tokens in everything fed so far."""
        return self._done + (1 if self._tail else 0)

    def feed(self, delta: str) -> int:
        """Adds ``delta`` to the text and returns the running total."""
        if not delta:
            return self.total
        tokens = _TOKEN.findall(self._tail + delta)
        self._done += len(tokens) - 1
        self._tail = tokens[-1]
        return self._done + 1

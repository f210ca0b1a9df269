"""Figures and the table: pure functions over what the scenarios measured."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def id_chunks(jobs: int, id_length: int, url_budget: int) -> int:
    """Status requests needed for ``jobs`` ids when ``id,id,...`` must fit ``url_budget``."""
    if jobs <= 0:
        return 0
    per_chunk = max(1, (url_budget + 1) // (id_length + 1))
    return math.ceil(jobs / per_chunk)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table. ``ratio`` is the gateway's advantage (x times better)."""

    scenario: str
    gateway: str
    baseline: str
    ratio: str
    target: str
    passed: bool | None  # None: not measured / not applicable


def fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def advantage(better: float | None, worse: float | None, higher_is_better: bool) -> float | None:
    """How many times the gateway's figure beats the baseline's."""
    if better is None or worse is None or not (math.isfinite(better) and math.isfinite(worse)):
        return None
    if higher_is_better:
        return better / worse if worse > 0 else None
    return worse / better if better > 0 else None


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "-"}[passed]


def format_table(rows: Sequence[Row]) -> str:
    header = ("scenario", "gateway", "baseline", "ratio", "target", "result")
    cells = [header] + [
        (r.scenario, r.gateway, r.baseline, r.ratio, r.target, verdict(r.passed)) for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), separator, *(line(r) for r in cells[1:])])

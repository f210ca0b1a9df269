"""Top functions of a py-spy ``--format raw`` profile (collapsed stacks), by own and total time.

.venv/bin/python -m bench.profile bench/results/<run>/throughput-gateway-profile.txt
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^:]*):\d+\)$")


def frame_key(frame: str, lines: bool) -> str:
    """``func (file.py:12)`` -> ``func (file.py)`` unless ``lines``."""
    if lines:
        return frame
    match = _FRAME.match(frame)
    return f"{match['name']} ({match['file']})" if match else frame


def tally(rows: Iterable[str], lines: bool = False) -> tuple[Counter[str], Counter[str], int]:
    """Own samples and inclusive samples per function, and the total number of samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for row in rows:
        match = _LINE.match(row.rstrip("\n"))
        if not match:
            continue
        count = int(match["count"])
        frames = [frame_key(f, lines) for f in match["stack"].split(";")[1:]]  # [0]: process
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    return own, total, samples


def render(path: Path, top: int, lines: bool) -> str:
    own, total, samples = tally(path.read_text().splitlines(), lines)
    out = [f"{path}: {samples} samples"]
    for title, counter in (("own time", own), ("total time (inclusive)", total)):
        out.append(f"\n-- top {top} by {title}")
        for name, count in counter.most_common(top):
            out.append(f"{100 * count / samples:6.1f}%  {name}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--lines", action="store_true", help="keep line numbers apart")
    args = parser.parse_args()
    print(render(args.profile, args.top, args.lines))


if __name__ == "__main__":
    main()

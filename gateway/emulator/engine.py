"""The emulated jobs service: jobs whose state is a pure function of time.

Nothing runs per job. At submission each job gets a :class:`Script`, a short list of frames
("from offset t the log is this prefix of that text, the status is that"); a status request
looks the current frame up by bisection. Thousands of jobs therefore cost a few small tuples
each and no task, timer or lock. Finished jobs are dropped ``retention_seconds`` after they end,
lazily, whenever the engine is used.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import re
import time
import uuid
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from gateway.emulator.directives import DEFAULT_WORDS, Directives, compose_reply, parse_directives
from gateway.emulator.faults import FaultQueues

if TYPE_CHECKING:
    from gateway.config import EmulatorSettings

APP = "gridrepublic:text-inference"
QUEUED, RUNNING, FINISHED, FAILED, GONE = range(5)
FEW_WORDS = 3  # words shown before ``fail``/``hang`` take over, and lost by ``shrink``
_WORD = re.compile(r"\S+")
_ANSI_ON, _ANSI_OFF = "\x1b[32m", "\x1b[0m"
_DRAFT_MARKERS = ("[draft] ", "[outline] ")
_RECENT = 100

Frame = tuple[int, int, int]  # (index into Script.texts, prefix length, phase)


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """How the emulated service behaves; per-job directives override the timings."""

    tokens: frozenset[str] | None = field(default=None, repr=False)
    queue_seconds: float = 0.5
    words_per_second: float = 20.0
    finished_status: str = "completed"
    default_words: int = DEFAULT_WORDS
    retention_seconds: float = 600.0
    app: str = APP
    max_job_seconds: float = 86_400.0  # even a ``hang`` job is dropped after this long

    def __post_init__(self) -> None:
        if self.tokens is not None and not all(self.tokens):
            raise ValueError("tokens must be non-empty strings")
        if not (self.queue_seconds >= 0 and math.isfinite(self.queue_seconds)):
            raise ValueError("queue_seconds must be a finite number >= 0")
        if not (self.words_per_second > 0 and math.isfinite(self.words_per_second)):
            raise ValueError("words_per_second must be a finite number > 0")
        if not self.finished_status:
            raise ValueError("finished_status must not be empty")
        if self.default_words < 0:
            raise ValueError("default_words must be >= 0")
        if self.retention_seconds < 0 or self.max_job_seconds <= 0:
            raise ValueError("retention_seconds must be >= 0 and max_job_seconds > 0")

    @classmethod
    def from_settings(cls, settings: EmulatorSettings) -> EmulatorConfig:
        return cls(
            tokens=frozenset({settings.token}),
            queue_seconds=settings.queue_seconds,
            words_per_second=settings.words_per_second,
        )


@dataclass(frozen=True, slots=True)
class Script:
    """A job's whole life: frame ``k`` holds from offset ``times[k]`` until ``times[k + 1]``.

    Offsets are seconds after submission. ``final`` indexes the text the job converges to (the
    reply, decorated with escape codes under ``ansi``); ``end`` is the offset of the last frame,
    ``math.inf`` for a job that never ends.
    """

    texts: tuple[str, ...]
    times: tuple[float, ...]
    frames: tuple[Frame, ...]
    start: float
    end: float
    final: int

    def at(self, offset: float) -> tuple[str, int]:
        """The log and phase at ``offset``."""
        text, chars, phase = self.frames[max(0, bisect_right(self.times, offset) - 1)]
        return self.texts[text][:chars], phase

    def word_offsets(self) -> list[float]:
        """When each word of the final text first entered the log (offsets, in word order)."""
        ends = word_ends(self.texts[self.final])
        offsets: list[float] = []
        for at, (text, chars, _) in zip(self.times, self.frames, strict=True):
            if text != self.final:
                continue
            while len(offsets) < len(ends) and ends[len(offsets)] <= chars:
                offsets.append(at)
        return offsets


def word_ends(text: str) -> list[int]:
    """End offset of each word (maximal run of non-space) of ``text``."""
    return [match.end() for match in _WORD.finditer(text)]


def decorate_ansi(text: str) -> str:
    """``text`` with every third word wrapped in a colour code, as a terminal would show it."""
    out: list[str] = []
    last = 0
    for index, match in enumerate(_WORD.finditer(text)):
        if index % 3 == 0:
            out.append(text[last : match.start()])
            out.append(f"{_ANSI_ON}{match.group()}{_ANSI_OFF}")
            last = match.end()
    out.append(text[last:])
    return "".join(out)


def build_script(reply: str, directives: Directives, *, queue: float, wps: float) -> Script:
    """Frames for ``reply`` under ``directives``; pure, so tests can check every instant.

    Word ``i`` enters at ``queue + i / wps``; the job ends one word interval after its last
    word. Precedence: ``vanish`` > ``fail`` > ``hang`` cut the run after a few words;
    ``rewrite`` > ``shrink`` act at the half-way word (needs 2+ words and no cut before it);
    ``ansi`` combines with all.
    """
    step = 1.0 / wps
    texts: list[str] = [""]
    times: list[float] = [0.0]
    frames: list[Frame] = [(0, 0, QUEUED)]

    def add(at: float, text: int, chars: int, phase: int) -> None:
        if times[-1] == at:
            times.pop()
            frames.pop()
        times.append(at)
        frames.append((text, chars, phase))

    if directives.vanish:
        add(queue, 0, 0, GONE)
        return Script(tuple(texts), tuple(times), tuple(frames), queue, queue, 0)
    final_text = decorate_ansi(reply) if directives.ansi else reply
    texts.append(final_text)
    final = len(texts) - 1
    ends = word_ends(final_text)
    cut = len(ends)
    if directives.fail is not None or directives.hang:
        cut = min(FEW_WORDS, cut)
    half = len(ends) // 2
    at = queue
    if cut > half >= 1 and directives.rewrite:
        marker = next(m for m in _DRAFT_MARKERS if not final_text.startswith(m))
        texts.append(marker + final_text)
        for index in range(half):
            add(queue + index * step, final + 1, len(marker) + ends[index], RUNNING)
        words = range(half, cut)
    elif cut > half >= 1 and directives.shrink:
        lost = min(FEW_WORDS, half)
        for index in range(half):
            add(queue + index * step, final, ends[index], RUNNING)
        shrunk_at = queue + half * step
        add(shrunk_at, final, ends[half - lost - 1] if half > lost else 0, RUNNING)
        # held for ``lost`` steps, then word ``half - lost`` comes back, then the rest
        at = shrunk_at + lost * step - (half - lost) * step
        words = range(half - lost, cut)
    else:
        words = range(cut)
    for index in words:
        add(at + index * step, final, ends[index], RUNNING)
    last = at + (words[-1] + 1) * step if words else queue
    if directives.fail is not None:
        message = directives.fail
        shown = final_text[: ends[cut - 1]] if cut else ""
        texts.append(f"{shown}\n{message}" if shown and message else shown or message)
        add(last, len(texts) - 1, len(texts[-1]), FAILED)
        end = last
    elif directives.hang:
        if not words:
            add(queue, final, 0, RUNNING)
        end = math.inf
    else:
        add(last, final, len(final_text), FINISHED)
        end = last
    return Script(tuple(texts), tuple(times), tuple(frames), queue, end, final)


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    owner: str
    tag: str
    prompt: str
    command_line: str
    created: float
    created_wall: float
    created_iso: str
    script: Script
    finished_status: str


def token_digest(token: str) -> str:
    """sha256 hex of a token: what the engine keeps instead of the token itself."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Stats:
    """Request counters for tests and benchmarks; tokens appear only as sha256 prefixes."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.submit_requests = 0
        self.status_requests = 0
        self.jobs_created = 0
        self.status_ids_total = 0
        self.max_ids_per_status = 0
        self.faults_injected = 0
        self.recent_ids_per_status: deque[int] = deque(maxlen=_RECENT)
        self.submit_by_token: dict[str, int] = {}
        self.status_by_token: dict[str, int] = {}

    def count_request(self, kind: Literal["submit", "status"], token: str | None) -> None:
        counts = self.submit_by_token if kind == "submit" else self.status_by_token
        if kind == "submit":
            self.submit_requests += 1
        else:
            self.status_requests += 1
        if token is not None:
            key = token_digest(token)[:12]
            counts[key] = counts.get(key, 0) + 1

    def count_status_ids(self, count: int) -> None:
        self.status_ids_total += count
        self.max_ids_per_status = max(self.max_ids_per_status, count)
        self.recent_ids_per_status.append(count)

    def snapshot(self) -> dict[str, Any]:
        return {
            "submit_requests": self.submit_requests,
            "status_requests": self.status_requests,
            "jobs_created": self.jobs_created,
            "status_ids_total": self.status_ids_total,
            "max_ids_per_status": self.max_ids_per_status,
            "recent_ids_per_status": list(self.recent_ids_per_status),
            "tokens_seen": len(self.submit_by_token.keys() | self.status_by_token.keys()),
            "submit_requests_by_token": dict(self.submit_by_token),
            "status_requests_by_token": dict(self.status_by_token),
            "faults_injected": self.faults_injected,
        }


_STATUS = {
    QUEUED: ("queued", "pending"),
    RUNNING: ("running", "running"),
    FAILED: ("failed", "failed"),
}


class Engine:
    """Jobs, their owners, stats and queued faults of one emulated service.

    ``clock`` (monotonic seconds) drives job progress; ``wall_clock`` (unix seconds) only
    stamps ``created`` and timelines. Inject both in tests to move time without sleeping.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or EmulatorConfig()
        self.stats = Stats()
        self.faults = FaultQueues()
        self._clock = clock
        self._wall_clock = wall_clock
        self._jobs: dict[str, Job] = {}
        self._expiry: list[tuple[float, str]] = []
        self._json_answers: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._jobs)

    def authorized(self, token: str) -> bool:
        """Any non-empty token when no list is configured, else only listed ones."""
        tokens = self.config.tokens
        return bool(token) and (tokens is None or token in tokens)

    def submit(self, token: str, prompts: Sequence[str], tag: str) -> list[str]:
        """Create one job per prompt, owned by ``token``; returns their ids in order."""
        self.collect_garbage()
        now, wall = self._clock(), self._wall_clock()
        created_iso = datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds")
        owner = token_digest(token)
        ids: list[str] = []
        repeats: dict[str, int] = {}
        for prompt in prompts:
            job_id = uuid.uuid4().hex
            directives = parse_directives(prompt)
            # The same prompt twice in one submission is ``n`` choices: each its own text.
            variant = repeats[prompt] = repeats.get(prompt, -1) + 1
            script = build_script(
                self._reply(prompt, directives, variant),
                directives,
                queue=self.config.queue_seconds if directives.queue is None else directives.queue,
                wps=directives.wps or self.config.words_per_second,
            )
            self._jobs[job_id] = Job(
                id=job_id,
                owner=owner,
                tag=tag,
                prompt=prompt,
                command_line=_command_line(prompt),
                created=now,
                created_wall=wall,
                created_iso=created_iso,
                script=script,
                finished_status=directives.status or self.config.finished_status,
            )
            lifetime = min(script.end, self.config.max_job_seconds)
            heapq.heappush(self._expiry, (now + lifetime + self.config.retention_seconds, job_id))
            ids.append(job_id)
        self.stats.jobs_created += len(ids)
        return ids

    def status(self, token: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The visible jobs among ``ids``: unknown, foreign and vanished ones are left out."""
        self.collect_garbage()
        now = self._clock()
        owner = token_digest(token)
        app = self.config.app
        jobs: dict[str, dict[str, Any]] = {}
        for job_id in ids:
            job = self._jobs.get(job_id)
            if job is None or job.owner != owner:
                continue
            script = job.script
            offset = now - job.created
            log, phase = script.at(offset)
            if phase == GONE:
                continue
            if phase == FINISHED:
                status, vm_status = job.finished_status, "stopped"
            else:
                status, vm_status = _STATUS[phase]
            runtime = max(0.0, min(offset, script.end) - script.start)
            jobs[job_id] = {
                "vmStatus": vm_status,
                "states": {
                    "default": {
                        "status": status,
                        "outputFiles": [],
                        "log": log,
                        "commandLine": job.command_line,
                        "app": app,
                    }
                },
                "created": job.created_iso,
                "copy": 0,
                "tag": job.tag,
                "runtime": int(runtime),
            }
        return jobs

    def timeline(self, job_id: str) -> dict[str, Any] | None:
        """Wall-clock instant each word of the job's final text entered its log, and its prompt."""
        job = self._jobs.get(job_id)
        if job is None:
            return None
        start = job.created_wall
        return {
            "id": job.id,
            "prompt": job.prompt,
            "created": start,
            "started": start + job.script.start,
            "ended": start + job.script.end if math.isfinite(job.script.end) else None,
            "words": [
                {"index": index, "at": start + offset}
                for index, offset in enumerate(job.script.word_offsets())
            ],
        }

    def collect_garbage(self) -> int:
        """Drop jobs whose retention is over; returns how many went."""
        now = self._clock()
        dropped = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, job_id = heapq.heappop(self._expiry)
            dropped += self._jobs.pop(job_id, None) is not None
        return dropped

    def snapshot(self) -> dict[str, Any]:
        """Stats plus live figures."""
        return {**self.stats.snapshot(), "jobs_active": len(self._jobs)}

    def _reply(self, prompt: str, directives: Directives, variant: int = 0) -> str:
        broken = False
        spec = directives.json
        if spec is not None and spec.invalid_first:
            served = self._json_answers.get(spec.key, 0)
            self._json_answers[spec.key] = served + 1
            broken = served < spec.invalid_first
        return compose_reply(
            prompt, directives, self.config.default_words, broken_json=broken, variant=variant
        )


def _command_line(prompt: str) -> str:
    """The job's own ``commandLine``, compact as in the service's documentation."""
    return json.dumps({"inputs": [prompt]}, separators=(",", ":"))

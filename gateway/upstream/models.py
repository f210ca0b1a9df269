"""Wire shapes of the jobs API and the rules that turn a job's status into a phase.

Only ``running`` is documented; everything else is a guess the operator can correct in the
config (``upstream.finished_statuses`` / ``failed_statuses``). Unknown names mean "still going".
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

#: What a job id from the upstream may look like (the service's are 32 hex digits). An id goes
#: into status URLs and the x-job-id header: no "/", "?", "#", "," or control characters, and
#: it starts with a letter or digit, so it is never a "." or ".." path segment.
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def valid_job_id(value: object) -> bool:
    """Whether ``value`` may be used as a job id (see :data:`JOB_ID`)."""
    return isinstance(value, str) and JOB_ID.fullmatch(value) is not None


class JobPhase(enum.Enum):
    PENDING = "pending"  # queued or running: keep polling
    FINISHED = "finished"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self is not JobPhase.PENDING


@dataclass(slots=True)
class JobSnapshot:
    """One observation of one job, as a status answer showed it.

    Treat it as immutable. It is not a frozen dataclass only because a frozen one takes twice
    as long to build, and a tick at 500 streams builds 500 of them.
    """

    id: str
    phase: JobPhase
    status: str
    log: str
    vm_status: str | None = None
    runtime: float | None = None
    error: str | None = None  # why the gateway considers the job failed, when it does
    #: The answer's raw ``status`` and ``vmStatus``, for :func:`same_as` (None: not parsed here).
    wire: tuple[Any, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class StatusRules:
    finished: frozenset[str]
    failed: frozenset[str]
    _seen: dict[tuple[str, str | None], JobPhase] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def of(cls, finished: Iterable[str], failed: Iterable[str]) -> StatusRules:
        return cls(frozenset(s.lower() for s in finished), frozenset(s.lower() for s in failed))

    def phase(self, status: str, vm_status: str | None) -> JobPhase:
        """The phase for a (status, vmStatus) pair; a handful of pairs recur, so it is cached."""
        key = (status, vm_status)
        phase = self._seen.get(key)
        if phase is None:
            phase = self._phase(status, vm_status)
            if len(self._seen) < 1024:  # statuses come from the upstream: bound the cache
                self._seen[key] = phase
        return phase

    def _phase(self, status: str, vm_status: str | None) -> JobPhase:
        for name in (status, vm_status or ""):
            if name in self.failed:
                return JobPhase.FAILED
        if status in self.finished:
            return JobPhase.FINISHED
        # The VM may report the end before the state does; trust it only without a state.
        if not status and vm_status in self.finished:
            return JobPhase.FINISHED
        return JobPhase.PENDING


def submit_body(
    app: str,
    tag: str,
    inputs: Sequence[str],
    *,
    inputs_field: str = "inputs",
    hours: float | None = None,
) -> dict[str, Any]:
    """The documented submission: ``commandLine`` is a JSON *string* holding the inputs."""
    body: dict[str, Any] = {
        "app": app,
        "commandLine": json.dumps({inputs_field: list(inputs)}),
        "tag": tag,
    }
    if hours is not None:
        body["hours"] = hours
    return body


def parse_json(raw: bytes) -> Any:
    """Parse an upstream answer: orjson (a status answer is ~150 KB per 166 jobs, and parsing it
    is the largest CPU cost of a poll), falling back to the standard library for what only it
    accepts (NaN, integers beyond 64 bits). Raises ValueError for what is not JSON at all."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def same_as(data: Any, previous: JobSnapshot) -> bool:
    """Does a job of a status answer show what ``previous`` showed: the same raw status and
    vmStatus and a log of the same length?

    Checked before :func:`parse_job`, so a job with nothing new (most jobs, most ticks: a job
    waits in a queue, or writes a few words a second) costs no snapshot and no comparison of
    its log with the last one. The log is cumulative, so a change keeps its length only when
    it is rewritten in place; such a rewrite is seen when the log next grows or the job ends.
    """
    if previous.wire is None or not isinstance(data, dict):
        return False
    states = data.get("states")
    default = states.get("default") if isinstance(states, dict) else None
    if not isinstance(default, dict):
        return False
    log = default.get("log")
    return (
        isinstance(log, str)
        and len(log) == len(previous.log)
        and previous.wire == (default.get("status"), data.get("vmStatus"))
    )


def parse_job(job_id: str, data: Any, rules: StatusRules) -> JobSnapshot:
    """Read one job of a status answer, tolerating missing or oddly typed fields."""
    # Parsed JSON holds dicts, never other mappings: ``dict`` checks skip the ABC machinery.
    if not isinstance(data, dict):
        return JobSnapshot(job_id, JobPhase.PENDING, "", "")
    states = data.get("states")
    default = states.get("default") if isinstance(states, dict) else None
    if not isinstance(default, dict):
        default = {}
    status_raw = default.get("status")
    status = str(status_raw or "").strip().lower()
    vm_status_raw = data.get("vmStatus")
    vm_status = str(vm_status_raw).strip().lower() if vm_status_raw is not None else None
    log = default.get("log")
    runtime = data.get("runtime")
    phase = rules.phase(status, vm_status)
    return JobSnapshot(
        id=job_id,
        phase=phase,
        status=status or (vm_status or ""),
        log=log if isinstance(log, str) else "",
        vm_status=vm_status,
        runtime=float(runtime) if isinstance(runtime, int | float) else None,
        error=f"the upstream job ended with status {status or vm_status!r}"
        if phase is JobPhase.FAILED
        else None,
        wire=(status_raw, vm_status_raw),
    )

"""Which status request polls which job, and when in the tick.

An account's jobs are grouped into lanes. A lane is one status request per tick, its ids short
enough for one URL, and it keeps its own fixed phase within the tick. Lanes spread over the
tick turn one large burst of work per tick (parse every answer, then wake every stream) into
several small ones, so a stream waits for a share of the work rather than for all of it. A job
stays in its lane, so it is still polled exactly once per tick. Lanes are filled evenly and
never past the URL budget, and a lane is emptied into the others once they have room for its
jobs, so the requests per tick stay at the number of chunks the ids need.

Pure bookkeeping, no I/O: the poller runs one loop per lane.
"""

from __future__ import annotations

from collections.abc import Iterator

#: Lanes are merged only when the others stay this full at most afterwards, so a count that
#: hovers at a lane boundary does not move jobs back and forth.
MERGE_FILL = 0.85


class Lane:
    """Job ids polled by one status request, due at ``due`` (event-loop time)."""

    __slots__ = ("due", "ids", "length")

    def __init__(self, due: float) -> None:
        self.ids: dict[str, None] = {}
        self.length = 0  # characters of the comma-separated id list
        self.due = due

    def __len__(self) -> int:
        return len(self.ids)

    def _add(self, job_id: str) -> None:
        self.length += len(job_id) + (1 if self.ids else 0)
        self.ids[job_id] = None

    def _remove(self, job_id: str) -> None:
        del self.ids[job_id]
        self.length = max(0, self.length - len(job_id) - 1) if self.ids else 0


class Lanes:
    """The lanes of one account: where each job is polled, and when each lane is due."""

    def __init__(self, interval: float, url_budget: int, max_ids: int | None = None) -> None:
        self.interval = interval
        self.url_budget = url_budget
        self.max_ids = max_ids
        self._lanes: list[Lane] = []
        self._lane_of: dict[str, Lane] = {}

    def __len__(self) -> int:
        return len(self._lanes)

    def __iter__(self) -> Iterator[Lane]:
        return iter(self._lanes)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._lane_of

    def lane_of(self, job_id: str) -> Lane | None:
        return self._lane_of.get(job_id)

    def _room(self, lane: Lane, job_id: str, fill: float = 1.0) -> bool:
        if not lane.ids:
            return True  # an empty lane takes any id, even one longer than the budget
        return self._takes(lane.length, len(lane.ids), job_id, fill)

    def _takes(self, length: int, count: int, job_id: str, fill: float) -> bool:
        """Does a lane of ``length`` characters and ``count`` ids have room for ``job_id``?"""
        if length + len(job_id) + 1 > self.url_budget * fill:
            return False
        return self.max_ids is None or count + 1 <= self.max_ids * fill

    def place(self, job_id: str, now: float) -> Lane | None:
        """File a new job in the emptiest lane with room; return the lane if it had to be opened."""
        open_lanes = [lane for lane in self._lanes if self._room(lane, job_id)]
        if open_lanes:
            lane = min(open_lanes, key=len)
            lane._add(job_id)
            self._lane_of[job_id] = lane
            return None
        lane = Lane(self._next_due(now))
        lane._add(job_id)
        self._lanes.append(lane)
        self._lane_of[job_id] = lane
        return lane

    def remove(self, job_id: str) -> None:
        """Forget a job, and merge a lane into the others once they can absorb it.

        An emptied lane stays open until it is due (see :meth:`close_if_empty`): when answers
        end every job of a lane at once, the next requests' jobs join it and are polled on
        the same beat, instead of opening a lane a whole tick away.
        """
        lane = self._lane_of.pop(job_id, None)
        if lane is None:
            return
        lane._remove(job_id)
        if lane.ids and len(self._lanes) > 1:
            self._merge_smallest()

    def chunks(self, ids: list[str]) -> list[list[str]]:
        """``ids`` cut into as few status requests as the URL budget and ``max_ids`` allow."""
        chunks: list[list[str]] = []
        length = 0
        for job_id in ids:
            if not chunks or not self._takes(length, len(chunks[-1]), job_id, 1.0):
                chunks.append([job_id])
                length = len(job_id)
            else:
                chunks[-1].append(job_id)
                length += len(job_id) + 1
        return chunks

    def close_if_empty(self, lane: Lane) -> bool:
        """Close ``lane`` if it has no jobs (its loop calls this when it is due)."""
        if lane.ids:
            return False
        if lane in self._lanes:
            self._lanes.remove(lane)
        return True

    def _merge_smallest(self) -> None:
        if self.max_ids is not None and len(self._lane_of) > (len(self._lanes) - 1) * self.max_ids:
            return  # one lane fewer could not hold every id: no merge (the usual case, busy)
        busy = [lane for lane in self._lanes if lane.ids]
        if len(busy) < 2:
            return
        smallest = min(busy, key=len)
        others = [lane for lane in busy if lane is not smallest]
        if not self._fits(smallest, others):
            return
        for job_id in list(smallest.ids):
            target = min((lane for lane in others if self._room(lane, job_id, MERGE_FILL)), key=len)
            smallest._remove(job_id)
            target._add(job_id)
            self._lane_of[job_id] = target
        self._lanes.remove(smallest)

    def _fits(self, lane: Lane, others: list[Lane]) -> bool:
        """Would ``lane``'s ids fit in ``others`` while keeping them at most MERGE_FILL full?"""
        room = sum(max(0.0, self.url_budget * MERGE_FILL - other.length) for other in others)
        if lane.length > room:
            return False  # the usual answer, found without walking the ids
        if self.max_ids is not None:  # the same by count: ids are short, so it binds first
            most = int(self.max_ids * MERGE_FILL)
            if len(lane) > sum(max(0, most - len(other)) for other in others):
                return False
        # Place them greedily, as the merge itself will.
        lengths = {id(other): other.length for other in others}
        counts = {id(other): len(other) for other in others}
        for job_id in lane.ids:
            candidates = [
                other
                for other in others
                if self._takes(lengths[id(other)], counts[id(other)], job_id, MERGE_FILL)
            ]
            if not candidates:
                return False
            target = min(candidates, key=lambda other: counts[id(other)])
            lengths[id(target)] += len(job_id) + 1
            counts[id(target)] += 1
        return True

    def _next_due(self, now: float) -> float:
        """A new lane's first poll: one tick away, or midway in the widest gap between lanes."""
        if not self._lanes:
            return now + self.interval
        interval = self.interval
        phases = sorted(lane.due % interval for lane in self._lanes)
        gaps = [
            (phases[(i + 1) % len(phases)] - phase) % interval or interval
            for i, phase in enumerate(phases)
        ]
        widest = max(range(len(gaps)), key=gaps.__getitem__)
        phase = (phases[widest] + gaps[widest] / 2) % interval
        due = now - (now % interval) + phase
        while due <= now:
            due += interval
        return due

"""The two execution paths as a simulation runs them: behind the same ``Backend`` port as the real
adapters, on a virtual clock, doing no work and starting no process.

``SimulatedBuilds`` behaves like the CodeBuild project of the old path: one build per submit,
provisioned, then a fixed number of threads working through its manifest in order, stopped at its
timeout. ``SimulatedBatch`` behaves like AWS Batch on Fargate: one job per conversion, queued
until the cap (and the Fargate vCPU quota) leave it a slot, provisioned in that slot, then
worked. Both answer ``poll`` and ``in_use`` the way the real adapters do, so the controller's own
cycle decides everything. Durations, failures and provisioning come from the profile; the
``World`` keeps the clock, the events and the record of what ran when. When both paths start their
workers on one machine (``Profile.cores``), every start under way shares its cores evenly, so a
start takes longer the more start beside it, for as long as they do. No threads, no sleeping.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from controller.core.domain import DispatchBatch, JobRef, JobState, JobStatus, Path
from controller.engine.profile import Profile, Work, sharing_rate

_QUEUED = JobState(JobStatus.QUEUED)
_RUNNING = JobState(JobStatus.RUNNING)
_UNKNOWN = JobState(JobStatus.UNKNOWN, "no such job")


def _work(started: float | None, ended: float) -> tuple[float | None, float | None]:
    """A finished attempt's run time and start, as a job's result reports them."""
    return (None, None) if started is None else (ended - started, started)


@dataclass(slots=True)
class Attempt:
    """One attempt at one conversion on one path, as it really ran."""

    conversion_id: str
    path: Path
    slot_at: float  # when it took its slot (a build's start, a job leaving the queue)
    work_at: float | None = None  # when its work began (after provisioning)
    ended_at: float | None = None
    failed: bool = False


@dataclass(slots=True)
class BuildRecord:
    """One build of the old path, for its cost and its timeout."""

    key: str
    submitted_at: float
    threads: int
    size: int
    ended_at: float | None = None
    timed_out: bool = False


class World:
    """The virtual clock, the pending events and everything that ran, for both paths."""

    def __init__(self, profile: Profile, works: Mapping[str, Work]) -> None:
        self.profile = profile
        self.works = works
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.attempts: list[Attempt] = []
        self.builds: list[BuildRecord] = []
        self.launches: list[float] = []  # new-path jobs leaving the queue (Fargate task launches)
        self.failures = 0  # attempts that failed, seen by the poll as FAILED
        self.at_work: dict[Path, int] = {Path.LEGACY: 0, Path.NEW: 0}
        self.changes: list[tuple[float, int, int]] = []  # (time, legacy at work, new at work)
        self.holders: list[Callable[[], int]] = []  # each path's in_use, as the controller counts
        self.peak_slots = 0  # the most budget held at once: threads of builds, jobs in a slot
        self.starting = 0  # builds provisioning and jobs in a slot whose work has not begun
        self._then: dict[int, Callable[[], None]] = {}  # each start under way: what follows it
        self._handles = 0
        # With ``profile.cores``: the CPU work each start still needs, shared by every start under way.
        self._left: dict[int, float] = {}
        self._light: set[int] = set()  # phases in ``_left`` that move with the starts, not among them
        self._left_at = 0.0
        self._plan = 0  # the version of the one due event that ends the next start

    def begin_start(self, path: Path, u: float, then: Callable[[], None]) -> int:
        """One more start on ``path`` (draw ``u``); ``then`` runs when it is done. Without
        ``profile.cores`` its delay is drawn as seen with as many starting; with it, the draw is
        the CPU work it needs, shared (``begin_shared``). Returns a handle for ``drop_start``."""
        self.starting += 1
        started = partial(self._started, then)
        if self.profile.cores is None:
            self._handles += 1
            handle = self._handles
            self._then[handle] = started
            delay = self.profile.provisioning_for(path, u, self.starting)
            self.schedule(self.now + delay, partial(self._done, handle))
            return handle
        return self.begin_shared(self.profile.provisioning_for(path, u, self.starting), started)

    def begin_shared(self, work: float, then: Callable[[], None], *, crowds: bool = True) -> int:
        """A phase that needs ``work`` seconds of a core (``profile.cores`` set), moving at the rate
        the starts under way leave each (``sharing_rate``); ``then`` runs when it is done.
        ``crowds``: it counts among them (a start); otherwise it only waits its turn with them."""
        self._handles += 1
        handle = self._handles
        self._then[handle] = then
        self._share()
        self._left[handle] = work
        if not crowds:
            self._light.add(handle)
        self._plan_next()
        return handle

    def drop_start(self, handle: int) -> None:
        """A start stopped before it was done (a build stopped while provisioning)."""
        if self._then.pop(handle, None) is None:
            return
        self.starting -= 1
        if handle in self._left:
            self._share()
            del self._left[handle]
            self._plan_next()

    def _done(self, handle: int) -> None:
        then = self._then.pop(handle, None)
        if then is not None:
            then()

    def _started(self, then: Callable[[], None]) -> None:
        self.starting -= 1
        then()

    def _rate(self) -> float:
        """How fast each start under way moves (``sharing_rate``)."""
        crowd = len(self._left) - len(self._light)
        return sharing_rate(crowd, self.profile.cores or 1.0, self.profile.start_overlap)

    def _share(self) -> None:
        """Count off the work every start under way did since the last change."""
        elapsed = self.now - self._left_at
        if elapsed > 0 and self._left:
            done = elapsed * self._rate()
            for handle in self._left:
                self._left[handle] -= done
        self._left_at = self.now

    def _plan_next(self) -> None:
        self._plan += 1
        if self._left:
            plan = self._plan
            due = self.now + max(0.0, min(self._left.values())) / self._rate()
            self.schedule(due, lambda: self._shared_done(plan))

    def _shared_done(self, plan: int) -> None:
        if plan != self._plan:
            return  # a start began or ended since: another event is due instead
        self._share()
        done = [h for h, left in self._left.items() if left <= 1e-9]
        for handle in done:
            del self._left[handle]
            self._light.discard(handle)
        self._plan_next()
        for handle in done:
            self._done(handle)

    def slots_changed(self) -> None:
        """Note the budget both paths hold now (what the split keeps within the budget)."""
        self.peak_slots = max(self.peak_slots, sum(held() for held in self.holders))

    def schedule(self, at: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, action))

    def next_event(self) -> float:
        """When the next event is due (infinity when none is)."""
        return self._events[0][0] if self._events else math.inf

    def run_until(self, t: float) -> None:
        """Play every event due by ``t``, in order; the clock ends at ``t``."""
        while self._events and self._events[0][0] <= t:
            at, _, action = heapq.heappop(self._events)
            self.now = at
            action()
        self.now = max(self.now, t)

    def work_started(self, attempt: Attempt) -> None:
        attempt.work_at = self.now
        self._move(attempt.path, +1)

    def work_ended(self, attempt: Attempt, failed: bool) -> None:
        attempt.ended_at = self.now
        attempt.failed = failed
        self.failures += failed
        self._move(attempt.path, -1)

    def _move(self, path: Path, step: int) -> None:
        self.at_work[path] += step
        legacy, new = self.at_work[Path.LEGACY], self.at_work[Path.NEW]
        if self.changes and self.changes[-1][0] == self.now:
            self.changes[-1] = (self.now, legacy, new)
        else:
            self.changes.append((self.now, legacy, new))


@dataclass(slots=True)
class _Job:
    work: Work
    attempt: int  # the controller's dispatch attempt (its fence), which picks the draws
    state: JobState = _QUEUED
    record: Attempt | None = None


class SimulatedBatch:
    """The new path: a job per conversion, at most ``cap`` holding a slot (the compute environment's
    maxvCpus), fewer if the Fargate vCPU quota allows fewer; provisioning happens in the slot."""

    path = Path.NEW

    def __init__(self, world: World, *, quota_slots: int | None = None) -> None:
        self.world = world
        self.quota_slots = quota_slots
        self.cap = 0
        self.held = 0
        self.peak_held = 0
        self.peak_cap = 0  # the highest cap the controller asked for
        self._jobs: dict[str, _Job] = {}
        self._queue: deque[str] = deque()

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        refs = []
        for item in batch.items:
            job_id = f"{batch.key}.{item.conversion_id}"
            if job_id not in self._jobs:
                self._jobs[job_id] = _Job(self.world.works[item.conversion_id], item.fence)
                self._queue.append(job_id)
            refs.append(JobRef(job_id, item.conversion_id))
        self._start_queued()
        return refs

    def poll(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        jobs = self._jobs
        return {ref: (job.state if (job := jobs.get(ref.job_id)) else _UNKNOWN) for ref in refs}

    def find(self, intents: Sequence[tuple[str, str]]) -> dict[str, JobRef]:
        return {cid: JobRef(f"{key}.{cid}", cid) for cid, key in intents if f"{key}.{cid}" in self._jobs}

    def cancel(self, ref: JobRef) -> None:
        job = self._jobs.get(ref.job_id)
        if job is not None and job.state is _QUEUED:
            self._queue.remove(ref.job_id)
            job.state = JobState(JobStatus.FAILED, "cancelled before it started")

    def set_capacity(self, slots: int) -> int:
        self.cap = max(0, slots)
        if self._queue or self.held:
            self.peak_cap = max(self.peak_cap, min(self.cap, self.held + len(self._queue)))
        self._start_queued()
        return max(slots, self.held)

    def in_use(self) -> int:
        return self.held

    def close(self) -> None:
        return None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _limit(self) -> int:
        return self.cap if self.quota_slots is None else min(self.cap, self.quota_slots)

    def _start_queued(self) -> None:
        limit = self._limit()
        world = self.world
        while self._queue and self.held < limit:
            job = self._jobs[self._queue.popleft()]
            self.held += 1
            self.peak_held = max(self.peak_held, self.held)
            world.slots_changed()
            job.state = _RUNNING
            job.record = Attempt(job.work.conversion_id, Path.NEW, world.now)
            world.attempts.append(job.record)
            world.launches.append(world.now)
            world.begin_start(Path.NEW, job.work.provisioning_draw(job.attempt), partial(self._work, job))

    def _work(self, job: _Job) -> None:
        world = self.world
        assert job.record is not None
        world.work_started(job.record)
        duration = world.profile.duration(job.work, Path.NEW, job.attempt)
        failed = world.profile.fails(job.work, Path.NEW, job.attempt)
        world.schedule(world.now + duration, lambda: self._end(job, failed))

    def _end(self, job: _Job, failed: bool) -> None:
        world = self.world
        assert job.record is not None
        world.work_ended(job.record, failed)
        started, ended = job.record.work_at, world.now
        status = JobStatus.FAILED if failed else JobStatus.SUCCEEDED
        final = JobState(status, "simulated failure" if failed else "", None, *_work(started, ended))
        ending = world.profile.release_work
        if world.profile.cores is not None and ending is not None:
            # The complement of its start's draw: uniform too, and no draw added to the workload.
            u = 1.0 - job.work.provisioning_draw(job.attempt)
            world.begin_shared(ending.at(u), partial(self._release, job, final), crowds=False)
        elif world.profile.release > 0:
            world.schedule(world.now + world.profile.release, partial(self._release, job, final))
        else:
            self._release(job, final)

    def _release(self, job: _Job, final: JobState) -> None:
        job.state = final
        self.held -= 1
        self._start_queued()


@dataclass(slots=True)
class _Build:
    record: BuildRecord
    items: list[tuple[Work, int]]  # (conversion, attempt) in manifest order
    states: dict[str, JobState] = field(default_factory=dict)
    running: dict[str, Attempt] = field(default_factory=dict)
    next_item: int = 0
    done: int = 0
    working: bool = False
    start: int = 0  # its provisioning's handle in the world

    @property
    def ended(self) -> bool:
        return self.record.ended_at is not None


class SimulatedBuilds:
    """The old path: a build per submit with ``batch.concurrency`` threads, provisioned first, then
    working through its manifest in order, each thread taking the profile's ``build_gap`` between
    one conversion and the next; stopped at ``timeout`` seconds after it was started."""

    path = Path.LEGACY

    def __init__(self, world: World, *, timeout: float = 8 * 3600.0) -> None:
        self.world = world
        self.timeout = timeout
        self._builds: dict[str, _Build] = {}
        self._live: list[_Build] = []

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        refs = [JobRef(batch.key, item.conversion_id) for item in batch.items]
        if batch.key in self._builds or not batch.items:
            return refs
        world = self.world
        record = BuildRecord(batch.key, world.now, max(1, batch.concurrency), len(batch.items))
        world.builds.append(record)
        world.slots_changed()
        build = _Build(record, [(world.works[i.conversion_id], i.fence) for i in batch.items])
        self._builds[batch.key] = build
        self._live.append(build)
        first = build.items[0]
        build.start = world.begin_start(
            Path.LEGACY, first[0].provisioning_draw(first[1]), lambda: self._begin(build)
        )
        world.schedule(world.now + self.timeout, lambda: self._time_out(build))
        return refs

    def poll(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        out: dict[JobRef, JobState] = {}
        builds = self._builds
        for ref in refs:
            build = builds.get(ref.job_id)
            if build is None:
                out[ref] = JobState(JobStatus.UNKNOWN, "no such build")
                continue
            state = build.states.get(ref.conversion_id)
            if state is None:
                state = _RUNNING if ref.conversion_id in build.running else _QUEUED
            out[ref] = state
        return out

    def find(self, intents: Sequence[tuple[str, str]]) -> dict[str, JobRef]:
        found = {}
        for cid, key in intents:
            build = self._builds.get(key)
            if build is not None and any(w.conversion_id == cid for w, _ in build.items):
                found[cid] = JobRef(key, cid)
        return found

    def cancel(self, ref: JobRef) -> None:
        build = self._builds.get(ref.job_id)
        if build is not None and not build.ended:
            self._stop(build, "build stopped")

    def set_capacity(self, slots: int) -> int | None:
        """A build's threads are fixed when it starts; there is no cap to set."""
        return None

    def in_use(self) -> int:
        """Threads held by builds not ended: each holds min(threads, conversions left), as the
        CodeBuild adapter counts them (a build still provisioning holds its threads too)."""
        self._live = [b for b in self._live if not b.ended]
        return sum(min(b.record.threads, len(b.items) - b.done) for b in self._live)

    def close(self) -> None:
        return None

    # -- the build at work ---------------------------------------------------------------------

    def _begin(self, build: _Build) -> None:
        if build.ended:
            return  # stopped while provisioning (the start was dropped then)
        build.working = True
        for _ in range(min(build.record.threads, len(build.items))):
            self._next(build)

    def _next(self, build: _Build) -> None:
        if build.ended or build.next_item >= len(build.items):
            return
        work, attempt = build.items[build.next_item]
        build.next_item += 1
        world = self.world
        record = Attempt(work.conversion_id, Path.LEGACY, world.now)
        world.attempts.append(record)
        build.running[work.conversion_id] = record
        world.work_started(record)
        duration = world.profile.duration(work, Path.LEGACY, attempt)
        failed = world.profile.fails(work, Path.LEGACY, attempt)
        world.schedule(world.now + duration, lambda: self._item_end(build, work, record, failed))

    def _item_end(self, build: _Build, work: Work, record: Attempt, failed: bool) -> None:
        if build.running.get(work.conversion_id) is not record:
            return  # the build was stopped meanwhile
        world = self.world
        del build.running[work.conversion_id]
        world.work_ended(record, failed)
        status = JobStatus.FAILED if failed else JobStatus.SUCCEEDED
        reason = "simulated failure" if failed else ""
        build.states[work.conversion_id] = JobState(status, reason, None, *_work(record.work_at, world.now))
        build.done += 1
        if build.done == len(build.items):
            build.record.ended_at = world.now
        elif world.profile.build_gap > 0:
            world.schedule(world.now + world.profile.build_gap, lambda: self._next(build))
        else:
            self._next(build)

    def _time_out(self, build: _Build) -> None:
        if not build.ended:
            build.record.timed_out = True
            self._stop(build, f"build timed out after {self.timeout:.0f}s")

    def _stop(self, build: _Build, why: str) -> None:
        world = self.world
        if not build.working:
            world.drop_start(build.start)
        for record in list(build.running.values()):
            world.work_ended(record, True)
        build.running.clear()
        world.failures += 1  # the poll sees failures: the cycle has something to record
        for work, _ in build.items:
            build.states.setdefault(work.conversion_id, JobState(JobStatus.FAILED, why))
        build.done = len(build.items)
        build.record.ended_at = world.now

"""In-memory doubles for the loop's ports: a world in which two backends do work in ticks.

``World`` counts the work being done on both paths at every tick, so tests can check the budget
against what really ran, not against what the controller believed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from controller.domain import DispatchBatch, JobRef, JobState, JobStatus, Path
from controller.errors import BackendUnavailableError, SubmitRejectedError
from flags.snapshot import FlagSnapshot, FlagState, FlagStatus


class Crash(Exception):
    """A simulated process death at a step boundary (not a cutover error: nothing catches it)."""


@dataclass
class FakeClock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeFlags:
    """A flag reader whose answer the test sets."""

    status: FlagStatus

    def read(self) -> FlagStatus:
        return self.status

    @classmethod
    def none(cls) -> FakeFlags:
        return cls(FlagStatus(None, FlagState.UNAVAILABLE, 0.0, "no flag"))

    def publish(self, version: str, tenants: set[int], enabled: bool = True) -> None:
        snap = FlagSnapshot(version, enabled, frozenset(tenants), "fake", 0.0)
        self.status = FlagStatus(snap, FlagState.OK if enabled else FlagState.DISABLED, 0.0)


@dataclass
class _Job:
    conversion_id: str
    batch: str
    ticks_left: int
    status: JobStatus = JobStatus.QUEUED
    fail: bool = False


@dataclass
class World:
    """Both paths' work; ``tick`` advances it and records the peak of work being done."""

    budget: int
    peak: int = 0
    executions: dict[str, list[Path]] = field(default_factory=dict)
    backends: list[FakeBackend] = field(default_factory=list)

    def load(self) -> int:
        """Conversions being worked on right now, on both paths together."""
        return sum(b.running() for b in self.backends)

    def tick(self) -> None:
        for b in self.backends:
            b.tick()
        self.peak = max(self.peak, self.load())


class FakeBackend:
    """A backend in memory. Legacy batches are builds with fixed threads; new jobs obey a cap."""

    def __init__(self, path: Path, world: World, *, ticks: int = 2, can_cap: bool = True) -> None:
        self.path = path
        self.world = world
        self.ticks = ticks
        self.can_cap = can_cap
        self.capacity = 0
        self.jobs: dict[str, _Job] = {}
        self.builds: dict[str, tuple[int, list[str]]] = {}
        self.submits: list[DispatchBatch] = []
        self.fail_ids: set[str] = set()
        self.crash_before_submit = False
        self.crash_after_submit = False
        self.reject_next = False
        self.unavailable_after_submit = False
        self.cancelled: list[JobRef] = []
        world.backends.append(self)

    # -- the port ----------------------------------------------------------------------------

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        if self.crash_before_submit:
            self.crash_before_submit = False
            raise Crash("died before the submit call")
        if self.reject_next:
            self.reject_next = False
            raise SubmitRejectedError("refused")
        self.submits.append(batch)
        refs = []
        for item in batch.items:
            job_id = f"{batch.key}/{item.conversion_id}"
            self.jobs[job_id] = _Job(
                item.conversion_id, batch.key, self.ticks, fail=item.conversion_id in self.fail_ids
            )
            self.world.executions.setdefault(item.conversion_id, []).append(self.path)
            refs.append(JobRef(job_id, item.conversion_id))
        if self.path is Path.LEGACY:
            self.builds[batch.key] = (
                batch.concurrency,
                [f"{batch.key}/{i.conversion_id}" for i in batch.items],
            )
        if self.crash_after_submit:
            self.crash_after_submit = False
            raise Crash("died after the submit call, before recording it")
        if self.unavailable_after_submit:
            self.unavailable_after_submit = False
            raise BackendUnavailableError("timed out waiting for the answer")
        return refs

    def poll(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        out = {}
        for ref in refs:
            job = self.jobs.get(ref.job_id)
            if job is None:
                out[ref] = JobState(JobStatus.UNKNOWN)
            elif job.status is JobStatus.FAILED:
                out[ref] = JobState(JobStatus.FAILED, "boom")
            else:
                out[ref] = JobState(job.status)
        return out

    def find(self, intents: Sequence[tuple[str, str]]) -> dict[str, JobRef]:
        found = {}
        for cid, key in intents:
            job_id = f"{key}/{cid}"
            if job_id in self.jobs:
                found[cid] = JobRef(job_id, cid)
        return found

    def cancel(self, ref: JobRef) -> None:
        self.cancelled.append(ref)
        job = self.jobs.get(ref.job_id)
        if job is not None and job.status is JobStatus.QUEUED:
            job.status = JobStatus.FAILED

    def set_capacity(self, slots: int) -> int | None:
        if not self.can_cap:
            return None
        self.capacity = slots
        return max(slots, self.running())

    def in_use(self) -> int:
        if self.path is Path.LEGACY:
            held = 0
            for threads, ids in self.builds.values():
                left = sum(1 for j in ids if not self.jobs[j].status.terminal)
                held += min(threads, left)
            return held
        return self.running()

    def close(self) -> None:
        return None

    # -- the machine -------------------------------------------------------------------------

    def running(self) -> int:
        return sum(1 for j in self.jobs.values() if j.status is JobStatus.RUNNING)

    def tick(self) -> None:
        for job in self.jobs.values():
            if job.status is JobStatus.RUNNING:
                job.ticks_left -= 1
                if job.ticks_left <= 0:
                    job.status = JobStatus.FAILED if job.fail else JobStatus.SUCCEEDED
        if self.path is Path.LEGACY:
            for threads, ids in self.builds.values():
                running = sum(1 for j in ids if self.jobs[j].status is JobStatus.RUNNING)
                for j in ids:
                    if running >= threads:
                        break
                    if self.jobs[j].status is JobStatus.QUEUED:
                        self.jobs[j].status = JobStatus.RUNNING
                        running += 1
        else:
            cap = self.capacity if self.can_cap else 10**9
            running = self.running()
            for job in self.jobs.values():
                if running >= cap:
                    break
                if job.status is JobStatus.QUEUED:
                    job.status = JobStatus.RUNNING
                    running += 1

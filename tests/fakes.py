"""In-memory doubles for the loop's ports: a world in which two backends do work in ticks.

``World`` counts the work being done on both paths at every tick, so tests can check the budget
against what really ran, not against what the controller believed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.core.domain import (
    ConversionRequest,
    ConversionState,
    DispatchBatch,
    JobRef,
    JobState,
    JobStatus,
    Path,
)
from controller.core.errors import (
    BackendUnavailableError,
    FlagUnavailableError,
    SubmitRejectedError,
)
from controller.core.ports import Claim, Dispatched, Finish, Ledger
from flags.document import parse_flag
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
class Run:
    """One execution that really started: a job that left the queue and worked (``World.runs``)."""

    conversion_id: str
    path: Path
    job_id: str
    fence: int
    started: int  # World event number
    ended: int | None = None
    outcome: JobStatus | None = None


@dataclass
class _Job:
    conversion_id: str
    batch: str
    ticks_left: int
    status: JobStatus = JobStatus.QUEUED
    fail: bool = False
    fence: int = 0
    run: Run | None = None


@dataclass
class World:
    """Both paths' work; ``tick`` advances it and records the peak of work being done.

    ``executions`` lists the paths a conversion was submitted to; ``runs`` lists the executions
    that really started (a job cancelled while queued never runs), in the order they started.
    """

    budget: int
    peak: int = 0
    executions: dict[str, list[Path]] = field(default_factory=dict)
    backends: list[FakeBackend] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    events: int = 0

    def load(self) -> int:
        """Conversions being worked on right now, on both paths together."""
        return sum(b.running() for b in self.backends)

    def tick(self) -> None:
        for b in self.backends:
            b.tick()
        self.peak = max(self.peak, self.load())

    def event(self) -> int:
        self.events += 1
        return self.events

    def busy(self) -> bool:
        """True while any backend holds a job that is queued or running."""
        return any(not j.status.terminal for b in self.backends for j in b.jobs.values())


LISTING_LAG_SECONDS = 10.0  # how far a lagging listing is behind; well under the intent grace


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
        # Further faults, each one-shot like the ones above.
        self.unavailable_before_submit = False  # a timeout before the backend got the request
        self.poll_unavailable = False  # a throttled or timed-out status call
        self.cancel_unavailable = 0  # the next n cancels are throttled (StopBuild, TerminateJob)
        self.poll_unknown = False  # the next poll answers UNKNOWN for everything (unreadable answers)
        # Listings lag behind submits (eventual consistency): while set, ``find`` does not see a job
        # submitted less than ``LISTING_LAG_SECONDS`` ago on ``clock``.
        self.listing_lag = False
        # A new cap takes effect only after the next tick (UpdateComputeEnvironment is asynchronous:
        # RUNNABLE jobs may still start under the old maxvCpus meanwhile).
        self.capacity_lags = False
        self._pending_capacity: int | None = None
        self.clock: Callable[[], float] | None = None
        self._submitted_at: dict[str, float] = {}
        self.find_unavailable = False  # a throttled or timed-out lookup during reconciliation
        self.fail_once: set[str] = set()  # the next execution of these conversions fails
        self.unknown_once: set[str] = set()  # the next poll answers UNKNOWN for these conversions
        self.cancelled: list[JobRef] = []
        # Like TerminateJob / StopBuild, cancel may stop a job that already runs (off by default).
        self.cancel_stops_running = False
        self.on_cancel: Callable[[JobRef], None] | None = None  # sees every cancel as it is asked
        self._seen_in_use = 0  # what the last poll saw (see ``in_use``)
        # The local runners count their own processes: what runs, and what a cancel killed, is
        # known at once. The AWS adapters know only what their last poll saw (the default).
        self.live_view = False
        world.backends.append(self)

    # -- the port ----------------------------------------------------------------------------

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        if self.crash_before_submit:
            self.crash_before_submit = False
            raise Crash("died before the submit call")
        if self.reject_next:
            self.reject_next = False
            raise SubmitRejectedError("refused")
        if self.unavailable_before_submit:
            self.unavailable_before_submit = False
            raise BackendUnavailableError("timed out before the request was sent")
        self.submits.append(batch)
        refs = []
        for item in batch.items:
            job_id = f"{batch.key}/{item.conversion_id}"
            fail = item.conversion_id in self.fail_ids or item.conversion_id in self.fail_once
            self.fail_once.discard(item.conversion_id)
            self.jobs[job_id] = _Job(item.conversion_id, batch.key, self.ticks, fail=fail, fence=item.fence)
            if self.clock is not None:
                self._submitted_at[job_id] = self.clock()
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
        if self.poll_unavailable:
            self.poll_unavailable = False
            raise BackendUnavailableError("status call throttled")
        if self.poll_unknown:
            # As the adapters do with jobs they cannot see: no state, and nothing counted in use.
            self.poll_unknown = False
            self._seen_in_use = 0
            return {ref: JobState(JobStatus.UNKNOWN, "answer unreadable") for ref in refs}
        self._seen_in_use = self._held(refs)
        out = {}
        for ref in refs:
            job = self.jobs.get(ref.job_id)
            if ref.conversion_id in self.unknown_once:
                self.unknown_once.discard(ref.conversion_id)
                out[ref] = JobState(JobStatus.UNKNOWN, "its manifest is unreadable")
            elif job is None:
                out[ref] = JobState(JobStatus.UNKNOWN)
            elif job.status is JobStatus.FAILED:
                out[ref] = JobState(JobStatus.FAILED, "boom")
            else:
                out[ref] = JobState(job.status)
        return out

    def find(self, intents: Sequence[tuple[str, str]]) -> dict[str, JobRef]:
        if self.find_unavailable:
            self.find_unavailable = False
            raise BackendUnavailableError("lookup throttled")
        found = {}
        for cid, key in intents:
            job_id = f"{key}/{cid}"
            if job_id in self.jobs and not self._lagging(job_id):
                found[cid] = JobRef(job_id, cid)
        return found

    def _lagging(self, job_id: str) -> bool:
        if not self.listing_lag or self.clock is None:
            return False
        return self.clock() - self._submitted_at.get(job_id, float("-inf")) < LISTING_LAG_SECONDS

    def cancel(self, ref: JobRef) -> None:
        self.cancelled.append(ref)
        if self.cancel_unavailable > 0:
            self.cancel_unavailable -= 1
            raise BackendUnavailableError("stop call throttled")
        if self.on_cancel is not None:
            self.on_cancel(ref)
        job = self.jobs.get(ref.job_id)
        if job is not None and job.status is JobStatus.QUEUED:
            job.status = JobStatus.FAILED
        elif job is not None and job.status is JobStatus.RUNNING and self.cancel_stops_running:
            job.status = JobStatus.FAILED
            if job.run is not None:
                job.run.ended = self.world.event()
                job.run.outcome = job.status

    def set_capacity(self, slots: int) -> int | None:
        if not self.can_cap:
            return None
        if self.capacity_lags and slots < self.capacity:
            self._pending_capacity = slots
            return max(slots, self._seen_in_use)
        self.capacity, self._pending_capacity = slots, None
        return max(slots, self._seen_in_use)  # like maxvCpus: never below what the last poll saw run

    def in_use(self) -> int:
        """What the last poll saw, as the AWS adapters know it: 0 before the first poll, and
        nothing of what started, ended or was submitted since (``live_in_use`` is the truth); with
        ``live_view``, what holds a slot now, as the local runners know it."""
        return self._held(None) if self.live_view else self._seen_in_use

    def live_in_use(self) -> int:
        return self._held(None)

    def _held(self, refs: Sequence[JobRef] | None) -> int:
        """Budget slots held by the jobs of ``refs`` (all jobs when None): a legacy build its
        threads up to its conversions left, a new-path job one while it runs."""
        polled = None if refs is None else {r.job_id for r in refs}
        if self.path is Path.LEGACY:
            held = 0
            for threads, ids in self.builds.values():
                if polled is not None and not polled.intersection(ids):
                    continue
                left = sum(1 for j in ids if not self.jobs[j].status.terminal)
                held += min(threads, left)
            return held
        return sum(
            1
            for job_id, j in self.jobs.items()
            if j.status is JobStatus.RUNNING and (polled is None or job_id in polled)
        )

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
                    if job.run is not None:
                        job.run.ended = self.world.event()
                        job.run.outcome = job.status
        if self.path is Path.LEGACY:
            for threads, ids in self.builds.values():
                running = sum(1 for j in ids if self.jobs[j].status is JobStatus.RUNNING)
                for j in ids:
                    if running >= threads:
                        break
                    if self.jobs[j].status is JobStatus.QUEUED:
                        self._start(j)
                        running += 1
        else:
            cap = self.capacity if self.can_cap else 10**9
            running = self.running()
            for job_id, job in self.jobs.items():
                if running >= cap:
                    break
                if job.status is JobStatus.QUEUED:
                    self._start(job_id)
                    running += 1
            if self._pending_capacity is not None:
                self.capacity, self._pending_capacity = self._pending_capacity, None

    def _start(self, job_id: str) -> None:
        job = self.jobs[job_id]
        job.status = JobStatus.RUNNING
        job.run = Run(job.conversion_id, self.path, job_id, job.fence, self.world.event())
        self.world.runs.append(job.run)


class FakeFlagSource:
    """A flag source (the agent, a file) whose answer the test sets: a document, an outage, garbage.

    Documents go through the real ``parse_flag``, so a bad one fails the way a real source fails.
    ``last`` says what the latest fetch did: ``"ok"``, ``"unavailable"`` or ``"invalid"``.
    """

    name = "fake"

    def __init__(self, clock: Callable[[], float], flag_key: str = "migrated_tenants") -> None:
        self.clock = clock
        self.flag_key = flag_key
        self.document: str | bytes | None = None  # None: nothing deployed yet
        self.version: str | None = None
        self.down = False
        self.garbage: str | bytes | None = None
        self.last = ""

    def serve(self, document: str | bytes, version: str | None) -> None:
        self.document, self.version = document, version

    def fetch(self) -> FlagSnapshot:
        self.last = "unavailable"
        if self.down:
            raise FlagUnavailableError("agent did not answer")
        if self.garbage is None and self.document is None:
            raise FlagUnavailableError("nothing deployed yet")
        self.last = "invalid"
        if self.garbage is not None:
            return parse_flag(self.garbage, flag_key=self.flag_key, source=self.name, fetched_at=self.clock())
        assert self.document is not None
        snap = parse_flag(
            self.document,
            flag_key=self.flag_key,
            source=self.name,
            fetched_at=self.clock(),
            version=self.version,
        )
        self.last = "ok"
        return snap


class Tripwire:
    """Wraps a port; an armed method runs an action just before or just after the real call.

    The action may raise ``Crash`` (a process death at that step boundary) or do other work first
    (a pause in which the rest of the world moves on). Each arming fires once.
    """

    def __init__(self, target: Any) -> None:
        self._target = target
        self._armed: dict[str, tuple[str, Callable[[], None]]] = {}

    def arm(self, method: str, when: str, action: Callable[[], None]) -> None:
        if when not in ("before", "after"):
            raise ValueError(when)
        self._armed[method] = (when, action)

    def disarm(self) -> None:
        self._armed.clear()

    @property
    def armed(self) -> bool:
        return bool(self._armed)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name not in self._armed:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            armed = self._armed.pop(name, None)
            if armed is not None and armed[0] == "before":
                armed[1]()
            result = attr(*args, **kwargs)
            if armed is not None and armed[0] == "after":
                armed[1]()
            return result

        return call


def record_finished(
    ledger: Ledger,
    tag: str,
    tenants: Sequence[int],
    path: Path,
    *,
    at: float,
    count: int,
    fails: Callable[[int], bool] = lambda i: False,
    seconds: float = 5.0,
) -> None:
    """``count`` conversions of ``tenants`` (in turn) claimed on ``path`` at ``at`` and finished
    ``seconds`` later, those numbered ``i`` with ``fails(i)`` failed: evidence for the rollout gates."""
    requests = [ConversionRequest(f"{tag}-{i}", tenants[i % len(tenants)]) for i in range(count)]
    ledger.accept(requests, at)
    ledger.claim([Claim(r, path, "1", "test") for r in requests], at)
    records = [ledger.get(r.conversion_id) for r in requests]
    taken = ledger.mark_dispatching([r for r in records if r is not None], f"b-{tag}", at)
    ledger.mark_dispatched([Dispatched(r.conversion_id, r.fence, "job") for r in taken], at)
    ledger.mark_finished(
        [
            Finish(
                r.conversion_id, r.fence, ConversionState.FAILED if fails(i) else ConversionState.SUCCEEDED
            )
            for i, r in enumerate(taken)
        ],
        at + seconds,
    )

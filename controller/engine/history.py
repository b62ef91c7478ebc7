"""A forecast profile learnt from the ledger's history (``--profile last-peak`` or ``last-7d``).

Durations per tenant and path come from the job's own timing of each finished conversion (the
start and end its result reported), never from the ledger's own times, which include queueing
and cycle latency; a record without that timing is left out and counted. Failure rates are
failed attempts over attempts. Provisioning is a distribution of the delays seen, which the
simulation samples: for a build, the gap between its dispatch and its first conversion starting
work; for the new path, each job's gap between taking its slot and its work starting. Where the
backend told when the job took its slot (the local runner does; ``slot_at``), that gap is measured
as it was. Otherwise (Batch does not tell) the history is replayed: jobs take slots in the order
their work started, each as soon as it was handed over (its batch's claim: a large batch's
submit can take longer than a job's start) and a slot was free, a slot being free once its job's
work ended and the job let it go (the release below), within the budget less the threads the old
path's builds held then. Without a budget, only the jobs that started before any job of their
batch ended are measured (they cannot have waited for a slot), which favours quick starters.
Arrivals are the conversions received in the window, at the moments they came. Shadow runs on
the new path (``ShadowStore``, when the ledger keeps them) are new-path evidence too: a tenant
shadowed before it moves has its new-path durations, and each shadow's slot-to-work gap is one
more start-up seen, so the first group's forecast does not borrow the old path's. Reads the ledger
through ``LedgerQueries`` (and ``ShadowStore.shadows``) only.
"""

from __future__ import annotations

import bisect
import heapq
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

from controller.core.domain import ConversionRecord, ConversionState, Path
from controller.core.errors import InputError
from controller.core.ports import LedgerQueries, ShadowStore
from controller.core.shadow import ShadowKind, ShadowRecord, ShadowState
from controller.engine.profile import (
    DEFAULT_PROVISIONING,
    Arrival,
    Behaviour,
    Durations,
    Profile,
    Span,
    shared_work,
    start_overlap,
)

DAY = 86400.0
PEAK_LOOKBACK_DAYS = 35  # a month-start peak is found within the last five weeks
Window = Literal["last-peak", "last-7d"]


def records(ledger: LedgerQueries, page: int = 2000) -> Iterator[ConversionRecord]:
    """Every conversion in the ledger, in receipt order."""
    cursor: str | None = None
    while True:
        found, cursor = ledger.query(after=cursor, limit=page)
        yield from found
        if cursor is None:
            return


@dataclass
class Learnt:
    """What the history says, before it is cut into a profile."""

    durations: dict[tuple[int, Path], list[float]] = field(default_factory=dict)
    # first attempts and how many failed, then attempts after a resubmit and how many failed
    attempts: Counter[tuple[int, Path]] = field(default_factory=Counter)
    failures: Counter[tuple[int, Path]] = field(default_factory=Counter)
    retries: Counter[tuple[int, Path]] = field(default_factory=Counter)
    retry_failures: Counter[tuple[int, Path]] = field(default_factory=Counter)
    # per build: its dispatch and its first conversion's work starting (its provisioning)
    build_starts: dict[str, tuple[float, float]] = field(default_factory=dict)
    batches: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)  # new path
    # New-path jobs (handed over, work started, work ended, first attempt, slot taken when the
    # backend said) and old-path items per build (claimed, work started, work ended): the replay of
    # the slots reads them.
    jobs: list[tuple[float, float, float, bool, float | None]] = field(default_factory=list)
    items: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    received: list[tuple[float, int]] = field(default_factory=list)
    untimed: int = 0
    rolled_back: set[int] = field(default_factory=set)  # tenants seen back on the old path
    # new path: each job's work ended, and the outcome recorded
    endings: list[tuple[float, float]] = field(default_factory=list)
    # new-path shadows' starts: when each took its slot and when its work began
    shadow_starts: list[tuple[float, float]] = field(default_factory=list)
    shadowed: int = 0  # new-path shadow runs learnt from

    def add_shadow(self, s: ShadowRecord) -> None:
        """A new-path shadow run that succeeded: its duration for its tenant, its start-up."""
        if s.kind is not ShadowKind.NEW or s.output is None:
            return
        if s.work_started_at is None or s.work_seconds is None:
            return
        self.shadowed += 1
        self.durations.setdefault((s.tenant_id, Path.NEW), []).append(max(0.0, s.work_seconds))
        if s.slot_at is not None:
            self.shadow_starts.append((s.slot_at, s.work_started_at))

    def add(self, r: ConversionRecord) -> None:
        if r.received_at is not None:
            self.received.append((r.received_at, r.tenant_id))
        if r.path is None or not r.state.terminal:
            return
        key = (r.tenant_id, r.path)
        moved = (r.tenant_id, Path.NEW)
        if r.path is Path.LEGACY and moved in self.attempts:
            # Back on the old path after the new one (in receipt order): a rollback. A group moves
            # again once what failed is fixed, so its failures on the new path before are not kept.
            for seen in (self.attempts, self.failures, self.retries, self.retry_failures):
                seen.pop(moved, None)
            self.rolled_back.add(r.tenant_id)
        failed = r.state is ConversionState.FAILED
        # every attempt before the last failed; the last one failed when the conversion did
        self.attempts[key] += 1
        self.failures[key] += r.attempts > 1 or failed
        self.retries[key] += max(0, r.attempts - 1)
        self.retry_failures[key] += max(0, r.attempts - 2) + (failed and r.attempts > 1)
        if r.work_started_at is None or r.work_seconds is None:
            self.untimed += 1
            return
        began, ended = r.work_started_at, r.work_started_at + max(0.0, r.work_seconds)
        if r.state is ConversionState.SUCCEEDED:
            self.durations.setdefault(key, []).append(ended - began)
            if r.path is Path.NEW and r.finished_at is not None:
                self.endings.append((ended, max(ended, r.finished_at)))
        if r.dispatched_at is not None and r.path is Path.LEGACY:
            # held from the cycle whose split gave its build threads: the claim's, or a retry's dispatch
            claimed = r.claimed_at if r.attempts == 1 and r.claimed_at is not None else r.dispatched_at
            taken = min(claimed, r.dispatched_at)
            self.items.setdefault(r.job_ref or "", []).append((taken, began, ended))
            # a build's conversions share one dispatch (its job reference): the first to start ends it
            build = r.job_ref or ""
            dispatched, first = self.build_starts.get(build, (r.dispatched_at, began))
            self.build_starts[build] = (min(dispatched, r.dispatched_at), min(first, began))
        elif r.path is Path.NEW:
            first = r.attempts == 1 and r.claimed_at is not None
            handed = r.claimed_at if first and r.claimed_at is not None else (r.dispatched_at or began)
            self.jobs.append((min(handed, began), began, ended, first, r.slot_at))
        if r.dispatched_at is None or r.attempts != 1:
            return
        if r.path is Path.NEW and r.claimed_at is not None:  # a batch's jobs were handed over together
            batch = self.batches.setdefault(f"{r.dispatched_at:.3f}", [])
            batch.append((r.claimed_at, began, ended))

    def slotted_starts(self) -> list[tuple[float, float]]:
        """Slot and work start of the new-path jobs whose backend said when they took their slot."""
        return [(slot, began) for _, began, _, _, slot in self.jobs if slot is not None]

    def new_path_starts(self) -> list[tuple[float, float]]:
        """Starts of the new-path jobs (slot taken, work begun): as told where the slot was;
        otherwise (no backend told any) from the claim, for the jobs that started in their batch's
        first slots."""
        out = self.slotted_starts() + self.shadow_starts
        if out:
            return out
        for jobs in self.batches.values():
            first_end = min(end for _, _, end in jobs)
            out.extend((min(claimed, start), start) for claimed, start, _ in jobs if start < first_end)
        return out

    def build_gaps(self) -> list[float]:
        """Each old-path conversion's wait for a thread that had just finished one: a build's
        threads (as many as it had at work at once) taken by its conversions in the order they
        started, each from the thread that finished first before it began."""
        out: list[float] = []
        for items in self.items.values():
            ordered = sorted(items, key=lambda item: item[1])
            moves = sorted([(s, 1) for _, s, _ in items] + [(e, -1) for _, _, e in items])
            threads = now = 0
            for _, step in moves:
                now += step
                threads = max(threads, now)
            free = sorted(e for _, _, e in ordered[:threads])
            for _, began, ended in ordered[threads:]:
                i = bisect.bisect_right(free, began) - 1
                if i < 0:
                    continue  # no thread had finished yet: not a wait between two of a thread's
                out.append(began - free.pop(i))
                bisect.insort(free, ended)
        return out

    def legacy_held(self) -> tuple[list[float], list[int]]:
        """The threads the old path's builds held over time, as a step function (change times and
        the count from each on): a build holds from its claim (the cycle whose split gave it its
        threads) as many threads as it had at work
        at once, fewer once fewer conversions than that are left, none once its last one ended."""
        steps: list[tuple[float, int]] = []
        for items in self.items.values():
            dispatched = min(d for d, _, _ in items)
            moves = sorted([(s, 1) for _, s, _ in items] + [(e, -1) for _, _, e in items])
            threads = now = 0
            for _, step in moves:
                now += step
                threads = max(threads, now)
            ends = sorted(e for _, _, e in items)
            held = min(threads, len(ends))
            steps.append((dispatched, held))
            for i, end in enumerate(ends):
                left = min(threads, len(ends) - i - 1)
                if left < held:
                    steps.append((end, left - held))
                    held = left
        steps.sort()
        times: list[float] = []
        counts: list[int] = []
        total = 0
        for at, step in steps:
            total += step
            if times and times[-1] == at:
                counts[-1] = total
            else:
                times.append(at)
                counts.append(total)
        return times, counts

    def new_path_provisioning(self, budget: int, release: float) -> list[tuple[float, float]]:
        """Each new-path job's start, from taking its slot to its work starting: as measured where
        the backend told the slot, else (first attempts) by the replay the module describes."""
        times, counts = self.legacy_held()

        def cap(t: float) -> int:
            i = bisect.bisect_right(times, t) - 1
            return max(1, budget - (counts[i] if i >= 0 else 0))

        held: list[float] = []  # when each slot taken so far is let go (a heap)
        out: list[tuple[float, float]] = list(self.shadow_starts)
        t = -float("inf")
        for handed, began, ended, first, slot in sorted(self.jobs, key=lambda j: (j[1], j[0])):
            if slot is not None:
                out.append((min(slot, began), began))
                t = max(t, min(slot, began))
                heapq.heappush(held, ended + release)
                continue
            t = max(t, handed)
            while True:
                while held and held[0] <= t:
                    heapq.heappop(held)
                if len(held) < cap(t):
                    break
                later = bisect.bisect_right(times, t)
                t = min(held[0], times[later] if later < len(times) else held[0])
            if t > began:  # the replay is behind the history: this job cannot be measured
                t = began
            elif first:
                out.append((t, began))
            heapq.heappush(held, ended + release)
        return out


def learn(ledger: LedgerQueries) -> Learnt:
    """Read the whole history once."""
    out = Learnt()
    for r in records(ledger):
        out.add(r)
    if isinstance(ledger, ShadowStore):
        ran = (ShadowState.SUCCEEDED, ShadowState.COMPARED)
        for s in ledger.shadows(ran, kind=ShadowKind.NEW, limit=1_000_000):
            out.add_shadow(s)
    return out


def history_profile(
    ledger: LedgerQueries,
    window: Window,
    now: float,
    *,
    same_machine: bool = False,
    cycle_seconds: float = 0.0,
    budget: int | None = None,
) -> Profile:
    """The profile of ``window`` (``last-peak``: the busiest UTC day of the last five weeks;
    ``last-7d``: the last seven days) with durations learnt from the whole history, which ran
    under ``budget``."""
    learnt = learn(ledger)
    start, end, label = _window(learnt.received, window, now)
    arrivals = [Arrival(at - start, tenant) for at, tenant in learnt.received if start <= at < end]
    if not arrivals:
        raise InputError(f"--profile {window}: the ledger received no conversion in {label}")
    first = min(a.at for a in arrivals)
    arrivals = [Arrival(a.at - first, a.tenant_id) for a in arrivals]
    profile = profile_of(
        learnt,
        arrivals,
        name=window,
        source=f"ledger history, arrivals of {label}",
        same_machine=same_machine,
        cycle_seconds=cycle_seconds,
        budget=budget,
    )
    return replace(profile, window=(start + first, end))


def profile_of(
    learnt: Learnt,
    arrivals: Iterable[Arrival],
    *,
    name: str,
    source: str,
    same_machine: bool = False,
    cycle_seconds: float = 0.0,
    budget: int | None = None,
) -> Profile:
    """A profile with ``learnt``'s durations, failures, provisioning and release, and these arrivals.
    ``budget``: the one the history ran under, which the replay of the new path's slots needs.

    ``same_machine``: both paths start a worker process on this machine (the local runners), so a
    path whose provisioning was never measured takes the other path's rather than Fargate's, and
    every start shares the machine's cores: what is learnt is each start's own CPU work (its delay
    with the time it shared the cores with more starts than there are cores counted at its share),
    which the simulation shares the same way among the starts under way in it.
    A new-path job's release is the median lag from its end to the ledger's record of it, less
    the half cycle the controller takes on average to poll it (``cycle_seconds``).
    """
    notes: list[str] = []
    pooled: dict[Path, list[float]] = {p: [] for p in Path}
    for (_, path), seen in learnt.durations.items():
        pooled[path].extend(seen)
    if not pooled[Path.LEGACY] and not pooled[Path.NEW]:
        raise InputError(
            "the ledger has no finished conversion with the job's own timing to learn durations "
            "from; give --profile FILE"
        )
    for path in Path:
        if not pooled[path]:
            other = Path.NEW if path is Path.LEGACY else Path.LEGACY
            pooled[path] = list(pooled[other])
            notes.append(
                f"nothing has finished on the {path.value} path yet: "
                f"its durations are the {other.value} path's"
            )
    default = {p: _behaviour(learnt, Durations.of(pooled[p]), p, None, None) for p in Path}
    tenants: dict[int, dict[Path, Behaviour]] = {}
    for tenant, path in sorted(set(learnt.attempts) | set(learnt.durations)):
        # a tenant that never succeeded on a path has the path's durations and its own failures;
        # one only shadowed there, its shadows' durations and the path's failures
        timed = learnt.durations.get((tenant, path))
        durations = Durations.of(timed) if timed else default[path].durations
        tenants.setdefault(tenant, {})[path] = _behaviour(learnt, durations, path, tenant, default[path])
    if learnt.untimed:
        notes.append(f"{learnt.untimed} finished conversions carry no job timing and were left out")
    if learnt.shadowed:
        notes.append(f"{learnt.shadowed} new-path shadow runs count as new-path history")
    if learnt.rolled_back:
        notes.append(
            f"{len(learnt.rolled_back)} tenants went back to the old path after the new one: "
            "their failures on the new path before that are taken as fixed"
        )
    release = 0.0
    if learnt.endings:
        lags = sorted(recorded - ended for ended, recorded in learnt.endings)
        release = max(0.0, lags[len(lags) // 2] - cycle_seconds / 2)
        notes.append(f"new path release measured over {len(lags)} jobs")
    gaps_between = learnt.build_gaps()
    build_gap = sum(gaps_between) / len(gaps_between) if gaps_between else 0.0
    if gaps_between:
        notes.append(f"a build's pace measured over {len(gaps_between)} conversions")
    provisioning = dict(DEFAULT_PROVISIONING)
    measured: dict[Path, Span] = {}
    # Each path's starts are kept by how many were starting at once on either path.
    starts = {
        Path.LEGACY: [(d, max(d, b)) for d, b in learnt.build_starts.values()],
        Path.NEW: learnt.new_path_provisioning(budget, release)
        if budget is not None
        else learnt.new_path_starts(),
    }
    everyone = starts[Path.LEGACY] + starts[Path.NEW]
    cores = float(os.cpu_count() or 1) if same_machine and everyone else None
    overlap = start_overlap([starts[p] for p in Path], cores) if cores is not None else 0.0
    if cores is not None:
        notes.append(f"starts share {cores:g} cores (one machine), overlapping {overlap:g} of a core")
    for path in Path:
        if not starts[path]:
            continue
        if cores is None:
            measured[path] = Span.of_starts(starts[path], everyone)
        else:
            # each start's own work, which the simulation shares the same way
            work = shared_work(starts[path], everyone, cores, overlap)
            measured[path] = Span.of_starts(starts[path], everyone, work)
        provisioning[path] = measured[path]
        notes.append(f"{path.value} provisioning measured over {len(starts[path])} starts")
    release_work: Span | None = None
    if cores is not None and learnt.endings:
        # until the cycle that recorded it, less the half cycle a poll waits on average
        endings = [(e, max(e, f - cycle_seconds / 2)) for e, f in learnt.endings]
        release_work = Span.of(shared_work(endings, everyone, cores, overlap))
    for path in Path:
        other = Path.NEW if path is Path.LEGACY else Path.LEGACY
        if path in measured:
            continue
        if same_machine and other in measured:
            provisioning[path] = measured[other]
            notes.append(f"{path.value} provisioning: not measured; the {other.value} path's (same machine)")
        else:
            notes.append(f"{path.value} provisioning: the default (nothing measured)")
    return Profile(
        name=name,
        source=source,
        default=default,
        arrivals=tuple(sorted(arrivals, key=lambda a: (a.at, a.tenant_id))),
        tenants=tenants,
        provisioning=provisioning,
        release=release,
        build_gap=build_gap,
        notes=tuple(notes),
        cores=cores,
        start_overlap=overlap,
        release_work=release_work,
    )


def _behaviour(
    learnt: Learnt, durations: Durations, path: Path, tenant: int | None, usual: Behaviour | None
) -> Behaviour:
    """``durations`` with the failure rates seen on ``path`` (of ``tenant``, or all when None): of
    first attempts, and of attempts after a resubmit (the path's, ``usual``, when the tenant has
    none; none when nothing was resubmitted at all)."""

    def ratio(failed: Counter[tuple[int, Path]], tried: Counter[tuple[int, Path]]) -> float | None:
        if tenant is not None:
            n, bad = tried[(tenant, path)], failed[(tenant, path)]
        else:
            n = sum(v for (_, p), v in tried.items() if p is path)
            bad = sum(v for (_, p), v in failed.items() if p is path)
        return min(0.99, bad / n) if n else None

    first = ratio(learnt.failures, learnt.attempts) or 0.0
    retry = ratio(learnt.retry_failures, learnt.retries)
    if retry is None and usual is not None:
        retry = usual.retry_failure_rate
    return Behaviour(durations, first, retry)


def _window(received: list[tuple[float, int]], window: Window, now: float) -> tuple[float, float, str]:
    if window == "last-7d":
        return now - 7 * DAY, now + 1e-6, "the last 7 days"
    recent = [at for at, _ in received if at >= now - PEAK_LOOKBACK_DAYS * DAY]
    if not recent:
        raise InputError(
            f"--profile last-peak: the ledger received nothing in the last {PEAK_LOOKBACK_DAYS} days"
        )
    by_day: Counter[int] = Counter(int(at // DAY) for at in recent)
    day, _ = max(by_day.items(), key=lambda item: (item[1], item[0]))
    start = day * DAY
    return start, start + DAY, f"the busiest day of the last {PEAK_LOOKBACK_DAYS} ({_date(start)})"


def _date(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")

"""The promises under faults: replicas sharing one ledger, lagging and failing flag sources, backends
that refuse, time out, throttle and lose answers, throttle stop calls, answer UNKNOWN and list with a lag, crashes at every step
boundary and long pauses. The fake backends know what is in use only from their last poll, as the
AWS adapters do.

The model is a hypothesis state machine. Two or three controller replicas share one SQLite ledger
file and the two backends (as AWS is shared); each replica reads the flag through a real
``LastKnownGood`` over its own source, which may lag behind the latest deployment (as during an
AppConfig gradual deployment), go down or answer with a document from the bad-input corpus.
Ground truth comes from the fake world (what really ran, when, under which fence) and from the
model of what was published, never from the controllers' own reports.

Invariants, after every step:

- exclusive ownership: a conversion runs on one path only, the path it is owned by; a second run
  on that path only after the previous one failed, each under a new fence, at most
  1 + resubmits runs per ownership (promise 1);
- ownership never changes while a conversion is not terminal, and a terminal state stays put
  unless an operator requeues a failed conversion (promise 1);
- work being done on both paths together never exceeds the budget, at any tick (promise 2);
- every claim follows the flag its replica held: new path only under a valid flag that lists the
  tenant; a source failure never changes the flag a replica routes by (promise 3, 4);
- shadow runs (sampled in some examples, on shadow backends of their own, with crashes around
  their steps too) are counted in the load above, exist only for conversions the old path owns,
  and never change their conversion: every promise above holds with them as without them;

and once the faults stop and time passes the intent grace, every accepted conversion becomes
terminal: none lost, none still running anywhere, a failure only after the promised retries.

One assumption is stated rather than checked here: a backend call comes back within half the
dispatch lease (the AWS adapters keep to it: ``tests/aws/test_lease_bounds.py``). A submit that reaches its backend later may meet
a second dispatcher's admission, which nothing on the controller's side can see; the machine
still makes such calls, and from then on checks every promise but the budget.

Depth: ``pytest tests/properties --long`` (or ``CUTOVER_LONG_PROPERTIES=1``) runs many more and
longer examples than CI does.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from controller.core.domain import (
    ConversionRecord,
    ConversionRequest,
    ConversionState,
    JobRef,
    JobStatus,
    Path,
)
from controller.core.ports import Claim, Claimed, RouteGroups, Waiting
from controller.core.routing import FallbackPolicy, RoutingPolicy, StalePolicy
from controller.core.shadow import ShadowState
from controller.core.transitions import RetryPolicy
from controller.engine.cycle import Controller, CycleConfig
from controller.engine.shadows import ShadowConfig, ShadowRunner
from controller.ledger.sqlite import SQLiteLedger
from flags.lkg import LastKnownGood
from flags.snapshot import FlagSnapshot, FlagState, FlagStatus
from tests.badinput.flag_corpus import BAD_DOCUMENTS, KEY
from tests.fakes import Crash, FakeBackend, FakeClock, FakeFlagSource, Run, Tripwire, World

S = ConversionState
TENANTS = (1, 2, 3, 4, 5, 6)
# The ledger's fsyncs dominate the run time; memory-backed storage keeps examples cheap where it exists.
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
GRACE = 60.0  # intent grace: an unanswered dispatch intent is reconciled after this
LEASE = 30.0  # dispatch lease


@dataclass(frozen=True)
class Content:
    """One flag version as published: its label (AppConfig version), switch and tenants."""

    label: str
    enabled: bool
    tenants: frozenset[int]

    def document(self) -> str:
        body: dict[str, Any] = {"enabled": self.enabled}
        if self.enabled or self.tenants:
            body["tenant_ids"] = sorted(self.tenants)
        return json.dumps({KEY: body})

    def route(self, tenant: int) -> Path:
        return Path.NEW if self.enabled and tenant in self.tenants else Path.LEGACY

    def identity(self) -> tuple[str, bool, frozenset[int]]:
        return (self.label, self.enabled, self.tenants if self.enabled else frozenset())


def identity(snap: FlagSnapshot | None) -> tuple[str, bool, frozenset[int]] | None:
    return None if snap is None else (snap.version, snap.enabled, snap.tenant_ids)


@dataclass(frozen=True)
class Setup:
    """The knobs one example runs with."""

    replicas: int
    budget: int
    legacy_threads: int
    resubmits: int
    ticks: int
    can_cap: bool
    pause_without_flag: bool
    max_flag_age: float | None
    pause_when_stale: bool
    shadow_rate: float

    def cycle_config(self) -> CycleConfig:
        return CycleConfig(
            budget=self.budget,
            legacy_max_threads=self.legacy_threads,
            intent_grace_seconds=GRACE,
            lease_seconds=LEASE,
            routing=RoutingPolicy(
                on_flag_unavailable=FallbackPolicy.PAUSE
                if self.pause_without_flag
                else FallbackPolicy.LEGACY,
                on_stale_flag=StalePolicy.PAUSE if self.pause_when_stale else StalePolicy.SERVE,
                max_flag_age_seconds=self.max_flag_age,
            ),
            retry=RetryPolicy(resubmits=self.resubmits),
        )


setups = st.builds(
    Setup,
    replicas=st.integers(2, 3),
    budget=st.integers(2, 6),
    legacy_threads=st.integers(1, 4),
    resubmits=st.integers(0, 2),
    ticks=st.integers(1, 3),
    can_cap=st.booleans(),
    pause_without_flag=st.booleans(),
    max_flag_age=st.sampled_from([None, 90.0]),
    pause_when_stale=st.booleans(),
    shadow_rate=st.sampled_from([0.0, 0.5, 1.0]),
)


class RecordingLedger(SQLiteLedger):
    """The real SQLite ledger, telling the model which replica's claims created ownership and who
    holds the dispatch lease."""

    def __init__(
        self,
        path: FsPath,
        on_claim: Callable[[ConversionRecord], None],
        on_lease: Callable[[float], None],
    ) -> None:
        super().__init__(path)
        self._on_claim = on_claim
        self._on_lease = on_lease

    def try_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        taken = super().try_lease(name, holder, now, ttl)
        if taken and name == "dispatch":
            self._on_lease(now + ttl)
        return taken

    def claim(self, claims: Sequence[Claim], now: float) -> list[Any]:
        owned = super().claim(claims, now)
        for o in owned:
            if o.created:
                self._on_claim(o.record)
        return owned

    def claim_waiting(self, waiting: Waiting, routes: RouteGroups, now: float) -> Claimed:
        claimed = super().claim_waiting(waiting, routes, now)
        for i in claimed.created:
            record = self.get(waiting.conversion_ids[i])  # what the ledger holds, not what was asked
            assert record is not None
            self._on_claim(record)
        return claimed


class ShadowFakeBackend(FakeBackend):
    """A shadow backend in the same world: its work counts in the load, but its runs are kept
    apart from the conversions' own (a shadow is not an execution of its conversion)."""

    def __init__(self, path: Path, world: World, *, ticks: int) -> None:
        super().__init__(path, world, ticks=ticks)
        self.shadow_runs: list[Run] = []
        self.cancel_stops_running = True
        self.live_view = True  # shadows run on the local runners, which see a kill at once

    def _start(self, job_id: str) -> None:
        runs = self.world.runs
        self.world.runs = self.shadow_runs
        try:
            super()._start(job_id)
        finally:
            self.world.runs = runs


SHADOW_PATHS = {"shadow_legacy": Path.LEGACY, "shadow_new": Path.NEW}


class ModelSource(FakeFlagSource):
    """The replica's flag source, telling the model each valid snapshot it hands out."""

    def __init__(self, clock: FakeClock, on_valid: Callable[[FlagSnapshot], None]) -> None:
        super().__init__(clock, KEY)
        self._on_valid = on_valid

    def fetch(self) -> FlagSnapshot:
        snap = super().fetch()
        self._on_valid(snap)
        return snap


class CheckedReader:
    """The replica's flag reader (real last-known-good); each answer is checked against the model."""

    def __init__(self, machine: ControllerMachine, replica: Replica, lkg: LastKnownGood) -> None:
        self.machine, self.replica, self.lkg = machine, replica, lkg

    def read(self) -> FlagStatus:
        status = self.lkg.read()
        self.machine.check_flag_read(self.replica, status)
        return status


@dataclass(repr=False)
class Replica:
    """One controller process; its flag source (the agent sidecar) outlives its restarts."""

    index: int
    source: FakeFlagSource
    deployment: int = -1  # the deployment its source serves (-1: none yet)
    generation: int = 0
    alive: bool = False
    busy: bool = False
    ledger: Any = None
    backends: dict[Path, Tripwire] = field(default_factory=dict)
    reader: Any = None
    lkg: LastKnownGood | None = None
    controller: Controller | None = None
    basis: FlagSnapshot | None = None  # the flag this incarnation routes by
    has_read: bool = False
    raw_ledger: SQLiteLedger | None = None
    shadow_backends: dict[Path, Tripwire] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"r{self.index}"

    def __repr__(self) -> str:
        return f"{self.name} (process {self.generation}, {'alive' if self.alive else 'dead'})"

    def tripwires(self) -> list[Tripwire]:
        return [self.ledger, self.reader, *self.backends.values(), *self.shadow_backends.values()]


@dataclass
class Conversion:
    """The model's view of one accepted conversion."""

    tenant: int
    owners: list[tuple[Path, str | None] | None] = field(default_factory=lambda: [None])
    params: dict[str, str] = field(default_factory=dict)  # as first sent: a repeat sends the same
    epoch_starts: list[int] = field(default_factory=lambda: [0])  # index into World.runs
    last_state: ConversionState = S.RECEIVED

    @property
    def owner(self) -> tuple[Path, str | None] | None:
        return self.owners[-1]


CRASH_POINTS = [
    ("reader", "read", "after"),
    ("ledger", "intents", "after"),
    ("ledger", "release", "before"),
    ("ledger", "claim_waiting", "before"),
    ("ledger", "claim_waiting", "after"),
    ("ledger", "save_flag", "before"),
    ("ledger", "save_flag", "after"),
    ("ledger", "mark_finished", "before"),
    ("ledger", "mark_finished", "after"),
    ("ledger", "resubmit", "after"),
    ("ledger", "try_lease", "after"),
    ("ledger", "mark_dispatching", "after"),
    ("ledger", "mark_dispatched", "before"),
    ("ledger", "mark_dispatched", "after"),
    ("legacy", "submit", "before"),
    ("legacy", "submit", "after"),
    ("new", "submit", "before"),
    ("new", "submit", "after"),
    ("new", "set_capacity", "after"),
    ("legacy", "poll", "after"),
    ("new", "poll", "after"),
    ("legacy", "find", "after"),
    ("new", "find", "after"),
    ("legacy", "cancel", "before"),
    ("new", "cancel", "before"),
    ("ledger", "add_shadows", "after"),
    ("ledger", "mark_shadows_dispatching", "after"),
    ("ledger", "finish_shadows", "before"),
    ("ledger", "release_shadows", "after"),
    ("shadow_new", "cancel", "before"),
    ("shadow_new", "cancel", "after"),
    ("shadow_new", "submit", "after"),
    ("shadow_new", "set_capacity", "after"),
    ("shadow_legacy", "submit", "before"),
    ("shadow_legacy", "submit", "after"),
]

DISPATCH_STEPS = {"mark_dispatching", "mark_dispatched", "submit", "set_capacity", "cancel", "release"}
DISPATCH_CRASH_POINTS = [p for p in CRASH_POINTS if p[1] in DISPATCH_STEPS]

LONG = st.sampled_from([20.0, 45.0, 75.0, 150.0])
# A process pause (GC, CPU starvation, a slow store) between two steps: any length.
STEP_PAUSES = st.tuples(
    st.sampled_from(["ledger"]),
    st.sampled_from(["claim_waiting", "try_lease", "mark_finished"]),
    st.just("after"),
    LONG,
) | st.tuples(st.sampled_from(["legacy", "new"]), st.just("poll"), st.just("after"), LONG)
DISPATCH_PAUSES = st.one_of(
    st.tuples(st.just("ledger"), st.just("mark_dispatching"), st.just("after"), LONG),
    st.tuples(st.just("new"), st.just("set_capacity"), st.just("after"), LONG),
    # A submit whose answer is slow to come back, after the backend took the work: any length.
    st.tuples(st.sampled_from(["legacy", "new"]), st.just("submit"), st.just("after"), LONG),
    # A submit slow to reach the backend. Within half the dispatch lease - the time a backend call
    # is given to come back, which the adapters' timeouts must keep to - every promise holds. A
    # longer one leaves that contract: the late request may meet a second dispatcher's admission,
    # which nothing on this side can see, so from then on the run checks all but the budget.
    st.tuples(
        st.sampled_from(["legacy", "new"]),
        st.just("submit"),
        st.just("before"),
        st.sampled_from([5.0, 10.0, 45.0, 75.0]),
    ),
)

BACKEND_FAULTS = [
    "reject_next",  # refused or throttled: nothing started
    "unavailable_before_submit",  # timed out before the request left
    "unavailable_after_submit",  # did the work, then the answer was lost
    "poll_unavailable",  # status call throttled
    "find_unavailable",  # lookup throttled during reconciliation
    "poll_unknown",  # a status answer that cannot be read: UNKNOWN for every job asked about
    "cancel_unavailable",  # a stop call (StopBuild, TerminateJob) throttled
    "listing_lag",  # listings leave out what was submitted in the last seconds (until the drain)
]


class ControllerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.setup: Setup | None = None
        self.tmp = FsPath(tempfile.mkdtemp(prefix="cutover-machine-", dir=_SCRATCH))
        self.db = self.tmp / "ledger.db"
        self.clock = FakeClock()
        self.replicas: list[Replica] = []
        self.contents: dict[str, Content] = {}
        self.deployments: list[Content] = []
        # Valid flags a source handed out (each may have been persisted), and whether one was used.
        self.seen_valid: set[tuple[str, bool, frozenset[int]]] = set()
        self.routed_by_valid = False
        self.conversions: dict[str, Conversion] = {}
        self.next_id = 0
        self.intake: SQLiteLedger | None = None
        self.beyond_call_timeout = False  # a submit call outlived half the lease: promise 2 is off
        self.dispatcher: tuple[Replica, int, float] | None = None  # lease holder, its process, until
        self.shadow_shared: dict[Path, ShadowFakeBackend] = {}

    # -- set-up ----------------------------------------------------------------------------------

    @initialize(setup=setups)
    def start(self, setup: Setup) -> None:
        self.setup = setup
        self.world = World(budget=setup.budget)
        self.shared = {
            Path.LEGACY: FakeBackend(Path.LEGACY, self.world, ticks=setup.ticks),
            Path.NEW: FakeBackend(Path.NEW, self.world, ticks=setup.ticks, can_cap=setup.can_cap),
        }
        for backend in self.shared.values():
            backend.cancel_stops_running = True  # as TerminateJob and StopBuild do
            backend.on_cancel = self.check_cancel
            backend.clock = self.clock
        self.shadow_shared = {
            Path.LEGACY: ShadowFakeBackend(Path.LEGACY, self.world, ticks=setup.ticks + 1),
            Path.NEW: ShadowFakeBackend(Path.NEW, self.world, ticks=setup.ticks + 1),
        }
        for backend in self.shadow_shared.values():
            backend.clock = self.clock
        self.intake = SQLiteLedger(self.db)  # the API process: intake, requeue, and the model's reads
        for i in range(setup.replicas):
            replica = Replica(i, ModelSource(self.clock, self._valid_flag_seen))
            self.replicas.append(replica)
            self._boot(replica)

    def _boot(self, r: Replica) -> None:
        assert self.setup is not None
        r.generation += 1
        r.raw_ledger = RecordingLedger(
            self.db,
            lambda record, r=r: self.check_claim(r, record),
            lambda until, r=r: setattr(self, "dispatcher", (r, r.generation, until)),
        )
        r.ledger = Tripwire(r.raw_ledger)
        r.backends = {p: Tripwire(b) for p, b in self.shared.items()}
        r.lkg = LastKnownGood(r.source, r.ledger, self.clock, max_age_seconds=self.setup.max_flag_age)
        r.reader = Tripwire(CheckedReader(self, r, r.lkg))
        runner = None
        if self.setup.shadow_rate > 0:
            r.shadow_backends = {p: Tripwire(b) for p, b in self.shadow_shared.items()}
            config = ShadowConfig(
                global_rate=self.setup.shadow_rate,
                global_aa_rate=0.5,
                intent_grace_seconds=GRACE,
                lease_seconds=LEASE,
                resubmits=self.setup.resubmits,
                routing=self.setup.cycle_config().routing,
            )
            runner = ShadowRunner(r.ledger, r.shadow_backends, config, clock=self.clock)
        r.controller = Controller(
            ledger=r.ledger,
            flags=r.reader,
            backends=r.backends,
            config=self.setup.cycle_config(),
            clock=self.clock,
            holder=f"{r.name}.{r.generation}",
            shadows=runner,
        )
        r.basis, r.has_read, r.alive = None, False, True

    def _kill(self, r: Replica) -> None:
        r.alive = False
        r.controller = None
        if r.raw_ledger is not None:
            r.raw_ledger.close()
            r.raw_ledger = None

    def _run(self, r: Replica) -> None:
        """One cycle on ``r``; a ``Crash`` anywhere in it is that process dying."""
        assert r.controller is not None
        r.busy = True
        try:
            r.controller.run_cycle()
        except Crash:
            event("a replica crashed")
            self._kill(r)
        finally:
            r.busy = False
            for t in r.tripwires():
                t.disarm()

    def _serve(self, r: Replica, deployment: int) -> None:
        if deployment > r.deployment:
            r.deployment = deployment
            content = self.deployments[deployment]
            r.source.serve(content.document(), content.label)

    def _some(self, data: st.DataObject, items: Sequence[Any], label: str) -> Any:
        return data.draw(st.sampled_from(items), label=label)

    def _work_waits(self) -> bool:
        """A live replica and conversions not yet handed over (as of the last check)."""
        waiting = (S.RECEIVED, S.CLAIMED)
        return any(r.alive for r in self.replicas) and any(
            c.last_state in waiting for c in self.conversions.values()
        )

    def _victim(self, data: st.DataObject, method: str) -> Replica:
        """The replica a fault at ``method`` should hit: for a dispatch step, the one holding the
        dispatch lease (no other gets there; a dead holder's lease is first let run out);
        otherwise any live one."""
        if method in DISPATCH_STEPS and self.dispatcher is not None:
            r, generation, until = self.dispatcher
            if r.alive and r.generation == generation and self.clock() < until:
                return r
            if self.clock() < until:
                self.clock.advance(until - self.clock() + 1)
        return self._some(data, [r for r in self.replicas if r.alive], "replica")

    def _busy_path(self, data: st.DataObject, drawn: str) -> str:
        """For a fault in a submit: a path that has claimed work waiting, if the drawn one has none."""
        waiting = {
            c.owner[0].value for c in self.conversions.values() if c.last_state is S.CLAIMED and c.owner
        }
        if not waiting or drawn in waiting:
            return drawn
        return self._some(data, sorted(waiting), "path with work")

    # -- the model's checks at the moment things happen ------------------------------------------

    def _valid_flag_seen(self, snap: FlagSnapshot) -> None:
        # A valid read may be persisted as last-known-good even if the process dies right after.
        self.seen_valid.add((snap.version, snap.enabled, snap.tenant_ids))

    def check_flag_read(self, r: Replica, status: FlagStatus) -> None:
        """Promise 3: what a replica routes by after one read of its source."""
        assert self.setup is not None
        outcome = r.source.last
        if outcome == "ok":
            content = self.deployments[r.deployment]
            assert identity(status.snapshot) == content.identity(), (r.name, status, content)
            assert status.state is (FlagState.OK if content.enabled else FlagState.DISABLED)
            self.routed_by_valid = True
        else:
            expected = FlagState.UNAVAILABLE if outcome == "unavailable" else FlagState.INVALID
            assert status.state in (expected, FlagState.STALE), (r.name, outcome, status)
            if status.state is FlagState.STALE:
                assert self.setup.max_flag_age is not None
                assert status.snapshot is not None
                assert (status.age_seconds or 0) > self.setup.max_flag_age
            if r.has_read:
                # A source failure never moves the flag in force: only a valid version can.
                assert identity(status.snapshot) == identity(r.basis), (r.name, outcome, status, r.basis)
            elif status.snapshot is None:
                # Once any replica routed by a valid flag (persisted before use), no process starts without one.
                assert not self.routed_by_valid, (r.name, "lost the persisted last-known-good flag")
            else:
                # A restarted process routes by a persisted flag that some replica read as valid.
                assert identity(status.snapshot) in self.seen_valid, (r.name, status.snapshot)
        r.basis, r.has_read = status.snapshot, True

    def check_cancel(self, ref: JobRef) -> None:
        """Promise 1: the controller only cancels orphans, never the job a conversion's record names."""
        assert self.intake is not None
        event("cancelled a job")
        rec = self.intake.get(ref.conversion_id)
        assert rec is not None
        key = ref.job_id.split("/")[0]
        assert rec.job_ref != ref.job_id, ("cancelled the recorded job", ref, rec)
        assert not (rec.state is S.DISPATCHING and rec.intent == key), (
            "cancelled a live intent's job",
            ref,
            rec,
        )

    def check_claim(self, r: Replica, record: ConversionRecord) -> None:
        """Promises 1, 3 and 4: the claim follows the flag the claiming replica held, and is the only one."""
        assert self.setup is not None
        assert r.lkg is not None
        status = r.lkg.last
        assert status is not None, "claimed before reading the flag"
        snap = status.snapshot
        conv = self.conversions[record.conversion_id]
        assert conv.owner is None, (record.conversion_id, "claimed twice", conv.owner, record)
        assert record.tenant_id == conv.tenant
        if snap is None:
            assert not self.setup.pause_without_flag, "claimed without a flag under the pause policy"
            assert record.path is Path.LEGACY, (record, "new path without a valid flag")
            assert record.flag_version is None
        else:
            age = status.age_seconds or 0.0
            stale = self.setup.max_flag_age is not None and age > self.setup.max_flag_age
            assert not (stale and self.setup.pause_when_stale), "claimed under a stale flag, policy pause"
            content = self.contents[snap.version]
            assert record.flag_version == snap.version
            assert record.path is content.route(record.tenant_id), (record, content)
        conv.owners[-1] = (record.path, record.flag_version)

    # -- rules: intake and operators -------------------------------------------------------------

    @rule(data=st.data(), n=st.integers(1, 6))
    def accept(self, data: st.DataObject, n: int) -> None:
        """Conversions arrive, some repeating ids already known (a repeat is a duplicate, never a second one)."""
        assert self.intake is not None
        requests: list[ConversionRequest] = []
        for _ in range(n):
            tenant = self._some(data, TENANTS, "tenant")
            if self.conversions and data.draw(st.integers(0, 3), label="repeat?") == 0:
                cid = self._some(data, sorted(self.conversions), "old id")
                known = self.conversions[cid]
                requests.append(ConversionRequest(cid, known.tenant, dict(known.params)))
                continue
            cid = f"c{self.next_id}"
            self.next_id += 1
            requests.append(ConversionRequest(cid, tenant, {"n": str(len(requests))}))
        result = self.intake.accept(requests, self.clock())
        expected_new: list[str] = []
        for req in requests:
            if req.conversion_id not in self.conversions and req.conversion_id not in expected_new:
                expected_new.append(req.conversion_id)
                self.conversions[req.conversion_id] = Conversion(req.tenant_id, params=dict(req.params))
        assert result.accepted == expected_new
        assert len(result.accepted) + len(result.duplicates) == len(requests)

    @precondition(lambda self: any(c.last_state is S.FAILED for c in self.conversions.values()))
    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        """An operator frees a failed conversion: the one move that may change its path."""
        assert self.intake is not None
        failed = sorted(cid for cid, c in self.conversions.items() if c.last_state is S.FAILED)
        cid = self._some(data, failed, "failed id")
        self.intake.requeue(cid, self.clock())
        conv = self.conversions[cid]
        conv.owners.append(None)
        conv.epoch_starts.append(len(self.world.runs))
        conv.last_state = S.RECEIVED
        event("requeued a failed conversion")

    # -- rules: the flag -------------------------------------------------------------------------

    @rule(data=st.data(), enabled=st.integers(0, 4), tenants=st.frozensets(st.sampled_from(TENANTS)))
    def publish(self, data: st.DataObject, enabled: int, tenants: frozenset[int]) -> None:
        """A new flag version starts deploying; some replicas' sources see it now, others later."""
        content = Content(f"v{len(self.contents) + 1}", enabled > 0, tenants)
        self.contents[content.label] = content
        self._deploy(data, content)

    @precondition(lambda self: len(self.deployments) >= 2)
    @rule(data=st.data())
    def roll_back(self, data: st.DataObject) -> None:
        """Rollback is deploying the previous version again."""
        self._deploy(data, self.deployments[-2])

    def _deploy(self, data: st.DataObject, content: Content) -> None:
        self.deployments.append(content)
        for r in self.replicas:
            if data.draw(st.booleans(), label=f"{r.name} sees it now"):
                self._serve(r, len(self.deployments) - 1)

    @precondition(lambda self: self.deployments)
    @rule(data=st.data())
    def catch_up(self, data: st.DataObject) -> None:
        """A lagging source gets the next deployment (the gradual deployment moves on)."""
        r = self._some(data, self.replicas, "replica")
        self._serve(r, min(r.deployment + 1, len(self.deployments) - 1))

    @rule(data=st.data(), bad=st.one_of(st.none(), st.sampled_from(BAD_DOCUMENTS)))
    def break_source(self, data: st.DataObject, bad: Any) -> None:
        """A replica's source goes down (None) or answers with a document from the bad-input corpus."""
        r = self._some(data, self.replicas, "replica")
        r.source.down = bad is None
        r.source.garbage = None if bad is None else bad.raw

    @rule(data=st.data())
    def heal_source(self, data: st.DataObject) -> None:
        r = self._some(data, self.replicas, "replica")
        r.source.down, r.source.garbage = False, None

    # -- rules: processes ------------------------------------------------------------------------

    @precondition(lambda self: any(r.alive for r in self.replicas))
    @rule(data=st.data())
    def cycle(self, data: st.DataObject) -> None:
        """Any live replica runs a cycle."""
        r = self._some(data, [r for r in self.replicas if r.alive], "replica")
        self._run(r)

    @precondition(lambda self: any(r.alive for r in self.replicas))
    @rule(data=st.data(), point=st.sampled_from(CRASH_POINTS))
    def crash(self, data: st.DataObject, point: tuple[str, str, str]) -> None:
        """A replica dies at a step boundary during its next cycle (if the cycle gets there)."""
        self._crash(data, point)

    @precondition(lambda self: self._work_waits())
    @rule(data=st.data(), point=st.sampled_from(DISPATCH_CRASH_POINTS))
    def crash_while_dispatching(self, data: st.DataObject, point: tuple[str, str, str]) -> None:
        """The dispatcher dies around a submit while there is work to hand over."""
        self._crash(data, point)

    def _crash(self, data: st.DataObject, point: tuple[str, str, str]) -> None:
        where, method, when = point
        if method in DISPATCH_STEPS and where in ("legacy", "new"):
            where = self._busy_path(data, where)
        r = self._victim(data, method)
        if where in SHADOW_PATHS:
            target = r.shadow_backends.get(SHADOW_PATHS[where])
            if target is None:
                return  # this example samples no shadows
        else:
            target = {"reader": r.reader, "ledger": r.ledger}.get(where) or r.backends[Path(where)]

        def die() -> None:
            raise Crash(f"{r.name} died {when} {where}.{method}")

        target.arm(method, when, die)
        self._run(r)

    @precondition(lambda self: any(not r.alive for r in self.replicas))
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        """A dead replica comes back: a new process over the same ledger and backends."""
        r = self._some(data, [r for r in self.replicas if not r.alive], "replica")
        self._boot(r)

    @precondition(lambda self: any(r.alive for r in self.replicas))
    @rule(data=st.data(), pause=STEP_PAUSES)
    def pause(self, data: st.DataObject, pause: tuple[str, str, str, float]) -> None:
        """A replica stops for a while between two steps, while time passes, the world works and
        the other replicas run their cycles."""
        self._pause(data, pause)

    @precondition(lambda self: self._work_waits())
    @rule(data=st.data(), pause=DISPATCH_PAUSES)
    def pause_while_dispatching(self, data: st.DataObject, pause: tuple[str, str, str, float]) -> None:
        """The dispatcher stops between admission and submit, or inside a submit call, while the
        others carry on."""
        self._pause(data, pause)

    def _pause(self, data: st.DataObject, pause: tuple[str, str, str, float]) -> None:
        where, method, when, seconds = pause
        if method == "submit":
            where = self._busy_path(data, where)
        r = self._victim(data, method)

        def stop_the_world_but_me() -> None:
            event(f"paused {when} {where}.{method}")
            if method == "submit" and when == "before" and seconds >= LEASE / 2:
                self.beyond_call_timeout = True
            left = seconds
            while left > 0:
                step = min(left, 15.0)
                self.clock.advance(step)
                left -= step
                for other in self.replicas:
                    if other is not r and other.alive and not other.busy:
                        self._run(other)
                self.world.tick()

        target = {"ledger": r.ledger}.get(where) or r.backends[Path(where)]
        target.arm(method, when, stop_the_world_but_me)
        self._run(r)

    # -- rules: the world ------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1.0, 5.0, 20.0, 31.0, 61.0, 120.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(n=st.integers(1, 3))
    def tick(self, n: int) -> None:
        """The backends work: queued jobs start as capacity allows, running ones finish."""
        for _ in range(n):
            self.world.tick()

    @rule(
        path=st.sampled_from([Path.LEGACY, Path.NEW]),
        fault=st.sampled_from(BACKEND_FAULTS),
        shadow=st.booleans(),
    )
    def backend_fault(self, path: Path, fault: str, shadow: bool) -> None:
        """The next call of that kind to the shared backend (or shadow backend) fails this way."""
        setattr((self.shadow_shared if shadow else self.shared)[path], fault, True)

    @precondition(lambda self: self.conversions)
    @rule(data=st.data(), always=st.booleans())
    def fail_job(self, data: st.DataObject, always: bool) -> None:
        """A conversion's next execution fails (or every one does)."""
        cid = self._some(data, sorted(self.conversions), "id")
        for backend in [*self.shared.values(), *self.shadow_shared.values()]:
            (backend.fail_ids if always else backend.fail_once).add(cid)

    # -- invariants ------------------------------------------------------------------------------

    def _records(self) -> dict[str, ConversionRecord]:
        assert self.intake is not None
        records, _ = self.intake.query(limit=100_000)
        return {r.conversion_id: r for r in records}

    @invariant()
    def load_within_budget(self) -> None:
        """Promise 2: work being done on both paths never exceeded the budget at any tick."""
        if self.setup is None or self.beyond_call_timeout:
            return
        assert self.world.peak <= self.setup.budget, (self.world.peak, self.setup.budget)
        assert self.world.load() <= self.setup.budget

    @invariant()
    def ownership_is_stable(self) -> None:
        """Promise 1: the ledger holds what was accepted; a path never changes until terminal."""
        if self.setup is None:
            return
        records = self._records()
        assert set(records) == set(self.conversions)
        for cid, rec in records.items():
            conv = self.conversions[cid]
            assert rec.tenant_id == conv.tenant
            if rec.state is S.RECEIVED:
                assert rec.path is None
            else:
                assert conv.owner is not None, (cid, "owned without a claim", rec)
                assert (rec.path, rec.flag_version) == conv.owner, (cid, rec, conv.owner)
            if conv.last_state.terminal:
                assert rec.state is conv.last_state, (cid, "left a terminal state", conv.last_state, rec)
            conv.last_state = rec.state
            assert rec.attempts <= 1 + self.setup.resubmits, (cid, rec)

    @invariant()
    def counters_match_the_records(self) -> None:
        """The counters ``/status`` answers from equal the records counted one by one, through
        crashes at every step boundary and replicas racing for the same conversions."""
        if self.setup is None:
            return
        assert self.intake is not None
        records = self._records().values()
        counts = self.intake.counts()
        assert {s: n for s, n in counts.by_state.items() if n} == Counter(r.state for r in records)
        assert {k: n for k, n in counts.by_path_state.items() if n} == Counter(
            (r.path, r.state) for r in records if r.path is not None
        )

    @invariant()
    def executions_are_exclusive(self) -> None:
        """Promise 1: each conversion ran on its owner's path only, one run at a time, a retry only
        after a failure and under a new fence, at most 1 + resubmits runs per ownership."""
        if self.setup is None:
            return
        for cid, epoch, runs in self._runs_by_epoch():
            owner = self.conversions[cid].owners[epoch]
            assert owner is not None, (cid, "ran without an owner", runs)
            assert {r.path for r in runs} == {owner[0]}, (cid, owner, runs)
            assert len(runs) <= 1 + self.setup.resubmits, (cid, runs)
            for before, after in itertools.pairwise(runs):
                assert before.ended is not None, (cid, "ran twice at once", runs)
                assert before.outcome is JobStatus.FAILED, (cid, "ran again after success", runs)
                assert before.ended < after.started
                assert before.fence < after.fence, (cid, "same fence twice", runs)

    @invariant()
    def shadows_stand_apart(self) -> None:
        """Shadows exist only for conversions the old path owns, and ran only on shadow backends."""
        if self.setup is None or self.intake is None:
            return
        records = self._records()
        for shadow in self.intake.shadows(list(ShadowState), limit=100_000):
            owner = records.get(shadow.conversion_id)
            assert owner is not None, ("a shadow of no conversion", shadow)
            assert shadow.tenant_id == owner.tenant_id
            epochs = self.conversions[shadow.conversion_id].owners
            assert any(o is not None and o[0] is Path.LEGACY for o in epochs), (
                "shadow of new-path work",
                shadow,
            )
        for backend in self.shadow_shared.values():
            assert all(b.key[0] in "SA" for b in backend.submits), "real work on a shadow backend"
        for backend in self.shared.values():
            assert all(b.key[0] in "LN" for b in backend.submits), "a shadow on a real backend"

    def _runs_by_epoch(self) -> list[tuple[str, int, list[Run]]]:
        by_cid: dict[str, list[tuple[int, Run]]] = {}
        for i, run in enumerate(self.world.runs):
            by_cid.setdefault(run.conversion_id, []).append((i, run))
        out: list[tuple[str, int, list[Run]]] = []
        for cid, indexed in by_cid.items():
            starts = self.conversions[cid].epoch_starts
            for epoch, start in enumerate(starts):
                end = starts[epoch + 1] if epoch + 1 < len(starts) else len(self.world.runs)
                runs = [run for i, run in indexed if start <= i < end]
                if runs:
                    out.append((cid, epoch, runs))
        return out

    # -- the end: faults stop, time passes, everything settles -----------------------------------

    def teardown(self) -> None:
        try:
            if self.setup is not None and sys.exc_info()[0] is None:
                self._drain()
        finally:
            for r in self.replicas:
                self._kill(r)
            if self.intake is not None:
                self.intake.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _drain(self) -> None:
        """Promise 1 (none lost): with the faults gone, every accepted conversion becomes terminal."""
        assert self.setup is not None
        for backend in [*self.shared.values(), *self.shadow_shared.values()]:
            for fault in BACKEND_FAULTS:
                setattr(backend, fault, False)
        if not self.deployments:
            self.contents["v0"] = Content("v0", True, frozenset({1, 2, 3}))
            self.deployments.append(self.contents["v0"])
        for r in self.replicas:
            r.source.down, r.source.garbage = False, None
            self._serve(r, len(self.deployments) - 1)
            if not r.alive:
                self._boot(r)
        self.clock.advance(GRACE + LEASE + 1)
        for _ in range(3000):
            for r in self.replicas:
                self._run(r)
                assert r.alive
            self.world.tick()
            self.load_within_budget()
            self.clock.advance(1)
            records = self._records()
            if all(rec.state.terminal for rec in records.values()) and not self.world.busy():
                break
        else:
            raise AssertionError(f"not drained: {self.intake.counts() if self.intake else None}")
        self.ownership_is_stable()
        self.executions_are_exclusive()
        event(f"conversions: {len(records) // 10 * 10}+")
        event(f"peak load {'=' if self.world.peak == self.setup.budget else '<'} budget")
        for cid, epoch, runs in self._runs_by_epoch():
            if epoch != len(self.conversions[cid].epoch_starts) - 1:
                continue
            rec = records[cid]
            outcomes = [r.outcome.value if r.outcome else None for r in runs]
            if rec.state is S.SUCCEEDED:
                assert outcomes[-1] == "succeeded", (cid, rec, runs)
            else:
                # A failure is final only after the promised clone-and-resubmits really ran.
                assert outcomes == ["failed"] * (1 + self.setup.resubmits), (cid, rec, runs)
        ran = {
            cid
            for cid, epoch, _ in self._runs_by_epoch()
            if epoch == len(self.conversions[cid].epoch_starts) - 1
        }
        assert ran == set(records), ("terminal without a run", set(records) - ran)


def machine_settings(long_run: bool) -> settings:
    """One round of examples: 250 of 50 steps, or 250 of 100 steps for a long run."""
    return settings(
        max_examples=250,
        stateful_step_count=100 if long_run else 50,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# CI: 4 rounds, 1000 examples (about 35 s on two idle cores); long: 40 rounds, 10,000 longer ones.
# Rounds rather than one run: hypothesis keeps what it learns of each example for the whole run, a
# megabyte or two for examples this long, so one run of 10,000 would need gigabytes.
ROUNDS = {False: 4, True: 40}


def test_the_promises_hold_under_faults(long_run: bool, caplog: pytest.LogCaptureFixture) -> None:
    """Promises 1-4 under crashes, pauses, lagging and failing flags and backend faults (see module doc)."""
    # The faults make every cycle warn; kept, the records of thousands of examples fill memory.
    caplog.set_level(logging.ERROR, logger="cutover")
    for _ in range(ROUNDS[long_run]):
        run_state_machine_as_test(ControllerMachine, settings=machine_settings(long_run))

"""Every port of cutover, in one place: the flag side, the ledger's roles, the execution paths,
intakes, signals, and the flag version stores of ``cutover flag``.

Protocols and the small values they exchange; no implementation. A caller names the narrowest
role it uses (``OwnershipStore``, ``LeaseStore``, ``ValueStore``, ``FlagStore``,
``LedgerQueries``); ``Ledger`` is their union, what an implementation owes, and ``BatchClaims``
the routing hot path a ledger may offer besides (the SQLite one does). Implementations:
``flags/`` (flag sources, version stores), ``controller.ledger`` (SQLite, DynamoDB),
``legacy_adapter/`` and ``new_adapter/`` (backends), ``controller.intake`` (intakes),
``controller.engine.notify`` (log transports) and ``controller.engine.notify_aws`` (SNS, CloudWatch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from controller.core.domain import (
    ConversionRecord,
    ConversionRequest,
    ConversionState,
    DispatchBatch,
    JobRef,
    JobState,
    JobStatus,
    Ownership,
    Path,
)
from controller.core.shadow import ShadowKind, ShadowRecord, ShadowState, ShadowVerdict
from flags.snapshot import FlagSnapshot, FlagState, FlagStatus
from flags.versions import Deployment, FlagContent, InForce, Note, Version

# -- the flag ----------------------------------------------------------------------------------


class FlagSource(Protocol):
    """Where the flag document comes from (a file, the AppConfig Agent, the AppConfig Data API)."""

    name: str

    def fetch(self) -> FlagSnapshot:
        """Read and validate the flag in force. Raises ``FlagUnavailableError`` / ``FlagInvalidError``."""
        ...


class FlagReader(Protocol):
    """What the cycle needs from the flag side: one status per call (``flags.lkg.LastKnownGood``)."""

    def read(self) -> FlagStatus: ...


class FlagStore(Protocol):
    """Where the last good snapshot is persisted (the ledger implements it)."""

    def save_flag(self, snapshot: FlagSnapshot) -> None: ...

    def load_flag(self) -> FlagSnapshot | None: ...


class VersionStore(Protocol):
    """Where flag versions are written and deployed: a flag file with history, or AppConfig."""

    name: str

    def in_force(self) -> InForce | None:
        """The version the environment serves now, or None before the first deployment."""
        ...

    def in_progress(self) -> Deployment | None:
        """A deployment under way in the environment (any profile), or None."""
        ...

    def versions(self) -> list[Version]:
        """Every stored version, oldest first."""
        ...

    def content(self, number: int) -> FlagContent:
        """What version ``number`` says; ``NotFoundError`` if there is no such version."""
        ...

    def deployments(self, limit: int) -> list[Deployment]:
        """This flag's most recent deployments, newest first."""
        ...

    def create_version(self, content: FlagContent, note: Note, latest: int | None) -> int:
        """Store a new version built from the one in force; ``ConflictError`` unless ``latest`` is
        still the newest version number (None: there is none yet)."""
        ...

    def deploy(self, number: int, note: Note) -> Deployment:
        """Start putting version ``number`` in force; ``ConflictError`` while another deployment runs."""
        ...

    def stop(self, deployment: Deployment) -> Deployment:
        """Stop an in-progress deployment; the version before it stays in force."""
        ...

    def refresh(self, deployment: Deployment) -> Deployment:
        """The deployment's current state."""
        ...

    def strategy_warning(self) -> str | None:
        """Why the configured deployment strategy is not all-at-once, or None when it is."""
        ...


# -- the ledger ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """A routing decision to record: the first claim of a conversion wins."""

    request: ConversionRequest
    path: Path
    flag_version: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Route:
    """A routing decision as a claim records it; one per tenant, shared by its waiting conversions."""

    path: Path
    flag_version: str | None
    reason: str


# Where a batch's conversions go: each route with the tenants it applies to (a tenant in one only).
RouteGroups = Sequence[tuple[Route, AbstractSet[int]]]


@dataclass(frozen=True, slots=True)
class Waiting:
    """Requests in the intake as columns, oldest first: position ``i`` of each is one conversion.

    What routing needs and no more, so that a cycle claiming tens of thousands of conversions makes
    no object per conversion.
    """

    conversion_ids: Sequence[str]
    tenant_ids: Sequence[int]

    def route_by_tenant(self, routes: RouteGroups) -> dict[int, Route]:
        """Each tenant's route; ``ValueError`` naming the tenants when one of these conversions'
        tenants has no route or a tenant has two, or when the columns differ in length."""
        if len(self.conversion_ids) != len(self.tenant_ids):
            raise ValueError(
                f"{len(self.conversion_ids)} conversion ids but {len(self.tenant_ids)} tenant ids"
            )
        by_tenant: dict[int, Route] = {}
        for route, tenants in routes:
            twice = by_tenant.keys() & tenants
            if twice:
                raise ValueError(f"tenants {sorted(twice)[:5]} have two routes")
            by_tenant.update(dict.fromkeys(tenants, route))
        unrouted = set(self.tenant_ids) - by_tenant.keys()
        if unrouted:
            raise ValueError(f"no route for tenants {sorted(unrouted)[:5]} of the waiting conversions")
        return by_tenant


@dataclass(frozen=True, slots=True)
class Claimed:
    """The answer to a batch claim: the positions (in its ``Waiting``) this claim made owned, and
    how many of them each path got. A conversion owned already is not among them."""

    created: Sequence[int]
    per_path: Mapping[Path, int]


@dataclass(frozen=True, slots=True)
class Finish:
    """An outcome to record for one dispatch attempt (``fence`` guards against late results)."""

    conversion_id: str
    fence: int
    state: ConversionState
    reason: str = ""
    work_seconds: float | None = None  # the job's own run time, when its result gives one
    work_started_at: float | None = None  # and when that work started, by the job's clock
    slot_at: float | None = None  # when the job took its slot, when the backend says


@dataclass(frozen=True, slots=True)
class Dispatched:
    """A job reference to record for one dispatch attempt."""

    conversion_id: str
    fence: int
    job_ref: str


@dataclass(frozen=True, slots=True)
class AcceptResult:
    """The intake's answer: which ids are new, which were already known."""

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Counts:
    """Conversions per state, and per path for the states that have one."""

    by_state: Mapping[ConversionState, int]
    by_path_state: Mapping[tuple[Path, ConversionState], int]

    def state(self, state: ConversionState) -> int:
        return self.by_state.get(state, 0)

    def path_state(self, path: Path, state: ConversionState) -> int:
        return self.by_path_state.get((path, state), 0)


@dataclass(frozen=True, slots=True)
class FinishedConversion:
    """One finished conversion as the rollout gates weigh it (``LedgerQueries.finished_since``).

    ``seconds`` runs from the last dispatch to the recorded outcome (queueing included), the same
    measure on both paths; ``work_seconds`` is the last attempt's run time by the job's own account,
    when it gave one. ``attempts`` above 1 means the conversion was cloned and resubmitted after a
    failure.
    """

    tenant_id: int
    path: Path
    state: ConversionState
    attempts: int
    claimed_at: float
    finished_at: float
    seconds: float | None
    work_seconds: float | None = None


class OwnershipStore(Protocol):
    """Conversions and their transitions. Every transition is compare-and-set on state and fence."""

    def accept(self, requests: Sequence[ConversionRequest], now: float) -> AcceptResult:
        """Record new requests in the intake atomically; a known id is a duplicate, never a second one."""
        ...

    def unclaimed(self, limit: int) -> list[ConversionRecord]:
        """Requests in the intake that no path owns yet, oldest first."""
        ...

    def claim(self, claims: Sequence[Claim], now: float) -> list[Ownership]:
        """Record each decision unless the conversion is owned already; first claim wins."""
        ...

    def pending_dispatch(self, path: Path, limit: int) -> list[ConversionRecord]:
        """Conversions owned by ``path`` and not yet handed to it, oldest claim first."""
        ...

    def mark_dispatching(
        self, records: Sequence[ConversionRecord], intent: str, now: float
    ) -> list[ConversionRecord]:
        """Record the intent to submit, each under a new fence; returns the records this call took."""
        ...

    def mark_dispatched(self, items: Sequence[Dispatched], now: float) -> list[str]:
        """Record job references for intents still current; returns the ids that were recorded."""
        ...

    def release(self, conversion_ids: Sequence[tuple[str, int]], now: float, reason: str) -> int:
        """Return intents to CLAIMED when the backend confirmed nothing was started ; undo the attempt."""
        ...

    def intents(self, older_than: float, limit: int) -> list[ConversionRecord]:
        """Intents recorded before ``older_than`` that never got a job reference."""
        ...

    def in_flight(self, path: Path, limit: int) -> list[ConversionRecord]:
        """Conversions a backend holds (DISPATCHED) on ``path``."""
        ...

    def mark_finished(self, finishes: Sequence[Finish], now: float) -> list[str]:
        """Record outcomes for attempts still current; returns the ids that were recorded."""
        ...

    def resubmit(self, conversion_id: str, fence: int, reason: str, now: float) -> bool:
        """Put a failed attempt back to CLAIMED on the same path, for a fresh dispatch."""
        ...

    def requeue(self, conversion_id: str, now: float) -> ConversionRecord:
        """Free a FAILED conversion so the next cycle routes it afresh, retries and all (an operator)."""
        ...

    def get(self, conversion_id: str) -> ConversionRecord | None:
        """One conversion's record, or None."""
        ...


@runtime_checkable
class BatchClaims(Protocol):
    """Claiming the intake by columns: the routing hot path (the SQLite ledger has it). A ledger
    without it is claimed through ``OwnershipStore`` (``controller.engine.claims``), a record per
    conversion."""

    def waiting(self, limit: int) -> Waiting:
        """What ``OwnershipStore.unclaimed`` lists, by column."""
        ...

    def claim_waiting(self, waiting: Waiting, routes: RouteGroups, now: float) -> Claimed:
        """Claim each of ``waiting`` (from ``waiting()``) for its tenant's route, unless a path owns it
        already: first claim wins, as ``OwnershipStore.claim``. ``ValueError``, before anything is
        written, unless every tenant has exactly one route (``Waiting.route_by_tenant``)."""
        ...


class LeaseStore(Protocol):
    """Named leases with a holder and an expiry: who dispatches, who runs a finder slot."""

    def try_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        """Take or renew the named lease for ``holder``; False while another holder has it."""
        ...

    def end_lease(self, name: str, holder: str) -> bool:
        """Give up the named lease if ``holder`` has it, so another holder can take it at once
        instead of after it expires; False when ``holder`` did not have it."""
        ...


class ValueStore(Protocol):
    """Small values kept by name (an intake's watermark and last run)."""

    def get_value(self, key: str) -> str | None:
        """A small value kept by name (an intake's watermark and last run), or None."""
        ...

    def put_value(self, key: str, value: str, now: float) -> None:
        """Keep a small value by name, replacing what was there."""
        ...


class LedgerQueries(Protocol):
    """Read-side queries for the service pages, the CLI, ``cutover flag plan`` and the rollout gates."""

    def counts(self) -> Counts:
        """Conversions per state and path, without a scan."""
        ...

    def query(
        self,
        *,
        state: ConversionState | None = None,
        path: Path | None = None,
        tenant_id: int | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[list[ConversionRecord], str | None]:
        """A page of conversions matching the filters, in receipt order, and the cursor of the next page."""
        ...

    def by_tenant(self, tenant_id: int, limit: int) -> list[ConversionRecord]:
        """A tenant's conversions, newest first."""
        ...

    def decisions_since(self, since: float) -> list[tuple[int, Path, str, int]]:
        """Claims per minute (epoch minute), path and flag version since ``since``."""
        ...

    def tenant_activity(self, since: float) -> dict[int, int]:
        """Conversions received per tenant since ``since`` (epoch seconds): the load each tenant brings."""
        ...

    def finished_since(self, since: float) -> list[FinishedConversion]:
        """Conversions that succeeded or failed at or after ``since`` (epoch seconds), on either
        path: the evidence the rollout gates weigh."""
        ...


class Ledger(OwnershipStore, LeaseStore, ValueStore, FlagStore, LedgerQueries, Protocol):
    """The durable record of ownership: every role above, and its own lifecycle."""

    def ping(self) -> None:
        """Raise ``LedgerError`` unless the store answers."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class LedgerInsights(Protocol):
    """Optional reads a ledger may offer the service pages (the SQLite ledger does); without them
    the service pages through ``LedgerQueries.query`` instead."""

    def in_flight_by_tenant(self) -> dict[int, dict[Path, int]]:
        """Conversions owned and not finished (claimed, dispatching, dispatched), per tenant and path."""
        ...

    def recent(self, state: ConversionState, limit: int) -> list[ConversionRecord]:
        """The latest conversions in ``state``, newest first."""
        ...


@dataclass(frozen=True, slots=True)
class ShadowFinish:
    """How one dispatch attempt of a shadow ended (``fence`` guards against late results)."""

    shadow_id: str
    fence: int
    state: ShadowState  # SUCCEEDED or FAILED
    output: str | None = None
    reason: str = ""
    work_seconds: float | None = None  # the run's own timing, when its result gives it
    work_started_at: float | None = None
    slot_at: float | None = None  # when it took its slot, when the runner says


@runtime_checkable
class ShadowStore(Protocol):
    """Shadow runs: records of their own, linked to a conversion by its id and never touching it.

    Every transition is a compare-and-set on state (and fence, for dispatch attempts), as the
    conversions' are. Optional: a ledger without it runs no shadows.
    """

    def add_shadows(self, shadows: Sequence[ShadowRecord], now: float) -> list[str]:
        """Record sampled shadows (PENDING) unless already known; returns the ids recorded now."""
        ...

    def shadows(
        self,
        states: Sequence[ShadowState],
        *,
        kind: ShadowKind | None = None,
        tenant_id: int | None = None,
        compared_before: float | None = None,
        limit: int = 1000,
    ) -> list[ShadowRecord]:
        """Shadows in ``states``, oldest first; ``compared_before``: compared by then and not cleaned."""
        ...

    def shadows_since(self, tenant_id: int, since: float) -> int:
        """How many shadows were sampled for a tenant since ``since`` (its daily allowance)."""
        ...

    def mark_shadows_dispatching(
        self, shadows: Sequence[ShadowRecord], intent: str, now: float
    ) -> list[ShadowRecord]:
        """PENDING → DISPATCHING under a new fence; returns the records this call took."""
        ...

    def mark_shadows_dispatched(self, items: Sequence[tuple[str, int, str]], now: float) -> list[str]:
        """``(shadow_id, fence, job_ref)``: DISPATCHING → DISPATCHED for intents still current."""
        ...

    def release_shadows(
        self, items: Sequence[tuple[str, int]], now: float, reason: str, *, preempted: bool = False
    ) -> int:
        """DISPATCHING | DISPATCHED → PENDING: nothing runs, or it was stopped to make room for
        real work (``preempted``, counted in ``ShadowRecord.preemptions``)."""
        ...

    def finish_shadows(self, finishes: Sequence[ShadowFinish], now: float) -> list[str]:
        """DISPATCHED → SUCCEEDED | FAILED for attempts still current; returns the ids recorded."""
        ...

    def skip_shadows(self, shadow_ids: Sequence[str], reason: str, now: float) -> int:
        """PENDING → SKIPPED: it will not run (its tenant moved, no spare budget in time)."""
        ...

    def record_comparison(
        self, shadow_id: str, verdict: ShadowVerdict, detail: str, note: str, now: float
    ) -> bool:
        """SUCCEEDED | FAILED → COMPARED with the comparison's verdict and findings."""
        ...

    def mark_cleaned(self, shadow_id: str, now: float) -> bool:
        """Record that a compared shadow's output was removed from the quarantine."""
        ...


@runtime_checkable
class PathHistory(Protocol):
    """Optional: a ledger that finds a path's most recent conversion without a scan (the SQLite
    ledger does); without it ``cutover decommission`` pages through ``LedgerQueries.query``."""

    def latest_on_path(self, path: Path) -> ConversionRecord | None:
        """The conversion owned by ``path`` that arrived last, or None."""
        ...


@runtime_checkable
class ReconcileCounts(Protocol):
    """Optional: a backend that counts what its reconciliation found, for ``/metrics``."""

    def reconcile_counts(self) -> Mapping[str, int]:
        """Totals since start: ``duplicates`` (jobs submitted twice), ``orphans`` (jobs no record owns)."""
        ...


# -- the execution paths -------------------------------------------------------------------------


class Backend(Protocol):
    """One execution path. Adapters translate; they do not decide."""

    path: Path

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        """Hand a batch over; one reference per item, in order.

        Raises ``SubmitRejectedError`` when nothing was started and ``BackendUnavailableError``
        when the outcome is unknown.
        """
        ...

    def poll(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        """The state of each reference."""
        ...

    def find(self, intents: Sequence[tuple[str, str]]) -> dict[str, JobRef]:
        """Jobs already submitted under the given ``(conversion_id, batch key)`` intents."""
        ...

    def cancel(self, ref: JobRef) -> None:
        """Stop the job if it has not finished."""
        ...

    def set_capacity(self, slots: int) -> int | None:
        """Cap how many conversions may run at once; returns the cap in force (never below the
        number running), or None when this backend cannot cap and the controller must hold back."""
        ...

    def in_use(self) -> int:
        """Slots of the budget this path holds now (threads of working builds, running jobs)."""
        ...

    def close(self) -> None:
        """Release clients and processes the adapter owns."""
        ...


@dataclass(frozen=True, slots=True)
class Run:
    """One conversion in one job or build, as a backend lists it for reconciliation.

    ``status`` is UNKNOWN when the listing cannot tell this conversion's outcome cheaply (a
    conversion inside an array job or a build); ``Inventory.outcomes`` tells it exactly.
    """

    ref: JobRef
    status: JobStatus
    created_at: float


@runtime_checkable
class Inventory(Protocol):
    """Optional: a backend that can list the conversions it ran, for reconciliation."""

    def inventory(self, since: float) -> list[Run]:
        """Every conversion in jobs or builds created since ``since`` (epoch seconds)."""
        ...

    def outcomes(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        """What ``Backend.poll`` would say of these references, leaving the cycle's view alone."""
        ...


@dataclass(frozen=True, slots=True)
class BuildSummary:
    """One build of the old path's project as the build service lists it, whoever started it."""

    build_id: str
    started_at: float
    status: str


@runtime_checkable
class BuildHistory(Protocol):
    """Optional: an old-path backend that lists every build of its project (CodeBuild's
    ListBuildsForProject), the evidence that nothing runs there any more."""

    def builds_since(self, since: float) -> list[BuildSummary]:
        """The project's builds started at or after ``since`` (epoch seconds), newest first."""
        ...


@runtime_checkable
class Advisories(Protocol):
    """Optional: a backend that has something an operator should know (``/status`` shows it)."""

    def warnings(self) -> list[str]:
        """Readable warnings, already worked out (no backend call happens here)."""
        ...


class QuotaClient(Protocol):
    """The one Service Quotas call the adapter makes."""

    def get_service_quota(self, *, ServiceCode: str, QuotaCode: str) -> Mapping[str, Any]: ...


# -- intakes -------------------------------------------------------------------------------------


@dataclass
class SourceStats:
    """What a scheduled or queue intake did lately; shown on ``/status`` and ``/metrics``."""

    name: str
    kind: str
    last_run_at: float | None = None
    last_slot: float | None = None
    runs: int = 0
    found: int = 0
    accepted: int = 0
    duplicates: int = 0
    malformed: int = 0
    errors: int = 0
    last_error: str = ""
    watermark: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Intake(Protocol):
    """A source of conversions besides HTTP (a scheduled finder, a queue), run on its own thread."""

    stats: SourceStats
    interval: float

    def tick(self) -> object:
        """Do what is due now (run a due finder slot, take one batch from a queue)."""
        ...


# -- signals -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Datum:
    """One metric value for one minute (``minute`` is the epoch minute)."""

    name: str
    value: float
    minute: int
    dimensions: tuple[tuple[str, str], ...] = ()


class Notifier(Protocol):
    """Where messages for people go (a chat channel through SNS, or the log)."""

    def publish(self, subject: str, message: str) -> None:
        """Send one message; failures are the transport's to log, never the caller's to handle."""
        ...


class MetricSink(Protocol):
    """Where metric values go (CloudWatch, or the log)."""

    def put(self, datums: Sequence[Datum]) -> None:
        """Send these values; failures are the transport's to log."""
        ...


class CycleView(Protocol):
    """What signals read from the controller: its cycle count and the flag state it routes by."""

    cycles: int

    @property
    def flag_state(self) -> FlagState | None: ...

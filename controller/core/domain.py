"""The values the controller works with. Frozen, slotted, JSON-friendly; no behaviour that needs I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# One character set for conversion ids on both sides of the job contract: the controller checks an
# id at intake with the same rule a job checks it by before writing a result under it.
from cutover_job.contract import CONVERSION_ID_CHARS, CONVERSION_ID_PATTERN
from flags.snapshot import FlagSnapshot, FlagState, FlagStatus

__all__ = [
    "CONVERSION_ID_CHARS",
    "CONVERSION_ID_PATTERN",
    "ConversionRecord",
    "ConversionRequest",
    "ConversionState",
    "DispatchBatch",
    "DispatchItem",
    "FlagSnapshot",
    "FlagState",
    "FlagStatus",
    "JobRef",
    "JobState",
    "JobStatus",
    "Ownership",
    "Path",
]


class Path(StrEnum):
    """The two execution paths a conversion can be owned by."""

    LEGACY = "legacy"
    NEW = "new"


class ConversionState(StrEnum):
    """Where a conversion is in its life; see ``controller.core.transitions`` for the allowed moves."""

    RECEIVED = "received"  # durable in the intake, not yet routed
    CLAIMED = "claimed"  # owned by one path, waiting for a dispatch slot
    DISPATCHING = "dispatching"  # intent to submit recorded, backend call under way
    DISPATCHED = "dispatched"  # a backend holds it (queued or running)
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (ConversionState.SUCCEEDED, ConversionState.FAILED)


@dataclass(frozen=True, slots=True)
class ConversionRequest:
    """One piece of work as it arrives: convert ``tenant_id``'s records with ``params``."""

    conversion_id: str
    tenant_id: int
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConversionRecord:
    """A conversion as the ledger holds it, with its audit fields."""

    conversion_id: str
    tenant_id: int
    params: dict[str, str]
    state: ConversionState
    path: Path | None = None
    flag_version: str | None = None
    reason: str = ""
    job_ref: str | None = None
    intent: str | None = None
    fence: int = 0
    attempts: int = 0
    received_at: float | None = None
    claimed_at: float | None = None
    dispatched_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    work_seconds: float | None = None  # the last attempt's run time by the job's own account
    # When that attempt's work started by the job's own clock, when it said: with ``work_seconds``
    # the work itself, without queueing, provisioning or cycle latency (the forecast learns both).
    work_started_at: float | None = None
    # When that attempt's job took its slot under the new path's cap, by the runner's clock, when
    # the backend can say (the local runner; Batch does not tell when a job starts to hold vCPUs):
    # from it to ``work_started_at`` is the job's own start-up, which the forecast learns.
    slot_at: float | None = None

    @property
    def request(self) -> ConversionRequest:
        return ConversionRequest(self.conversion_id, self.tenant_id, self.params)


@dataclass(frozen=True, slots=True)
class Ownership:
    """The answer to a claim: who owns the conversion, and whether this claim decided it."""

    record: ConversionRecord
    created: bool


@dataclass(frozen=True, slots=True)
class JobRef:
    """A backend's handle on one conversion: its job (or build) id, and the conversion inside it."""

    job_id: str
    conversion_id: str

    def __str__(self) -> str:
        return self.job_id


class JobStatus(StrEnum):
    """What a backend reports for one conversion. Only RUNNING loads the shared database."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the backend has no record of it

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


@dataclass(frozen=True, slots=True)
class JobState:
    """One poll answer: the status, and for finished work why and where the output went, and how
    long the work took by the job's own account (its result's start and finish) and when it started
    (epoch seconds, the job's clock), when it says."""

    status: JobStatus
    reason: str = ""
    output: str | None = None
    work_seconds: float | None = None
    work_started_at: float | None = None
    slot_at: float | None = None  # when the job took its slot, by the runner's clock, when it says


@dataclass(frozen=True, slots=True)
class DispatchItem:
    """One conversion handed to a backend under the fence of this dispatch attempt."""

    conversion_id: str
    tenant_id: int
    params: dict[str, str]
    flag_version: str
    fence: int


@dataclass(frozen=True, slots=True)
class DispatchBatch:
    """What one cycle hands one path. ``key`` is deterministic so a retried submit can be recognised.

    ``concurrency`` is how many conversions the batch may work on at once (the legacy build's
    worker threads); the new path's parallelism is set separately with ``Backend.set_capacity``.
    ``time_limit`` is how many seconds the submit may take, all its calls and retries included
    (the dispatch lease must outlast it); None: no limit.
    """

    key: str
    path: Path
    items: tuple[DispatchItem, ...]
    concurrency: int
    time_limit: float | None = None

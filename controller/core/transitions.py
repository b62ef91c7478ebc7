"""The conversion state machine and the retry policy. Pure: states and numbers in, verdicts out."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from controller.core.domain import ConversionState, JobState, JobStatus

S = ConversionState

ALLOWED: dict[ConversionState, frozenset[ConversionState]] = {
    S.RECEIVED: frozenset({S.CLAIMED}),
    S.CLAIMED: frozenset({S.DISPATCHING}),
    # back to CLAIMED when the backend confirms nothing was started
    S.DISPATCHING: frozenset({S.DISPATCHED, S.CLAIMED}),
    # back to CLAIMED (same path, new fence) for a clone-and-resubmit after the last attempt failed
    S.DISPATCHED: frozenset({S.SUCCEEDED, S.FAILED, S.CLAIMED}),
    S.SUCCEEDED: frozenset(),
    # an operator's requeue: the only move that frees a conversion's ownership
    S.FAILED: frozenset({S.RECEIVED}),
}


def allowed(old: ConversionState, new: ConversionState) -> bool:
    """True when the state machine lets a conversion move from ``old`` to ``new``."""
    return new in ALLOWED[old]


class Verdict(StrEnum):
    """What to do with a conversion after a poll."""

    WAIT = "wait"
    SUCCEED = "succeed"
    RESUBMIT = "resubmit"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Clone-and-resubmit a conversion whose job failed, up to ``resubmits`` times."""

    resubmits: int = 1
    unknown_grace_seconds: float = 60.0


def after_poll(state: JobState, attempts: int, unseen_for: float, policy: RetryPolicy) -> Verdict:
    """Turn one poll answer into the next step for the conversion.

    ``attempts`` counts dispatches so far. A job the backend does not know is a failure only once
    it has gone unseen (no answer but UNKNOWN) for a grace period: a fresh submission may not be
    visible yet, and one unreadable answer about a job that has run for hours says nothing of it.
    ``unseen_for`` is how long the answers about it have been UNKNOWN without a break.
    """
    if state.status is JobStatus.SUCCEEDED:
        return Verdict.SUCCEED
    failed = state.status is JobStatus.FAILED or (
        state.status is JobStatus.UNKNOWN and unseen_for > policy.unknown_grace_seconds
    )
    if not failed:
        return Verdict.WAIT
    return Verdict.RESUBMIT if attempts <= policy.resubmits else Verdict.FAIL

"""requeued(): what an operator's requeue makes of a failed conversion, for every ledger."""

from __future__ import annotations

from dataclasses import fields

import pytest

from controller.core.domain import ConversionRecord, Path
from controller.core.domain import ConversionState as S
from controller.core.errors import ConflictError
from controller.core.requeue import REQUEUE_FIELDS, REQUEUE_REASON, requeued


def record(state: S = S.FAILED) -> ConversionRecord:
    """A conversion with every field set, as a failed second attempt on the new path leaves it."""
    return ConversionRecord(
        conversion_id="c-1",
        tenant_id=7,
        params={"form": "all"},
        state=state,
        path=Path.NEW,
        flag_version="v3",
        reason="exit status 1",
        job_ref="job-9",
        intent="batch-4",
        fence=5,
        attempts=2,
        received_at=1.0,
        claimed_at=2.0,
        dispatched_at=3.0,
        finished_at=4.0,
        updated_at=4.0,
        work_seconds=0.8,
        work_started_at=3.1,
        slot_at=3.05,
    )


def test_a_failed_conversion_goes_back_to_the_intake_owned_by_no_path():
    """Routed afresh: no path, flag version, job, intent or ownership timestamps; retries counted anew."""
    assert requeued(record(), 50.0) == ConversionRecord(
        conversion_id="c-1",
        tenant_id=7,
        params={"form": "all"},
        state=S.RECEIVED,
        path=None,
        flag_version=None,
        reason=REQUEUE_REASON,
        job_ref=None,
        intent=None,
        fence=5,
        attempts=0,
        received_at=1.0,
        claimed_at=None,
        dispatched_at=None,
        finished_at=None,
        updated_at=50.0,
    )


def test_the_fence_is_kept_so_a_late_update_of_the_failed_attempt_cannot_match_the_next():
    failed = record()
    assert requeued(failed, 50.0).fence == failed.fence


@pytest.mark.parametrize("state", [s for s in S if s is not S.FAILED], ids=str)
def test_only_a_failed_conversion_can_be_requeued(state):
    with pytest.raises(ConflictError, match=rf"conversion 'c-1' is {state.value}; only a failed conversion"):
        requeued(record(state), 50.0)


def test_the_fields_a_ledger_writes_are_exactly_those_a_requeue_changes():
    """A ledger writes REQUEUE_FIELDS of the answer: a change the list left out would never be stored,
    and a field listed but left as it was would be written for nothing."""
    failed = record()
    freed = requeued(failed, 50.0)
    changed = {f.name for f in fields(ConversionRecord) if getattr(freed, f.name) != getattr(failed, f.name)}
    assert changed == set(REQUEUE_FIELDS)
    assert len(REQUEUE_FIELDS) == len(set(REQUEUE_FIELDS))

"""The conversion state machine and the retry verdicts."""

from __future__ import annotations

import pytest

from controller.core.domain import ConversionState as S
from controller.core.domain import JobState, JobStatus
from controller.core.transitions import RetryPolicy, Verdict, after_poll, allowed


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        (S.RECEIVED, S.CLAIMED, True),
        (S.CLAIMED, S.DISPATCHING, True),
        (S.DISPATCHING, S.DISPATCHED, True),
        (S.DISPATCHING, S.CLAIMED, True),
        (S.DISPATCHED, S.SUCCEEDED, True),
        (S.DISPATCHED, S.FAILED, True),
        (S.DISPATCHED, S.CLAIMED, True),
        (S.FAILED, S.RECEIVED, True),
        (S.SUCCEEDED, S.DISPATCHED, False),
        (S.SUCCEEDED, S.RECEIVED, False),
        (S.FAILED, S.DISPATCHED, False),
        (S.CLAIMED, S.RECEIVED, False),
        (S.DISPATCHED, S.RECEIVED, False),
        (S.RECEIVED, S.DISPATCHED, False),
    ],
)
def test_state_machine(old, new, ok):
    assert allowed(old, new) is ok


def test_only_requeue_leaves_a_terminal_state():
    for state in S:
        if state.terminal:
            assert all(target is S.RECEIVED for target in S if allowed(state, target))


POLICY = RetryPolicy(resubmits=1, unknown_grace_seconds=60)


@pytest.mark.parametrize(
    ("status", "attempts", "age", "verdict"),
    [
        (JobStatus.SUCCEEDED, 1, 0, Verdict.SUCCEED),
        (JobStatus.RUNNING, 1, 9999, Verdict.WAIT),
        (JobStatus.QUEUED, 1, 9999, Verdict.WAIT),
        (JobStatus.FAILED, 1, 0, Verdict.RESUBMIT),
        (JobStatus.FAILED, 2, 0, Verdict.FAIL),
        (JobStatus.UNKNOWN, 1, 10, Verdict.WAIT),
        (JobStatus.UNKNOWN, 1, 61, Verdict.RESUBMIT),
        (JobStatus.UNKNOWN, 2, 61, Verdict.FAIL),
    ],
)
def test_after_poll(status, attempts, age, verdict):
    assert after_poll(JobState(status), attempts, age, POLICY) is verdict

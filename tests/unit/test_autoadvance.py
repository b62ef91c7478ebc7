"""decide(): the next step of an automatic rollout, as a decision table."""

from __future__ import annotations

import pytest

from controller.core.autoadvance import Action, AutoPolicy, Blackout, OnFail, Situation, decide
from controller.core.gates import GateVerdict
from controller.core.schedule import parse_schedule

H = 3600.0
P, F, INC = GateVerdict.PASS, GateVerdict.FAIL, GateVerdict.INCONCLUSIVE
POLICY = AutoPolicy(bake_seconds=24 * H, deadline_seconds=72 * H)
ALWAYS_DARK = AutoPolicy(bake_seconds=H, blackouts=(Blackout(parse_schedule("* * * * *"), 120),))


def at(hours: float, verdict: GateVerdict = P, **kw: object) -> Situation:
    base: dict[str, object] = {
        "now": hours * H,
        "next_group": "g2",
        "last_group": "g1",
        "changed_at": 0.0,
        "deploying": False,
        "verdict": verdict,
    }
    return Situation(**(base | kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("policy", "situation", "action", "group", "when"),
    [
        pytest.param(POLICY, at(25), Action.ADVANCE, "g2", 25 * H, id="baked-and-passing"),
        pytest.param(POLICY, at(23), Action.WAIT, "g2", 24 * H, id="still-baking"),
        pytest.param(
            POLICY, at(23, F, failing=("g1",)), Action.PAUSE, "g1", 23 * H, id="fail-pauses-at-once"
        ),
        pytest.param(
            AutoPolicy(on_fail=OnFail.ROLLBACK),
            at(1, F, failing=("g1",)),
            Action.ROLLBACK,
            "g1",
            H,
            id="fail-rolls-back-the-last-group",
        ),
        pytest.param(
            AutoPolicy(on_fail=OnFail.ROLLBACK),
            at(1, F, failing=("g0",)),
            Action.PAUSE,
            "g0",
            H,
            id="an-earlier-group-failing-pauses",
        ),
        pytest.param(POLICY, at(30, INC), Action.WAIT, "g2", None, id="inconclusive-waits"),
        pytest.param(
            POLICY, at(73, INC), Action.NOTIFY_STUCK, "g2", 73 * H, id="inconclusive-past-the-deadline"
        ),
        pytest.param(POLICY, at(73, INC, stuck_notified=True), Action.WAIT, "g2", None, id="stuck-said-once"),
        pytest.param(POLICY, at(25, deploying=True), Action.WAIT, None, None, id="deployment-under-way"),
        pytest.param(POLICY, at(25, F, paused="gate failed"), Action.WAIT, None, None, id="paused"),
        pytest.param(POLICY, at(25, next_group=None), Action.DONE, None, None, id="all-groups-in"),
        pytest.param(POLICY, at(1, changed_at=None), Action.ADVANCE, "g2", H, id="nothing-deployed-yet"),
        pytest.param(ALWAYS_DARK, at(25), Action.WAIT, "g2", 25 * H + 120, id="blackout"),
        pytest.param(
            AutoPolicy(on_fail=OnFail.ROLLBACK, blackouts=ALWAYS_DARK.blackouts),
            at(1, F, failing=("g1",)),
            Action.ROLLBACK,
            "g1",
            H,
            id="rollback-ignores-blackouts",
        ),
    ],
)
def test_decide(policy, situation, action, group, when):
    decision = decide(policy, situation)
    assert (decision.action, decision.group, decision.at) == (action, group, when)
    assert decision.why

"""Opt-in auto-advance: what to do next with the rollout, decided from values alone. Pure: the
policy, the gate's verdict, the flag's last change and the time in; one decision (advance, roll
back, pause, say the rollout is stuck, or wait, and for what) out. Acting on it, under a lease, is
``controller.engine.autoadvance``'s business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from controller.core.gates import GateVerdict
from controller.core.schedule import Schedule

AUTO_BY = "cutover-auto"  # who the flag history names for every automatic action


class OnFail(StrEnum):
    """What auto-advance does when a group already moved fails its gate."""

    PAUSE = "pause"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class Blackout:
    """A window in which no group moves: from each time ``schedule`` names (cron, UTC), ``seconds`` long."""

    schedule: Schedule
    seconds: float

    def ends(self, now: float) -> float | None:
        """The end of the blackout window ``now`` is in, or None outside every one."""
        end = self.schedule.latest_slot(now) + self.seconds
        return end if now < end else None


@dataclass(frozen=True, slots=True)
class AutoPolicy:
    """The rollout plan's ``auto:`` section."""

    enabled: bool = True
    bake_seconds: float = 86400.0
    blackouts: tuple[Blackout, ...] = ()
    on_fail: OnFail = OnFail.PAUSE
    deadline_seconds: float = 72 * 3600.0

    def blackout_ends(self, now: float) -> float | None:
        """When the blackout ``now`` is in ends (the latest end if windows overlap), or None."""
        ends = [e for e in (b.ends(now) for b in self.blackouts) if e is not None]
        return max(ends) if ends else None


class Action(StrEnum):
    """What auto-advance does next."""

    ADVANCE = "advance"
    ROLLBACK = "rollback"
    PAUSE = "pause"
    NOTIFY_STUCK = "notify_stuck"
    WAIT = "wait"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Situation:
    """What the decision looks at: the rollout now."""

    now: float
    next_group: str | None  # the first group of the plan not wholly on the new path
    last_group: str | None  # the last group of the plan with tenants on the new path
    changed_at: float | None  # when the flag version in force was deployed
    deploying: bool  # a flag deployment is under way
    verdict: GateVerdict
    failing: Sequence[str] = ()
    why: str = ""  # the gate's reasons, in words
    paused: str = ""  # why auto-advance is paused ("" when it is not)
    stuck_notified: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """The next action, on which group, from when (None: not foreseeable), and what it waits for or why."""

    action: Action
    group: str | None = None
    at: float | None = None
    why: str = ""  # what it waits for, or why it acts


def decide(policy: AutoPolicy, s: Situation) -> Decision:
    """The next step of an automatic rollout. A failing group pauses it (or, with ``on_fail:
    rollback``, rolls the last group back when that is the one failing); the next group moves only
    after the last change has baked, while the gate passes and outside blackout windows; a gate
    inconclusive past the deadline is announced once as a stuck rollout. Rollback ignores blackouts."""
    if s.paused:
        return Decision(Action.WAIT, why=f"paused ({s.paused}); resumes when the flag in force changes")
    if s.deploying:
        return Decision(Action.WAIT, why="the flag deployment under way to finish")
    if s.verdict is GateVerdict.FAIL:
        if policy.on_fail is OnFail.ROLLBACK and s.last_group is not None and s.last_group in s.failing:
            return Decision(Action.ROLLBACK, s.last_group, s.now, f"gate failed: {s.why}")
        return Decision(Action.PAUSE, s.failing[0] if s.failing else None, s.now, f"gate failed: {s.why}")
    if s.next_group is None:
        return Decision(Action.DONE, why="nothing: every group of the plan is on the new path")
    overdue = s.changed_at is not None and s.now >= s.changed_at + policy.deadline_seconds
    if s.verdict is GateVerdict.INCONCLUSIVE and overdue and not s.stuck_notified:
        return Decision(
            Action.NOTIFY_STUCK, s.next_group, s.now, f"gate inconclusive past the deadline: {s.why}"
        )
    if s.changed_at is not None and s.now < s.changed_at + policy.bake_seconds:
        return Decision(
            Action.WAIT, s.next_group, s.changed_at + policy.bake_seconds, "the last change to bake"
        )
    if s.verdict is GateVerdict.INCONCLUSIVE:
        return Decision(Action.WAIT, s.next_group, None, f"more evidence: {s.why}")
    ends = policy.blackout_ends(s.now)
    if ends is not None:
        return Decision(Action.WAIT, s.next_group, ends, "the blackout window to end")
    return Decision(Action.ADVANCE, s.next_group, s.now, "nothing: the gate passes")

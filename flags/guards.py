"""The guard rails a flag change must pass before anything is written. Pure: values in, problems out.

``cutover flag advance`` / ``rollback`` check them before they write, and the AppConfig validator
(``flags.validator``) checks the same for versions made elsewhere (the console, scripts).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from flags.versions import FlagContent


class ChangeKind(StrEnum):
    """How a change reaches the environment; each kind has its own rules."""

    ADVANCE = "advance"  # a new version that moves tenants to the new path
    ROLLBACK = "rollback"  # a new version marked as a rollback: it may only take tenants out
    REVERT = "revert"  # an older version deployed again: whatever it said, it said before


@dataclass(frozen=True, slots=True)
class Diff:
    """Which tenants a change moves to the new path and which it sends back."""

    added: frozenset[int]
    removed: frozenset[int]


def diff(before: FlagContent | None, after: FlagContent) -> Diff:
    """The tenants whose routing a change moves (a switched-off flag routes nobody to the new path)."""
    old = before.migrated if before is not None else frozenset()
    return Diff(after.migrated - old, old - after.migrated)


def sample(ids: Iterable[int], n: int = 5) -> str:
    """A few ids for a message: ``1001, 1002, 1003 and 17 more``."""
    ordered = sorted(ids)
    shown = ", ".join(map(str, ordered[:n]))
    return shown if len(ordered) <= n else f"{shown} and {len(ordered) - n} more"


def check(before: FlagContent | None, after: FlagContent, *, kind: ChangeKind, max_add: int) -> list[str]:
    """Why the change must not be made (empty when it may)."""
    d = diff(before, after)
    problems: list[str] = []
    if kind is ChangeKind.ADVANCE:
        if d.removed:
            problems.append(
                f"would take {len(d.removed)} tenant(s) off the new path ({sample(d.removed)}); "
                "tenants leave only through `cutover flag rollback`"
            )
        if len(d.added) > max_add:
            problems.append(
                f"would add {len(d.added)} tenants in one step, over the limit of {max_add} "
                "(--max-add, CUTOVER_MAX_ADD); advance in smaller steps"
            )
    elif kind is ChangeKind.ROLLBACK and d.added:
        problems.append(
            f"a rollback version must not add tenants, this one adds {len(d.added)} ({sample(d.added)})"
        )
    return problems

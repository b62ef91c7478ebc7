"""Shadow runs: the values, the sampling rule and the plan's ``shadow:`` section. Pure.

A shadow is a second run of a conversion the old path owns, on the new path (or, for measuring
noise, on the old path again: an A/A shadow), whose output goes to a quarantine and is only ever
compared, never published. A shadow is its own record, linked to its conversion by
``conversion_id``; nothing here may change the conversion itself. No I/O, no clock.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from controller.core.domain import Path
from controller.core.errors import InputError


class ShadowKind(StrEnum):
    """Which run a shadow is: the new path beside the old one, or the old path a second time."""

    NEW = "new"  # legacy vs new: what the comparison judges
    AA = "aa"  # legacy vs legacy: what differs between two runs of the same code is noise

    @property
    def path(self) -> Path:
        return Path.NEW if self is ShadowKind.NEW else Path.LEGACY


class ShadowState(StrEnum):
    """A shadow's own life, apart from its conversion's."""

    PENDING = "pending"  # sampled, waiting for spare budget
    DISPATCHING = "dispatching"  # intent to submit recorded, backend call under way
    DISPATCHED = "dispatched"  # a shadow backend holds it
    SUCCEEDED = "succeeded"  # ran and wrote its output into the quarantine
    FAILED = "failed"  # ran and failed
    COMPARED = "compared"  # judged against the conversion's own output (see ``verdict``)
    SKIPPED = "skipped"  # never run: its tenant moved, or it could not get room in time

    @property
    def ran(self) -> bool:
        return self in (ShadowState.SUCCEEDED, ShadowState.FAILED)

    @property
    def live(self) -> bool:
        """Waiting for or holding a backend."""
        return self in (ShadowState.PENDING, ShadowState.DISPATCHING, ShadowState.DISPATCHED)


class ShadowWhen(StrEnum):
    """When shadows may start."""

    SPARE = "spare"  # on budget real work leaves free, beside it
    IDLE = "idle"  # only while no real work runs or waits on either path: after a peak, not in it


class ShadowVerdict(StrEnum):
    """What a comparison concluded."""

    MATCH = "match"  # the same canonical content (beyond the ignore rules)
    DIFFERENT = "different"  # at least one cell differs; noise decides whether it is a mismatch
    SHADOW_FAILED = "shadow_failed"  # the shadow run failed where the conversion succeeded
    TOO_LARGE = "too_large"  # an output was over the size limit: not compared
    UNREADABLE = "unreadable"  # an output could not be read or is not a workbook
    NO_BASELINE = "no_baseline"  # the conversion itself failed or left no output: nothing to compare

    @property
    def counts(self) -> bool:
        """Whether the verdict is a sample of the new path's parity."""
        return self in (ShadowVerdict.MATCH, ShadowVerdict.DIFFERENT, ShadowVerdict.SHADOW_FAILED)


@dataclass(frozen=True, slots=True)
class ShadowRecord:
    """A shadow as the ledger holds it."""

    shadow_id: str
    conversion_id: str  # shadow_of: the conversion it shadows
    tenant_id: int
    params: dict[str, str]
    kind: ShadowKind
    state: ShadowState
    flag_version: str | None = None
    reason: str = ""
    job_ref: str | None = None
    intent: str | None = None
    fence: int = 0
    preemptions: int = 0
    output: str | None = None
    verdict: ShadowVerdict | None = None
    detail: str = ""  # the comparison's findings, JSON (``controller.core.parity``)
    created_at: float | None = None
    dispatched_at: float | None = None
    finished_at: float | None = None
    compared_at: float | None = None
    cleaned_at: float | None = None
    updated_at: float | None = None
    # The run's own timing as its result gave it, and when it took its slot as the runner told:
    # the forecast learns the new path's durations and start-up from them before a tenant moves.
    work_seconds: float | None = None
    work_started_at: float | None = None
    slot_at: float | None = None

    @property
    def path(self) -> Path:
        return self.kind.path

    @property
    def shadow_of(self) -> str:
        return self.conversion_id


def shadow_id(kind: ShadowKind, conversion_id: str) -> str:
    """The one id of a conversion's shadow of ``kind``: replicas that sample it agree on it."""
    return f"{kind.value}:{conversion_id}"


def _unit(salt: str, conversion_id: str) -> float:
    """A number in [0, 1) fixed by the conversion id alone, so every replica draws the same."""
    digest = hashlib.sha256(f"{salt}:{conversion_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def sampled(conversion_id: str, rate: float) -> bool:
    """Whether a conversion is sampled for a shadow at ``rate`` (deterministic per id)."""
    return rate > 0 and _unit("shadow", conversion_id) < rate


def sampled_for_noise(conversion_id: str, rate: float) -> bool:
    """Whether a sampled conversion also gets an A/A shadow (drawn independently of ``sampled``)."""
    return rate > 0 and _unit("aa", conversion_id) < rate


# -- the plan's ``shadow:`` section ----------------------------------------------------------------

_CELL = re.compile(r"^([A-Z]{1,3})([1-9][0-9]{0,6})$")
_SECTION_KEYS = {
    "groups",
    "rate",
    "max_per_tenant_per_day",
    "aa_rate",
    "max_mismatch_rate",
    "min_samples",
    "thresholds",
    "ignore",
    "compare_styles",
    "when",
}
_THRESHOLD_KEYS = {"max_mismatch_rate", "min_samples"}
_RULE_KEYS = {"sheet", "column", "cells"}


def column_index(letters: str) -> int:
    """1-based index of a column given by its letters (A = 1, AA = 27)."""
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n


def column_letters(index: int) -> str:
    """The letters of a 1-based column index."""
    out = ""
    while index > 0:
        index, rem = divmod(index - 1, 26)
        out = chr(65 + rem) + out
    return out


def cell_name(row: int, column: int) -> str:
    """A1 notation of a 1-based row and column."""
    return f"{column_letters(column)}{row}"


@dataclass(frozen=True, slots=True)
class CellRange:
    """An inclusive block of cells, ``A1:C10``."""

    first_row: int
    first_column: int
    last_row: int
    last_column: int

    def __contains__(self, cell: tuple[int, int]) -> bool:
        row, column = cell
        return self.first_row <= row <= self.last_row and self.first_column <= column <= self.last_column


def parse_cells(text: str, at: str) -> CellRange:
    """``A1`` or ``A1:C10``; ``InputError`` naming ``at`` otherwise."""
    parts = [p.strip().upper() for p in text.split(":")]
    if len(parts) not in (1, 2) or not all(_CELL.match(p) for p in parts):
        raise InputError(f"{at}: cells {text!r} is not a cell or range such as A1 or B2:D40")
    (c1, r1), (c2, r2) = (_CELL.match(parts[0]).groups(), _CELL.match(parts[-1]).groups())  # type: ignore[union-attr]
    first = (int(r1), column_index(c1))
    last = (int(r2), column_index(c2))
    if last[0] < first[0] or last[1] < first[1]:
        raise InputError(f"{at}: cells {text!r} runs backwards")
    return CellRange(first[0], first[1], last[0], last[1])


@dataclass(frozen=True, slots=True)
class IgnoreRule:
    """Cells known to differ: a sheet name pattern and a column header pattern or a cell range.

    Patterns are shell-style (``Form *``, ``*at``), matched case-sensitively.
    """

    sheet: str = "*"
    column: str | None = None
    cells: CellRange | None = None

    def covers(self, sheet: str, header: str, row: int, column: int) -> bool:
        if not fnmatchcase(sheet, self.sheet):
            return False
        if self.column is not None and not fnmatchcase(header, self.column):
            return False
        return self.cells is None or (row, column) in self.cells


@dataclass(frozen=True, slots=True)
class Threshold:
    """What a group's parity must show: mismatch rate bound, and samples needed to judge it."""

    max_mismatch_rate: float = 0.05
    min_samples: int | None = None  # None: as many as make the bound reach the rate with no mismatch


@dataclass(frozen=True, slots=True)
class ShadowPlan:
    """Which conversions get shadows and how their outputs are judged."""

    groups: tuple[str, ...] = ()
    rate: float = 0.0
    max_per_tenant_per_day: int | None = None
    aa_rate: float = 0.0
    default_threshold: Threshold = field(default_factory=Threshold)
    thresholds: Mapping[str, Threshold] = field(default_factory=dict)
    ignore: tuple[IgnoreRule, ...] = ()
    compare_styles: bool = False
    when: ShadowWhen = ShadowWhen.SPARE

    def threshold(self, group: str) -> Threshold:
        return self.thresholds.get(group, self.default_threshold)


def _rate(raw: Any, at: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise InputError(f"{at} must be a number from 0 to 1")
    if not 0 <= raw <= 1:
        raise InputError(f"{at} must be from 0 to 1 (got {raw})")
    return float(raw)


def _count(raw: Any, at: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise InputError(f"{at} must be a whole number of at least 1")
    return raw


def _threshold(raw: Any, at: str, base: Threshold) -> Threshold:
    if not isinstance(raw, dict):
        raise InputError(f"{at} must be a mapping with max_mismatch_rate and/or min_samples")
    extra = set(raw) - _THRESHOLD_KEYS
    if extra:
        raise InputError(f"{at}: unknown keys {sorted(extra)} (allowed: {sorted(_THRESHOLD_KEYS)})")
    rate = _rate(raw["max_mismatch_rate"], f"{at}.max_mismatch_rate") if "max_mismatch_rate" in raw else None
    if rate == 0:
        raise InputError(f"{at}.max_mismatch_rate must be above 0: no number of samples can show a rate of 0")
    samples = _count(raw["min_samples"], f"{at}.min_samples") if "min_samples" in raw else None
    return Threshold(
        base.max_mismatch_rate if rate is None else rate,
        base.min_samples if samples is None else samples,
    )


def _rule(raw: Any, at: str) -> IgnoreRule:
    if not isinstance(raw, dict) or not raw:
        raise InputError(f"{at} must be a mapping of sheet, column and/or cells")
    extra = set(raw) - _RULE_KEYS
    if extra:
        raise InputError(f"{at}: unknown keys {sorted(extra)} (allowed: {sorted(_RULE_KEYS)})")
    for key in ("sheet", "column", "cells"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key].strip()):
            raise InputError(f"{at}.{key} must be a non-empty string")
    if "column" not in raw and "cells" not in raw:
        raise InputError(
            f"{at} needs a column header pattern or a cell range (a whole sheet: cells A1:XFD1048576)"
        )
    cells = parse_cells(raw["cells"], f"{at}.cells") if "cells" in raw else None
    return IgnoreRule(raw.get("sheet", "*"), raw.get("column"), cells)


def parse_shadow_section(raw: Any, group_names: Sequence[str], where: str) -> ShadowPlan:
    """Validate the plan's ``shadow:`` section whole; ``InputError`` names the key at fault."""
    at = f"{where}: shadow"
    if not isinstance(raw, dict):
        raise InputError(f"{at} must be a mapping (groups, rate, ...)")
    extra = set(raw) - _SECTION_KEYS
    if extra:
        raise InputError(f"{at}: unknown keys {sorted(extra)} (allowed: {sorted(_SECTION_KEYS)})")
    groups = raw.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise InputError(f"{at}.groups must be a list of group names")
    for g in groups:
        if g not in group_names:
            raise InputError(f"{at}.groups: no group {g!r} in the plan (groups: {', '.join(group_names)})")
    rate = _rate(raw.get("rate", 0.1 if groups else 0.0), f"{at}.rate")
    cap = raw.get("max_per_tenant_per_day")
    default = _threshold({k: raw[k] for k in _THRESHOLD_KEYS if k in raw}, at, Threshold())
    thresholds_raw = raw.get("thresholds", {})
    if not isinstance(thresholds_raw, dict):
        raise InputError(f"{at}.thresholds must map group names to thresholds")
    thresholds: dict[str, Threshold] = {}
    for name, value in thresholds_raw.items():
        if name not in group_names:
            raise InputError(f"{at}.thresholds: no group {name!r} in the plan")
        thresholds[name] = _threshold(value, f"{at}.thresholds.{name}", default)
    rules = raw.get("ignore", [])
    if not isinstance(rules, list):
        raise InputError(f"{at}.ignore must be a list of rules")
    styles = raw.get("compare_styles", False)
    if not isinstance(styles, bool):
        raise InputError(f"{at}.compare_styles must be true or false")
    when = raw.get("when", ShadowWhen.SPARE.value)
    if not isinstance(when, str) or when not in {w.value for w in ShadowWhen}:
        raise InputError(f"{at}.when must be one of {', '.join(w.value for w in ShadowWhen)} (got {when!r})")
    return ShadowPlan(
        groups=tuple(groups),
        rate=rate,
        max_per_tenant_per_day=None if cap is None else _count(cap, f"{at}.max_per_tenant_per_day"),
        aa_rate=_rate(raw.get("aa_rate", 0.0), f"{at}.aa_rate"),
        default_threshold=default,
        thresholds=thresholds,
        ignore=tuple(_rule(r, f"{at}.ignore[{i}]") for i, r in enumerate(rules)),
        compare_styles=styles,
        when=ShadowWhen(when),
    )


@dataclass(frozen=True, slots=True)
class ShadowScope:
    """Who gets shadows: the plan's shadow groups at their rate, and every other tenant not yet
    migrated at the global rate (``CUTOVER_SHADOW_RATE``)."""

    plan: ShadowPlan = field(default_factory=ShadowPlan)
    tenants: frozenset[int] = frozenset()  # the tenants of the plan's shadow groups
    global_rate: float = 0.0
    global_aa_rate: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.global_rate > 0 or (self.plan.rate > 0 and bool(self.tenants))

    def rate(self, tenant_id: int) -> float:
        """The sampling rate of a tenant's conversions (the larger of the two that apply)."""
        group_rate = self.plan.rate if tenant_id in self.tenants else 0.0
        return max(group_rate, self.global_rate)

    def kinds(self, conversion_id: str, tenant_id: int) -> tuple[ShadowKind, ...]:
        """The shadows a conversion the old path owns gets: none, the new path's, or also an A/A."""
        if not sampled(conversion_id, self.rate(tenant_id)):
            return ()
        if sampled_for_noise(conversion_id, max(self.plan.aa_rate, self.global_aa_rate)):
            return (ShadowKind.NEW, ShadowKind.AA)
        return (ShadowKind.NEW,)

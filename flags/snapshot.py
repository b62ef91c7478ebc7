"""The immutable view of one flag version, and the state of the flag as the controller sees it.

Values only: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class FlagState(StrEnum):
    """How usable the flag in force is; the words are the ``/status`` JSON values."""

    OK = "ok"
    STALE = "stale"
    UNAVAILABLE = "unavailable"
    INVALID = "invalid"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class FlagSnapshot:
    """One validated flag version: who is migrated, as read from one source at one moment."""

    version: str
    enabled: bool
    tenant_ids: frozenset[int]
    source: str
    fetched_at: float
    flag_key: str = "migrated_tenants"
    duplicates_folded: int = 0
    version_from_content: bool = False

    @property
    def tenant_count(self) -> int:
        return len(self.tenant_ids) if self.enabled else 0

    def migrated(self, tenant_id: int) -> bool:
        """True when the flag is on and lists the tenant."""
        return self.enabled and tenant_id in self.tenant_ids


@dataclass(frozen=True, slots=True)
class FlagStatus:
    """What the controller routes by in one cycle: the last good snapshot (if any) and why it is trusted."""

    snapshot: FlagSnapshot | None
    state: FlagState
    checked_at: float
    problem: str = ""
    good_since: float | None = field(default=None)

    @property
    def age_seconds(self) -> float | None:
        """Seconds since the snapshot in force was last confirmed by its source."""
        if self.snapshot is None:
            return None
        return max(0.0, self.checked_at - self.snapshot.fetched_at)

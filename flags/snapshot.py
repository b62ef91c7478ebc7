"""The immutable view of one flag version, and the state of the flag as the controller sees it.

Values only: no I/O, no clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


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

    def to_json(self) -> str:
        """The snapshot as the ledgers persist it (last-known-good)."""
        return json.dumps(
            {
                "version": self.version,
                "enabled": self.enabled,
                "tenant_ids": sorted(self.tenant_ids),
                "source": self.source,
                "fetched_at": self.fetched_at,
                "flag_key": self.flag_key,
                "duplicates_folded": self.duplicates_folded,
                "version_from_content": self.version_from_content,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> FlagSnapshot:
        """A snapshot ``to_json`` wrote; ``FlagRecordError`` (holding the text) when it is not one."""
        from controller.core.errors import FlagRecordError

        try:
            data = json.loads(text)
            snapshot = cls(
                version=_typed(data, "version", str),
                enabled=_typed(data, "enabled", bool),
                tenant_ids=frozenset(_tenant_ids(data)),
                source=_typed(data, "source", str),
                fetched_at=float(_typed(data, "fetched_at", int | float)),
                flag_key=_typed(data, "flag_key", str),
                duplicates_folded=_typed(data, "duplicates_folded", int),
                version_from_content=_typed(data, "version_from_content", bool),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise FlagRecordError(f"the persisted last-known-good flag is unreadable ({exc})", text) from exc
        return snapshot


def _typed(data: object, key: str, kind: Any) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"expected an object, got {type(data).__name__}")
    value = data[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise TypeError(f"{key!r} is {type(value).__name__}")
    return value


def _tenant_ids(data: object) -> list[int]:
    ids = _typed(data, "tenant_ids", list)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise TypeError("'tenant_ids' holds a value that is not a whole number")
    return list(ids)


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

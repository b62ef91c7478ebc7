"""Tenants held back: taken out by ``cutover flag rollback --tenant`` and kept out of every later
advance until an operator releases them (``cutover flag release``, ``advance --include-held``).

Worked out from the version history alone: every store keeps who, when and why with each version,
so the file store, AppConfig and the Lambda validator agree without a record of their own. A
version made by ``rollback --tenant`` holds the tenants it took out; only a version whose
description carries ``[release]`` lets one back in. Reads the store; never writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.core.errors import FlagInvalidError
from controller.core.ports import VersionStore
from flags.versions import Version

RELEASE_MARK = "[release]"


@dataclass(frozen=True, slots=True)
class Hold:
    """One held tenant: the version that took it out, who made it, when, and why."""

    tenant_id: int
    version: int
    by: str
    at: str
    why: str

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "version": self.version,
            "by": self.by,
            "at": self.at,
            "why": self.why,
        }


def holds(store: VersionStore, versions: Sequence[Version] | None = None) -> dict[int, Hold]:
    """The tenants held now, by tenant id (from ``versions`` when the caller has listed them)."""
    listed: dict[int, frozenset[int]] = {}

    def tenants(number: int) -> frozenset[int]:
        if number not in listed:
            try:
                listed[number] = store.content(number).tenant_ids
            except FlagInvalidError:
                listed[number] = frozenset()  # an invalid version neither holds nor releases
        return listed[number]

    held: dict[int, Hold] = {}
    previous: int | None = None
    for version in store.versions() if versions is None else versions:
        note = version.note
        if note is not None and note.action == "rollback" and note.rollback and note.removed > 0:
            base = note.base if note.base is not None else previous
            if base is not None:
                for tenant in sorted(tenants(base) - tenants(version.number)):
                    held[tenant] = Hold(tenant, version.number, note.by, note.at, note.text)
        elif held and RELEASE_MARK in version.description:
            for tenant in tenants(version.number) & held.keys():
                del held[tenant]
        previous = version.number
    return held


def describe(hold: Hold) -> str:
    """One line an operator reads: who took the tenant out, when, and why."""
    why = f": {hold.why}" if hold.why else ""
    return f"tenant {hold.tenant_id} is held back since version {hold.version} ({hold.by}, {hold.at}{why})"


class FileHolds:
    """The holds of a flag file's history, read again only when the history changes: cheap enough
    for a status page that refreshes every few seconds."""

    def __init__(self, flag_file: Path, flag_key: str) -> None:
        from flags.file_store import FileVersionStore, history_dir

        self._store = FileVersionStore(flag_file, flag_key)
        self._history = history_dir(flag_file)
        self._seen: tuple[int, int] | None = None
        self._holds: dict[int, Hold] = {}

    def __call__(self) -> dict[int, Hold]:
        try:
            info = self._history.stat()
            seen = (info.st_mtime_ns, info.st_ino)
        except FileNotFoundError:
            return {}
        if seen != self._seen:
            self._holds, self._seen = holds(self._store), seen
        return self._holds

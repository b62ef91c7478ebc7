"""Last-known-good: the flag the controller routes by when its source fails.

A valid snapshot is persisted (through the ledger's store, so a restarted controller finds it)
and kept in force while the source is unreachable or answers with a bad document. A source
failure never un-migrates a tenant; only a valid new version (or a valid disabled flag) can.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from controller.core.errors import CutoverError, FlagInvalidError, FlagRecordError, FlagUnavailableError
from controller.core.ports import FlagSource, FlagStore
from flags.snapshot import FlagSnapshot, FlagState, FlagStatus

log = logging.getLogger("cutover.flags")


@dataclasses.dataclass(frozen=True, slots=True)
class FlagChange:
    """A new flag version came into force."""

    old: FlagSnapshot | None
    new: FlagSnapshot

    @property
    def added(self) -> frozenset[int]:
        before = self.old.tenant_ids if self.old and self.old.enabled else frozenset()
        after = self.new.tenant_ids if self.new.enabled else frozenset()
        return after - before

    @property
    def removed(self) -> frozenset[int]:
        before = self.old.tenant_ids if self.old and self.old.enabled else frozenset()
        after = self.new.tenant_ids if self.new.enabled else frozenset()
        return before - after


class LastKnownGood:
    """Reads the source once per call and answers with the flag status to route by."""

    def __init__(
        self,
        source: FlagSource,
        store: FlagStore,
        clock: Callable[[], float],
        *,
        max_age_seconds: float | None = None,
        persist_every_seconds: float = 60.0,
        on_change: Callable[[FlagChange], None] | None = None,
        keep_aside: Callable[[str], None] | None = None,
    ) -> None:
        self.source = source
        self._store = store
        self._clock = clock
        self._max_age = max_age_seconds
        self._persist_every = persist_every_seconds
        self._on_change = on_change
        self._keep_aside = keep_aside
        self._good: FlagSnapshot | None = None
        self._loaded = False
        self._unreadable = ""  # why the persisted record could not be used, until a good flag replaces it
        self._persisted_at = 0.0
        self._unsaved = False  # the snapshot in force has not been persisted yet
        self.last: FlagStatus | None = None

    @property
    def good(self) -> FlagSnapshot | None:
        """The snapshot in force (loading the persisted one on first use)."""
        if not self._loaded:
            self._good = self._load()
            self._loaded = True
        return self._good

    def _load(self) -> FlagSnapshot | None:
        """The persisted snapshot; a corrupt record is reported and kept aside, never fatal: routing
        goes on by the source's current flag, or by the fallback as if no flag was ever read."""
        try:
            return self._store.load_flag()
        except FlagRecordError as exc:
            self._unreadable = str(exc)
            log.error("flag.record_unreadable", extra={"problem": str(exc), "record": exc.record[:2000]})
            if self._keep_aside is not None:
                try:
                    self._keep_aside(exc.record)
                except CutoverError as aside_exc:
                    log.error("flag.record_not_kept", extra={"problem": str(aside_exc)})
            return None

    def read(self) -> FlagStatus:
        """Fetch once; on failure keep the last good snapshot and report why."""
        now = self._clock()
        previous = self.good
        try:
            fresh = self.source.fetch()
        except FlagInvalidError as exc:
            log.warning("flag.rejected", extra={"problem": str(exc)})
            return self._keep(FlagState.INVALID, str(exc), now)
        except FlagUnavailableError as exc:
            log.warning("flag.unavailable", extra={"problem": str(exc)})
            return self._keep(FlagState.UNAVAILABLE, str(exc), now)
        changed = previous is None or _identity(previous) != _identity(fresh)
        self._good = fresh
        self._unsaved = self._unsaved or changed
        problem = ""
        if self._unsaved:
            problem = self._persist(fresh, now)
        elif now - self._persisted_at >= self._persist_every:
            problem = self._refresh(fresh, now)
        if changed:
            log.info(
                "flag.changed",
                extra={"old": previous.version if previous else None, "new": fresh.version},
            )
            if self._on_change is not None:
                self._on_change(FlagChange(previous, fresh))
        state = FlagState.OK if fresh.enabled else FlagState.DISABLED
        self.last = FlagStatus(fresh, state, now, problem, good_since=fresh.fetched_at)
        return self.last

    def _refresh(self, fresh: FlagSnapshot, now: float) -> str:
        """Persist ``fresh`` again (its age starts over) unless another replica has persisted a
        different flag since: that one saw a change this replica's source has not shown yet (its
        agent lags during a gradual deployment), and a later flag must never be written over."""
        try:
            persisted = self._store.load_flag()
        except CutoverError as exc:
            log.warning("flag.not_persisted", extra={"version": fresh.version, "problem": str(exc)})
            return f"flag {fresh.version} not persisted again ({exc})"
        if persisted is not None and _identity(persisted) != _identity(fresh):
            self._persisted_at = now
            log.info("flag.persist_skipped", extra={"ours": fresh.version, "persisted": persisted.version})
            return ""
        return self._persist(fresh, now)

    def _persist(self, fresh: FlagSnapshot, now: float) -> str:
        """Save ``fresh``; a refused write is tried again on every read until it holds. The change
        is announced and routed by all the same: a store that failed once must not swallow it."""
        try:
            self._store.save_flag(fresh)
        except CutoverError as exc:
            log.warning("flag.not_persisted", extra={"version": fresh.version, "problem": str(exc)})
            return f"flag {fresh.version} not persisted yet ({exc})"
        self._persisted_at = now
        self._unsaved = False
        self._unreadable = ""
        return ""

    def _keep(self, state: FlagState, problem: str, now: float) -> FlagStatus:
        good = self.good
        if self._unreadable:
            problem = f"{problem}; {self._unreadable}"
        if good is not None and self._max_age is not None and now - good.fetched_at > self._max_age:
            problem = f"{problem}; last good flag {good.version} is older than {self._max_age:.0f}s"
            state = FlagState.STALE
        self.last = FlagStatus(good, state, now, problem)
        return self.last


def _identity(s: FlagSnapshot) -> tuple[str, bool, frozenset[int]]:
    return (s.version, s.enabled, s.tenant_ids)

"""What reconciliation has flagged, counted per path, for the backends to report on ``/metrics``.

Kept here rather than in the engine because the adapters hold one and may not import the engine.
"""

from __future__ import annotations

import threading

from controller.core.domain import Path


class ReconcileTally:
    """Distinct conversions reconciliation has flagged since the process started, per path.

    A backend hands ``counts(path)`` out as its ``reconcile_counts()``; the numbers only grow.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[Path, str], set[str]] = {}

    def add(self, path: Path, kind: str, conversion_ids: set[str]) -> None:
        """Remember flagged conversions (a conversion found again is not counted twice)."""
        with self._lock:
            self._seen.setdefault((path, kind), set()).update(conversion_ids)

    def counts(self, path: Path) -> dict[str, int]:
        """``{"duplicates": n, "orphans": m}`` for one path."""
        with self._lock:
            return {kind: len(self._seen.get((path, kind), ())) for kind in ("duplicates", "orphans")}

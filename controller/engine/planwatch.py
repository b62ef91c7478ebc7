"""The rollout plan file as the running service reads it: re-read when it changes on disk, the last
good plan kept while the file is missing or malformed. The gates, auto-advance and the shadow runs
share this one way of reading it."""

from __future__ import annotations

import threading
from pathlib import Path

from controller.core.errors import CutoverError
from flags.rollout import RolloutPlan, load_plan


class PlanWatch:
    """The rollout plan file, re-read when it changes on disk; the last good plan stays in use
    while the file is missing or malformed, and ``problem`` says why."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.problem = "" if path else "no rollout plan configured (CUTOVER_ROLLOUT_FILE)"
        self._stamp: tuple[int, int] | None = None
        self._plan: RolloutPlan | None = None
        self._lock = threading.Lock()

    def current(self) -> RolloutPlan | None:
        """The plan in force (None without one)."""
        if self.path is None:
            return None
        with self._lock:
            try:
                st = self.path.stat()
                stamp = (st.st_mtime_ns, st.st_size)
                if stamp != self._stamp:
                    self._plan = load_plan(self.path)
                    self._stamp = stamp
                self.problem = ""
            except OSError as exc:
                self.problem = f"rollout plan {self.path}: {exc.strerror or exc}"
            except CutoverError as exc:
                self.problem = str(exc)
            return self._plan

    def __call__(self) -> RolloutPlan | None:
        """The plan in force, for those that take the plan as a function."""
        return self.current()

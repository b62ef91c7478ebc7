"""The running controller's parts, as the composition root wires them (see ``controller.bootstrap``).

Holds no adapter names, so the API and the status document can depend on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.core.domain import Path
from controller.core.ports import Advisories, Backend, Intake, Ledger
from controller.engine.cycle import Controller
from controller.engine.housekeeping import Housekeeping
from controller.engine.notify import Signals
from controller.engine.reconcile import Reconciler
from controller.engine.shadows import Shadows
from controller.settings import Settings
from flags.lkg import LastKnownGood


@dataclass
class Service:
    """Everything one controller process runs with."""

    settings: Settings
    ledger: Ledger
    flags: LastKnownGood
    backends: dict[Path, Backend]
    controller: Controller
    clock: Callable[[], float]
    started_at: float = field(default_factory=time.time)
    intakes: list[Intake] = field(default_factory=list)
    signals: Signals | None = None  # SNS messages and CloudWatch metrics, when configured
    reconciler: Reconciler | None = None  # periodic reconciliation, when the backends can list runs
    housekeeping: Housekeeping | None = None  # the thread that sends signals and reconciles
    shadows: Shadows | None = None  # shadow runs, when the ledger keeps them and something samples

    def warnings(self) -> list[str]:
        """What the backends want an operator to know (e.g. a Fargate quota below the budget's needs)."""
        out: list[str] = []
        for backend in self.backends.values():
            if isinstance(backend, Advisories):
                out.extend(backend.warnings())
        return out

    def close(self) -> None:
        if self.housekeeping is not None:
            self.housekeeping.stop()
        for backend in self.backends.values():
            backend.close()
        if self.shadows is not None:
            self.shadows.close()
        # The agent source holds a pooled HTTP connection to the sidecar.
        close_source = getattr(self.flags.source, "close", None)
        if callable(close_source):
            close_source()
        self.ledger.close()

"""The running controller's parts, as the composition root wires them (see ``controller.bootstrap``).

Holds no adapter names, so the API and the status document can depend on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from controller.core.domain import Path
from controller.core.ports import Advisories, Backend, Intake, Ledger
from controller.engine.autoadvance import AutoAdvancer
from controller.engine.cycle import Controller
from controller.engine.gates import GateWatch, PlanWatch
from controller.engine.housekeeping import Housekeeping
from controller.engine.notify import Signals
from controller.engine.reconcile import Reconciler
from controller.engine.shadows import Shadows, gate_parity
from controller.settings import Settings
from flags.holds import Hold
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
    # Tenants held back from the rollout, where the flag's history can be read from here (the
    # flag file's); None otherwise (``cutover flag show`` lists them against AppConfig).
    held: Callable[[], Mapping[int, Hold]] | None = None
    shadows: Shadows | None = None  # shadow runs, when the ledger keeps them and something samples
    auto: AutoAdvancer | None = None  # auto-advance, when a rollout plan is configured
    gates: GateWatch = field(init=False)  # the rollout gates, worked out again now and then

    def __post_init__(self) -> None:
        ttl = max(2.0, min(30.0, self.settings.cycle_seconds * 3))
        shadows = self.shadows
        parity = (lambda plan: gate_parity(shadows.runner.store, plan)) if shadows is not None else None
        self.gates = GateWatch(
            self.ledger, PlanWatch(self.settings.rollout_file), self.migrated, self.clock, ttl, parity
        )

    def migrated(self) -> frozenset[int]:
        """The tenants routed to the new path now: the flag of the last cycle, else the last good
        flag read or persisted (none at all before a flag was ever read)."""
        report = self.controller.last_report
        status = report.flag if report is not None else self.flags.last
        snapshot = status.snapshot if status is not None else self.ledger.load_flag()
        return snapshot.tenant_ids if snapshot is not None and snapshot.enabled else frozenset()

    def warnings(self) -> list[str]:
        """What an operator should know: misspelt settings, and what the backends report (e.g. a
        Fargate quota below the budget's needs)."""
        out: list[str] = list(self.settings.warnings)
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

"""The running controller's parts, as the composition root wires them (see ``controller.bootstrap``).

Holds no adapter names, so the API and the status document can depend on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.cycle import Controller
from controller.domain import Path
from controller.ports import Backend, Ledger
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

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()
        # The agent source holds a pooled HTTP connection to the sidecar.
        close_source = getattr(self.flags.source, "close", None)
        if callable(close_source):
            close_source()
        self.ledger.close()

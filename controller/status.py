"""The status document (``GET /status``, ``cutover status``), built from what the cycle keeps.

Reads the last cycle report and the ledger's counters only: no scan, so it stays fast with
millions of records.
"""

from __future__ import annotations

from typing import Any

from controller.domain import ConversionState, Path
from controller.loop import CycleLoop
from controller.service import Service


def status_document(service: Service, loop: CycleLoop | None, now: float) -> dict[str, Any]:
    """The ``/status`` JSON: flag, budget, work in flight per path, conversions per state."""
    report = service.controller.last_report
    flag_status = report.flag if report else service.flags.last
    snap = flag_status.snapshot if flag_status else service.flags.good
    counts = service.ledger.counts()
    age = None if snap is None else round(max(0.0, now - snap.fetched_at), 3)
    in_use = report.in_use if report and report.in_use else {}
    running = report.running if report else {}
    return {
        "flag": {
            "version": snap.version if snap else None,
            "enabled": snap.enabled if snap else None,
            "tenant_count": snap.tenant_count if snap else 0,
            "source": snap.source if snap else service.settings.flag_source,
            "age_seconds": age,
            "state": flag_status.state.value if flag_status else "unavailable",
            "problem": flag_status.problem if flag_status else "no flag read yet",
        },
        "budget": service.settings.budget,
        "in_flight": {
            "legacy": in_use.get(Path.LEGACY, 0),
            "new": max(in_use.get(Path.NEW, 0), running.get(Path.NEW, 0)),
        },
        "conversions": {state.value: counts.state(state) for state in ConversionState},
        "by_path": {
            path.value: {
                state.value: counts.path_state(path, state)
                for state in ConversionState
                if state is not ConversionState.RECEIVED
            }
            for path in Path
        },
        "last_cycle_at": report.finished_at if report else None,
        "cycle": {
            "count": service.controller.cycles,
            "held": report.held if report else False,
            "hold_reason": report.hold_reason if report else "",
            "new_capacity": report.new_capacity if report else 0,
            "errors": list(report.errors) if report else [],
            "last_error": loop.last_error if loop else None,
        },
    }

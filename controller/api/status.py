"""The status document (``GET /status``, ``cutover status``), shaped from what the cycle keeps.

Pure shaping: takes the last cycle report, the flag status, the ledger's counters and its
per-minute decision totals as the read model holds them, and returns JSON-ready values. Reads
neither the ledger nor the flag source itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from controller.api.history import DecisionRow, VersionSkew, version_skew
from controller.core.domain import ConversionState, Path
from controller.core.ports import Counts
from controller.engine.cycle import CycleReport
from controller.engine.loop import CycleLoop
from controller.service import Service
from flags.snapshot import FlagStatus

SKEW_WINDOW_SECONDS = 600


def in_flight(report: CycleReport | None) -> dict[Path, int]:
    """Budget slots each path held at the last cycle (legacy threads, running new-path jobs)."""
    if report is None:
        return {Path.LEGACY: 0, Path.NEW: 0}
    return {
        Path.LEGACY: report.in_use.get(Path.LEGACY, 0),
        Path.NEW: max(report.in_use.get(Path.NEW, 0), report.running.get(Path.NEW, 0)),
    }


def skew_document(skew: VersionSkew) -> dict[str, Any]:
    """The version-skew section: every flag version that routed work in the window."""
    return {
        "window_seconds": skew.window_seconds,
        "skewed": skew.skewed,
        "versions": [
            {
                "flag_version": v.flag_version,
                "legacy": v.legacy,
                "new": v.new,
                "first_minute_at": v.first_minute * 60,
                "last_minute_at": v.last_minute * 60,
            }
            for v in skew.versions
        ],
    }


def status_document(
    service: Service,
    loop: CycleLoop | None,
    status: FlagStatus,
    counts: Counts,
    decisions: Sequence[DecisionRow],
    now: float,
    *,
    intake: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The ``/status`` JSON: flag, budget, work in flight per path, conversions per state, and the
    additions (per-path detail, queued work, version skew, intake, the cycle's own state)."""
    report = service.controller.last_report
    held = in_flight(report)
    queued = report.queued if report else {}
    return {
        "flag": flag_document(status, service.settings.flag_source, now),
        "budget": service.settings.budget,
        "in_flight": {path.value: held[path] for path in Path},
        "queued": {path.value: queued.get(path, 0) for path in Path},
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
        "cycle": cycle_document(report, service.controller.cycles, loop),
        "skew": skew_document(version_skew(decisions, now, SKEW_WINDOW_SECONDS)),
        "warnings": service.warnings(),
        "intake": {
            "waiting": counts.state(ConversionState.RECEIVED),
            **(intake or {"requests": 0, "rejected": 0, "accepted": 0, "duplicates": 0}),
            "sources": [i.stats.as_json() for i in service.intakes],
        },
        "auto_advance": service.auto.state() if service.auto is not None else {"enabled": False},
    }


def flag_document(status: FlagStatus, configured_source: str, now: float) -> dict[str, Any]:
    """The flag section: the flag in force, its age and state, and the problem with the source."""
    snap = status.snapshot
    return {
        "version": snap.version if snap else None,
        "enabled": snap.enabled if snap else None,
        "tenant_count": snap.tenant_count if snap else 0,
        "source": snap.source if snap else configured_source,
        "age_seconds": None if snap is None else round(max(0.0, now - snap.fetched_at), 3),
        "state": status.state.value,
        "problem": status.problem,
    }


def cycle_document(report: CycleReport | None, cycles: int, loop: CycleLoop | None) -> dict[str, Any]:
    """The cycle section: what the last cycle held back, its split of the budget, its errors."""
    return {
        "count": cycles,
        "held": report.held if report else False,
        "hold_reason": report.hold_reason if report else "",
        "new_capacity": report.new_capacity if report else 0,
        "legacy_threads": report.legacy_threads if report else 0,
        "dispatcher": report.dispatcher if report else False,
        "duration_seconds": round(report.finished_at - report.started_at, 4) if report else None,
        "errors": list(report.errors) if report else [],
        "last_error": loop.last_error if loop else None,
    }


def status_lines(doc: Mapping[str, Any]) -> list[str]:
    """``cutover status`` in a few lines, from a ``/status`` document (tolerant of older servers)."""
    flag = doc["flag"]
    age = flag.get("age_seconds")
    read = "never read" if age is None else f"age {age:.0f}s"
    lines = [
        f"flag {flag['version'] or 'none'} ({flag['state']}, {flag['tenant_count']} tenants, "
        f"{read})  budget {doc['budget']}  in flight legacy "
        f"{doc['in_flight']['legacy']} / new {doc['in_flight']['new']}",
        "  ".join(f"{k} {v}" for k, v in doc["conversions"].items()),
    ]
    if flag.get("problem"):
        lines.append(f"flag problem: {flag['problem']}")
    queued = doc.get("queued")
    if queued:
        lines.append(f"queued at the backends: legacy {queued['legacy']} / new {queued['new']}")
    cycle = doc.get("cycle", {})
    if cycle.get("held"):
        lines.append(f"work held: {cycle['hold_reason']}")
    lines.extend(f"cycle error: {e}" for e in cycle.get("errors", []))
    skew = doc.get("skew", {})
    if skew.get("skewed"):
        versions = ", ".join(
            f"{v['flag_version'] or 'no flag'} (legacy {v['legacy']}, new {v['new']})"
            for v in skew["versions"]
        )
        lines.append(
            f"decisions in the last {skew['window_seconds'] // 60} min under several versions: {versions}"
        )
    auto = doc.get("auto_advance") or {}
    if auto.get("enabled"):
        target = f" {auto['group']}" if auto.get("group") else ""
        lines.append(f"auto-advance: next {auto['next_action']}{target}: {auto.get('why', '')}")
    return lines

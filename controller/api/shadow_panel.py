"""The dashboard's shadow panel: parity per rollout group, from the shadow report. Pure: a report
in, bounded HTML out (one row per group, the first few mismatches)."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

MAX_EXAMPLES = 5
_BADGE = {"pass": "ok", "fail": "bad", "inconclusive": "warn"}


def shadow_section(report: Mapping[str, Any] | None, problem: str = "") -> str:
    """The panel, or nothing when shadows are not running in this process."""
    if problem:
        body = f'<p class="problem">unavailable: {escape(problem)}</p>'
        return f'<section id="shadow"><h2>Shadow parity</h2>{body}</section>'
    if report is None:
        return ""
    groups = report.get("groups", [])
    if not groups:
        return '<section id="shadow"><h2>Shadow parity</h2><p class="muted">no shadow runs yet</p></section>'
    rows = "".join(_group_row(g) for g in groups)
    examples = [e for g in groups for t in g["tenants"] for e in t["examples"]][:MAX_EXAMPLES]
    shown = ""
    if examples:
        shown = (
            "<h3>Mismatches</h3><table><thead><tr><th>conversion</th><th>sheet</th><th>cell</th>"
            "<th>legacy</th><th>new</th></tr></thead><tbody>"
            + "".join(
                f"<tr><td>{escape(e['conversion_id'])}</td><td>{escape(e['sheet'])}</td><td>{escape(e['cell'])}</td>"
                f"<td>{escape(e['legacy'])}</td><td>{escape(e['new'])}</td></tr>"
                for e in examples
            )
            + "</tbody></table>"
        )
    noise = report.get("noise", [])
    noisy = (
        f'<p class="muted">noise learned from {report.get("aa_samples", 0)} A/A runs: '
        + escape(", ".join(f"{n['sheet']} / {n['column']}" for n in noise[:5]))
        + "</p>"
        if noise
        else ""
    )
    return (
        '<section id="shadow" class="span2"><h2>Shadow parity · new path against old</h2><table><thead><tr>'
        '<th>group</th><th class="num">samples</th><th class="num">mismatches</th>'
        '<th class="num">rate ≤ (95%)</th><th>parity</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>{shown}{noisy}</section>"
    )


def _group_row(g: Mapping[str, Any]) -> str:
    verdict = str(g.get("parity", ""))
    why = escape(str(g.get("parity_reason", "")), quote=True)
    return (
        f'<tr data-group="{escape(g["name"], quote=True)}"><td>{escape(g["name"])}</td>'
        f'<td class="num">{g["samples"]}</td><td class="num">{g["mismatches"]}</td>'
        f'<td class="num">{g["mismatch_rate_upper95"]:.2%}</td>'
        f'<td><span class="badge {_BADGE.get(verdict, "")}" title="{why}">{escape(verdict)}</span></td></tr>'
    )

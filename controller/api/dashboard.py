"""The dashboard at ``/``: one server-rendered HTML page, no build step, no external resources.

``gather`` takes what the page shows from the read model (each section on its own, so a ledger
outage blanks a section, not the page); ``render`` is pure and bounded: per-group aggregates and
capped lists, never one element per tenant. The page refreshes itself by fetching itself and
swapping its ``<main>``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any, TypeVar

from controller.api.charts import Segment, clock_label, share_chart, stacked_bar
from controller.api.history import MinuteShare, from_first_activity, minute_series
from controller.api.metrics import FailureNote, ServiceMetrics
from controller.api.readmodel import RECENT_FAILURES, ReadModel
from controller.api.shadow_panel import shadow_section
from controller.api.tenants import TenantsOverview, TenantState
from controller.core.domain import ConversionRecord, Path
from controller.core.errors import CutoverError
from controller.engine.loop import CycleLoop
from flags.holds import Hold

MAX_FAILURES = RECENT_FAILURES
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FailureRow:
    """One failed conversion as the page lists it."""

    conversion_id: str
    tenant_id: int
    path: str | None
    reason: str
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class DashboardData:
    """Everything the page shows; a section whose source failed carries the problem instead."""

    now: float
    ready: bool
    ready_reason: str
    healthy: bool
    refresh_seconds: int
    status: Mapping[str, Any] | None = None
    status_problem: str = ""
    series: Sequence[MinuteShare] = ()
    series_problem: str = ""
    tenants: TenantsOverview | None = None
    tenants_problem: str = ""
    failures: Sequence[FailureRow] = field(default_factory=list)
    failures_problem: str = ""
    held: Sequence[Hold] = ()
    gates: Mapping[str, Any] | None = None
    gates_problem: str = ""
    shadow: Mapping[str, Any] | None = None
    shadow_problem: str = ""


def attempt(read: Callable[[], T]) -> tuple[T | None, str]:
    """Run one read for the page; a cutover error becomes the section's problem text."""
    try:
        return read(), ""
    except CutoverError as exc:
        return None, str(exc)


def failure_rows(records: Sequence[ConversionRecord] | None, seen: Sequence[FailureNote]) -> list[FailureRow]:
    """The latest failed conversions from the ledger when it can list them, else what this process saw."""
    if records is None:
        return [
            FailureRow(f.conversion_id, f.tenant_id, _path(f.path), f.reason, f.finished_at)
            for f in seen[:MAX_FAILURES]
        ]
    return [FailureRow(r.conversion_id, r.tenant_id, _path(r.path), r.reason, r.finished_at) for r in records]


def _path(path: Path | None) -> str | None:
    return path.value if path else None


def gather(views: ReadModel, loop: CycleLoop | None, metrics: ServiceMetrics, now: float) -> DashboardData:
    """What the page shows, from the read model; each section on its own."""
    ready, reason = views.readiness(now)
    status, status_problem = attempt(lambda: views.status(loop, now, intake=metrics.intake.snapshot()))
    # From the first busy minute: a fresh start fills the chart, not three bars at its edge.
    series, series_problem = attempt(lambda: from_first_activity(minute_series(views.decisions(), now, 60)))
    tenants, tenants_problem = attempt(lambda: views.tenants(views.flag(now).snapshot))
    failures, failures_problem = attempt(lambda: failure_rows(views.failures(), list(metrics.failures)))
    service = views.service
    held = list(service.held().values()) if service.held else []
    gates, gates_problem = attempt(lambda: views.service.gates.report().to_json())
    shadows = views.service.shadows
    shadow, shadow_problem = attempt(lambda: shadows.report(now=now, fresh_for=10.0) if shadows else None)
    return DashboardData(
        now=now,
        ready=ready,
        ready_reason=reason,
        healthy=loop is None or loop.healthy(now),
        refresh_seconds=max(2, min(30, round(views.service.settings.cycle_seconds))),
        status=status,
        status_problem=status_problem,
        series=series or (),
        series_problem=series_problem,
        tenants=tenants,
        tenants_problem=tenants_problem,
        failures=failures or [],
        failures_problem=failures_problem,
        held=held,
        gates=gates,
        gates_problem=gates_problem,
        shadow=shadow,
        shadow_problem=shadow_problem,
    )


# -- rendering ------------------------------------------------------------------------------

_STATE_CSS = {
    TenantState.NEW: "new",
    TenantState.DRAINING_TO_NEW: "to-new",
    TenantState.DRAINING_TO_LEGACY: "to-legacy",
    TenantState.LEGACY: "legacy",
}

_STYLE = """
:root { --legacy:#8b93a1; --new:#2563eb; --to-new:#93c5fd; --to-legacy:#f59e0b; --bad:#dc2626;
  --ok:#16a34a; --warn:#d97706; --ink:#111827; --muted:#6b7280; --line:#e5e7eb; --card:#fff; --bg:#f3f4f6; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink);
  background:var(--bg); }
header { display:flex; flex-wrap:wrap; gap:.5rem 1.25rem; align-items:center; padding:.6rem 1.25rem;
  background:#111827; color:#f9fafb; }
header h1 { font-size:1.1rem; margin:0 .5rem 0 0; letter-spacing:.02em; }
header .meta { color:#d1d5db; }
main { display:grid; grid-template-columns:repeat(auto-fit,minmax(380px,1fr)); gap:1rem; padding:1rem 1.25rem;
  max-width:1500px; margin:0 auto; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:.8rem 1rem;
  min-width:0; }
section.wide { grid-column:1/-1; }
@media (min-width:1200px) { section.span2 { grid-column:span 2; } }
h3 { font-size:.9rem; margin:.9rem 0 .3rem; color:#374151; }
table.draining { max-width:46rem; }
i.legacy, i.new, i.to-new, i.to-legacy { font-style:normal; }
h2 { font-size:.95rem; margin:0 0 .6rem; text-transform:uppercase; letter-spacing:.05em; color:#374151; }
.big { font-size:1.9rem; font-weight:650; line-height:1.1; }
.kv { display:grid; grid-template-columns:max-content 1fr; gap:.15rem .9rem; margin:.4rem 0 0; }
.kv dt { color:var(--muted); } .kv dd { margin:0; font-variant-numeric:tabular-nums; overflow-wrap:anywhere; }
.badge { display:inline-block; padding:.05rem .5rem; border-radius:999px; font-size:.8rem; font-weight:600;
  color:#fff; background:var(--muted); }
.badge.ok { background:var(--ok); } .badge.bad { background:var(--bad); }
.badge.warn { background:var(--warn); }
.problem { color:var(--bad); overflow-wrap:anywhere; } .muted { color:var(--muted); }
.legend { display:flex; flex-wrap:wrap; gap:.3rem 1rem; margin:.2rem 0 .5rem; color:#374151;
  font-size:.85rem; }
.legend i { display:inline-block; width:.8rem; height:.8rem; border-radius:2px; margin-right:.3rem;
  vertical-align:-1px; }
.legend i.legacy, .legend i.new, .legend i.to-new, .legend i.to-legacy { background:currentColor; }
i.legacy { color:var(--legacy); } i.new { color:var(--new); } i.to-new { color:var(--to-new); }
i.to-legacy { color:var(--to-legacy); }
svg .legacy { fill:var(--legacy); } svg .new { fill:var(--new); } svg .to-new { fill:var(--to-new); }
svg .to-legacy { fill:var(--to-legacy); } svg .track { fill:#eef0f3; }
svg.bar.over .track { fill:#fee2e2; }
svg .grid { stroke:var(--line); } svg .axis { fill:var(--muted); font-size:11px; }
svg .volume { fill:none; stroke:#111827; stroke-width:1.2; opacity:.8; } svg .point { fill:#111827; }
svg.chart { display:block; max-height:280px; }
svg .empty { fill:var(--muted); font-size:13px; }
table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:.3rem .5rem; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; font-size:.8rem; text-transform:uppercase; }
td.num, th.num { text-align:right; }
.group { display:grid; grid-template-columns:minmax(8rem,13rem) 1fr 11rem; gap:.75rem;
  align-items:center; padding:.25rem 0; }
.group .name { font-weight:600; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
.group .count { font-variant-numeric:tabular-nums; text-align:right; }
.reason { max-width:48rem; overflow-wrap:anywhere; }
a { color:var(--new); }
.skew { border-left:4px solid var(--warn); padding-left:.6rem; }
footer { text-align:center; color:var(--muted); padding:0 0 1rem; font-size:.8rem; }
"""

_SCRIPT = """
(function () {
  var every = %d * 1000;
  function refresh() {
    fetch(location.pathname, {cache: "no-store", headers: {"Accept": "text/html"}})
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (text) {
        // Only the page's body parts: a parsed <style> would carry the other response's nonce.
        var start = text.indexOf("<header"), end = text.indexOf("</main>");
        if (start < 0 || end < 0) { throw new Error("unexpected page"); }
        var doc = new DOMParser().parseFromString(text.slice(start, end + 7), "text/html");
        ["header", "main"].forEach(function (tag) {
          var fresh = doc.querySelector(tag), old = document.querySelector(tag);
          if (fresh && old) { old.replaceWith(document.importNode(fresh, true)); }
        });
        document.body.dataset.refreshes = String((Number(document.body.dataset.refreshes) || 0) + 1);
      })
      .catch(function () {
        var stamp = document.getElementById("updated");
        if (stamp) {
          stamp.textContent = "not updating: controller unreachable";
          stamp.className = "problem";
        }
      });
  }
  setInterval(refresh, every);
})();
"""


def render(data: DashboardData, nonce: str) -> str:
    """The whole page."""
    status = data.status or {}
    flag = status.get("flag", {})
    title = f"cutover · flag {flag.get('version') or 'none'}"
    return "".join(
        [
            '<!doctype html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f'<noscript><meta http-equiv="refresh" content="{data.refresh_seconds}"></noscript>',
            f'<style nonce="{nonce}">{_STYLE}</style></head><body>',
            _header(data),
            "<main>",
            _flag_section(data),
            _budget_section(data),
            _skew_section(data),
            _share_section(data),
            _groups_section(data),
            gates_section(data),
            _conversions_section(data),
            _failures_section(data),
            shadow_section(data.shadow, data.shadow_problem),
            "</main>",
            '<footer>JSON: <a href="/status">/status</a> · <a href="/tenants">/tenants</a> · '
            '<a href="/metrics">/metrics</a> · <a href="/docs">API</a></footer>',
            f'<script nonce="{nonce}">{_SCRIPT % data.refresh_seconds}</script>',
            "</body></html>",
        ]
    )


def _header(data: DashboardData) -> str:
    status = data.status or {}
    flag = status.get("flag", {})
    why = escape(data.ready_reason, quote=True)
    ready = (
        f'<span class="badge ok" id="ready" title="{why}">ready</span>'
        if data.ready
        else f'<span class="badge bad" id="ready" title="{why}">not ready: {escape(data.ready_reason)}</span>'
    )
    loop = "" if data.healthy else '<span class="badge bad">cycle loop stalled</span>'
    last = status.get("last_cycle_at")
    cycle = f"last cycle {age(data.now - last)} ago" if last else "no cycle yet"
    return (
        f"<header><h1>cutover</h1>{ready}{loop}"
        f'<span class="meta">{_flag_words(flag)}</span>'
        f'<span class="meta">{escape(cycle)}</span>'
        f'<span class="meta" id="updated">updated {clock_label(data.now)}:'
        f"{dt.datetime.fromtimestamp(data.now, dt.UTC):%S} UTC</span></header>"
    )


def _flag_words(flag: Mapping[str, Any]) -> str:
    """The flag in the header. Under an invalid document the version shown is the last good one
    still routing, so it must not read as if that version were the bad one."""
    version = flag.get("version")
    state = flag.get("state", "unavailable")
    if state == "invalid":
        serving = f"serving {_v(version)}" if version else "no good version to serve"
        return f'{_flag_badge("invalid document")} <b id="flag-serving">{escape(serving)}</b>'
    return f"flag <b>{escape(str(version or 'none'))}</b> {_flag_badge(state)}"


def _v(version: str) -> str:
    return f"v{version}" if str(version).isdigit() else str(version)


def _flag_badge(state: str) -> str:
    css = {"ok": "ok", "disabled": "warn", "stale": "warn"}.get(state, "bad")
    return f'<span class="badge {css}" id="flag-state">{escape(state)}</span>'


def _flag_section(data: DashboardData) -> str:
    if data.status is None:
        return _unavailable("Flag", data.status_problem)
    flag = data.status["flag"]
    problem = f'<p class="problem">{escape(flag["problem"])}</p>' if flag.get("problem") else ""
    enabled = {True: "on", False: "switched off", None: "—"}[flag.get("enabled")]
    return (
        '<section id="flag"><h2>Flag in force</h2>'
        f'<div class="big" id="flag-version">{escape(str(flag.get("version") or "none"))}</div>'
        f"<div>{_flag_words(flag) if flag['state'] == 'invalid' else _flag_badge(flag['state'])}</div>"
        '<dl class="kv">'
        f"<dt>migrated tenants</dt><dd id='flag-tenants'>{flag['tenant_count']}</dd>"
        f"<dt>flag</dt><dd>{enabled}</dd>"
        f"<dt>source</dt><dd>{escape(str(flag['source']))}</dd>"
        f"<dt>age</dt><dd>{age(flag['age_seconds']) if flag['age_seconds'] is not None else '—'}</dd>"
        "</dl>"
        f"{problem}</section>"
    )


def _budget_section(data: DashboardData) -> str:
    if data.status is None:
        return _unavailable("In flight", data.status_problem)
    s = data.status
    legacy, new, budget = s["in_flight"]["legacy"], s["in_flight"]["new"], s["budget"]
    bar = stacked_bar(
        [Segment("legacy in flight", legacy, "legacy"), Segment("new in flight", new, "new")],
        budget,
        name="in flight per path against the budget",
    )
    cycle = s["cycle"]
    held = f'<p class="problem">work held: {escape(cycle["hold_reason"])}</p>' if cycle.get("held") else ""
    errors = "".join(f'<p class="problem">{escape(e)}</p>' for e in cycle.get("errors", [])[:3])
    return (
        '<section id="budget"><h2>In flight against the budget</h2>'
        f'<div class="big"><span id="in-flight">{legacy + new}</span> '
        f'<span class="muted">/ {budget}</span></div>'
        f"{_legend([('legacy', f'legacy {legacy}'), ('new', f'new {new}')])}{bar}"
        '<dl class="kv">'
        f"<dt>queued at the backends</dt><dd>legacy {s['queued']['legacy']} · new {s['queued']['new']}</dd>"
        f"<dt>owned, awaiting dispatch</dt><dd>{s['conversions']['claimed']}</dd>"
        f"<dt>received, not yet routed</dt><dd>{s['conversions']['received']}</dd>"
        f"<dt>new-path capacity</dt><dd>{cycle['new_capacity']}</dd>"
        f"<dt>legacy threads</dt><dd>{cycle['legacy_threads']}</dd>"
        "</dl>"
        f"{_waiting(s)}{held}{errors}</section>"
    )


def waiting_words(status: Mapping[str, Any]) -> str:
    """How many routed conversions wait to be dispatched, and why, in one line."""
    waiting = status["conversions"]["claimed"]
    if not waiting:
        return "no conversion waits for the budget"
    legacy, new, budget = status["in_flight"]["legacy"], status["in_flight"]["new"], status["budget"]
    cycle = status["cycle"]
    if cycle.get("held"):
        why = f"work is held: {cycle['hold_reason']}"
    elif legacy + new >= budget:
        why = f"the budget is full: legacy {legacy} + new {new} of {budget}"
    else:
        why = f"{budget - legacy - new} of {budget} slots are free: the next cycle dispatches them"
    return f"{waiting:,} owned conversions wait for the budget — {why}"


def _waiting(status: Mapping[str, Any]) -> str:
    return f'<p id="waiting">{escape(waiting_words(status))}</p>'


def _conversions_section(data: DashboardData) -> str:
    if data.status is None:
        return _unavailable("Conversions", data.status_problem)
    by_path = data.status["by_path"]
    states = ("claimed", "dispatching", "dispatched", "succeeded", "failed")
    rows = "".join(
        f'<tr><td>{state}</td><td class="num">{by_path["legacy"][state]:,}</td>'
        f'<td class="num">{by_path["new"][state]:,}</td></tr>'
        for state in states
    )
    intake = data.status["intake"]
    return (
        '<section id="conversions"><h2>Conversions in the ledger</h2>'
        '<table><thead><tr><th>state</th><th class="num">legacy</th><th class="num">new</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
        f'<p class="muted">intake since start: {intake["accepted"]:,} accepted, '
        f"{intake['duplicates']:,} duplicates, {intake['rejected']:,} requests rejected</p></section>"
    )


def _share_section(data: DashboardData) -> str:
    if data.series_problem:
        return _unavailable("Share of conversions per path", data.series_problem, wide=True)
    total_new = sum(m.new for m in data.series)
    total = sum(m.total for m in data.series)
    summary = (
        f"{total:,} decisions in the last hour, {total_new / total:.0%} to the new path" if total else ""
    )
    return (
        '<section id="share" class="wide"><h2>Share of conversions per path · by minute</h2>'
        + _legend([("legacy", "legacy"), ("new", "new")])
        + '<span class="muted"> line: decisions per minute (right axis)</span>'
        + share_chart(data.series)
        + f'<p class="muted">{summary}</p></section>'
    )


def _groups_section(data: DashboardData) -> str:
    if data.tenants is None:
        return _unavailable("Rollout groups", data.tenants_problem, wide=True)
    t = data.tenants
    rows: list[str] = []
    for g in t.groups:
        segments = [Segment(state.value, g.states.get(state, 0), _STATE_CSS[state]) for state in _STATE_CSS]
        rows.append(
            f'<div class="group" data-group="{escape(g.name, quote=True)}" data-tenants="{g.tenants}" '
            f'data-migrated="{g.migrated}"><span class="name" title="{escape(g.name, quote=True)}">'
            f"{escape(g.name)}</span>{stacked_bar(segments, g.tenants, name=g.name)}"
            f'<span class="count"><b>{g.migrated}</b> / {g.tenants} migrated</span></div>'
        )
    if not rows:
        rows.append('<p class="muted">no rollout groups to show</p>')
    plan = f'<p class="problem">{escape(t.plan_problem)}</p>' if t.plan_problem else ""
    partial = "" if t.load_complete else '<p class="muted">in-flight counts are partial (large backlog)</p>'
    draining = ""
    if t.draining_total:
        shown = t.draining[:10]
        more = f" (first {len(shown)} shown)" if t.draining_total > len(shown) else ""
        rows_html = "".join(
            f'<tr><td class="num">{n.tenant_id}</td><td>{escape(n.group)}</td>'
            f'<td><i class="{_STATE_CSS[n.state]}">■</i> {n.state.value}</td>'
            f'<td class="num">{n.in_flight.legacy}</td><td class="num">{n.in_flight.new}</td></tr>'
            for n in shown
        )
        draining = (
            f'<h3><span id="draining-total">{t.draining_total}</span> tenants still draining{more}</h3>'
            '<table class="draining"><thead><tr><th class="num">tenant</th><th>group</th><th>state</th>'
            '<th class="num">legacy in flight</th><th class="num">new in flight</th></tr></thead>'
            f"<tbody>{rows_html}</tbody></table>"
        )
    legend = _legend([(_STATE_CSS[s], s.value) for s in _STATE_CSS])
    return (
        '<section id="groups" class="wide"><h2>Rollout groups · tenants in the flag '
        f'<span id="groups-flag-tenants">{t.flag_tenants}</span></h2>'
        f"{legend}{''.join(rows)}{draining}{plan}{partial}{_held(data.held)}</section>"
    )


def _held(held: Sequence[Hold]) -> str:
    if not held:
        return ""
    rows = "".join(
        f"<tr><td class='num'>{h.tenant_id}</td><td>v{h.version}</td><td>{escape(h.by)}</td>"
        f"<td>{escape(h.at)}</td><td>{escape(h.why)}</td></tr>"
        for h in held
    )
    return (
        '<h3 id="held">Held back (kept out of every advance until <code>cutover flag release</code>)</h3>'
        "<table><thead><tr><th class='num'>tenant</th><th>since</th><th>by</th><th>at</th><th>why</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


_VERDICT_CSS = {"pass": "ok", "fail": "bad", "inconclusive": "warn"}


def gates_section(data: DashboardData) -> str:
    """The rollout gates: each group on the new path with its verdict and what decides it, and what
    auto-advance does next."""
    if data.gates is None:
        return _unavailable("Rollout gates", data.gates_problem, wide=True)
    g = data.gates
    rows = "".join(
        f'<tr data-gate="{escape(x["name"], quote=True)}"><td>{escape(x["name"])}</td>'
        f'<td><span class="badge {_VERDICT_CSS[x["verdict"]]}">{x["verdict"]}</span></td>'
        f'<td class="num">{x["new"]["finished"]:,}</td><td class="num">{x["new"]["failed"]:,}</td>'
        f'<td class="num">{x["legacy"]["finished"]:,}</td>'
        f'<td class="reason">{escape(_clip(x["reasons"][0] if x["reasons"] else "", 240))}</td></tr>'
        for x in g["groups"]
    )
    table = (
        '<table><thead><tr><th>group</th><th>verdict</th><th class="num">new finished</th>'
        '<th class="num">new failed</th><th class="num">old finished</th><th>first reason</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
        if rows
        else f'<p class="muted">{escape("; ".join(g["reasons"]))}</p>'
    )
    auto = (data.status or {}).get("auto_advance") or {"enabled": False}
    if auto.get("enabled"):
        when = (
            f" at {dt.datetime.fromtimestamp(auto['at'], dt.UTC):%Y-%m-%d %H:%M} UTC"
            if auto.get("at")
            else ""
        )
        what = f"{auto['next_action']} {auto.get('group') or ''}".strip()
        why = _clip(auto.get("why") or "", 240)
        line = f"auto-advance: next <b>{escape(what)}</b>{escape(when)}; {escape(why)}"
    else:
        line = "auto-advance: off (no <code>auto:</code> in the rollout plan)"
    return (
        '<section id="gates" class="wide"><h2>Rollout gates · '
        f'<span class="badge {_VERDICT_CSS[g["verdict"]]}" id="gate-verdict">{g["verdict"]}</span></h2>'
        f'{table}<p class="muted" id="auto-advance">{line}</p></section>'
    )


def _skew_section(data: DashboardData) -> str:
    if data.status is None:
        return _unavailable("Flag versions in use", data.status_problem)
    skew = data.status["skew"]
    minutes = skew["window_seconds"] // 60
    versions = skew["versions"]
    in_force = data.status["flag"]["version"]
    if not versions:
        body = f'<p class="muted">no routing decisions in the last {minutes} minutes</p>'
    else:
        rows = "".join(
            f"<tr><td>{escape(v['flag_version'] or 'no flag')}{_in_force(v['flag_version'], in_force)}</td>"
            f"<td class='num'>{v['legacy']:,}</td>"
            f"<td class='num'>{v['new']:,}</td><td>{clock_label(v['first_minute_at'])} to "
            f"{clock_label(v['last_minute_at'])}</td></tr>"
            for v in versions
        )
        note = (
            f'<p class="skew">Decisions in the last {minutes} minutes were made under '
            f"<b>{len(versions)} flag versions</b>: a rollout or rollback in progress, or replicas that "
            "see different versions.</p>"
            if skew["skewed"]
            else f'<p class="muted">all decisions in the last {minutes} minutes under one version</p>'
        )
        body = (
            f"{note}<table><thead><tr><th>flag version</th><th class='num'>legacy</th>"
            f"<th class='num'>new</th><th>minutes (UTC)</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    return f'<section id="skew"><h2>Flag versions deciding · last {minutes} min</h2>{body}</section>'


def _failures_section(data: DashboardData) -> str:
    if data.failures_problem:
        return _unavailable("Last failures", data.failures_problem)
    if not data.failures:
        return (
            '<section id="failures" class="span2"><h2>Last failures</h2><p class="muted">none</p></section>'
        )
    rows = "".join(
        f"<tr><td>{clock_label(f.finished_at) if f.finished_at else '—'}</td>"
        f'<td><a href="/conversions/{escape(f.conversion_id, quote=True)}">{escape(f.conversion_id)}</a></td>'
        f'<td class="num">{f.tenant_id}</td><td>{escape(f.path or "—")}</td>'
        f'<td class="reason" title="{escape(f.reason, quote=True)}">{escape(_clip(f.reason, 200))}</td>'
        f'<td><code class="requeue">cutover requeue {escape(f.conversion_id)}</code></td></tr>'
        for f in data.failures
    )
    return (
        '<section id="failures" class="span2"><h2>Last failures</h2><table><thead><tr><th>UTC</th>'
        '<th>conversion</th><th class="num">tenant</th><th>path</th><th>reason</th>'
        "<th>to run it again</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        '<p class="muted">from a laptop: with <code>CUTOVER_URL</code> and <code>CUTOVER_API_TOKEN</code> '
        "set, or <code>POST /conversions/ID/requeue</code> with the bearer token</p></section>"
    )


def _in_force(version: str | None, in_force: str | None) -> str:
    return ' <span class="muted">(in force)</span>' if version and version == in_force else ""


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="legend">'
        + "".join(f'<span><i class="{c}"></i>{escape(t)}</span>' for c, t in items)
        + "</div>"
    )


def _unavailable(title: str, problem: str, *, wide: bool = False) -> str:
    css = ' class="wide"' if wide else ""
    body = f'<p class="problem">unavailable: {escape(problem)}</p>'
    return f"<section{css}><h2>{escape(title)}</h2>{body}</section>"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def age(seconds: float) -> str:
    """A short human duration: ``42s``, ``5m 03s``, ``2h 10m``, ``3d 4h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"

"""Inline SVG for the dashboard: the per-minute path-share chart and stacked bars. Pure strings.

Colours come from CSS classes (``legacy``, ``new``, ``to-new``, ``to-legacy``) so the page's one
style block decides them; every element carries its numbers in ``data-`` attributes and a
``<title>`` tooltip, so the chart can be read without a mouse and checked by a test.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from controller.api.history import MinuteShare


@dataclass(frozen=True, slots=True)
class Segment:
    """One part of a stacked bar."""

    label: str
    value: int
    css: str


def clock_label(epoch_seconds: float) -> str:
    """``HH:MM`` in UTC."""
    return dt.datetime.fromtimestamp(epoch_seconds, dt.UTC).strftime("%H:%M")


def share_chart(series: Sequence[MinuteShare], *, width: int = 1200, height: int = 240) -> str:
    """Share of decisions per path for each minute (100 % stacked columns), and the number of
    decisions per minute as a line of points over them."""
    left, right, top, bottom = 44, 48, 12, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(1, len(series))
    step = plot_w / n
    bar_w = max(1.0, step - 2)
    peak = max((m.total for m in series), default=0)
    parts: list[str] = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMidYMid meet" aria-label="share of conversions per path, last hour">',
        *_grid(left, top, plot_w, plot_h, peak),
    ]
    points: list[str] = []
    for i, m in enumerate(series):
        x = left + i * step + 1
        if m.total:
            parts.append(_minute_column(m, x, top, bar_w, plot_h))
            cy = top + plot_h * (1 - m.total / peak)
            points.append(f"{x + bar_w / 2:.1f},{cy:.1f}")
    if points:
        parts.append(f'<polyline class="volume" points="{" ".join(points)}"/>')
        for i, m in enumerate(s for s in series if s.total):
            px, py = points[i].split(",")
            parts.append(
                f'<circle class="point" cx="{px}" cy="{py}" r="2.2" data-minute="{m.minute}" '
                f'data-total="{m.total}"><title>{m.total} decisions</title></circle>'
            )
    else:
        parts.append(
            f'<text class="empty" x="{left + plot_w / 2:.0f}" y="{top + plot_h / 2:.0f}" '
            'text-anchor="middle">no routing decisions in the last hour</text>'
        )
    if series:
        ticks = sorted({0, len(series) // 4, len(series) // 2, 3 * len(series) // 4, len(series) - 1})
        for i in ticks:
            x = left + i * step + step / 2
            parts.append(
                f'<text class="axis" x="{x:.1f}" y="{height - 8}" text-anchor="middle">'
                f"{clock_label(series[i].minute * 60)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _grid(left: int, top: int, plot_w: int, plot_h: int, peak: int) -> list[str]:
    """Lines at 0, 50 and 100 %, labelled with the share on the left and the volume on the right."""
    parts: list[str] = []
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{frac:.0%}</text>')
        if peak:
            parts.append(
                f'<text class="axis volume-axis" x="{left + plot_w + 6}" y="{y + 4:.1f}">'
                f"{round(peak * frac)}</text>"
            )
    return parts


def _minute_column(m: MinuteShare, x: float, top: int, bar_w: float, plot_h: int) -> str:
    """One minute's 100 % column: the new path's share on top of the legacy path's."""
    new_h = plot_h * m.new / m.total
    legacy_h = plot_h - new_h
    share = f"{m.new / m.total:.0%} new"
    tip = escape(f"{clock_label(m.minute * 60)} UTC: legacy {m.legacy}, new {m.new} ({share})")
    data = f'data-minute="{m.minute}" data-legacy="{m.legacy}" data-new="{m.new}"'
    return (
        f'<g class="minute" {data}><title>{tip}</title>'
        f'<rect class="legacy" x="{x:.1f}" y="{top + new_h:.1f}" width="{bar_w:.1f}" '
        f'height="{legacy_h:.1f}"/>'
        f'<rect class="new" x="{x:.1f}" y="{top:.1f}" width="{bar_w:.1f}" height="{new_h:.1f}"/></g>'
    )


def stacked_bar(
    segments: Sequence[Segment], total: int, *, width: int = 520, height: int = 22, name: str = ""
) -> str:
    """A horizontal bar ``total`` wide filled left to right with ``segments`` (over-full bars are
    scaled to fit and marked ``over``)."""
    filled = sum(s.value for s in segments)
    scale_to = max(total, filled, 1)
    over = filled > total
    klass = "bar over" if over else "bar"
    parts = [
        f'<svg class="{klass}" viewBox="0 0 {width} {height}" width="100%" height="{height}" '
        f'preserveAspectRatio="none" role="img" aria-label="{escape(name, quote=True)}" '
        f'data-total="{total}" data-filled="{filled}">',
        f'<rect class="track" x="0" y="0" width="{width}" height="{height}" rx="3"/>',
    ]
    x = 0.0
    for s in segments:
        if s.value <= 0:
            continue
        w = width * s.value / scale_to
        parts.append(
            f'<rect class="{escape(s.css, quote=True)}" x="{x:.2f}" y="0" width="{w:.2f}" height="{height}" '
            f'data-value="{s.value}"><title>{escape(s.label)}: {s.value}</title></rect>'
        )
        x += w
    parts.append("</svg>")
    return "".join(parts)

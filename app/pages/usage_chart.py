"""The usage chart: messages and tokens per day as inline SVG bars, drawn on the server
(no chart library, no script, no style attribute, so a strict CSP allows it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

from markupsafe import Markup

from app.usecases.profile import DayUsage

WIDTH, HEIGHT = 640, 140
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 22  # room for the axis labels
GAP = 0.2  # of each day's slot left empty between bars


def bar_chart(days: Sequence[DayUsage], value: Callable[[DayUsage], int], label: str,
              kind: str, day_label: Callable[[DayUsage], str],
              describe: Callable[[DayUsage, int], str]) -> Markup:
    """An <svg> with one bar per day (oldest left), the highest value on the axis, the
    first and last day under it; each bar's <title> says its day and value."""
    values = [value(d) for d in days]
    top = max(values, default=0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(days), 1)
    base = TOP + plot_h
    total = sum(values)
    parts = [
        f'<svg class="usage-chart usage-chart--{kind}" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' role="img" aria-label="{escape(label)}: {total}">',
        f"<title>{escape(label)}: {total}</title>",
        f'<line class="usage-chart__axis" x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}"'
        f' y2="{base}"/>',
        f'<text class="usage-chart__tick" x="{LEFT - 6}" y="{TOP + 8}"'
        f' text-anchor="end">{top}</text>',
        f'<text class="usage-chart__tick" x="{LEFT - 6}" y="{base}" text-anchor="end">0</text>',
    ]
    for i, (day, count) in enumerate(zip(days, values, strict=True)):
        if not count:
            continue
        h = max(round(count / top * plot_h, 1), 1.0)
        x = round(LEFT + i * slot + slot * GAP / 2, 1)
        w = round(slot * (1 - GAP), 1)
        parts.append(
            f'<rect class="usage-chart__bar" data-day="{day.day.isoformat()}"'
            f' data-value="{count}" x="{x}" y="{round(base - h, 1)}" width="{w}" height="{h}">'
            f"<title>{escape(describe(day, count))}</title></rect>")
    if days:
        parts.append(f'<text class="usage-chart__tick" x="{LEFT}" y="{HEIGHT - 6}">'
                     f"{escape(day_label(days[0]))}</text>")
        parts.append(f'<text class="usage-chart__tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}"'
                     f' text-anchor="end">{escape(day_label(days[-1]))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))

"""Sparklines as inline SVG, drawn on the server (no chart library, no script, no style
attribute: a CSP without 'unsafe-inline' allows it)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from app.i18n import gettext as _

WIDTH, HEIGHT, PAD = 240, 48, 3


def points(values: Sequence[float | None], width: int = WIDTH,
           height: int = HEIGHT) -> list[list[tuple[float, float]]]:
    """Runs of (x, y) in SVG coordinates; a None value breaks the line (no data there)."""
    known = [v for v in values if v is not None]
    if not known:
        return []
    top = max(known) or 1.0
    step = (width - 2 * PAD) / max(len(values) - 1, 1)
    runs: list[list[tuple[float, float]]] = [[]]
    for i, value in enumerate(values):
        if value is None:
            if runs[-1]:
                runs.append([])
            continue
        y = height - PAD - (value / top) * (height - 2 * PAD)
        runs[-1].append((round(PAD + i * step, 1), round(y, 1)))
    return [run for run in runs if run]


def sparkline(values: Sequence[float | None], label: str, unit: str = "",
              width: int = WIDTH, height: int = HEIGHT) -> Markup:
    """An <svg> of the values (oldest first); the latest known value in its title."""
    known = [v for v in values if v is not None]
    latest = f"{known[-1]:g}{unit}" if known else _("no data")
    parts = [f'<svg class="sparkline" viewBox="0 0 {width} {height}" width="{width}"'
             f' height="{height}" role="img" aria-label="{escape(label)}: {escape(latest)}">'
             f"<title>{escape(label)}: {escape(latest)}</title>",
             f'<line class="sparkline__base" x1="{PAD}" y1="{height - PAD}"'
             f' x2="{width - PAD}" y2="{height - PAD}"/>']
    for run in points(values, width, height):
        if len(run) == 1:
            x, y = run[0]
            parts.append(f'<circle class="sparkline__dot" cx="{x}" cy="{y}" r="2"/>')
        else:
            line = " ".join(f"{x},{y}" for x, y in run)
            parts.append(f'<polyline class="sparkline__line" points="{line}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))

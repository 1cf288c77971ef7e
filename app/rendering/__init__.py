"""Assistant replies as safe HTML: Markdown (markdown.py), code blocks (code.py) and the
incremental renderer for replies that are still streaming (streaming.py).

For templates: `markdown_html(text)` for a finished reply, `live_body(text)` for the two
containers of a streaming one (both return Markup, already sanitized).
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup

from app.rendering.markdown import render
from app.rendering.streaming import StreamingMarkdown, Update

__all__ = ["LiveBody", "StreamingMarkdown", "Update", "live_body", "markdown_html", "render"]


def markdown_html(text: str) -> Markup:
    return Markup(render(text))  # sanitized by nh3 in render()


@dataclass(frozen=True, slots=True)
class LiveBody:
    frozen: Markup
    tail: Markup


def live_body(text: str) -> LiveBody:
    """A streaming reply's body as the page first shows it; the live stream continues from
    the same text with StreamingMarkdown(text)."""
    renderer = StreamingMarkdown(text)
    return LiveBody(Markup(renderer.frozen_html), Markup(renderer.tail_html))

"""A reply's Markdown rendered while it streams, at a cost set by its last block, not its
length.

The text is cut at top-level block boundaries that can no longer move. In CommonMark a
block is closed for good once a later line has started another block at the top level
(reference definitions, which break this, are switched off in markdown.py). So after each
piece that completes a line, the complete lines are parsed; every top-level block but the
last is rendered once and frozen, and only the tail (the last block and the unfinished
line) is rendered again per piece. An unclosed code fence in the tail renders as a code
block, as CommonMark reads it; its complete lines are highlighted once and only its last
line per piece (markdown._fence). A half-typed fence marker on the last line is
held back so it never flashes as backticks. Concatenating every frozen part and the tail after
`finish()` gives exactly `render(full_text)`.

How a live page applies it. A streaming reply's body holds two containers,

    <div class="message__body md" id="body-ID"><div class="md__frozen"
      id="frozen-ID">FROZEN</div><div class="md__tail" id="tail-ID">TAIL</div></div>

filled from `StreamingMarkdown(text_so_far)` (`.frozen_html`, `.tail_html`). For each
piece, `update = renderer.feed(piece)`, then: append `update.frozen_html_to_append` (when
not empty) to the end of #frozen-ID, and replace the content of #tail-ID with
`update.tail_html` (also when empty). When the reply ends, the page shows `render(text)`.
One renderer per reply per connection; a renderer must be seeded with exactly the text
the page already shows for that reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from markdown_it.token import Token

from app.rendering.markdown import GROWING_FENCE, parse, render_tokens, render_uncached

# An unfinished last line that may be becoming a code fence: ` `` ~ ~~ after up to 3 spaces.
_FENCE_PREFIX = re.compile(r"(?:^|(?<=\n)) {0,3}(?:`{1,2}|~{1,2})\Z")


@dataclass(frozen=True, slots=True)
class Update:
    """What a page does after one piece: append the first, replace the tail with the second."""

    frozen_html_to_append: str
    tail_html: str


class StreamingMarkdown:
    """Incremental renderer of one reply. Not thread-safe: one per reply and consumer."""

    def __init__(self, initial_text: str = "") -> None:
        self._frozen: list[str] = []
        self._tail = ""              # source not frozen yet; starts at a top-level block
        self._held_cr = False        # a piece ended in "\r": it may be half of "\r\n"
        self._tail_html = ""
        self._finished = False
        if initial_text:
            self.feed(initial_text)

    @property
    def frozen_html(self) -> str:
        return "".join(self._frozen)

    @property
    def tail_html(self) -> str:
        return self._tail_html

    @property
    def html(self) -> str:
        return self.frozen_html + self._tail_html

    def feed(self, piece: str) -> Update:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        piece = self._newlines(piece)
        self._tail += piece
        appended = self._freeze() if "\n" in piece else ""
        self._tail_html = _render_tail(_without_fence_prefix(self._tail))
        return Update(appended, self._tail_html)

    def finish(self) -> Update:
        """The reply is complete: its tail is rendered as is and frozen too."""
        if self._finished:
            return Update("", "")
        self._finished = True
        if self._held_cr:
            self._tail += "\n"
        final = render_uncached(self._tail)
        self._frozen.append(final)
        self._tail = ""
        self._tail_html = ""
        return Update(final, "")

    def _newlines(self, piece: str) -> str:
        # markdown-it reads "\r\n" and "\r" as "\n"; line numbers must agree with it, and a
        # "\r\n" may arrive split over two pieces.
        if self._held_cr:
            piece = "\r" + piece
        self._held_cr = piece.endswith("\r")
        if self._held_cr:
            piece = piece[:-1]
        return piece.replace("\r\n", "\n").replace("\r", "\n")

    def _freeze(self) -> str:
        """Freeze every top-level block of the complete lines but the last; the HTML added."""
        complete = self._tail[: self._tail.rfind("\n") + 1]
        tokens = parse(complete)
        starts = [i for i, t in enumerate(tokens) if t.level == 0 and t.nesting >= 0]
        if len(starts) < 2:
            return ""
        last = starts[-1]
        line_map = tokens[last].map
        assert line_map is not None  # every block token carries its source lines
        html = render_tokens(tokens[:last])
        self._frozen.append(html)
        self._tail = self._tail[_line_offset(self._tail, line_map[0]):]
        return html


def _line_offset(text: str, line: int) -> int:
    offset = 0
    for _ in range(line):
        offset = text.index("\n", offset) + 1
    return offset


def _render_tail(tail: str) -> str:
    tokens = parse(tail)
    fence = _open_fence(tokens)
    return render_tokens(tokens, {GROWING_FENCE: fence} if fence else None)


def _open_fence(tokens: list[Token]) -> Token | None:
    """The fence still waiting for its closing line, if any: it runs to the end of the text."""
    fence = next((t for t in reversed(tokens) if t.nesting == 0), None)
    if fence is None or fence.type != "fence" or fence.map is None:
        return None
    if fence.content and not fence.content.endswith("\n"):
        return fence  # its last line is still being written
    # Lines of the block = opening line + content lines (+ the closing line, if there is one).
    return fence if fence.map[1] - fence.map[0] == 1 + fence.content.count("\n") else None


def _without_fence_prefix(tail: str) -> str:
    match = _FENCE_PREFIX.search(tail)
    return tail[: match.start()] if match else tail

"""Fenced code blocks: Pygments highlighting, a language label and a copy button.

The block is a plain frame; the copy button carries no script (a Content-Security-Policy
without 'unsafe-inline' is coming): static/js/app.js handles `[data-copy]` clicks by
delegation and copies the text of the block's `<code>`. Colours live in static/css/code.css
(scripts/build_code_css.py), one light and one dark Pygments style following the theme.
"""

from __future__ import annotations

import re
from functools import lru_cache
from html import escape

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

LIGHT_STYLE = "default"
DARK_STYLE = "github-dark"
MAX_LABEL_CHARS = 32
# Rendered HTML is cached for every language, so the label is English here; app.js puts
# the page's translated one (<body data-copy-label>, templates/base.html) in its place.
COPY_LABEL = "Copy"

# Only a plain name is looked up (case-folded); anything else is just shown as a label.
_LEXER_NAME = re.compile(r"[A-Za-z0-9_+#.-]{1,32}")
# `nowrap`: only the token <span>s; the frame below is ours.
_FORMATTER = HtmlFormatter(nowrap=True)

# The classes Pygments' HTML formatter puts on token spans (e.g. "k", "s2", "nf"): the
# sanitizer's class allow-list for <span>.
TOKEN_CLASSES: frozenset[str] = frozenset(c for c in STANDARD_TYPES.values() if c)


@lru_cache(maxsize=256)
def lexer_for(lang: str) -> Lexer | None:
    """The lexer for a fence's language name, or None (unknown names: no guessing, since a
    guess could change while a block streams in)."""
    if not _LEXER_NAME.fullmatch(lang):
        return None
    try:
        # Keep the code exactly as written: no stripping or added newline.
        return get_lexer_by_name(lang.lower(), stripnl=False, stripall=False, ensurenl=False)
    except ClassNotFound:
        return None


def highlighted(code: str, lang: str) -> str:
    """The code as HTML: token spans when the language is known, else escaped text."""
    lexer = lexer_for(lang) if lang else None
    if lexer is None:
        return escape(code, quote=False)
    html = highlight(code, lexer, _FORMATTER)
    # The formatter ends every line with a newline, even a last line that had none.
    return html if code.endswith("\n") or not html.endswith("\n") else html[:-1]


def code_block(code: str, lang: str, body: str | None = None) -> str:
    """A code block's whole frame: header (language label, copy button) and the code
    (`body`: its HTML, when the caller has it already).

    `lang` is untrusted (a fence's info string): it only ever appears as escaped text,
    never in an attribute.
    """
    if body is None:
        body = highlighted(code, lang)
    label = lang[:MAX_LABEL_CHARS]
    head = f'<span class="code__lang">{escape(label)}</span>' if label else ""
    return (
        '<div class="code"><div class="code__head">'
        f'{head}<button type="button" class="code__copy" data-copy>{COPY_LABEL}</button>'
        f'</div><pre class="code__pre"><code>{body}</code></pre></div>\n'
    )

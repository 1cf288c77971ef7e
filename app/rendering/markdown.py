"""Assistant replies as Markdown: markdown-it-py parses, nh3 sanitizes with an allow-list.

Decisions (all of them apply equally to a fresh page load and to a streaming reply):

- Raw HTML in the source is never markup: it shows as text (`html: False`).
- Links: only http, https and mailto. Anything else (javascript:, data:, relative paths)
  is not made a link and stays visible as its source text. Links open in a new tab
  (a reply streams; following a link must not leave the page) with
  rel="noopener noreferrer nofollow". Bare URLs become links.
- Images are never loaded: a remote image is a request the reader did not ask for, and an
  image URL written by a model can carry conversation text to a third party. An image
  renders as a link to its URL, labelled with its alt text (class "md-image").
- Reference-style links (`[text][ref]` with `[ref]: url`) are off: a definition can sit
  anywhere in the text and change blocks that came before it, which would make a block
  that already streamed out differ from the final render. They show as plain text.
- GFM tables, ~~strikethrough~~ (double tilde only: "~5분" stays as written), task lists
  (disabled checkboxes; markdown-it-py's own `tasklists` option, which since 4.1 replaces
  mdit-py-plugins' tasklists plugin), bare-URL autolinks (mdit-py-plugins' gfm_autolink,
  no linkify-it needed); single newlines are line breaks, as in chat messages.
- Code: fenced and indented blocks go through app/rendering/code.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from html import escape
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import unescapeAll
from markdown_it.token import Token
from mdit_py_plugins.gfm_autolink import gfm_autolink_plugin

from app.rendering.code import TOKEN_CLASSES, code_block, highlighted

# env key: the unclosed fence at the end of a streaming reply (see streaming.py)
GROWING_FENCE = "growing_fence"
_STABLE_CODE = "stable_code"
# Stands for a growing fence's complete lines until after sanitizing. Raw HTML in the
# source is escaped, so only the fence rule can emit it.
_STABLE_MARKER = '<span class="code__stable"></span>'
LINK_SCHEMES = frozenset({"http", "https", "mailto"})
_LINK_PREFIXES = tuple(f"{scheme}:" for scheme in LINK_SCHEMES)


def link_allowed(url: str) -> bool:
    """markdown-it's link validator, stricter than its default (which lets relative and
    data:image URLs through). `url` is already normalized, entities decoded."""
    return url.strip().lower().startswith(_LINK_PREFIXES)


def _fence(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    info = unescapeAll(token.info).strip() if token.info else ""
    lang = info.split(maxsplit=1)[0] if info else ""
    if env.get(GROWING_FENCE) is token:
        # Still being written: its complete lines are highlighted and sanitized once
        # (_stable_code), only the last line per piece. Colours of a construct spanning
        # lines may be off on that last line until it is done; the text is always exact,
        # and the finished reply is highlighted as a whole.
        code = token.content
        cut = code.rfind("\n", 0, len(code) - 1) + 1
        env[_STABLE_CODE] = (code[:cut], lang)
        return code_block(code, lang, body=_STABLE_MARKER + highlighted(code[cut:], lang))
    return code_block(token.content, lang)


def _code_block(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    return code_block(tokens[idx].content, "")


def _image(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env)
    src = str(token.attrGet("src") or "")
    if not link_allowed(src):  # markdown-it admits data:image/...; we do not
        return escape(alt)
    title = token.attrGet("title")
    title_attr = f' title="{escape(str(title))}"' if title else ""
    return f'<a href="{escape(src)}" class="md-image"{title_attr}>{escape(alt or src)}</a>'


def _cell_open(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    # Column alignment as a class, not a style attribute: the coming Content-Security-Policy
    # has no 'unsafe-inline', which blocks style attributes too.
    token = tokens[idx]
    style = str(token.attrGet("style") or "")
    align = style.removeprefix("text-align:")
    if align in ("left", "center", "right"):
        return f'<{token.tag} class="md-align-{align}">'
    return f"<{token.tag}>"


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {
        "html": False, "breaks": True, "typographer": False,
        "tasklists": True, "tasklists_editable": False,
    })
    md.enable(["table", "strikethrough"])
    md.disable("reference")
    md.use(gfm_autolink_plugin)
    md.validateLink = link_allowed  # type: ignore[method-assign]
    md.add_render_rule("fence", _fence)
    md.add_render_rule("code_block", _code_block)
    md.add_render_rule("image", _image)
    md.add_render_rule("th_open", _cell_open)
    md.add_render_rule("td_open", _cell_open)
    return md


MD = _parser()

_ALIGN_CLASSES = {"md-align-left", "md-align-center", "md-align-right"}

# Everything the renderer can emit, nothing more. The parser already escapes raw HTML;
# this is the second wall, should a rule or plugin ever let something through.
SANITIZER = nh3.Cleaner(
    tags={
        "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "code",
        "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th",
        "td", "input", "div", "span", "button",
    },
    clean_content_tags={"script", "style"},
    attributes={
        "a": {"href", "title"}, "ol": {"start"}, "input": {"checked"},
        "button": {"data-copy"},
    },
    tag_attribute_values={"input": {"type": {"checkbox"}}, "button": {"type": {"button"}}},
    set_tag_attribute_values={"a": {"target": "_blank"}, "input": {"disabled": ""}},
    allowed_classes={
        "div": {"code", "code__head"},
        "span": {"code__lang", "code__stable", *TOKEN_CLASSES},
        "button": {"code__copy"},
        "pre": {"code__pre"},
        "a": {"md-image"},
        "ul": {"contains-task-list"},
        "ol": {"contains-task-list"},
        "li": {"task-list-item"},
        "input": {"task-list-item-checkbox"},
        "th": _ALIGN_CLASSES,
        "td": _ALIGN_CLASSES,
    },
    url_schemes=set(LINK_SCHEMES),
    url_relative="deny",
    link_rel="noopener noreferrer nofollow",
)


def parse(text: str) -> list[Token]:
    return MD.parse(text, {})


def render_tokens(tokens: Sequence[Token], env: dict[str, Any] | None = None) -> str:
    """Sanitized HTML for a run of whole top-level blocks (see streaming.py)."""
    env = {} if env is None else env
    html = SANITIZER.clean(MD.renderer.render(tokens, MD.options, env))
    if _STABLE_CODE in env:
        html = html.replace(_STABLE_MARKER, _stable_code(*env[_STABLE_CODE]), 1)
    return html


@lru_cache(maxsize=8)
def _stable_code(code: str, lang: str) -> str:
    return SANITIZER.clean(highlighted(code, lang))


def render_uncached(text: str) -> str:
    return render_tokens(parse(text)) if text else ""


@lru_cache(maxsize=256)
def render(text: str) -> str:
    """A reply's Markdown as safe HTML. Cached: a chat page renders every finished reply
    on each load, and a finished reply never changes."""
    return render_uncached(text)

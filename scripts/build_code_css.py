"""Writes static/css/code.css: rendered Markdown replies, code block frames and the
Pygments token colours of app/rendering/code.py, light and dark.

    .venv/bin/python scripts/build_code_css.py

The theme follows the system (`prefers-color-scheme`) unless <html data-theme="light|dark">
says otherwise. Each style's rules get selectors that only match in its own theme, so no
colour of one theme leaks into the other.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pygments.formatters import HtmlFormatter
from pygments.styles import get_style_by_name
from pygments.token import Token

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.rendering.code import DARK_STYLE, LIGHT_STYLE  # noqa: E402

OUT = ROOT / "static" / "css" / "code.css"

# (selector outside media queries, selector inside the system-preference media query)
CONTEXTS = {
    "light": ('html[data-theme="light"] .code', "not all and (prefers-color-scheme: dark)",
              'html:not([data-theme="dark"]) .code'),
    "dark": ('html[data-theme="dark"] .code', "(prefers-color-scheme: dark)",
             'html:not([data-theme="light"]) .code'),
}
# Fallback foregrounds when a style leaves plain text uncoloured.
DEFAULT_FG = {"light": "#1f2328", "dark": "#e6edf3"}

BASE = """\
/* Rendered Markdown (.md on an assistant reply's .message__body) ---------- */
/* A streaming reply's body holds two containers (.md__frozen, .md__tail); with
   display: contents their blocks lay out as if they were the body's own children. */
.md {
  display: flex;
  flex-direction: column;
  gap: 0.75em;
  white-space: normal;
}
.md__frozen, .md__tail { display: contents; }
:is(.md, .md__frozen, .md__tail) > * { margin: 0; }
.md :is(h1, h2, h3, h4, h5, h6) { line-height: 1.3; font-weight: 650; }
:is(.md, .md__frozen, .md__tail) > :is(h1, h2, h3, h4, h5, h6) { margin-top: 0.35em; }
.md h1 { font-size: 1.35em; }
.md h2 { font-size: 1.2em; }
.md h3 { font-size: 1.08em; }
.md :is(h4, h5, h6) { font-size: 1em; }
.md a { color: var(--accent-text); text-decoration: underline; text-underline-offset: 0.15em; }
.md a.md-image::before { content: "\\1F5BC\\FE0E  "; }
.md :is(ul, ol) { padding-left: 1.5em; }
.md li + li, .md li > :is(ul, ol) { margin-top: 0.25em; }
.md li > p { margin: 0 0 0.5em; }
.md li > :last-child { margin-bottom: 0; }
.md li > .code { margin: 0.5em 0; }
.md .contains-task-list { padding-left: 0.25em; list-style: none; }
.md .task-list-item-checkbox { margin: 0 0.45em 0 0; vertical-align: -0.1em; }
.md blockquote {
  padding-left: 0.875em;
  border-left: 3px solid var(--border-strong);
  color: var(--text-muted);
}
.md blockquote > :is(p, ul, ol) { margin: 0 0 0.5em; }
.md blockquote > :last-child { margin-bottom: 0; }
.md hr { height: 0; border: 0; border-top: 1px solid var(--border); }
.md :not(pre) > code {
  padding: 0.1em 0.35em;
  border-radius: 5px;
  background: var(--neutral-soft);
  font-size: 0.875em;
}
.md table {
  display: block;               /* wide tables scroll instead of stretching the bubble */
  max-width: 100%;
  overflow-x: auto;
  border-collapse: collapse;
  font-size: 0.9375em;
}
.md :is(th, td) { padding: 0.375em 0.75em; border: 1px solid var(--border); text-align: left; }
.md th { background: var(--bg-subtle); font-weight: 600; }
.md .md-align-center { text-align: center; }
.md .md-align-right { text-align: right; }

/* Code blocks (app/rendering/code.py) -------------------------------------- */
.code {
  min-width: 0;
  overflow: hidden;
  border: 1px solid var(--code-border);
  border-radius: var(--radius-sm, 8px);
  background: var(--code-bg);
  color: var(--code-fg);
}
.code__head {
  display: flex;
  align-items: center;
  gap: 0.5rem;
  min-height: 2rem;
  padding: 0.125rem 0.25rem 0.125rem 0.75rem;
  border-bottom: 1px solid var(--code-border);
  color: var(--code-muted);
  font-family: var(--font-sans, system-ui, sans-serif);
  font-size: 0.75rem;
  line-height: 1.4;
}
.code__lang { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.code__copy {
  margin-left: auto;
  padding: 0.25rem 0.5rem;
  border: 0;
  border-radius: 6px;
  background: transparent;
  color: inherit;
  font: inherit;
  cursor: pointer;
}
.code__copy:hover { background: var(--code-hover); color: var(--code-fg); }
.code__copy:focus-visible { outline: 2px solid var(--focus, #5a6be6); outline-offset: 1px; }
.code__copy--done { color: var(--code-fg); }
.code__pre {
  margin: 0;
  padding: 0.75rem 0.875rem;
  overflow-x: auto;
  font-family: var(--font-mono, monospace);
  font-size: 0.8125rem;
  line-height: 1.55;
  tab-size: 4;
  white-space: pre;             /* the message body wraps anywhere; code never does */
  word-break: normal;
  overflow-wrap: normal;
}
.code__pre code { font: inherit; }
"""


def frame_vars(theme: str, style_name: str) -> str:
    style = get_style_by_name(style_name)
    fg = style.styles.get(Token) or DEFAULT_FG[theme]
    muted = "#8b949e" if theme == "dark" else "#59636e"
    border = "rgba(240, 246, 252, 0.1)" if theme == "dark" else "rgba(31, 35, 40, 0.12)"
    hover = "rgba(240, 246, 252, 0.08)" if theme == "dark" else "rgba(31, 35, 40, 0.07)"
    return (f"--code-bg: {style.background_color}; --code-fg: {fg}; --code-muted: {muted};"
            f" --code-border: {border}; --code-hover: {hover};")


def token_rules(style_name: str, prefix: str) -> list[str]:
    rules = HtmlFormatter(style=style_name).get_token_style_defs(prefix)
    # Error tokens get a red box in some styles: a half-streamed string is not an error.
    return [rule for rule in rules if "/* Error */" not in rule]


def theme_css(theme: str, style_name: str) -> str:
    explicit, media, auto = CONTEXTS[theme]
    inner = "\n".join([f"{auto} {{ {frame_vars(theme, style_name)} }}",
                       *token_rules(style_name, auto)])
    indented = "\n".join(f"  {line}" for line in inner.splitlines())
    return "\n".join([
        f"/* {theme}: Pygments style {style_name!r} */",
        f"{explicit} {{ {frame_vars(theme, style_name)} }}",
        *token_rules(style_name, explicit),
        f"@media {media} {{",
        indented,
        "}",
    ])


def build() -> str:
    header = ("/* code.css — GENERATED by scripts/build_code_css.py; edit the script, not this"
              " file. */\n\n")
    return (header + BASE + "\n" + theme_css("light", LIGHT_STYLE) + "\n\n"
            + theme_css("dark", DARK_STYLE) + "\n")


if __name__ == "__main__":
    OUT.write_text(build(), encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")

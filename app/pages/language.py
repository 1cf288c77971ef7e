"""Switching the page language: remembered in a cookie, for signed-in users and not."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from app import i18n
from app.auth import services_of
from app.http_input import read_form
from app.pages.accounts import safe_next
from app.usecases.errors import N_, InvalidInput, Message


async def switch(request: Request) -> Response:
    """POST lang=ko|en (and next=/path): 303 back with the cookie set; any other language
    is a 400 that changes nothing."""
    settings = services_of(request).settings
    form = await read_form(request, settings.max_body_bytes)
    language = str(form.get("lang", ""))
    if language not in i18n.LANGUAGES:
        choices = ", ".join(sorted(i18n.LANGUAGES))
        raise InvalidInput("lang", Message(N_("must be one of: %(choices)s."),
                                           {"choices": choices}))
    response = RedirectResponse(safe_next(str(form.get("next", ""))), 303)
    response.set_cookie(i18n.COOKIE, language, max_age=i18n.COOKIE_MAX_AGE, httponly=True,
                        samesite="lax", secure=settings.cookie_secure, path="/")
    return response


routes = [Route("/language", switch, methods=["POST"])]

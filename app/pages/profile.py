"""The user's own pages: profile (name, email, password, theme) and usage."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from app.auth import optional_user, require_user, services_of
from app.http_input import read_form
from app.i18n import gettext as _
from app.i18n import local_date, local_day
from app.pages import messages
from app.pages.chat import to_login
from app.pages.render import fragment, page
from app.pages.usage_chart import bar_chart
from app.usecases import accounts, profile
from app.usecases.errors import InvalidInput
from app.usecases.profile import DayUsage

PROFILE_FIELDS = ("display_name", "email")


async def profile_page(request: Request) -> Response:
    user = await optional_user(request)
    if user is None:
        return to_login(request)
    values = {key: user[key] for key in PROFILE_FIELDS}
    return page(request, "profile/profile.html", {
        "user": user, "values": values, "errors": {}, "password_errors": {},
        "theme": request.cookies.get("theme", ""),
    })


async def save_profile(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    form = await read_form(request, services.settings.max_body_bytes)
    values = {key: form.get(key, "") for key in PROFILE_FIELDS}
    try:
        saved = await accounts.update_profile(services, user["id"], values)
    except InvalidInput as error:
        return HTMLResponse(fragment("profile/_profile_form.html", values=values,
                                     errors={error.field: messages.problem(error)}), 400)
    return HTMLResponse(fragment("profile/_profile_form.html", saved=True, errors={},
                                 values={key: saved[key] for key in PROFILE_FIELDS}))


async def change_password(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    form = await read_form(request, services.settings.max_body_bytes)
    values = {key: form.get(key, "") for key in ("current_password", "new_password")}
    try:
        await profile.change_password(services, user["id"], user["token"], values)
    except InvalidInput as error:
        field = "new_password" if error.field == "password" else error.field
        return HTMLResponse(fragment("profile/_password_form.html",
                                     password_errors={field: messages.problem(error)}), 400)
    return HTMLResponse(fragment("profile/_password_form.html", changed=True,
                                 password_errors={}))


def _short_day(d: DayUsage) -> str:
    return local_day(d.day)


async def usage_page(request: Request) -> Response:
    user = await optional_user(request)
    if user is None:
        return to_login(request)
    totals, days = await profile.usage(services_of(request), user["id"])
    charts = {
        "messages": bar_chart(
            days, lambda d: d.messages, _("Messages per day"), "messages", _short_day,
            lambda d, n: _("%(day)s: %(n)s messages") % {"day": local_date(d.day), "n": n}),
        "tokens": bar_chart(
            days, lambda d: d.tokens, _("Tokens generated per day"), "tokens", _short_day,
            lambda d, n: _("%(day)s: %(n)s tokens") % {"day": local_date(d.day), "n": n}),
    }
    context: dict[str, Any] = {"user": user, "totals": totals, "days": days, "charts": charts}
    return page(request, "profile/usage.html", context)


routes = [
    Route("/profile", profile_page, methods=["GET"]),
    Route("/profile", save_profile, methods=["POST"]),
    Route("/profile/password", change_password, methods=["POST"]),
    Route("/usage", usage_page, methods=["GET"]),
]

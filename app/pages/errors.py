"""Errors on pages: a full error page, or a toast when htmx made the request."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.i18n import N_
from app.i18n import gettext as _
from app.pages import messages
from app.pages.render import TEMPLATES, is_htmx, toast

TITLES = {
    400: N_("That did not work"), 401: N_("Please sign in"), 403: N_("Not allowed"),
    404: N_("Page not found"), 413: N_("Too large"), 429: N_("Slow down"),
    503: N_("Busy right now"),
}


def page_error(request: Request, status: int, message: str,
               headers: dict[str, str] | None = None) -> Response:
    message = messages.text(message)  # a use case's English text, in the page's language
    if is_htmx(request):
        response = toast(message, status)
        if status == 401:
            response.headers["HX-Redirect"] = "/login"
    else:
        if status == 404:
            message = _("This chat does not exist, or it is not yours.")
        response = TEMPLATES.TemplateResponse(
            request, "error.html",
            {"status": status, "title": TITLES.get(status, N_("Something went wrong")),
             "message": message},
            status_code=status,
        )
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response

"""Errors on pages: a full error page, or a toast when htmx made the request."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from app.errors import headers_of, status_of
from app.i18n import N_
from app.i18n import gettext as _
from app.pages import messages
from app.pages.render import TEMPLATES, is_htmx, toast
from app.usecases.errors import UseCaseError

TITLES = {
    400: N_("That did not work"), 401: N_("Please sign in"), 403: N_("Not allowed"),
    404: N_("Page not found"), 413: N_("Too large"), 429: N_("Slow down"),
    503: N_("Busy right now"),
}


def use_case_error_page(request: Request, error: UseCaseError) -> Response:
    return page_error(request, status_of(error), messages.message(error), headers_of(error))


def http_error_page(request: Request, error: HTTPException) -> Response:
    return page_error(request, error.status_code, messages.http(error.status_code,
                                                                str(error.detail)),
                      dict(error.headers or {}))


def page_error(request: Request, status: int, message: str,
               headers: dict[str, str] | None = None) -> Response:
    """`message` is in the page's language already."""
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

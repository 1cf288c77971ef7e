"""Sign-up, sign-in and sign-out pages; the session cookie holds the bearer token."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from app.api.auth import register_account, sign_in, sign_out
from app.auth import SESSION_COOKIE, optional_user, require_user, services_of
from app.errors import ApiError
from app.pages.render import page
from app.validation import read_form

FIELDS = ("username", "email", "password", "display_name")


async def form_of(request: Request) -> dict[str, str]:
    return await read_form(request, services_of(request).settings.max_body_bytes)


def field_error(error: ApiError) -> tuple[dict[str, str], str]:
    """Put a 'field: problem' message beside its field, anything else above the form."""
    field, sep, problem = error.message.partition(": ")
    if sep and field in FIELDS:
        return {field: problem}, ""
    return {}, error.message


def safe_next(target: str | None) -> str:
    # Only local paths: an open redirect would let a link send users elsewhere after sign-in.
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/chats"


def signed_in(request: Request, token: str, target: str) -> Response:
    response = RedirectResponse(target, 303)
    settings = services_of(request).settings
    response.set_cookie(
        SESSION_COOKIE, token, max_age=settings.token_ttl_days * 86400, httponly=True,
        samesite="lax", secure=settings.cookie_secure, path="/",
    )
    return response


async def login_page(request: Request) -> Response:
    target = safe_next(request.query_params.get("next"))
    if request.method == "GET":
        if await optional_user(request):
            return RedirectResponse(target, 303)
        return page(request, "auth/login.html", {"values": {}, "errors": {}, "next": target})
    form = await form_of(request)
    values = {"username": str(form.get("username", ""))}
    target = safe_next(str(form.get("next", "")))
    try:
        _user, token = await sign_in(request, values["username"], str(form.get("password", "")))
    except ApiError as error:
        context: dict[str, Any] = {"values": values, "errors": {}, "next": target,
                                   "form_error": error.message}
        return page(request, "auth/login.html", context, error.status)
    return signed_in(request, token, target)


async def register_page(request: Request) -> Response:
    if request.method == "GET":
        return page(request, "auth/register.html", {"values": {}, "errors": {}})
    form = await form_of(request)
    body = {key: str(form.get(key, "")) for key in ("username", "email", "password")}
    try:
        _user, token = await register_account(request, body)
    except ApiError as error:
        errors, form_error = field_error(error)
        values = {k: body[k] for k in ("username", "email")}
        context = {"values": values, "errors": errors, "form_error": form_error}
        return page(request, "auth/register.html", context, error.status)
    return signed_in(request, token, "/chats")


async def logout_page(request: Request) -> Response:
    user = await require_user(request)
    await sign_out(request, user)
    response = Response(status_code=204, headers={"HX-Redirect": "/login"})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


routes = [
    Route("/login", login_page, methods=["GET", "POST"]),
    Route("/register", register_page, methods=["GET", "POST"]),
    Route("/logout", logout_page, methods=["POST"]),
]

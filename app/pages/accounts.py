"""Sign-up, sign-in and sign-out pages; the session cookie holds the bearer token."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from app.auth import (
    SESSION_COOKIE,
    check_form_csrf,
    client_address,
    form_csrf,
    form_nonce,
    optional_user,
    require_user,
    services_of,
    set_form_nonce,
)
from app.errors import headers_of, status_of
from app.http_input import read_form
from app.pages import messages
from app.pages.render import page
from app.usecases import accounts
from app.usecases.errors import Conflict, InvalidInput, UseCaseError

FIELDS = ("username", "email", "password", "display_name")


async def form_of(request: Request) -> dict[str, str]:
    return await read_form(request, services_of(request).settings.max_body_bytes)


def field_errors(error: UseCaseError) -> tuple[dict[str, str], str]:
    """Put an error beside its field when it has one, anything else above the form."""
    if isinstance(error, InvalidInput) and error.field in FIELDS:
        return {error.field: messages.problem(error)}, ""
    if isinstance(error, Conflict) and error.field in FIELDS:
        return {error.field: messages.problem(error)}, ""
    return {}, messages.message(error)


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


def form_page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """A sign-in or sign-up form, with its CSRF token (there is no session to bind it to)."""
    nonce = form_nonce(request)
    response = page(request, name, {**context, "form_csrf": form_csrf(request, nonce)}, status)
    set_form_nonce(request, response, nonce)
    return response


async def login_page(request: Request) -> Response:
    target = safe_next(request.query_params.get("next"))
    if request.method == "GET":
        if await optional_user(request):
            return RedirectResponse(target, 303)
        return form_page(request, "auth/login.html",
                         {"values": {}, "errors": {}, "next": target})
    form = await form_of(request)
    values = {"username": str(form.get("username", ""))}
    target = safe_next(str(form.get("next", "")))
    try:
        check_form_csrf(request, form)
        result = await accounts.sign_in(services_of(request), values["username"],
                                         str(form.get("password", "")), client_address(request))
    except UseCaseError as error:
        context: dict[str, Any] = {"values": values, "errors": {}, "next": target,
                                   "form_error": messages.message(error)}
        response = form_page(request, "auth/login.html", context, status_of(error))
        response.headers.update(headers_of(error))
        return response
    return signed_in(request, result.token, target)


async def register_page(request: Request) -> Response:
    if request.method == "GET":
        return form_page(request, "auth/register.html", {"values": {}, "errors": {}})
    form = await form_of(request)
    body = {key: str(form.get(key, "")) for key in ("username", "email", "password")}
    try:
        check_form_csrf(request, form)
        result = await accounts.register(services_of(request), body, client_address(request))
    except UseCaseError as error:
        errors, form_error = field_errors(error)
        values = {k: body[k] for k in ("username", "email")}
        context = {"values": values, "errors": errors, "form_error": form_error}
        response = form_page(request, "auth/register.html", context, status_of(error))
        response.headers.update(headers_of(error))
        return response
    return signed_in(request, result.token, "/chats")


async def logout_page(request: Request) -> Response:
    user = await require_user(request)
    await accounts.sign_out(services_of(request), user["id"], user["token"])
    response = Response(status_code=204, headers={"HX-Redirect": "/login"})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


routes = [
    Route("/login", login_page, methods=["GET", "POST"]),
    Route("/register", register_page, methods=["GET", "POST"]),
    Route("/logout", logout_page, methods=["POST"]),
]

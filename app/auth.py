"""Who is calling: a bearer token (API clients) or the session cookie (browsers)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.security import csrf_token, form_csrf_token, forwarded_client, new_token
from app.services import Services
from app.usecases import accounts
from app.usecases.errors import N_, Forbidden, NotAuthenticated

SESSION_COOKIE = "session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def presented_token(request: Request) -> tuple[str | None, bool]:
    """(token, from_cookie). The Authorization header wins over the cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip(), False
    cookie = request.cookies.get(SESSION_COOKIE)
    return (cookie, True) if cookie else (None, False)


async def optional_user(request: Request) -> dict[str, Any] | None:
    if "user" in request.scope:
        return request.scope["user"]
    token, from_cookie = presented_token(request)
    user = await accounts.user_for_token(services_of(request), token) if token else None
    if user is not None:
        user["token"] = token
        user["via_cookie"] = from_cookie
    request.scope["user"] = user
    return user


async def require_user(request: Request) -> dict[str, Any]:
    """The signed-in user; browsers must also send the CSRF token on unsafe methods."""
    user = await optional_user(request)
    if user is None:
        raise NotAuthenticated(N_("Sign in first: send a valid bearer token."))
    if user["via_cookie"] and request.method not in SAFE_METHODS:
        expected = csrf_token(services_of(request).secret, user["token"])
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise Forbidden(N_("The CSRF token is missing or wrong; reload the page."),
                            code="csrf_failed")
    return user


async def require_admin(request: Request) -> dict[str, Any]:
    user = await require_user(request)
    if not user["is_admin"]:
        raise Forbidden(N_("Only administrators can do this."))
    return user


FORM_NONCE_COOKIE = "form_nonce"
FORM_CSRF_FIELD = "csrf_token"
FORM_NONCE_SECONDS = 86400


def form_nonce(request: Request) -> str:
    """The browser's pre-session nonce, or a new one (`set_form_nonce` sends it)."""
    nonce = request.cookies.get(FORM_NONCE_COOKIE, "")
    return nonce if 32 <= len(nonce) <= 64 and nonce.isascii() else new_token()


def form_csrf(request: Request, nonce: str) -> str:
    return form_csrf_token(services_of(request).secret, nonce)


def set_form_nonce(request: Request, response: Response, nonce: str) -> None:
    response.set_cookie(FORM_NONCE_COOKIE, nonce, max_age=FORM_NONCE_SECONDS, httponly=True,
                        samesite="strict", secure=services_of(request).settings.cookie_secure,
                        path="/")


def check_form_csrf(request: Request, form: Mapping[str, Any]) -> None:
    """Sign-in and sign-up forms must carry the token matching the browser's nonce."""
    nonce = request.cookies.get(FORM_NONCE_COOKIE, "")
    sent = str(form.get(FORM_CSRF_FIELD, ""))
    expected = form_csrf(request, nonce) if nonce else ""
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden(N_("The form expired or did not come from this site; try again."),
                        code="csrf_failed")


def client_address(request: Request) -> str:
    """The client's address: the TCP peer, or, when the peer is a trusted proxy, the
    nearest address in X-Forwarded-For that is not one of the trusted proxies."""
    peer = request.client.host if request.client else "unknown"
    trusted = services_of(request).trusted_proxies
    return forwarded_client(peer, request.headers.getlist("x-forwarded-for"), trusted)

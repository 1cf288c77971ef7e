"""Who is calling: a bearer token (API clients) or the session cookie (browsers)."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request

from app.security import csrf_token
from app.services import Services
from app.usecases import accounts
from app.usecases.errors import Forbidden, NotAuthenticated

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
        raise NotAuthenticated("Sign in first: send a valid bearer token.")
    if user["via_cookie"] and request.method not in SAFE_METHODS:
        expected = csrf_token(services_of(request).secret, user["token"])
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise Forbidden("The CSRF token is missing or wrong; reload the page.",
                            code="csrf_failed")
    return user


async def require_admin(request: Request) -> dict[str, Any]:
    user = await require_user(request)
    if not user["is_admin"]:
        raise Forbidden("Only administrators can do this.")
    return user


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"

"""Who is calling: a bearer token (API clients) or the session cookie (browsers)."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request

from app.errors import ApiError
from app.security import csrf_token, token_hash
from app.services import Services
from projections import users as users_read
from projections.base import iso

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
    user = None
    if token:
        services = services_of(request)
        user = await users_read.user_for_token(
            services.read_db, token_hash(token),
            timedelta(days=services.settings.token_ttl_days), iso(datetime.now(UTC)),
        )
        if user is not None:
            user["token"] = token
            user["via_cookie"] = from_cookie
    request.scope["user"] = user
    return user


async def require_user(request: Request) -> dict[str, Any]:
    """The signed-in user; browsers must also send the CSRF token on unsafe methods."""
    user = await optional_user(request)
    if user is None:
        raise ApiError(401, "not_authenticated", "Sign in first: send a valid bearer token.")
    if user["via_cookie"] and request.method not in SAFE_METHODS:
        expected = csrf_token(services_of(request).secret, user["token"])
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent, expected):
            raise ApiError(403, "csrf_failed",
                           "The CSRF token is missing or wrong; reload the page.")
    return user


async def require_admin(request: Request) -> dict[str, Any]:
    user = await require_user(request)
    if not user["is_admin"]:
        raise ApiError(403, "forbidden", "Only administrators can do this.")
    return user


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"

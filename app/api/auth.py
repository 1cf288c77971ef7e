"""Accounts: register, sign in and out, the caller's profile and usage."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app import validation as v
from app.auth import client_address, require_user, services_of
from app.errors import ApiError
from app.security import hash_password, new_token, token_hash, verify_password
from domain.errors import UsernameTaken
from domain.users import username_key
from projections import messages as messages_read
from projections import users as users_read


def profile(user: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "username", "email", "display_name", "is_admin", "created_at")
    return {key: user[key] for key in keys}


async def register_account(request: Request, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Validate, create the user and sign them in: (user, token). Shared with the pages."""
    services = services_of(request)
    username, email, password = v.username(body), v.email(body), v.password(body)
    assert email is not None
    password_hash = await anyio.to_thread.run_sync(hash_password, password)
    token = new_token()
    chat = services.chat
    try:
        user = await services.command(chat.register_user, username, email, password_hash)
    except UsernameTaken:
        raise ApiError(409, "username_taken", "username: that username is already taken.") from None
    position = await services.command(chat.log_in, user.id, token_hash(token),
                                      client_address(request))
    await services.settle(position)
    stored = await users_read.get_user(services.read_db, str(user.id))
    assert stored is not None
    return stored, token


async def sign_in(request: Request, username: str, password: str) -> tuple[dict[str, Any], str]:
    """Check credentials and record the sign-in: (user, token). Shared with the pages."""
    services = services_of(request)
    address = client_address(request)
    keys = (f"user:{username_key(username)}", f"addr:{address}")
    limiter = services.login_limiter
    retry_after = limiter.retry_after(*keys)
    if retry_after:
        raise ApiError(429, "rate_limited",
                       f"Too many failed sign-ins. Try again in {retry_after} seconds.",
                       {"Retry-After": str(retry_after)})
    user = await services.command(services.chat.find_user, username)
    ok = await anyio.to_thread.run_sync(
        verify_password, user.password_hash if user else None, password
    )
    if user is None or not ok:
        limiter.fail(*keys)
        if user is not None:  # recorded for the security audit
            await services.command(services.chat.record_failed_login, user.id, address)
        raise ApiError(401, "invalid_credentials", "The username or password is wrong.")
    limiter.succeed(*keys)
    token = new_token()
    position = await services.command(services.chat.log_in, user.id, token_hash(token), address)
    await services.settle(position)
    stored = await users_read.get_user(services.read_db, str(user.id))
    assert stored is not None
    return stored, token


async def sign_out(request: Request, user: dict[str, Any]) -> None:
    services = services_of(request)
    position = await services.command(services.chat.log_out, UUID(user["id"]),
                                      token_hash(user["token"]))
    await services.settle(position)


async def register(request: Request) -> Response:
    body = await v.read_json(request, services_of(request).settings.max_body_bytes)
    user, token = await register_account(request, body)
    keys = ("id", "username", "email", "created_at")
    return JSONResponse({**{k: user[k] for k in keys}, "token": token}, 201)


async def login(request: Request) -> Response:
    body = await v.read_json(request, services_of(request).settings.max_body_bytes)
    username = v.text(body, "username", max_len=256, required=True) or ""
    password = v.text(body, "password", max_len=1024, required=True) or ""
    user, token = await sign_in(request, username, password)
    keys = ("id", "username", "email", "is_admin")
    return JSONResponse({"token": token, "user": {k: user[k] for k in keys}})


async def logout(request: Request) -> Response:
    user = await require_user(request)
    await sign_out(request, user)
    return Response(status_code=204)


async def me(request: Request) -> Response:
    user = await require_user(request)
    if request.method == "GET":
        return JSONResponse(profile(user))
    services = services_of(request)
    body = await v.read_json(request, services.settings.max_body_bytes)
    email = v.email(body, required=False)
    display_name = v.text(body, "display_name", max_len=64, strip=True)
    position = await services.command(services.chat.update_profile, UUID(user["id"]), email,
                                      display_name)
    await services.settle(position)
    updated = await users_read.get_user(services.read_db, user["id"])
    assert updated is not None
    return JSONResponse(profile(updated))


async def my_stats(request: Request) -> Response:
    user = await require_user(request)
    return JSONResponse(await messages_read.user_stats(services_of(request).read_db, user["id"]))


routes = [
    Route("/api/auth/register/", register, methods=["POST"]),
    Route("/api/auth/login/", login, methods=["POST"]),
    Route("/api/auth/logout/", logout, methods=["POST"]),
    Route("/api/auth/me/", me, methods=["GET", "PATCH"]),
    Route("/api/auth/me/stats/", my_stats, methods=["GET"]),
]

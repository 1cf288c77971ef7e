"""Accounts over JSON: register, sign in and out, the caller's profile and usage."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.auth import client_address, require_user, services_of
from app.http_input import read_json
from app.usecases import accounts, fields

CREDENTIAL_CHARS = 1024


async def register(request: Request) -> Response:
    services = services_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    signed_in = await accounts.register(services, body, client_address(request))
    user = signed_in.user
    keys = ("id", "username", "email", "created_at")
    return JSONResponse({**{k: user[k] for k in keys}, "token": signed_in.token}, 201)


async def login(request: Request) -> Response:
    services = services_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    username = fields.required_text(body, "username", max_len=CREDENTIAL_CHARS)
    password = fields.required_text(body, "password", max_len=CREDENTIAL_CHARS)
    signed_in = await accounts.sign_in(services, username, password, client_address(request))
    keys = ("id", "username", "email", "is_admin")
    return JSONResponse({"token": signed_in.token,
                         "user": {k: signed_in.user[k] for k in keys}})


async def logout(request: Request) -> Response:
    user = await require_user(request)
    await accounts.sign_out(services_of(request), user["id"], user["token"])
    return Response(status_code=204)


async def me(request: Request) -> Response:
    user = await require_user(request)
    if request.method == "GET":
        return JSONResponse(accounts.profile(user))
    services = services_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    return JSONResponse(await accounts.update_profile(services, user["id"], body))


async def my_stats(request: Request) -> Response:
    user = await require_user(request)
    return JSONResponse(await accounts.usage(services_of(request), user["id"]))


routes = [
    Route("/api/auth/register/", register, methods=["POST"]),
    Route("/api/auth/login/", login, methods=["POST"]),
    Route("/api/auth/logout/", logout, methods=["POST"]),
    Route("/api/auth/me/", me, methods=["GET", "PATCH"]),
    Route("/api/auth/me/stats/", my_stats, methods=["GET"]),
]

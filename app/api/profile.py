"""The caller's own account over JSON beyond API.md: password change and daily usage."""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.auth import require_user, services_of
from app.http_input import read_json
from app.usecases import fields, profile


async def change_password(request: Request) -> Response:
    """{current_password, new_password}: 204; every other token of the user is revoked."""
    user = await require_user(request)
    services = services_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    await profile.change_password(services, user["id"], user["token"], body)
    return Response(status_code=204)


async def daily_usage(request: Request) -> Response:
    user = await require_user(request)
    days = fields.whole_number(request.query_params.get("days"), "days", profile.USAGE_DAYS,
                               1, profile.MAX_USAGE_DAYS)
    rows = await profile.daily_usage(services_of(request), user["id"], days)
    return JSONResponse({"days": [{**asdict(r), "day": r.day.isoformat()} for r in rows]})


routes = [
    Route("/api/auth/me/password/", change_password, methods=["POST"]),
    Route("/api/auth/me/usage/", daily_usage, methods=["GET"]),
]

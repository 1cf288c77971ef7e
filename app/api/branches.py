"""Editing a sent message over JSON (beyond API.md; documented in the README)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.auth import require_user, services_of
from app.http_input import read_json
from app.usecases import branches


async def edit(request: Request) -> Response:
    """{content}: 202 {message, reply, last_event_id}, as posting a message answers."""
    user = await require_user(request)
    services = services_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    p = request.path_params
    queued = await branches.edit_message(services, user["id"], p["session_id"],
                                         p["message_id"], body.get("content"))
    return JSONResponse(queued, 202)


async def versions(request: Request) -> Response:
    user = await require_user(request)
    p = request.path_params
    found = await branches.versions_of(services_of(request), user["id"], p["session_id"],
                                       p["message_id"])
    return JSONResponse({"versions": found})


routes = [
    Route("/api/sessions/{session_id}/messages/{message_id}/edit/", edit, methods=["POST"]),
    Route("/api/sessions/{session_id}/messages/{message_id}/versions/", versions,
          methods=["GET"]),
]

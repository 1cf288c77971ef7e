"""Chat sessions over JSON: list, create, read, update, delete."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.auth import require_user, services_of
from app.http_input import query_int, read_json
from app.usecases import chats


async def list_or_create(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    if request.method == "GET":
        q = request.query_params.get("q", "")
        limit = query_int(request, "limit", 50, 1, 500)
        return JSONResponse(await chats.list_sessions(services, user["id"], q, limit))
    body = await read_json(request, services.settings.max_body_bytes, allow_empty=True)
    return JSONResponse(await chats.start_session(services, user["id"], body), 201)


async def detail(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session_id = request.path_params["session_id"]
    if request.method == "GET":
        return JSONResponse(await chats.owned_session(services, user["id"], session_id))
    if request.method == "DELETE":
        await chats.delete_session(services, user["id"], session_id)
        return Response(status_code=204)
    await chats.owned_session(services, user["id"], session_id)  # 404 before reading a body
    body = await read_json(request, services.settings.max_body_bytes)
    return JSONResponse(await chats.update_session(services, user["id"], session_id, body))


routes = [
    Route("/api/sessions/", list_or_create, methods=["GET", "POST"]),
    Route("/api/sessions/{session_id}/", detail, methods=["GET", "PUT", "PATCH", "DELETE"]),
]

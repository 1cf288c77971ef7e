"""Messages of a session over JSON: list, post, cancel, regenerate, and the SSE stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.auth import require_user, services_of
from app.http_input import read_body, read_json, resume_position
from app.services import Services
from app.sse_events import stream_event, to_json
from app.streaming import check_stream_cap, follow_session
from app.usecases import chats


async def list_or_post(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session_id = request.path_params["session_id"]
    if request.method == "GET":
        return JSONResponse(await chats.list_messages(services, user["id"], session_id))
    await chats.owned_session(services, user["id"], session_id)  # 404 before reading a body
    body = await read_json(request, services.settings.max_body_bytes)
    queued = await chats.post_message(services, user["id"], session_id, body.get("content"))
    return JSONResponse(queued, 202)


async def regenerate(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session_id = request.path_params["session_id"]
    await chats.owned_session(services, user["id"], session_id)
    await read_body(request, services.settings.max_body_bytes)
    return JSONResponse(await chats.regenerate(services, user["id"], session_id), 202)


async def cancel(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session_id = request.path_params["session_id"]
    await chats.owned_session(services, user["id"], session_id)
    await read_body(request, services.settings.max_body_bytes)
    await chats.cancel_reply(services, user["id"], session_id)
    return JSONResponse({"status": "cancelling"}, 202)


async def api_events(
    services: Services, session_id: UUID, after: int, user: dict[str, Any] | None = None,
) -> AsyncIterator[ServerSentEvent]:
    async for logged in follow_session(services, session_id, after, user):
        shown = stream_event(logged.event)
        if shown is not None:
            name, data = shown
            yield ServerSentEvent(data=to_json(data), event=name, id=str(logged.position))


async def stream(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session = await chats.owned_session(services, user["id"], request.path_params["session_id"])
    after = resume_position(request)
    check_stream_cap(services, user["id"])
    return EventSourceResponse(
        api_events(services, UUID(session["id"]), after, user),
        ping=services.settings.sse_ping_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


routes = [
    Route("/api/sessions/{session_id}/messages/", list_or_post, methods=["GET", "POST"]),
    Route("/api/sessions/{session_id}/stream/", stream, methods=["GET"]),
    Route("/api/sessions/{session_id}/cancel/", cancel, methods=["POST"]),
    Route("/api/sessions/{session_id}/regenerate/", regenerate, methods=["POST"]),
]

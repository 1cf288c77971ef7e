"""Messages of a session: list, post, cancel, regenerate, and the live SSE stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from uuid import UUID

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app import validation as v
from app.api.sessions import owned_session
from app.auth import require_user, services_of
from app.replies import queue_reply, stop_replies
from app.services import Services
from app.sse_events import stream_event, to_json
from app.streaming import follow_session, resume_position
from projections import messages as messages_read


async def list_or_post(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session = await owned_session(request, user)
    if request.method == "GET":
        return JSONResponse(await messages_read.list_messages(services.read_db, session["id"]))
    body = await v.read_json(request, services.settings.max_body_bytes)
    content = v.text(body, "content", max_len=services.settings.max_message_chars,
                     required=True, allow_blank=False)
    assert content is not None
    session_id, owner_id = UUID(session["id"]), UUID(user["id"])
    record = partial(services.chat.post_message, session_id, owner_id, content)
    return JSONResponse(await queue_reply(services, session_id, record), 202)


async def regenerate(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session = await owned_session(request, user)
    await v.read_body(request, services.settings.max_body_bytes)
    session_id, owner_id = UUID(session["id"]), UUID(user["id"])
    record = partial(services.chat.regenerate, session_id, owner_id)
    return JSONResponse(await queue_reply(services, session_id, record), 202)


async def cancel(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session = await owned_session(request, user)
    await v.read_body(request, services.settings.max_body_bytes)
    await stop_replies(services, UUID(session["id"]))
    return JSONResponse({"status": "cancelling"}, 202)


async def api_events(
    services: Services, session_id: UUID, after: int
) -> AsyncIterator[ServerSentEvent]:
    async for logged in follow_session(services, session_id, after):
        shown = stream_event(logged.event)
        if shown is not None:
            name, data = shown
            yield ServerSentEvent(data=to_json(data), event=name, id=str(logged.position))


async def stream(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session = await owned_session(request, user)
    after = resume_position(request)
    return EventSourceResponse(
        api_events(services, UUID(session["id"]), after),
        ping=services.settings.sse_ping_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


routes = [
    Route("/api/sessions/{session_id}/messages/", list_or_post, methods=["GET", "POST"]),
    Route("/api/sessions/{session_id}/stream/", stream, methods=["GET"]),
    Route("/api/sessions/{session_id}/cancel/", cancel, methods=["POST"]),
    Route("/api/sessions/{session_id}/regenerate/", regenerate, methods=["POST"]),
]

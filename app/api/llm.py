"""The LLM API of API.md: the models on this server, and one-shot generation (JSON or SSE)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.auth import require_user, services_of
from app.http_input import read_json
from app.services import Services
from app.sse_events import INTERRUPTED_MESSAGE, to_json
from app.usecases import fields, llm


async def models(request: Request) -> Response:
    await require_user(request)
    return JSONResponse(llm.list_models(services_of(request)))


async def generate(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    stream = fields.boolean(body, "stream")
    generation = llm.generate_request(services, body)
    queued = await llm.start(services, user["id"], generation)
    if stream:
        return EventSourceResponse(
            sse(services, user["id"], queued), ping=services.settings.sse_ping_seconds,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    result = await llm.run(services, user["id"], queued)
    return JSONResponse({"text": result.text, "token_count": result.token_count,
                         "processing_time": result.processing_time, "model": result.model})


async def sse(services: Services, user_id: str,
              queued: llm.Queued) -> AsyncIterator[ServerSentEvent]:
    """The chat stream's `token`, then `done` (or `error` / `cancelled`), for this reply.

    A client that goes away before the end cancels the generation: nobody else waits on it.
    """
    rid = str(queued.reply_id)
    ended = False
    try:
        async for step in llm.follow(services, queued):
            if isinstance(step, llm.Piece):
                yield ServerSentEvent(data=to_json({"reply_id": rid, "index": step.index,
                                                    "text": step.text}),
                                      event="token", id=str(step.position))
            elif isinstance(step, llm.End):
                ended = True
                name, data = end_event(rid, step)
                yield ServerSentEvent(data=to_json(data), event=name, id=str(step.position))
                return
    finally:
        if not ended:
            # The response is being torn down (its scope cancelled): shield the cancel.
            with anyio.CancelScope(shield=True):
                await llm.cancel(services, user_id, queued)


def end_event(rid: str, end: llm.End) -> tuple[str, dict[str, object]]:
    if end.outcome == "completed":
        return "done", {"reply_id": rid, "content": end.content, "token_count": end.token_count,
                        "processing_time": end.processing_time,
                        "finish_reason": end.finish_reason}
    if end.outcome == "cancelled":
        return "cancelled", {"reply_id": rid, "content": end.content}
    message = INTERRUPTED_MESSAGE if end.outcome == "interrupted" else end.error_message
    return "error", {"reply_id": rid, "code": end.error_code, "message": message}


routes = [
    Route("/api/llm/models/", models, methods=["GET"]),
    Route("/api/llm/generate/", generate, methods=["POST"]),
]

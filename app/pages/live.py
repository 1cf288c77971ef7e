"""The chat page's live stream: the session's logged events as HTML fragments for htmx.

Each fragment goes to the element that listens for its event name (htmx-ext-sse
`sse-swap`): new messages to the conversation, tokens to their reply's text, a reply's new
state to its whole article, a new title to the header and the sidebar.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from html import escape
from typing import Any
from uuid import UUID

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from app.auth import services_of
from app.event_log import LoggedEvent
from app.pages.render import fragment
from app.services import Services
from app.streaming import follow_session, resume_position
from projections import messages as messages_read
from projections.base import iso

REPLY_ENDINGS = frozenset({"ReplyCompleted", "ReplyFailed", "ReplyCancelled", "ReplyInterrupted"})


async def render(services: Services, logged: LoggedEvent) -> tuple[str, str] | None:
    """(event name, HTML) for a logged event the page shows, else None."""
    e: Any = logged.event
    kind = type(e).__name__
    session_id = str(e.originator_id)
    if kind == "UserMessagePosted":
        message = {"id": str(e.message_id), "role": "user", "content": e.content}
        return "message", _article(message, session_id)
    if kind == "ReplyQueued":
        reply = _reply(e.reply_id, "queued", queue_position=e.queue_position,
                       timestamp=iso(e.timestamp))
        return "message", _article(reply, session_id)
    if kind == "ReplyStarted":
        return f"reply-{e.reply_id}", _article(_reply(e.reply_id, "streaming"), session_id)
    if kind == "TokensGenerated":
        return f"token-{e.reply_id}", escape(e.text)
    if kind in REPLY_ENDINGS:
        # An ended reply never changes again, so the read model, once it has applied this
        # event, holds exactly its final state.
        await services.settle(logged.position)
        reply = await messages_read.get_message(services.read_db, str(e.reply_id))
        return (f"reply-{e.reply_id}", _article(reply, session_id)) if reply else None
    if kind == "Renamed":
        return f"title-{session_id}", escape(e.title)
    return None


def _reply(reply_id: UUID, status: str, **fields: Any) -> dict[str, Any]:
    return {"id": str(reply_id), "role": "assistant", "content": "", "status": status,
            "token_count": 0, "processing_time": None, "metadata": {}, **fields}


def _article(message: dict[str, Any], session_id: str) -> str:
    return fragment("chat/_message.html", m=message, session_id=session_id)


async def _stream(services: Services, session_id: UUID, after: int
                  ) -> AsyncIterator[ServerSentEvent]:
    async for logged in follow_session(services, session_id, after):
        shown = await render(services, logged)
        if shown is not None:
            name, html = shown
            yield ServerSentEvent(data=html, event=name, id=str(logged.position))


async def live_events(request: Request, session_id: UUID) -> Response:
    services = services_of(request)
    return EventSourceResponse(
        _stream(services, session_id, resume_position(request)),
        ping=services.settings.sse_ping_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )

"""The chat page's live stream: the session's logged events as HTML fragments for htmx.

Every event is named `update` and goes to one listener that exists from page load; each
fragment places itself with `hx-swap-oob`: new messages at the end of the conversation,
tokens at the end of their reply's text, a reply's new state over its whole article, a new
title into the header and the sidebar. (Listeners on elements that arrive over the stream
would miss events sent before htmx had processed them.)
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
from app.http_input import resume_position
from app.pages.render import fragment
from app.services import Services
from app.streaming import follow_session
from projections import messages as messages_read
from projections.base import iso

REPLY_ENDINGS = frozenset({"ReplyCompleted", "ReplyFailed", "ReplyCancelled", "ReplyInterrupted"})


async def render(services: Services, logged: LoggedEvent) -> str | None:
    """The out-of-band HTML for a logged event the page shows, else None."""
    e: Any = logged.event
    kind = type(e).__name__
    session_id = str(e.originator_id)
    if kind == "UserMessagePosted":
        message = {"id": str(e.message_id), "role": "user", "content": e.content}
        return _append_to_conversation(message, session_id)
    if kind == "ReplyQueued":
        reply = _reply(e.reply_id, "queued", queue_position=e.queue_position,
                       timestamp=iso(e.timestamp))
        return _append_to_conversation(reply, session_id)
    if kind == "ReplyStarted":
        return _article(_reply(e.reply_id, "streaming"), session_id, oob=True)
    if kind == "TokensGenerated":
        return f'<span hx-swap-oob="beforeend:#body-{e.reply_id}">{escape(e.text)}</span>'
    if kind in REPLY_ENDINGS:
        # An ended reply never changes again, so the read model, once it has applied this
        # event, holds exactly its final state.
        await services.settle(logged.position)
        ended = await messages_read.get_message(services.read_db, str(e.reply_id))
        return _article(ended, session_id, oob=True) if ended else None
    if kind == "Renamed":
        title = escape(e.title)
        return (f'<span hx-swap-oob="innerHTML:#chat-title">{title}</span>'
                f'<span hx-swap-oob="innerHTML:#session-link-{session_id}">{title}</span>')
    return None


def _reply(reply_id: UUID, status: str, **fields: Any) -> dict[str, Any]:
    return {"id": str(reply_id), "role": "assistant", "content": "", "status": status,
            "token_count": 0, "processing_time": None, "metadata": {}, **fields}


def _article(message: dict[str, Any], session_id: str, oob: bool = False) -> str:
    return fragment("chat/_message.html", m=message, session_id=session_id, oob=oob)


def _append_to_conversation(message: dict[str, Any], session_id: str) -> str:
    return f'<div hx-swap-oob="beforeend:#messages">{_article(message, session_id)}</div>'


async def _stream(services: Services, session_id: UUID, after: int
                  ) -> AsyncIterator[ServerSentEvent]:
    async for logged in follow_session(services, session_id, after):
        html = await render(services, logged)
        if html is not None:
            yield ServerSentEvent(data=html, event="update", id=str(logged.position))


async def live_events(request: Request, session_id: UUID) -> Response:
    services = services_of(request)
    return EventSourceResponse(
        _stream(services, session_id, resume_position(request)),
        ping=services.settings.sse_ping_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )

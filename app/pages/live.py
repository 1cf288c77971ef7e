"""The chat page's live stream: the session's logged events as HTML fragments for htmx.

Every event is named `update` and goes to one listener that exists from page load; each
fragment places itself with `hx-swap-oob`: new messages at the end of the conversation,
a reply's new state over its whole article, a new title into the header and the sidebar.
A streaming reply's text is Markdown rendered as it grows: blocks that can no longer
change are appended once to its frozen container, and only its last block is rendered
again into its tail container (app/rendering/streaming.py). (Listeners on elements that
arrive over the stream would miss events sent before htmx had processed them.)
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
from app.rendering import StreamingMarkdown
from app.services import Services
from app.streaming import check_stream_cap, follow_session
from projections import messages as messages_read
from projections.base import iso

REPLY_ENDINGS = frozenset({"ReplyCompleted", "ReplyFailed", "ReplyCancelled", "ReplyInterrupted"})


class LivePage:
    """Renders one connection's events; holds the Markdown renderer of each streaming reply."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._replies: dict[UUID, StreamingMarkdown] = {}

    async def render(self, logged: LoggedEvent) -> str | None:
        """The out-of-band HTML for a logged event the page shows, else None."""
        services = self._services
        e: Any = logged.event
        kind = type(e).__name__
        session_id = str(e.originator_id)
        if kind == "UserMessagePosted":
            message = {"id": str(e.message_id), "role": "user", "content": e.content}
            # With the edit tools under it, as the page draws them (app/pages/branches.py).
            tools = fragment("branches/_tools.html", m=message, session={"id": session_id})
            return (f'<div hx-swap-oob="beforeend:#messages">'
                    f"{_article(message, session_id)}{tools}</div>")
        if kind == "ReplyQueued":
            reply = _reply(e.reply_id, "queued", queue_position=e.queue_position,
                           timestamp=iso(e.timestamp))
            return _append_to_conversation(reply, session_id)
        if kind == "ReplyStarted":
            self._replies[e.reply_id] = StreamingMarkdown()
            return _article(_reply(e.reply_id, "streaming"), session_id, oob=True)
        if kind == "TokensGenerated":
            return await self._tokens(logged)
        if kind in REPLY_ENDINGS:
            self._replies.pop(e.reply_id, None)
            # An ended reply never changes again, so the read model, once it has applied
            # this event, holds exactly its final state.
            await services.settle(logged.position)
            ended = await messages_read.get_message(services.read_db, str(e.reply_id))
            return _article(ended, session_id, oob=True) if ended else None
        if kind == "UserMessageEdited":
            # The conversation now follows a new branch; a reload draws it from one
            # consistent snapshot (the window that made the edit reloads by itself).
            return (f'<div hx-swap-oob="beforeend:#toasts">'
                    f'{fragment("chat/_edited_elsewhere.html", session_id=session_id)}</div>')
        if kind == "Renamed":
            title = escape(e.title)
            return (f'<span hx-swap-oob="innerHTML:#chat-title">{title}</span>'
                    f'<span hx-swap-oob="innerHTML:#session-link-{session_id}">{title}</span>')
        return None

    async def _tokens(self, logged: LoggedEvent) -> str:
        e: Any = logged.event
        renderer = self._replies.get(e.reply_id)
        if renderer is None:
            # Joined mid-reply (a page loaded, or a reconnect): render the reply's text so
            # far, this piece included, from the log, and replace what the page shows.
            text = await self._text_before(e.originator_id, e.reply_id, logged.position)
            renderer = self._replies[e.reply_id] = StreamingMarkdown(text + e.text)
            return (f'<div hx-swap-oob="innerHTML:#body-{e.reply_id}">'
                    f'{_live_containers(e.reply_id, renderer)}</div>')
        update = renderer.feed(e.text)
        html = f'<div hx-swap-oob="innerHTML:#tail-{e.reply_id}">{update.tail_html}</div>'
        if update.frozen_html_to_append:
            html = (f'<div hx-swap-oob="beforeend:#frozen-{e.reply_id}">'
                    f'{update.frozen_html_to_append}</div>') + html
        return html

    async def _text_before(self, session_id: UUID, reply_id: UUID, position: int) -> str:
        """The reply's text from the pieces logged before `position`, read back to its start."""
        pieces: list[str] = []
        before = position
        while True:
            batch = await self._services.event_log.of_originator_before(session_id, before)
            for logged in batch:
                e: Any = logged.event
                if getattr(e, "reply_id", None) != reply_id:
                    continue
                if type(e).__name__ == "TokensGenerated":
                    pieces.append(e.text)
                elif type(e).__name__ in ("ReplyStarted", "ReplyQueued"):
                    return "".join(reversed(pieces))
            if not batch:
                return "".join(reversed(pieces))
            before = batch[-1].position


def _live_containers(reply_id: UUID, renderer: StreamingMarkdown) -> str:
    return (f'<div class="md__frozen" id="frozen-{reply_id}">{renderer.frozen_html}</div>'
            f'<div class="md__tail" id="tail-{reply_id}">{renderer.tail_html}</div>')


def _reply(reply_id: UUID, status: str, **fields: Any) -> dict[str, Any]:
    return {"id": str(reply_id), "role": "assistant", "content": "", "status": status,
            "token_count": 0, "processing_time": None, "metadata": {}, **fields}


def _article(message: dict[str, Any], session_id: str, oob: bool = False) -> str:
    return fragment("chat/_message.html", m=message, session_id=session_id, oob=oob)


def _append_to_conversation(message: dict[str, Any], session_id: str) -> str:
    return f'<div hx-swap-oob="beforeend:#messages">{_article(message, session_id)}</div>'


async def _stream(services: Services, session_id: UUID, after: int,
                  user: dict[str, Any] | None = None) -> AsyncIterator[ServerSentEvent]:
    page = LivePage(services)
    async for logged in follow_session(services, session_id, after, user):
        html = await page.render(logged)
        if html is not None:
            yield ServerSentEvent(data=html, event="update", id=str(logged.position))


async def live_events(request: Request, session_id: UUID) -> Response:
    services = services_of(request)
    user = request.scope.get("user")  # the caller checked it
    if user:
        check_stream_cap(services, user["id"])
    return EventSourceResponse(
        _stream(services, session_id, resume_position(request), user),
        ping=services.settings.sse_ping_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )

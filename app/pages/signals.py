"""The page's second live stream: signals about the whole queue and the user's other chats.

The chat page's own stream (app/pages/live.py) carries only its session's events. This one
follows the whole log from the same position and turns the few events that matter to the
page into htmx out-of-band fragments (event name `signal`, id = the log position, so a
reconnect resumes exactly):

- a reply started or ended anywhere: the queue moved, so each queued reply of the open chat
  gets its new place (nothing new is recorded: the actor, which owns the queue, says the
  place; the read model says which of the chat's replies are waiting);
- a reply finished in another chat of the same user: a toast linking to it, and a mark on
  its sidebar item (the mark lasts until the sidebar is drawn again).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from html import escape
from uuid import UUID

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.auth import require_user, services_of
from app.http_input import resume_position
from app.i18n import gettext as _
from app.services import Services
from app.usecases import chats
from app.watch import PositionWatch
from projections import messages as messages_read
from projections import sessions as sessions_read

log = logging.getLogger(__name__)

READ_BATCH = 1000
MAX_REPLAY = 5000  # signals older than this are stale; a far-back resume skips them
WAIT_SECONDS = 30.0
QUEUE_MOVES = frozenset({"ReplyStarted", "ReplyCompleted", "ReplyFailed", "ReplyCancelled",
                         "ReplyInterrupted"})
FINISHED = {"ReplyCompleted": "complete", "ReplyFailed": "failed"}


class Follower:
    """What one page learns from the log; remembers which sessions are the user's."""

    def __init__(self, services: Services, user_id: str, session_id: str) -> None:
        self.services = services
        self.user_id = user_id
        self.session_id = session_id
        self._titles: dict[str, str | None] = {}

    async def _own_title(self, session_id: str) -> str | None:
        """The title of the user's session, None for anyone else's (asked once each)."""
        if session_id not in self._titles:
            found = await sessions_read.get_session(self.services.read_db, self.user_id,
                                                    session_id)
            self._titles[session_id] = found["title"] if found else None
        return self._titles[session_id]

    async def render(self, kind: str, session_id: str, position: int) -> str:
        html = ""
        if kind in QUEUE_MOVES:
            await self.services.settle(position)
            for reply_id in await messages_read.queued_replies(self.services.read_db,
                                                               self.session_id):
                place = self.services.actor.place_of(UUID(reply_id))
                if place is not None:
                    html += queue_place(reply_id, place)
        if kind in FINISHED and session_id != self.session_id:
            title = await self._own_title(session_id)
            if title is not None:
                html += finished_elsewhere(session_id, title, FINISHED[kind])
        return html


def queue_place(reply_id: str, place: int) -> str:
    text = escape(_("Queued · position %(n)s") % {"n": place})
    return f'<span hx-swap-oob="innerHTML:#msg-{reply_id} .badge--queued">{text}</span>'


def finished_elsewhere(session_id: str, title: str, status: str) -> str:
    text = escape(_("A reply finished in") if status == "complete" else _("A reply failed in"))
    name = escape(title or _("New chat"))
    dismiss, mark = escape(_("Dismiss")), escape(_("New reply"))
    return (
        '<div hx-swap-oob="beforeend:#toasts">'
        f'<div class="toast toast--{"success" if status == "complete" else "error"}'
        f' toast--notice" role="status" data-autodismiss="12000">'
        f'<p class="toast__text">{text} <a class="toast__link" href="/chats/{session_id}"'
        f' data-notice-for="{session_id}">“{name}”</a></p>'
        f'<button class="toast__close" type="button" data-dismiss aria-label="{dismiss}">×'
        "</button></div></div>"
        f'<span hx-swap-oob="beforeend:#session-link-{session_id}">'
        f'<span class="session-item__unread" title="{mark}" aria-label="{mark}"></span></span>'
    )


class QueueMoves:
    """One reader of the log for every signals stream of the app.

    Each open chat page has a signals stream, and the events it wants (a reply started or
    ended) are a few among many token batches. Followed per stream, every commit woke every
    page to read the log again (finding 8 of issue 7, on the page's side); here one task
    reads each commit once and keeps the recent moves, and a stream wakes only when a move
    came."""

    KEEP = 1000  # far more moves than a live stream misses between two of its wakes

    def __init__(self, services: Services) -> None:
        self._services = services
        self.start = services.head.position  # moves after this are kept here
        self._read_to = self.start
        self._moves: deque[tuple[int, str, str]] = deque(maxlen=self.KEEP)
        self.loop = loop = asyncio.get_running_loop()
        self.moved = PositionWatch(loop, self.start)  # the position of the newest move
        self._task = loop.create_task(self._follow(), name="signals: queue moves")

    def after(self, position: int) -> list[tuple[int, str, str]]:
        """(position, kind, session id) of the kept moves after `position`."""
        return [move for move in self._moves if move[0] > position]

    async def _follow(self) -> None:
        services = self._services
        while True:
            head = services.head.position
            try:
                batch = await services.event_log.select(self._read_to, READ_BATCH)
            except Exception:  # a failed read must not end every page's signals for good
                log.exception("signals: reading the log failed; retrying")
                await asyncio.sleep(1.0)
                continue
            for logged in batch:
                self._read_to = logged.position
                if logged.kind in QUEUE_MOVES:
                    self._moves.append((logged.position, logged.kind,
                                        str(logged.event.originator_id)))
                    self.moved.advance(logged.position)
            if len(batch) < READ_BATCH:
                await services.head.wait_beyond(max(head, self._read_to), WAIT_SECONDS)


def queue_moves(app: Starlette, services: Services) -> QueueMoves:
    """The app's one QueueMoves, started by the first signals stream."""
    hub: QueueMoves | None = getattr(app.state, "queue_moves", None)
    if hub is None or hub.loop is not asyncio.get_running_loop():  # a new loop: a new app run
        hub = app.state.queue_moves = QueueMoves(services)
    return hub


async def _stream(follower: Follower, after: int, hub: QueueMoves
                  ) -> AsyncIterator[ServerSentEvent]:
    services = follower.services
    # A resume from before the hub's start reads that stretch of the log itself.
    while after < hub.start:
        batch = await services.event_log.select(after, min(READ_BATCH, hub.start - after))
        if not batch:
            break
        for logged in batch:
            after = logged.position
            if logged.kind in QUEUE_MOVES:
                html = await follower.render(logged.kind, str(logged.event.originator_id),
                                             logged.position)
                if html:
                    yield ServerSentEvent(data=html, event="signal", id=str(logged.position))
    after = max(after, hub.start)
    while True:
        seen = hub.moved.position
        for position, kind, session_id in hub.after(after):
            after = position
            html = await follower.render(kind, session_id, position)
            if html:
                yield ServerSentEvent(data=html, event="signal", id=str(position))
        await hub.moved.wait_beyond(max(seen, after), timeout=WAIT_SECONDS)


async def signals(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session = await chats.owned_session(services, user["id"],
                                        request.query_params.get("session", ""))
    after = max(resume_position(request), services.head.position - MAX_REPLAY)
    follower = Follower(services, user["id"], str(UUID(session["id"])))
    hub = queue_moves(request.app, services)
    return EventSourceResponse(
        _stream(follower, after, hub), ping=services.settings.sse_ping_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


routes = [Route("/signals", signals, methods=["GET"])]

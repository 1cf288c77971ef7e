"""Following one session's events in the committed log: replay after a position, then live.

A stream replays on its own, then takes the chat's new events from the chat's one feed
(app/stream_hub.py), which reads each change once for every stream watching the chat. A
stream wakes only when its chat changes (or its user: a sign-out ends it), not on every
commit; it ends after the session's deletion, and each user has a cap on open streams.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any
from uuid import UUID

from app.event_log import LoggedEvent
from app.services import Services
from app.stream_hub import Subscription, follow
from app.usecases import accounts
from app.usecases.errors import N_, Message, RateLimited

WAIT_SECONDS = 30.0
STREAMS_RETRY_SECONDS = 5


def check_stream_cap(services: Services, user_id: str) -> None:
    """Refuse a new stream before its response starts (429), when the user has too many."""
    if services.streams.full(user_id):
        raise RateLimited(Message(N_("Too many open streams (at most %(n)s); close another"
                                     " tab."), {"n": services.streams.per_user}),
                          STREAMS_RETRY_SECONDS)


async def _still_signed_in(services: Services, user: Mapping[str, Any]) -> bool:
    current = await accounts.user_for_token(services, str(user["token"]))
    return current is not None and current["id"] == user["id"]


async def follow_session(
    services: Services, session_id: UUID, after: int,
    user: Mapping[str, Any] | None = None,
) -> AsyncIterator[LoggedEvent]:
    """Every event of the session after `after` in log order, then each new one as it commits.

    With `user` (a signed-in caller with its token), the stream counts toward the user's
    cap and ends once the token no longer works (signed out, disabled, expired)."""
    user_key = str(user["id"]) if user else None
    if user_key is not None and not services.streams.open(user_key):
        return
    signed_in = None if user is None else _SignedIn(services, user)
    try:
        # Closed with this stream, so it leaves the chat's feed at once, not when collected.
        events = follow(services.chat_feeds, session_id, Subscription(after), signed_in)
        async with aclosing(events):
            async for logged in events:
                yield logged
    finally:
        if signed_in is not None:
            signed_in.close()
        if user_key is not None:
            services.streams.close(user_key)


class _SignedIn:
    """What a signed-in stream waits for: its chat's feed, a change of its user (a sign-out
    ends the stream), or the time to check its token again (time ends a token; no event
    says so). Watches the user once, not at every event: each event of the chat wakes
    every stream watching it."""

    def __init__(self, services: Services, user: Mapping[str, Any]) -> None:
        self._services = services
        self._user = user
        self._user_id = UUID(str(user["id"]))
        self._loop = asyncio.get_running_loop()
        self._watch_user()
        self._due = False
        self._timer = self._schedule()

    def _watch_user(self) -> None:
        changes = self._services.changes
        self.wake = changes.subscribe(self._user_id)  # also set by the feed (`sub.wake`)
        self._user_changed = changes.subscribe(self._user_id)

    def _unwatch_user(self) -> None:
        changes = self._services.changes
        changes.unsubscribe(self.wake, self._user_id)
        changes.unsubscribe(self._user_changed, self._user_id)

    def _schedule(self) -> asyncio.TimerHandle:
        # The while varies per stream, so streams opened together check at different times.
        return self._loop.call_later(WAIT_SECONDS * (0.5 + random.random()), self._time_up)

    def _time_up(self) -> None:
        self._due = True
        self.wake.set()

    async def __call__(self, sub: Subscription) -> bool:
        """Until the feed hands `sub` more (or drops it); False once the token no longer
        works (checked when the user changes, and every 15-45 s)."""
        sub.wake = self.wake
        try:
            await self.wake.wait()
        finally:
            sub.wake = None
        user_changed = self._user_changed.is_set()
        if user_changed:  # that watch fired, and ended: watch the user anew
            self._unwatch_user()
            self._watch_user()
        else:
            self.wake.clear()
        if self._due:
            self._due = False
            self._timer = self._schedule()
        elif not user_changed:
            return True
        return await _still_signed_in(self._services, self._user)

    def close(self) -> None:
        self._timer.cancel()
        self._unwatch_user()

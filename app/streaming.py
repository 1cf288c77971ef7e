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
from functools import partial
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


async def _woken(waiter: asyncio.Event) -> bool:
    """Wait for the waiter; False after a quiet while. The while varies per stream, so
    streams opened together do not all time out together."""
    try:  # a timeout block, not wait_for: no task per wait (each event wakes every stream)
        async with asyncio.timeout(WAIT_SECONDS * (0.5 + random.random())):
            await waiter.wait()
    except TimeoutError:
        return False
    return True


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
    try:
        wait = None if user is None else partial(_wait, services, user, UUID(user_key))
        # Closed with this stream, so it leaves the chat's feed at once, not when collected.
        events = follow(services.chat_feeds, session_id, Subscription(after), wait)
        async with aclosing(events):
            async for logged in events:
                yield logged
    finally:
        if user_key is not None:
            services.streams.close(user_key)


async def _wait(services: Services, user: Mapping[str, Any], user_id: UUID,
                sub: Subscription) -> bool:
    """Until the feed hands the stream more (or drops it); False once the user's token no
    longer works (checked when the user changes, and after each quiet while)."""
    changes = services.changes
    sub.wake = waiter = changes.subscribe(user_id)
    user_changed = changes.subscribe(user_id)
    try:
        while not await _woken(waiter):
            if not await _still_signed_in(services, user):
                return False  # expired (time ends a token; no event says so)
    finally:
        sub.wake = None
        changes.unsubscribe(waiter, user_id)
        changes.unsubscribe(user_changed, user_id)
    # A change of the user (sign-out, disabling) ends the stream.
    return not (user_changed.is_set() and not await _still_signed_in(services, user))

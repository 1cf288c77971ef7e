"""Following one session's events in the committed log: replay after a position, then live.

A stream wakes only when its own chat changes (or its user: a sign-out ends it), not on
every commit; it ends after the session's deletion, and each user has a cap on open streams.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any
from uuid import UUID

from app.event_log import LoggedEvent
from app.services import Services
from app.usecases import accounts
from app.usecases.errors import N_, Message, RateLimited

READ_BATCH = 1000
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
    try:
        await asyncio.wait_for(waiter.wait(), WAIT_SECONDS * (0.5 + random.random()))
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
    user_id = str(user["id"]) if user else None
    if user_id is not None and not services.streams.open(user_id):
        return
    watched = (session_id, UUID(user_id)) if user_id else (session_id,)
    try:
        while True:
            waiter = services.changes.subscribe(*watched)
            user_changed = services.changes.subscribe(*watched[1:])
            try:
                batch = await services.event_log.of_originator(session_id, after, READ_BATCH)
                for logged in batch:
                    after = logged.position
                    yield logged
                    if type(logged.event).__name__ == "Deleted":
                        return
                if len(batch) == READ_BATCH:
                    continue
                # Still subscribed: a quiet timeout needs no new read of the log (found by
                # drills/load.py: with 1,000 idle streams opened together, their timeouts
                # re-read the log in one burst every 30 s, stalling the live streams).
                while not await _woken(waiter):
                    if user is not None and not await _still_signed_in(services, user):
                        return  # expired (time ends a token; no event says so)
            finally:
                services.changes.unsubscribe(waiter, *watched)
                services.changes.unsubscribe(user_changed, *watched[1:])
            # A change of the user (sign-out, disabling) ends the stream.
            if (user is not None and user_changed.is_set()
                    and not await _still_signed_in(services, user)):
                return
    finally:
        if user_id is not None:
            services.streams.close(user_id)

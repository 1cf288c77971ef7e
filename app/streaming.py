"""Following one session's events in the committed log: replay after a position, then live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

from app.event_log import LoggedEvent
from app.services import Services

READ_BATCH = 1000
WAIT_SECONDS = 30.0


async def follow_session(
    services: Services, session_id: UUID, after: int
) -> AsyncIterator[LoggedEvent]:
    """Every event of the session after `after` in log order, then each new one as it commits."""
    while True:
        # The head is read before the log, so a commit landing in between wakes the wait.
        head = services.head.position
        batch = await services.event_log.of_originator(session_id, after, READ_BATCH)
        for logged in batch:
            after = logged.position
            yield logged
        if len(batch) < READ_BATCH:
            await services.head.wait_beyond(head, timeout=WAIT_SECONDS)

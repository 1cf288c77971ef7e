"""A long chat in pages: the chat page shows the newest messages, older ones on request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from app.services import Services
from app.usecases import chats
from app.usecases.errors import NotFound
from projections import messages as messages_read

PAGE = 50


@dataclass(frozen=True)
class OlderPage:
    session: dict[str, Any]
    messages: list[dict[str, Any]]  # oldest first
    more: bool  # there are messages before these


async def older(services: Services, user_id: str, session_id: str, before: str,
                limit: int = PAGE) -> OlderPage:
    """The messages of the current branch just before message `before`. A `before` that
    is the first message gives an empty page; one not on the branch is NotFound."""
    session = await chats.owned_session(services, user_id, session_id)
    try:
        before_id = str(UUID(before))
    except ValueError:
        raise NotFound("message") from None
    found = await messages_read.page_before(services.read_db, session["id"], before_id, limit)
    if found is None:
        raise NotFound("message")
    messages, more = found
    return OlderPage(session, messages, more)

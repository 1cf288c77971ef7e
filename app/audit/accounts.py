"""Account administration an operator does from the command line (the admin pages later).

The commands record events like any other; a running server takes them in through its
projections within a second (tokens of a disabled user stop working then), and a reply it
has queued for a user whose reply was cancelled here is skipped when its turn comes.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from eventsourcing.persistence import Mapper

from app.audit.export import Log, sessions_of
from app.security import hash_password
from domain.application import ChatApplication
from domain.errors import NotFound


@dataclass
class Disabled:
    user_id: UUID
    position: int
    cancelled: list[UUID]  # replies that were still queued or being written


def open_replies(chat: ChatApplication, session_ids: list[UUID]) -> list[tuple[UUID, UUID]]:
    """(session_id, reply_id) of every reply still queued or streaming in these chats."""
    found = []
    for session_id in session_ids:
        try:
            session = chat.get_session(session_id)
        except NotFound:
            continue
        found += [(session_id, reply_id) for reply_id in session.open_replies()]
    return found


def disable_user(chat: ChatApplication, log_db: Log, mapper: Mapper[UUID], user_id: UUID,
                 by: UUID | None = None) -> Disabled:
    """Disable the account, then cancel its open replies (found from the log itself)."""
    position = chat.disable_user(user_id, by)
    replies = open_replies(chat, sessions_of(log_db, mapper, user_id))
    cancelled = chat.cancel_replies(replies)
    return Disabled(user_id, chat.head() if cancelled else position, cancelled)


def create_admin(chat: ChatApplication, username: str, email: str, password: str) -> UUID:
    """A new account with admin rights (the first account is the admin anyway)."""
    user = chat.register_user(username, email, hash_password(password))
    if not user.is_admin:
        chat.grant_admin(user.id)
    return user.id
